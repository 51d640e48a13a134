"""The ledger on SQLite and PostgreSQL (``services/ledger.py``, migration 0005; docs/ledger.md):
idempotent posting (R4/R5), reversals (R2), and what the database itself refuses (R1/R2)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from evbilling.adapters.db import schema
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.domain.invariants import InvariantViolation
from evbilling.domain.ledger import (
    Account,
    AccountKind,
    IdempotencyKeyReusedError,
    JournalTransaction,
    Posting,
    TransactionKind,
    reverse,
    wallet_top_up,
)
from evbilling.entrypoints import cli
from evbilling.services import ledger, wallets
from evbilling.services.ledger import AlreadyReversedError

AT = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
FUNDING = Account(AccountKind.WALLET_FUNDING)
REVENUE = Account(AccountKind.CHARGING_REVENUE)


def top_up(driver_id: str, key: str = "top-up-1", amount_minor: int = 2000):
    return wallet_top_up(idempotency_key=key, driver_id=driver_id, amount_minor=amount_minor,
                         currency="EUR", reference="desk")


def post(engine: Engine, operator_id: str, txn) -> ledger.PostedTransaction:
    with write_transaction(engine) as conn:
        return ledger.post(conn, operator_id, txn, at=AT, period="2026-03")


def count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def wallet_balance(engine: Engine, operator_id: str, driver_id: str) -> int:
    """The ledger's balance, after checking the stored one agrees."""
    with engine.connect() as conn:
        in_ledger = ledger.balance_minor(conn, operator_id, Account.wallet(driver_id), "EUR")
        wallet = wallets.find_wallet(conn, operator_id, driver_id)
    assert wallet is not None and wallet.balance_minor == in_ledger
    return in_ledger


def new_wallet(engine: Engine, operator_id: str) -> str:
    """A driver with an empty EUR wallet."""
    with write_transaction(engine) as conn:
        driver_id = create_driver(conn, operator_id)
        wallets.lock_wallet(conn, operator_id, driver_id, AT, "EUR")
    return driver_id


@pytest.fixture
def driver(engine, operator) -> str:
    return new_wallet(engine, operator.operator_id)


def test_a_posted_transaction_moves_the_balances(engine, operator, driver):
    posted = post(engine, operator.operator_id, top_up(driver))

    assert not posted.replayed
    assert sorted((p.account.code, p.amount_minor) for p in posted.postings) == [
        (f"driver_wallet:{driver}", -2000), ("wallet_funding", 2000)]
    assert wallet_balance(engine, operator.operator_id, driver) == 2000
    with engine.connect() as conn:
        assert ledger.balance_minor(conn, operator.operator_id, FUNDING, "EUR") == 2000
        assert ledger.unbalanced_transactions(conn) == []


def test_the_same_key_and_content_posts_once(engine, operator, driver):
    first = post(engine, operator.operator_id, top_up(driver))
    again = post(engine, operator.operator_id, top_up(driver))

    assert again.replayed and again.id == first.id
    assert count(engine, schema.ledger_transactions) == 1
    assert count(engine, schema.ledger_postings) == 2
    assert wallet_balance(engine, operator.operator_id, driver) == 2000


def test_the_same_key_with_other_content_is_refused(engine, operator, driver):
    post(engine, operator.operator_id, top_up(driver, amount_minor=2000))

    with pytest.raises(IdempotencyKeyReusedError) as refused:
        post(engine, operator.operator_id, top_up(driver, amount_minor=2500))

    assert refused.value.code == "idempotency_key_reused"
    assert wallet_balance(engine, operator.operator_id, driver) == 2000


def test_idempotency_keys_are_per_operator(engine, operator, other_operator, driver):
    elsewhere = new_wallet(engine, other_operator.operator_id)
    post(engine, operator.operator_id, top_up(driver))
    other = post(engine, other_operator.operator_id, top_up(elsewhere, amount_minor=500))

    assert not other.replayed
    assert wallet_balance(engine, other_operator.operator_id, elsewhere) == 500


