"""Prepaid wallets on the ledger: top-ups, the wallet view, debits at settlement.

* A wallet is the ledger account ``driver_wallet:<driver id>`` (credit-normal) plus the
  ``wallets`` row, whose ``balance_minor`` ``ledger.post`` moves with every posting to that
  account, in the same transaction (CHECK ``balance_non_negative``). The row carries
  ``version`` and is what every money action on the wallet locks first (``lock_wallet``:
  ``SELECT ... FOR UPDATE``; SQLite: the write transaction's ``BEGIN IMMEDIATE``). After each
  change the balance is checked against the domain's ``Wallet`` and the sum of the account's
  postings (``require``).
* Its currency is fixed when it is created: the currency of the driver's prepaid wallet plan
  if they have one, else the operator's.
* A top-up (staff, ``Idempotency-Key``) is ``wallet_top_up``: debit ``wallet_funding``, credit
  the wallet. Limits: ``MAX_TOP_UP_MINOR`` per request, ``MAX_WALLET_BALANCE_MINOR`` per wallet
  (``wallet_limit_exceeded``). The key is checked before the limits, so retrying a successful
  top-up returns it even when the wallet has filled up since, and a refused one is recorded
  (``record_refused_top_up``) so its retry is refused the same way even when it would fit now
  (R5: a retry never flips the outcome; a new attempt needs a new key).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from evbilling.adapters.db import schema as s
from evbilling.adapters.ids import new_id
from evbilling.domain.errors import DomainError
from evbilling.domain.invariants import require
from evbilling.domain.ledger import (
    MAX_TOP_UP_MINOR,
    Account,
    AccountKind,
    IdempotencyKeyReusedError,
    TransactionKind,
    accounting_month,
    wallet_top_up,
)
from evbilling.domain.money import Currency
from evbilling.domain.plans import InvalidAmountError, Plan, PlanKind, Wallet
from evbilling.services import catalog, ledger

MAX_MOVEMENTS = 50
MAX_PENDING_REQUESTS = 20


@dataclass(frozen=True, slots=True)
class WalletRow:
    id: str
    driver_id: str
    currency: str
    balance_minor: int
    version: int


def current_plan(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime
                 ) -> Plan | None:
    driver_plan = catalog.driver_plan_at(conn, operator_id, driver_id, at)
    if driver_plan is None:
        return None
    return catalog.load_plan_at(conn, operator_id, driver_plan.plan_id, at)


def _new_wallet_currency(conn: Connection, operator_id: str, driver_id: str,
                         at: dt.datetime) -> str:
    plan = current_plan(conn, operator_id, driver_id, at)
    if plan is not None and plan.kind is PlanKind.PREPAID_WALLET:
        return plan.currency.code
    return catalog.operator_currency(conn, operator_id)


def _row(row: Any) -> WalletRow:
    return WalletRow(row.id, row.driver_id, row.currency, row.balance_minor, row.version)


def find_wallet(conn: Connection, operator_id: str, driver_id: str) -> WalletRow | None:
    w = s.wallets.c
    row = conn.execute(select(s.wallets).where(
        w.operator_id == operator_id, w.driver_id == driver_id)).first()
    return None if row is None else _row(row)


def lock_wallet(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime,
                currency: str | None = None) -> WalletRow:
    """The driver's wallet row, created (empty) if missing, locked for this transaction."""
    w = s.wallets.c
    if find_wallet(conn, operator_id, driver_id) is None:
        dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" \
            else sqlite.insert
        conn.execute(dialect_insert(s.wallets).values(
            id=new_id("wal"), operator_id=operator_id, driver_id=driver_id,
            currency=currency or _new_wallet_currency(conn, operator_id, driver_id, at),
            balance_minor=0, version=0, created_at=at).on_conflict_do_nothing())
    query = select(s.wallets).where(w.operator_id == operator_id, w.driver_id == driver_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return _row(conn.execute(query).one())


def check_balance(conn: Connection, operator_id: str, driver_id: str,
                  expected_minor: int) -> None:
    """After a posting (which moved the row, ``ledger.post``): the stored balance is the one
    the domain computed, and equals the wallet's postings."""
    wallet = find_wallet(conn, operator_id, driver_id)
    require(wallet is not None and wallet.balance_minor == expected_minor,
            f"the wallet of {driver_id} holds {expected_minor} after the posting")
    in_ledger = ledger.balance_minor(conn, operator_id, Account.wallet(driver_id),
                                     wallet.currency if wallet is not None else "")
    require(in_ledger == expected_minor,
            f"the wallet of {driver_id} ({expected_minor}) equals its postings ({in_ledger})")


@dataclass(frozen=True, slots=True)
class WalletMismatch:
    wallet_id: str
    operator_id: str
    driver_id: str
    balance_minor: int  # as stored on the wallets row
    ledger_minor: int  # as its postings say


def mismatched_wallets(conn: Connection, limit: int = 100) -> list[WalletMismatch]:
    """Audit query: wallets whose stored balance differs from the sum of their postings."""
    w, p, a = s.wallets.c, s.ledger_postings.c, s.ledger_accounts.c
    sums = select(a.operator_id, a.code, a.currency,
                  func.sum(p.amount_minor).label("signed")).join(
        s.ledger_postings, p.account_id == a.id).where(
        a.kind == AccountKind.DRIVER_WALLET.value).group_by(
        a.operator_id, a.code, a.currency).subquery()
    in_ledger = -func.coalesce(sums.c.signed, 0)
    rows = conn.execute(select(w.id, w.operator_id, w.driver_id, w.balance_minor,
                               in_ledger.label("ledger_minor")).outerjoin(
        sums, (sums.c.operator_id == w.operator_id) & (sums.c.currency == w.currency)
        & (sums.c.code == literal(AccountKind.DRIVER_WALLET.value + ":") + w.driver_id))
        .where(w.balance_minor != in_ledger).order_by(w.id).limit(limit))
    return [WalletMismatch(r.id, r.operator_id, r.driver_id, r.balance_minor, r.ledger_minor)
            for r in rows]


# -- top-ups ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopUp:
    transaction_id: str
    driver_id: str
    amount_minor: int
    currency: str
    reference: str | None
    balance_minor: int  # the wallet balance right after this top-up
    created_at: dt.datetime
    replayed: bool


def ledger_key(idempotency_key: str) -> str:
    return f"wallet_top_up:{idempotency_key}"


def top_up_fingerprint(*, driver_id: str, amount_minor: int, reference: str | None) -> str:
    return ledger.request_fingerprint(kind="wallet_top_up", driver_id=driver_id,
                                      amount_minor=amount_minor, reference=reference)


def record_refused_top_up(conn: Connection, operator_id: str, driver_id: str, *,
                          amount_minor: int, reference: str | None, idempotency_key: str,
                          error: DomainError, at: dt.datetime) -> None:
    """After ``top_up`` raised ``error`` (and its transaction rolled back): remember the refusal,
    so a retry with this key is refused the same way (R5). Idempotency errors themselves are
    not recorded."""
    if isinstance(error, IdempotencyKeyReusedError | ledger.RecordedFailureError):
        return
    ledger.record_failure(conn, operator_id, ledger_key(idempotency_key), top_up_fingerprint(
        driver_id=driver_id, amount_minor=amount_minor, reference=reference), error, at)


def top_up(conn: Connection, operator_id: str, driver_id: str, *, amount_minor: int,
           reference: str | None, idempotency_key: str, at: dt.datetime) -> TopUp:
    """Credit the wallet once per idempotency key (see the module doc)."""
    if not 0 < amount_minor <= MAX_TOP_UP_MINOR:
        raise InvalidAmountError(f"a top-up is 1..{MAX_TOP_UP_MINOR} minor units")
    key = ledger_key(idempotency_key)
    if ledger.find(conn, operator_id, key) is None:
        ledger.check_recorded_failure(conn, operator_id, key, top_up_fingerprint(
            driver_id=driver_id, amount_minor=amount_minor, reference=reference))
    driver = catalog.load_driver(conn, operator_id, driver_id)
    wallet = lock_wallet(conn, operator_id, driver.id, at)
    txn = wallet_top_up(idempotency_key=ledger_key(idempotency_key), driver_id=driver.id,
                        amount_minor=amount_minor, currency=wallet.currency,
                        reference=reference)
    known = ledger.find(conn, operator_id, txn.idempotency_key)
    if known is None:
        credited = Wallet(Currency.of(wallet.currency), wallet.balance_minor).credit(
            amount_minor)
        posted = ledger.post(conn, operator_id, txn, at=at,
                             period=accounting_month(at, driver.time_zone))
        if not posted.replayed:
            check_balance(conn, operator_id, driver.id, credited.balance_minor)
    else:
        posted = ledger.post(conn, operator_id, txn, at=at, period=known.period)
    return _top_up(conn, operator_id, posted)


def _top_up(conn: Connection, operator_id: str, posted: ledger.PostedTransaction) -> TopUp:
    driver_id = str(posted.details["driver_id"])
    account = Account.wallet(driver_id)
    credit = next(p for p in posted.postings if p.account == account)
    after = ledger.balance_minor(conn, operator_id, account, credit.currency,
                                 seq_max=posted.last_seq)
    reference = posted.details.get("reference")
    return TopUp(posted.id, driver_id, -credit.amount_minor, credit.currency,
                 None if reference is None else str(reference), after, posted.created_at,
                 posted.replayed)


# -- the wallet view -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Movement:
    transaction_id: str
    kind: TransactionKind
    amount_minor: int  # > 0 money in, < 0 money out
    balance_minor: int  # after this movement
    created_at: dt.datetime
    session_id: str | None
    reference: str | None


@dataclass(frozen=True, slots=True)
class TopUpRequest:
    id: str
    amount_minor: int
    balance_minor: int
    session_id: str | None
    status: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WalletView:
    driver_id: str
    currency: str
    balance_minor: int
    plan: Plan | None  # the driver's plan now (auto top-up settings if a wallet plan)
    movements: tuple[Movement, ...]
    pending_top_ups: tuple[TopUpRequest, ...]


def wallet_view(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime,
                movements_limit: int = 20) -> WalletView:
    driver = catalog.load_driver(conn, operator_id, driver_id)
    wallet = find_wallet(conn, operator_id, driver.id)
    currency = wallet.currency if wallet is not None else _new_wallet_currency(
        conn, operator_id, driver.id, at)
    balance = 0 if wallet is None else wallet.balance_minor
    account = Account.wallet(driver.id)
    movements: list[Movement] = []
    after = balance
    for posted in ledger.recent_transactions(conn, operator_id, account, currency,
                                             min(movements_limit, MAX_MOVEMENTS)):
        amount = account.balance_minor(posted.amount_of(account, currency))
        reference = posted.details.get("reference")
        movements.append(Movement(posted.id, posted.kind, amount, after, posted.created_at,
                                  posted.session_id,
                                  None if reference is None else str(reference)))
        after -= amount
    return WalletView(driver.id, currency, balance, current_plan(conn, operator_id, driver.id, at),
                      tuple(movements), pending_top_ups(conn, operator_id, driver.id))


def pending_top_ups(conn: Connection, operator_id: str, driver_id: str
                    ) -> tuple[TopUpRequest, ...]:
    r = s.wallet_top_up_requests.c
    rows = conn.execute(select(s.wallet_top_up_requests).where(
        r.operator_id == operator_id, r.driver_id == driver_id, r.status == "pending")
        .order_by(r.created_at.desc(), r.id.desc()).limit(MAX_PENDING_REQUESTS))
    return tuple(TopUpRequest(row.id, row.amount_minor, row.balance_minor, row.session_id,
                              row.status, ledger.aware(row.created_at)) for row in rows)
