"""Settled sessions on the ledger, on SQLite and PostgreSQL (``services/settlement_posting.py``):
who pays (wallet, wallet shortfall, fleet, card receivable), revenue and VAT, replays that post
once, auto top-up requests, and the funding check at session start."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

# the charging service tests' helpers (chargers, a charging run)
from test_charging_service import (
    CAROL,
    DAY,
    MINUTE_MS,
    ListSink,
    berlin_ms,
    charge,
    charger,
    frame,
    run,
)

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.domain.ledger import Account, AccountKind
from evbilling.services import ledger, wallets
from evbilling.services.charging import ChargingService
from evbilling.services.demo import seed_demo
from evbilling.services.ports import StopTransaction

BOB = "04B0B0B0B0B0B0"
#: Bob's sessions cost 0.21 less: the demo's history makes him Gold (10 % off energy):
#: 1.74 excl. energy x 10 % = 0.174, x 1.19 = 0.20706 -> 0.21 incl.; 2.67 - 0.21 = 2.46
BOB_PRICE_INCL_MINOR = 246


@pytest.fixture
def demo(engine: Engine) -> Engine:
    with write_transaction(engine) as conn:
        seed_demo(conn)
    return engine


def operator_of(conn: Any, driver: str) -> str:
    return str(conn.execute(select(s.drivers.c.operator_id).where(
        s.drivers.c.id == driver)).scalar_one())
REVENUE = Account(AccountKind.CHARGING_REVENUE)
VAT = Account(AccountKind.VAT_PAYABLE)


def driver_id(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(s.drivers.c.id).where(
            s.drivers.c.name == name)).scalar_one())


def plan_id(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(s.plans.c.id).where(s.plans.c.name == name)).scalar_one())


def put_on_plan(engine: Engine, driver: str, plan: str) -> None:
    """From long before DAY (the demo gives Carol no plan)."""
    with write_transaction(engine) as conn:
        conn.execute(insert(s.driver_plans).values(
            id=new_id("dpl"), operator_id=operator_of(conn, driver), driver_id=driver, plan_id=plan,
            starts_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), ends_at=None,
            created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))


def top_up(engine: Engine, driver: str, amount_minor: int) -> None:
    with write_transaction(engine) as conn:
        wallets.top_up(conn, operator_of(conn, driver), driver, amount_minor=amount_minor,
                       reference="test", idempotency_key=new_id("key"),
                       at=dt.datetime.now(dt.UTC))


def charge_and_stop(engine: Engine, token: str, *, minutes: int = 30, hour: int = 10
                    ) -> tuple[Any, str]:
    """A 12 kW session of ``minutes`` at the demo's Berlin charger, stopped and settled; returns
    (final cost, session id). 10:00 is off-peak: 0.29/kWh + 0.50 start (demo tariff)."""
    ch = charger(engine, "DEMO-CP16-001")
    start = berlin_ms(DAY, hour, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, _ = await charge(service, ch, token=token, start_ms=start, minutes=minutes)
        final = await service.stop_transaction(StopTransaction(
            ch, tx, start + minutes * MINUTE_MS, None, "Local", token, (),
            frame("StopTransaction")))
        return tx, final

    tx, final = run(engine, body)
    with engine.connect() as conn:
        session = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.charger_id == ch.charger_id,
            s.charging_sessions.c.ocpp_transaction_id == tx)).one()
    return final, session


def balance(engine: Engine, account: Account) -> int:
    with engine.connect() as conn:
        op = conn.execute(select(s.operators.c.id)).scalar_one()
        return ledger.balance_minor(conn, op, account, "EUR")


def settlement(engine: Engine, session_id: str) -> ledger.PostedTransaction | None:
    with engine.connect() as conn:
        op = conn.execute(select(s.operators.c.id)).scalar_one()
        return ledger.find(conn, op, f"session_settlement:{session_id}")


def wallet_row(engine: Engine, driver: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(s.wallets).where(s.wallets.c.driver_id == driver)).one()


def test_a_wallet_session_is_paid_from_the_wallet_with_revenue_and_vat(demo):
    carol = driver_id(demo, "Carol Casual")
    put_on_plan(demo, carol, plan_id(demo, "Prepaid wallet"))
    top_up(demo, carol, 5000)

    final, session = charge_and_stop(demo, CAROL)

    # 6 kWh at 0.29 + 0.50 start = 2.24 excl. VAT; 19 % VAT: 2.6656 -> 2.67 incl.
    assert (session.total_excl_minor, session.total_incl_minor) == (224, 267)
    assert final.amount_minor_incl == 267
    assert wallet_row(demo, carol).balance_minor == 5000 - 267 == 4733
    assert balance(demo, Account.wallet(carol)) == 4733
    assert balance(demo, REVENUE) == 224
    assert balance(demo, VAT) == 43
    posted = settlement(demo, session.id)
    assert posted is not None and posted.session_id == session.id
    assert posted.details["payer"] == "wallet"
    assert posted.period == "2026-11"
    assert "wallet_shortfall_minor" not in (session.flags or {})


def test_a_wallet_short_of_the_price_pays_what_it_holds_and_flags_the_rest(demo):
    carol = driver_id(demo, "Carol Casual")
    put_on_plan(demo, carol, plan_id(demo, "Prepaid wallet"))
    top_up(demo, carol, 100)  # 1.00 held, the session costs 2.67

    _, session = charge_and_stop(demo, CAROL)

    assert wallet_row(demo, carol).balance_minor == 0
    assert balance(demo, Account.customer(carol)) == 167
    assert session.flags["wallet_shortfall_minor"] == 167
    # the wallet fell below the plan's 5.00 threshold: top up max(20.00, 5.00 - 0) = 20.00
    with demo.connect() as conn:
        request = conn.execute(select(s.wallet_top_up_requests)).one()
    assert (request.driver_id, request.session_id, request.amount_minor,
            request.balance_minor, request.status) == (carol, session.id, 2000, 0, "pending")


def test_a_wallet_left_above_the_threshold_asks_for_no_top_up(demo):
    carol = driver_id(demo, "Carol Casual")
    put_on_plan(demo, carol, plan_id(demo, "Prepaid wallet"))
    top_up(demo, carol, 767)  # 7.67 - 2.67 = 5.00: not below the 5.00 threshold

    charge_and_stop(demo, CAROL)

    assert wallet_row(demo, carol).balance_minor == 500
    with demo.connect() as conn:
        assert conn.execute(select(func.count()).select_from(
            s.wallet_top_up_requests)).scalar_one() == 0


def test_a_fleet_session_goes_to_the_fleet_receivable(demo):
    _, session = charge_and_stop(demo, BOB)

    assert balance(demo, Account.fleet("ACME Logistics")) == session.total_incl_minor
    assert session.total_incl_minor == BOB_PRICE_INCL_MINOR
    posted = settlement(demo, session.id)
    assert posted is not None and posted.details["payer"] == "fleet"


def test_a_pay_per_use_session_goes_to_the_drivers_receivable(demo):
    carol = driver_id(demo, "Carol Casual")

    _, session = charge_and_stop(demo, CAROL)

    assert balance(demo, Account.customer(carol)) == session.total_incl_minor == 267
    assert balance(demo, REVENUE) == 224


def test_a_replayed_stop_posts_nothing_more(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, _ = await charge(service, ch, token=BOB, start_ms=start, minutes=30)
        stop = StopTransaction(ch, tx, start + 30 * MINUTE_MS, None, "Local", BOB, (),
                               frame("StopTransaction"))
        return [await service.stop_transaction(stop) for _ in range(3)]

    finals = run(demo, body)

    assert [f.amount_minor_incl for f in finals] == [BOB_PRICE_INCL_MINOR] * 3
    with demo.connect() as conn:
        assert conn.execute(select(func.count()).select_from(
            s.ledger_transactions)).scalar_one() == 1
    assert balance(demo, Account.fleet("ACME Logistics")) == BOB_PRICE_INCL_MINOR


def authorize(engine: Engine, token: str) -> str:
    ch = charger(engine, "DEMO-CP16-001")

    async def body(service: ChargingService, sink: ListSink) -> Any:
        return await service.authorize(ch, token)

    return str(run(engine, body))


def test_a_wallet_driver_with_an_empty_wallet_is_blocked_at_start(demo):
    carol = driver_id(demo, "Carol Casual")
    put_on_plan(demo, carol, plan_id(demo, "Prepaid wallet"))

    assert authorize(demo, CAROL) == "Blocked"
    top_up(demo, carol, 1)
    assert authorize(demo, CAROL) == "Accepted"


def test_a_fleet_at_its_credit_limit_is_blocked_at_start(demo):
    assert authorize(demo, BOB) == "Accepted"
    # the demo fleet plan's limit is 2 000.00: owe exactly that
    with write_transaction(demo) as conn:
        op = conn.execute(select(s.operators.c.id)).scalar_one()
        ledger.post(conn, op, ledger.JournalTransaction(
            "adjustment-1", ledger.TransactionKind.SESSION_SETTLEMENT, (
                ledger.Posting(Account.fleet("ACME Logistics"), 199_999, "EUR"),
                ledger.Posting(REVENUE, -199_999, "EUR"))),
            at=dt.datetime.now(dt.UTC), period="2026-11")
    assert authorize(demo, BOB) == "Accepted"  # 0.01 still available

    _, session = charge_and_stop(demo, BOB)  # settles above the limit: flagged, not refused

    assert session.flags["credit_limit_exceeded"] is True
    assert balance(demo, Account.fleet("ACME Logistics")) == 199_999 + BOB_PRICE_INCL_MINOR
    assert authorize(demo, BOB) == "Blocked"