def test_a_wallet_posting_moves_the_stored_balance_and_never_below_zero(engine, operator,
                                                                       driver):
    post(engine, operator.operator_id, top_up(driver, amount_minor=300))
    spend = JournalTransaction("spend", TransactionKind.SESSION_SETTLEMENT, (
        Posting(Account.wallet(driver), 301, "EUR"), Posting(REVENUE, -301, "EUR")))

    with pytest.raises(DBAPIError, match="balance_non_negative"):
        post(engine, operator.operator_id, spend)

    assert wallet_balance(engine, operator.operator_id, driver) == 300
    assert count(engine, schema.ledger_transactions) == 1


def test_a_wallet_posting_without_a_wallet_row_is_a_programmer_error(engine, operator):
    with pytest.raises(InvariantViolation, match="wallet row"):
        post(engine, operator.operator_id, top_up("drv_without_wallet"))

    assert count(engine, schema.ledger_transactions) == 0


def test_concurrent_posts_with_one_key_have_one_effect(engine, operator, driver):
    results: list[ledger.PostedTransaction] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(post(engine, operator.operator_id, top_up(driver)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len({r.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert wallet_balance(engine, operator.operator_id, driver) == 2000


def test_a_reversal_returns_the_balances_to_zero_and_happens_once(engine, operator, driver):
    op = operator.operator_id
    original = post(engine, op, top_up(driver))
    with write_transaction(engine) as conn:
        reversal = ledger.post_reversal(conn, op, "top-up-1", at=AT, period="2026-03")
        replay = ledger.post_reversal(conn, op, "top-up-1", at=AT, period="2026-03")

    assert reversal.reversal_of == original.id and replay.replayed
    assert wallet_balance(engine, op, driver) == 0
    with engine.connect() as conn:
        assert ledger.balance_minor(conn, op, FUNDING, "EUR") == 0
    second = reverse(top_up(driver), idempotency_key="another-reversal-key")
    with pytest.raises(AlreadyReversedError), write_transaction(engine) as conn:
        ledger.post(conn, op, second, at=AT, period="2026-03")


# -- what the database refuses ---------------------------------------------------------------------
LEDGER_CHANGES = [
    ("ledger_accounts", "UPDATE ledger_accounts SET currency = 'CHF'"),
    ("ledger_accounts", "DELETE FROM ledger_accounts"),
    ("ledger_transactions", "UPDATE ledger_transactions SET kind = 'reversal'"),
    ("ledger_transactions", "DELETE FROM ledger_transactions"),
    ("ledger_postings", "UPDATE ledger_postings SET amount_minor = amount_minor * 2"),
    ("ledger_postings", "DELETE FROM ledger_postings"),
]


@pytest.mark.parametrize("table, statement", LEDGER_CHANGES,
                         ids=[s.split()[0] + " " + t for t, s in LEDGER_CHANGES])
def test_the_database_rejects_changes_to_ledger_rows(engine, operator, driver, table,
                                                    statement):
    post(engine, operator.operator_id, top_up(driver))

    with pytest.raises(DBAPIError, match="append-only"), write_transaction(engine) as conn:
        conn.execute(text(statement))

    assert count(engine, schema.ledger_postings) == 2
    assert wallet_balance(engine, operator.operator_id, driver) == 2000


def _raw_transaction(conn, operator_id: str, txn_id: str, amounts: list[int]) -> None:
    """Insert a transaction and postings bypassing the service (what a buggy writer might do)."""
    account = conn.execute(select(schema.ledger_accounts.c.id).where(
        schema.ledger_accounts.c.operator_id == operator_id)).scalars().first()
    conn.execute(schema.ledger_transactions.insert().values(
        id=txn_id, operator_id=operator_id, idempotency_key=txn_id, kind="wallet_top_up",
        fingerprint="0" * 64, period="2026-03", details={}, created_at=AT))
    other = conn.execute(select(schema.ledger_accounts.c.id).where(
        schema.ledger_accounts.c.operator_id == operator_id,
        schema.ledger_accounts.c.id != account)).scalars().first()
    for account_id, amount in zip([account, other], amounts, strict=False):
        conn.execute(schema.ledger_postings.insert().values(
            operator_id=operator_id, transaction_id=txn_id, account_id=account_id,
            amount_minor=amount))


@pytest.mark.parametrize("amounts", [[500, -499], [500], []],
                         ids=["unbalanced", "one posting", "no posting"])
def test_postgres_rejects_a_raw_unbalanced_transaction_at_commit(engine, operator, driver,
                                                                 amounts):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no deferred triggers: the service and the audit query check")
    post(engine, operator.operator_id, top_up(driver))

    with pytest.raises(DBAPIError, match="does not balance|at least 2"), \
            write_transaction(engine) as conn:
        _raw_transaction(conn, operator.operator_id, "ltx_raw", amounts)

    assert count(engine, schema.ledger_transactions) == 1


def test_on_sqlite_the_audit_query_finds_a_raw_unbalanced_transaction(engine, operator,
                                                                       driver):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses it at commit")
    post(engine, operator.operator_id, top_up(driver))
    with write_transaction(engine) as conn:
        _raw_transaction(conn, operator.operator_id, "ltx_raw_a", [500, -499])
        _raw_transaction(conn, operator.operator_id, "ltx_raw_b", [500])

    with engine.connect() as conn:
        assert ledger.unbalanced_transactions(conn) == ["ltx_raw_a", "ltx_raw_b"]


def test_a_zero_posting_is_refused_by_the_database(engine, operator, driver):
    post(engine, operator.operator_id, top_up(driver))

    with pytest.raises(DBAPIError), write_transaction(engine) as conn:
        _raw_transaction(conn, operator.operator_id, "ltx_zero", [0, 0])


def test_the_audit_finds_a_wallet_whose_balance_left_its_postings(engine, operator):
    op = operator.operator_id
    with write_transaction(engine) as conn:
        driver = create_driver(conn, op)
        wallets.lock_wallet(conn, op, driver, AT, "EUR")
        ledger.post(conn, op, top_up(driver), at=AT, period="2026-03")
    with engine.connect() as conn:
        assert wallets.mismatched_wallets(conn) == []

    with write_transaction(engine) as conn:  # a buggy writer
        conn.execute(schema.wallets.update().values(balance_minor=2500))

    with engine.connect() as conn:
        assert [(m.driver_id, m.balance_minor, m.ledger_minor)
                for m in wallets.mismatched_wallets(conn)] == [(driver, 2500, 2000)]


def test_the_cli_audit_passes_on_a_sound_ledger_and_fails_on_a_broken_one(engine, operator,
                                                                          driver):
    runner = CliRunner()
    url = engine.url.render_as_string(hide_password=False)
    post(engine, operator.operator_id, top_up(driver))

    sound = runner.invoke(cli.app, ["db", "check-ledger", "--database-url", url])
    with write_transaction(engine) as conn:
        driver = create_driver(conn, operator.operator_id)
        conn.execute(schema.wallets.insert().values(
            id="wal_broken", operator_id=operator.operator_id, driver_id=driver,
            currency="EUR", balance_minor=5, version=0, created_at=AT))
    broken = runner.invoke(cli.app, ["db", "check-ledger", "--database-url", url])

    assert sound.exit_code == 0, sound.output
    assert broken.exit_code == 1
    assert "wal_broken" in broken.output


def create_driver(conn, operator_id: str) -> str:
    driver_id = new_id("drv")
    conn.execute(schema.drivers.insert().values(
        id=driver_id, operator_id=operator_id, name="Dana", time_zone="Europe/Berlin",
        created_at=AT))
    return driver_id
