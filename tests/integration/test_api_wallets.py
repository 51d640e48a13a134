"""Wallet top-ups and views, fleet accounts and statements through the API, on SQLite and
PostgreSQL (docs/api.md, docs/ledger.md): idempotency (R4/R5), limits, problem+json codes,
statements with hand-computed totals and month boundaries in the site's time zone."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, insert, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.domain.ledger import MAX_TOP_UP_MINOR, Account, wallet_top_up
from evbilling.domain.plans import MAX_WALLET_BALANCE_MINOR
from evbilling.services import ledger, wallets
from evbilling.services.catalog import load_plan
from evbilling.services.settlement_posting import post_session


def top_up(caller, driver_id: str, body: dict[str, Any], key: str | None = "key-1"):
    headers = {} if key is None else {"Idempotency-Key": key}
    return caller.post(f"/drivers/{driver_id}/wallet/top-ups", body, headers=headers)


def transactions(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(
            s.ledger_transactions)).scalar_one())


# -- wallets ---------------------------------------------------------------------------------------
def test_a_top_up_credits_the_wallet_and_shows_in_its_movements(operator, admin):
    driver = operator.new("drivers")["id"]

    first = top_up(admin, driver, {"amount_minor": 2000, "reference": "cash desk 4"}, "k1")
    second = top_up(admin, driver, {"amount_minor": 550}, "k2")

    assert first.status_code == 201, first.text
    assert first.json()["balance_minor"] == 2000 and first.json()["amount"] == "20.00"
    assert second.json()["balance_minor"] == 2550
    wallet = admin.get(f"/drivers/{driver}/wallet").json()
    assert (wallet["balance_minor"], wallet["balance"], wallet["currency"]) == (
        2550, "25.50", "EUR")
    assert [(m["kind"], m["amount_minor"], m["balance_minor"], m["reference"])
            for m in wallet["movements"]] == [
        ("wallet_top_up", 550, 2550, None), ("wallet_top_up", 2000, 2000, "cash desk 4")]


def test_a_driver_sees_their_own_wallet_and_not_anothers(operator):
    driver = operator.new("drivers")["id"]
    me = operator.caller("driver", driver_id=driver)
    other = operator.new("drivers")["id"]

    assert me.get(f"/drivers/{driver}/wallet").json()["balance_minor"] == 0
    assert me.get(f"/drivers/{other}/wallet").status_code == 404
    assert top_up(me, driver, {"amount_minor": 100}).status_code == 403


def test_the_wallet_shows_the_plans_auto_top_up(operator, admin):
    driver = operator.new("drivers")["id"]
    plan = admin.create("plans", {"kind": "prepaid_wallet", "name": "Wallet",
                                  "wallet_top_up_threshold_minor": 500,
                                  "wallet_top_up_amount_minor": 2000})
    assert admin.post(f"/drivers/{driver}/plan", {"plan_id": plan["id"],
                                                  "effective": "now"}).status_code == 200

    wallet = admin.get(f"/drivers/{driver}/wallet").json()

    assert wallet["plan_kind"] == "prepaid_wallet"
    assert wallet["auto_top_up"] == {"threshold_minor": 500, "amount_minor": 2000}


def test_a_top_up_without_an_idempotency_key_is_refused(operator, admin, problem):
    driver = operator.new("drivers")["id"]

    problem(top_up(admin, driver, {"amount_minor": 100}, key=None), 400,
            "idempotency_key_missing")
    problem(top_up(admin, driver, {"amount_minor": 100}, key="has space"), 400,
            "invalid_idempotency_key")


def test_a_replayed_top_up_answers_the_first_one_again(operator, admin, engine):
    driver = operator.new("drivers")["id"]

    first = top_up(admin, driver, {"amount_minor": 2000, "reference": "r"})
    again = top_up(admin, driver, {"amount_minor": 2000, "reference": "r"})

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert transactions(engine) == 1
    assert admin.get(f"/drivers/{driver}/wallet").json()["balance_minor"] == 2000


def test_a_key_reused_with_another_body_is_refused(operator, admin, problem):
    driver, other = operator.new("drivers")["id"], operator.new("drivers")["id"]
    top_up(admin, driver, {"amount_minor": 2000})

    problem(top_up(admin, driver, {"amount_minor": 2001}), 422, "idempotency_key_reused")
    problem(top_up(admin, other, {"amount_minor": 2000}), 422, "idempotency_key_reused")
    assert admin.get(f"/drivers/{other}/wallet").json()["balance_minor"] == 0


def test_concurrent_identical_top_ups_have_one_effect(operator, admin, engine):
    driver = operator.new("drivers")["id"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: top_up(admin, driver, {"amount_minor": 700}),
                                range(50)))  # R4: 50 identical requests

    assert sorted({a.status_code for a in answers}) == [201]
    assert len({a.json()["transaction_id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert transactions(engine) == 1
    assert admin.get(f"/drivers/{driver}/wallet").json()["balance_minor"] == 700


def fill_wallet(engine, operator_id: str, driver_id: str, amount_minor: int) -> None:
    """Fill a wallet the way a top-up does, without the per-request limit."""
    at = dt.datetime.now(dt.UTC)
    with write_transaction(engine) as conn:
        wallets.lock_wallet(conn, operator_id, driver_id, at)
        ledger.post(conn, operator_id, wallet_top_up(
            idempotency_key=new_id("fill"), driver_id=driver_id, amount_minor=amount_minor,
            currency="EUR", reference=None), at=at, period="2026-11")


def test_top_ups_are_limited_per_request_and_per_wallet(operator, admin, engine, problem):
    driver = operator.new("drivers")["id"]
    problem(top_up(admin, driver, {"amount_minor": MAX_TOP_UP_MINOR + 1}), 422,
            "validation_error")
    problem(top_up(admin, driver, {"amount_minor": 0}), 422, "validation_error")
    problem(top_up(admin, driver, {"amount_minor": 1, "extra": 1}), 422, "validation_error")
    fill_wallet(engine, operator.operator_id, driver, MAX_WALLET_BALANCE_MINOR - 100)

    refused = top_up(admin, driver, {"amount_minor": 101}, key="over")
    fits = top_up(admin, driver, {"amount_minor": 100}, key="fits")
    assert admin.get(f"/drivers/{driver}/wallet").json()["balance_minor"] == \
        MAX_WALLET_BALANCE_MINOR

    problem(refused, 409, "wallet_limit_exceeded")
    assert fits.status_code == 201 and fits.json()["balance_minor"] == MAX_WALLET_BALANCE_MINOR


def test_a_successful_top_up_retried_after_the_wallet_filled_still_succeeds(
        operator, admin, engine):
    driver = operator.new("drivers")["id"]
    first = top_up(admin, driver, {"amount_minor": 100}, key="early")
    fill_wallet(engine, operator.operator_id, driver, MAX_WALLET_BALANCE_MINOR - 100)

    retry = top_up(admin, driver, {"amount_minor": 100}, key="early")

    assert retry.status_code == 201 and retry.json() == first.json()


def test_an_unknown_driver_has_no_wallet(admin, other_operator, operator, problem):
    driver = operator.new("drivers")["id"]

    problem(admin.get("/drivers/drv_missing/wallet"), 404, "not_found")
    problem(top_up(other_operator.admin, driver, {"amount_minor": 100}), 404, "not_found")


# -- fleet accounts and statements -----------------------------------------------------------------
def fleet_session(engine, operator_id: str, *, driver_id: str, site_id: str, plan_id: str,
                  ended_at: dt.datetime, excl_minor: int, incl_minor: int,
                  energy_milliwh: int) -> str:
    """A completed session settled onto the ledger as the charging service does it."""
    session_id = new_id("cs")
    with write_transaction(engine) as conn:
        conn.execute(insert(s.charging_sessions).values(
            id=session_id, operator_id=operator_id, driver_id=driver_id, site_id=site_id,
            started_at=ended_at - dt.timedelta(hours=1), ended_at=ended_at,
            energy_milliwh=energy_milliwh, periods=[], currency="EUR", status="completed",
            total_excl_minor=excl_minor, total_incl_minor=incl_minor, created_at=ended_at))
        post_session(conn, operator_id=operator_id, session_id=session_id, driver_id=driver_id,
                     plan=load_plan(conn, operator_id, plan_id), currency="EUR",
                     total_excl_minor=excl_minor, total_incl_minor=incl_minor,
                     ended_at=ended_at, time_zone="Europe/Berlin", at=ended_at)
    return session_id


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_a_fleet_statement_is_the_months_sessions_from_the_ledger(operator, admin, engine):
    site = operator.new("sites")["id"]  # Europe/Berlin
    plan = admin.create("plans", {"kind": "fleet", "name": "Fleet",
                                  "credit_limit_minor": 10_000})
    drivers = [operator.new("drivers", fleet_account="ACME Logistics")["id"] for _ in (1, 2)]
    for d in drivers:
        assert admin.post(f"/drivers/{d}/plan", {"plan_id": plan["id"],
                                                 "effective": "now"}).status_code == 200
    op = operator.operator_id

    def session(driver: str, ended_at: dt.datetime, excl: int, incl: int, wh: int) -> str:
        return fleet_session(engine, op, driver_id=driver, site_id=site, plan_id=plan["id"],
                             ended_at=ended_at, excl_minor=excl, incl_minor=incl,
                             energy_milliwh=wh * 1000)

    session(drivers[0], utc(2026, 10, 15, 12), 1000, 1190, 20_000)  # October: opening
    # 31 Oct 23:30 UTC is 1 Nov 00:30 in Berlin: November
    first = session(drivers[0], utc(2026, 10, 31, 23, 30), 2000, 2380, 40_000)
    second = session(drivers[1], utc(2026, 11, 30, 22, 59), 500, 595, 10_500)  # 23:59 local
    session(drivers[1], utc(2026, 11, 30, 23, 0), 700, 833, 14_000)  # 1 Dec 00:00 local

    response = admin.get("/fleet-accounts/ACME Logistics/statements/2026-11")

    assert response.status_code == 200, response.text
    st = response.json()
    assert [x["session_id"] for x in st["sessions"]] == [first, second]
    assert [(x["price_excl_vat_minor"], x["vat_minor"], x["price_incl_vat_minor"],
             x["energy_kwh"]) for x in st["sessions"]] == [
        (2000, 380, 2380, "40"), (500, 95, 595, "10.5")]
    assert st["sessions"][1]["driver_id"] == drivers[1]
    assert st["sessions"][1]["site_id"] == site
    # 2380 + 595 = 2975; 2000 + 500 = 2500 excl.; 380 + 95 = 475 VAT; 40 + 10.5 kWh
    assert st["totals"] == {"sessions": 2, "energy_kwh": "50.5", "price_excl_vat_minor": 2500,
                            "vat_minor": 475, "price_incl_vat_minor": 2975,
                            "adjustments_minor": 0}
    # opening: October's 11.90; closing 11.90 + 29.75 = 41.65 (December's 8.33 is not in it)
    assert (st["opening_balance_minor"], st["closing_balance_minor"]) == (1190, 4165)
    # outstanding now 41.65 + 8.33 = 49.98 of 100.00: 50.02 available
    assert (st["credit_limit_minor"], st["available_credit_minor"]) == (10_000, 5002)
    assert st["account"]["outstanding_minor"] == 4998

    listed = admin.get("/fleet-accounts").json()["data"]
    assert [(a["name"], a["drivers"], a["outstanding_minor"], a["credit_limit_minor"],
             a["available_credit_minor"]) for a in listed] == [
        ("ACME Logistics", 2, 4998, 10_000, 5002)]


def test_a_statement_of_a_quiet_month_has_only_balances(operator, admin, engine):
    operator.new("drivers", fleet_account="Quiet Co")

    st = admin.get("/fleet-accounts/Quiet Co/statements/2026-02").json()

    assert (st["sessions"], st["opening_balance_minor"], st["closing_balance_minor"]) == (
        [], 0, 0)
    assert st["credit_limit_minor"] is None and st["available_credit_minor"] is None


def test_statements_of_unknown_accounts_or_bad_months_are_refused(operator, admin, problem):
    operator.new("drivers", fleet_account="ACME")

    problem(admin.get("/fleet-accounts/Nobody/statements/2026-11"), 404, "not_found")
    problem(admin.get("/fleet-accounts/ACME/statements/2026-13"), 422, "validation_error")
    problem(admin.get("/fleet-accounts/ACME/statements/26-11"), 422, "validation_error")


def test_a_fleet_account_at_its_credit_limit_has_no_credit_available(operator, admin, engine):
    site = operator.new("sites")["id"]
    plan = admin.create("plans", {"kind": "fleet", "name": "Fleet", "credit_limit_minor": 1000})
    driver = operator.new("drivers", fleet_account="Tight")["id"]
    admin.post(f"/drivers/{driver}/plan", {"plan_id": plan["id"], "effective": "now"})
    fleet_session(engine, operator.operator_id, driver_id=driver, site_id=site,
                  plan_id=plan["id"], ended_at=utc(2026, 11, 2, 10), excl_minor=1000,
                  incl_minor=1190, energy_milliwh=1_000_000)

    account = admin.get("/fleet-accounts").json()["data"][0]

    assert (account["outstanding_minor"], account["available_credit_minor"]) == (1190, 0)
    with engine.connect() as conn:
        flags = conn.execute(select(s.ledger_transactions.c.details)).scalar_one()
    assert flags["credit_limit_exceeded"] is True
    assert Account.fleet("Tight").code == "fleet_receivable:Tight"


def test_a_refused_top_up_stays_refused_when_retried_with_its_key(operator, admin, engine,
                                                                  problem):
    driver = operator.new("drivers")["id"]
    fill_wallet(engine, operator.operator_id, driver, MAX_WALLET_BALANCE_MINOR - 100)
    problem(top_up(admin, driver, {"amount_minor": 500}, key="too-much"), 409,
            "wallet_limit_exceeded")
    # make room: the fill is reversed (a correction, never an edit)
    with write_transaction(engine) as conn:
        fill_key = conn.execute(select(s.ledger_transactions.c.idempotency_key)).scalar_one()
        wallets.lock_wallet(conn, operator.operator_id, driver, dt.datetime.now(dt.UTC))
        ledger.post_reversal(conn, operator.operator_id, fill_key,
                             at=dt.datetime.now(dt.UTC), period="2026-11")

    retry = top_up(admin, driver, {"amount_minor": 500}, key="too-much")
    other_body = top_up(admin, driver, {"amount_minor": 400}, key="too-much")
    new_key = top_up(admin, driver, {"amount_minor": 500}, key="second-attempt")

    problem(retry, 409, "wallet_limit_exceeded")  # the first outcome, although it fits now
    problem(other_body, 422, "idempotency_key_reused")
    assert new_key.status_code == 201 and new_key.json()["balance_minor"] == 500
    with engine.connect() as conn:
        audited = conn.execute(select(s.audit_log.c.outcome).where(
            s.audit_log.c.action == "wallets.top_up").order_by(s.audit_log.c.seq)).scalars()
        assert list(audited) == ["failure", "failure", "failure", "success"]
