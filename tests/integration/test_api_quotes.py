"""POST /api/v1/quotes and POST /api/v1/plan-advisor through the API, on SQLite and PostgreSQL.

Every expected amount is worked out by hand in a comment. Tariffs use 20 % VAT, so
incl. = 1.2 x excl., each line rounded once (half up). Drivers live in Europe/Berlin.

* public (pay as you go): 1.00 a session, 0.50 /kWh, idle 6.00 /h
* member (subscription): 0.50 a session (waived), 0.30 /kWh, charging time 1.20 /h
* fallback (flat rate above the cap): 1.00 a session (waived), 0.40 /kWh, idle 6.00 /h
* plans: subscription 9.99 + 20 % a month with 100 kWh; flat rate 49.99 + 20 % with a 300 kWh
  fair-use cap; pay as you go.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from evbilling.domain.periods import ChargingPeriod, SessionFacts, epoch_ms
from evbilling.entrypoints.api.auth import cached_principal, forget_all_tokens
from evbilling.entrypoints.api.limits import promo_limiter
from evbilling.services.catalog import store_session
from evbilling.services.catalog_cache import CatalogCache, ReadConnection
from evbilling.services.catalog_generation import GenerationReader, catalog_generation
from evbilling.services.quotes import QuoteRequest
from evbilling.services.quotes import quote as quote_service

BERLIN = "Europe/Berlin"
KWH = 1_000_000
MINUTE = 60_000


def component(kind: str, price: str) -> dict[str, Any]:
    return {"type": kind, "price": price, "vat": "20", "step_size": 1}


def tariff_document(*components: dict[str, Any]) -> dict[str, Any]:
    return {"country_code": "DE", "party_id": "EVB", "id": "t", "currency": "EUR",
            "elements": [{"price_components": list(components)}]}


PUBLIC = tariff_document(component("FLAT", "1.00"), component("ENERGY", "0.50"),
                         component("PARKING_TIME", "6.00"))
MEMBER = tariff_document(component("FLAT", "0.50"), component("ENERGY", "0.30"),
                         component("TIME", "1.20"))
FALLBACK = tariff_document(component("FLAT", "1.00"), component("ENERGY", "0.40"),
                           component("PARKING_TIME", "6.00"))


@dataclass(frozen=True)
class Setup:
    operator: Any  # Tenant
    site_id: str
    payg: str
    subscription: str
    flat_rate: str

    def driver(self) -> str:
        return str(self.operator.new("drivers", time_zone=BERLIN)["id"])


@pytest.fixture(autouse=True)
def fresh_promo_limiter():
    """Wrong codes of other tests (same client address) must not lock this one."""
    promo_limiter.reset()
    yield
    promo_limiter.reset()


@pytest.fixture
def setup(operator) -> Setup:
    site = operator.new("sites", time_zone=BERLIN, vat_percent="20.00")
    public = operator.new("tariffs", document=PUBLIC)
    member = operator.new("tariffs", document=MEMBER)
    fallback = operator.new("tariffs", document=FALLBACK)
    operator.new("tariff-assignments", tariff_id=public["id"], site_id=site["id"])
    admin = operator.admin
    payg = admin.create("plans", {"kind": "pay_per_use", "name": "Pay as you go"})
    subscription = admin.create("plans", {
        "kind": "subscription", "name": "Member", "fee_minor": 999, "fee_vat_percent": "20",
        "included_energy_kwh": "100", "member_tariff_id": member["id"]})
    flat_rate = admin.create("plans", {
        "kind": "flat_rate", "name": "Flat", "fee_minor": 4999, "fee_vat_percent": "20",
        "fair_use_cap_kwh": "300", "fallback_tariff_id": fallback["id"]})
    return Setup(operator, site["id"], payg["id"], subscription["id"], flat_rate["id"])


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def store(engine, setup: Setup, driver_id: str, start: str, kwh: str, minutes: int,
          idle_minutes: int = 0) -> None:
    """A finished session in charging_sessions: one charging period, then idle time."""
    begin = epoch_ms(utc(start))
    periods = [ChargingPeriod(begin, energy_milliwh=int(Decimal(kwh) * KWH),
                              time_ms=minutes * MINUTE)]
    if idle_minutes:
        periods.append(ChargingPeriod(begin + minutes * MINUTE, parking_ms=idle_minutes * MINUTE))
    end = begin + (minutes + idle_minutes) * MINUTE
    with engine.begin() as conn:
        store_session(conn, operator_id=setup.operator.operator_id, site_id=setup.site_id,
                      driver_id=driver_id, plan_id=None, currency="EUR",
                      facts=SessionFacts(tuple(periods), BERLIN, begin, end), at=utc(start))


def put_on_plan(app, monkeypatch, setup: Setup, driver_id: str, plan_id: str, at: str) -> None:
    monkeypatch.setattr(app.state, "clock", lambda: utc(at), raising=False)
    response = setup.operator.admin.post(f"/drivers/{driver_id}/plan",
                                         {"plan_id": plan_id, "effective": "now"})
    assert response.status_code == 200, response.text
    monkeypatch.delattr(app.state, "clock")


def quote(caller, setup: Setup, **fields: Any) -> dict[str, Any]:
    body = {"site_id": setup.site_id, **fields}
    response = caller.post("/quotes", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def cents(result: dict[str, Any]) -> tuple[int, int]:
    return result["total"]["excl_vat_minor"], result["total"]["incl_vat_minor"]


def lines(result: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(code, excl cents, incl cents) per line."""
    return [(line["code"], line["amount_excl_vat_minor"], line["amount_incl_vat_minor"])
            for line in result["lines"]]


# -- plan coverage --------------------------------------------------------------------------------
def test_a_subscription_allowance_that_runs_out_mid_session_is_split_by_energy(
        app, engine, monkeypatch, setup):
    driver = setup.driver()
    put_on_plan(app, monkeypatch, setup, driver, setup.subscription, "2025-01-31T23:00:00")
    # February (Berlin): 50 + 42.3 = 92.3 kWh used of 100, so 7.7 kWh are left.
    store(engine, setup, driver, "2025-02-03T08:00:00", "50", 120)
    store(engine, setup, driver, "2025-02-10T08:00:00", "42.3", 90)
    # A January session does not count against February's allowance.
    store(engine, setup, driver, "2025-01-20T08:00:00", "30", 60)

    result = quote(setup.operator.admin, setup, driver_id=driver,
                   start_at="2025-02-20T10:00:00Z", energy_kwh="20", charging_minutes="90")

    # One period: 20 kWh in 90 min (5 400 000 ms) at the member tariff. The 7.7 kWh left cover
    # the first 7.7 of 20 kWh, and the same share of the charging time:
    #   covered time 5 400 000 x 7.7 / 20 = 2 079 000 ms, charged 3 321 000 ms = 0.9225 h
    #   energy 12.3 kWh x 0.30 = 3.69 excl, x 1.2 = 4.428 -> 4.43 incl
    #   time 0.9225 h x 1.20 = 1.107 -> 1.11 excl, 1.3284 -> 1.33 incl
    #   session fee 0.50 waived; total 4.80 / 5.76
    assert (result["plan"]["id"], result["tariff"]["role"]) == (setup.subscription, "member")
    assert lines(result) == [("energy", 369, 443), ("charging_time", 111, 133),
                             ("included_energy", 0, 0), ("covered_charging_time", 0, 0),
                             ("session_fee_waived", 0, 0)]
    assert [line["quantity"] for line in result["lines"]] == [
        12_300_000, 3_321_000, 7_700_000, 2_079_000, 1]
    assert cents(result) == (480, 576)
    assert result["total"] == {"excl_vat_minor": 480, "incl_vat_minor": 576,
                               "excl_vat": "4.80", "incl_vat": "5.76"}
    usage = result["plan_usage"]
    assert (usage["before"]["energy_used_kwh"], usage["before"]["energy_remaining_kwh"],
            usage["after"]["energy_used_kwh"], usage["energy_covered_kwh"]) == (
        "92.3", "7.7", "112.3", "7.7")
    assert result["vat_summary"] == [{
        "vat_percent": "20", "excl_vat_minor": 480, "incl_vat_minor": 576, "excl_vat": "4.80",
        "incl_vat": "5.76", "vat_minor": 96, "vat": "0.96"}]
    # The rating under the member tariff before coverage, at full precision (OCPI totals):
    # 20 x 0.30 + 1.5 h x 1.20 + 0.50 = 8.30 excl.
    assert result["rated"]["total_cost"]["excl_vat"] == "8.300000000000"


def test_a_plan_the_driver_is_not_on_is_quoted_with_a_fresh_allowance(setup):
    driver = setup.driver()

    result = quote(setup.operator.admin, setup, driver_id=driver, plan_id=setup.subscription,
                   start_at="2025-02-20T10:00:00Z", energy_kwh="20", charging_minutes="90")

    # 20 kWh of a full 100 kWh allowance: energy and charging time covered, fee waived.
    assert cents(result) == (0, 0)
    assert result["plan_usage"]["before"]["energy_allowance_kwh"] == "100"


def test_a_flat_rate_fair_use_cap_crossing_charges_only_the_energy_above_the_cap(
        app, engine, monkeypatch, setup):
    driver = setup.driver()
    put_on_plan(app, monkeypatch, setup, driver, setup.flat_rate, "2025-02-28T23:00:00")
    for day in ("03", "10", "17", "24"):  # 4 x 74 = 296 kWh of the 300 kWh cap in March
        store(engine, setup, driver, f"2025-03-{day}T08:00:00", "74", 120)

    result = quote(setup.operator.admin, setup, driver_id=driver,
                   start_at="2025-03-28T09:00:00Z", energy_kwh="6", charging_minutes="60",
                   idle_minutes="10")

    # 6 kWh, of which the cap covers 4: 2 kWh x 0.40 = 0.80 excl, 0.96 incl.
    # 10 idle minutes are never covered: 1/6 h x 6.00 = 1.00 excl, 1.20 incl.
    # The 1.00 session fee is waived. Total 1.80 / 2.16.
    assert lines(result) == [("energy", 80, 96), ("idle_time", 100, 120),
                             ("fair_use_energy", 0, 0), ("session_fee_waived", 0, 0)]
    assert result["lines"][2]["description"] == "Energy within the fair-use cap 4.000 kWh"
    assert cents(result) == (180, 216)
    assert result["plan_usage"]["after"]["energy_used_kwh"] == "302"


# -- promotions and loyalty -----------------------------------------------------------------------
def promotion(setup: Setup, **fields: Any) -> dict[str, Any]:
    body = {"starts_at": "2025-01-01T00:00:00Z", **fields}
    created: dict[str, Any] = setup.operator.admin.create("promotions", body)
    return created


#: 20 kWh in 60 min, then 30 idle minutes, at list prices (a driver without a plan):
#: energy 20 x 0.50 = 10.00 / 12.00, idle 0.5 h x 6.00 = 3.00 / 3.60, fee 1.00 / 1.20;
#: total 14.00 / 16.80.
SESSION = {"start_at": "2025-06-10T10:00:00Z", "energy_kwh": "20", "charging_minutes": "60",
           "idle_minutes": "30"}


def test_a_code_and_an_automatic_promotion_stack_in_priority_order(setup):
    driver = setup.driver()
    spring = promotion(setup, name="Spring", priority=1,
                       benefit={"kind": "percent_off_energy", "percent": "10"})
    welcome = promotion(setup, name="Welcome", code="welcome", priority=2, first_n_sessions=1,
                        benefit={"kind": "amount_off_session", "amount_minor": 200})

    result = quote(setup.operator.admin, setup, driver_id=driver, promo_code="Welcome ",
                   **SESSION)

    # Spring: 10 % of 12.00 = 1.20 incl; excl 1.20 / 1.2 = 1.00.
    # Welcome applies to what is left: 2.00 over energy 10.80, idle 3.60, fee 1.20:
    #   allocate(200, [1080, 360, 120]) = 138.46 / 46.15 / 15.38 -> 139 + 46 + 15
    #   excl: 139 / 1.2 = 115.83 -> 116; 46 / 1.2 = 38.33 -> 38; 15 / 1.2 = 12.5 -> 13 = 1.67
    # Total 16.80 - 1.20 - 2.00 = 13.60 incl; 14.00 - 1.00 - 1.67 = 11.33 excl.
    assert lines(result)[-2:] == [("promotion", -100, -120), ("promotion", -167, -200)]
    assert [line["source_id"] for line in result["lines"][-2:]] == [spring["id"],
                                                                    welcome["id"]]
    assert result["lines"][-1]["description"] == "Welcome (WELCOME): 2.00 EUR off the session"
    assert cents(result) == (1133, 1360)
    assert [(a["promotion_id"], a["discount_incl_vat_minor"])
            for a in result["applied_promotions"]] == [(spring["id"], 120), (welcome["id"], 200)]
    assert result["refused_promotions"] == []


def test_an_exclusive_promotion_worth_more_wins_alone_and_the_others_say_why(setup):
    driver = setup.driver()
    spring = promotion(setup, name="Spring", priority=1,
                       benefit={"kind": "percent_off_energy", "percent": "10"})
    welcome = promotion(setup, name="Welcome", code="WELCOME", priority=2,
                        benefit={"kind": "amount_off_session", "amount_minor": 200})
    half = promotion(setup, name="Half energy", priority=3, stacking="exclusive",
                     benefit={"kind": "percent_off_energy", "percent": "50"})
    promotion(setup, name="Amsterdam only", scope={"site_ids": [
        setup.operator.new("sites")["id"]]}, benefit={"kind": "free_idle_time",
                                                      "free_idle_minutes": 30})

    result = quote(setup.operator.admin, setup, driver_id=driver, promo_code="WELCOME",
                   **SESSION)

    # The stack is worth 1.20 + 2.00 = 3.20; the exclusive 50 % of 12.00 = 6.00 (excl 5.00).
    # Total 16.80 - 6.00 = 10.80 incl, 14.00 - 5.00 = 9.00 excl.
    assert cents(result) == (900, 1080)
    assert [a["promotion_id"] for a in result["applied_promotions"]] == [half["id"]]
    refused = {r["promotion_id"]: r["reason"] for r in result["refused_promotions"]}
    assert refused[spring["id"]] == refused[welcome["id"]] == "not_best_offer"
    assert "not_in_scope" in refused.values()


def test_a_known_code_that_does_not_apply_is_priced_without_it_and_says_why(setup):
    driver = setup.driver()
    first = promotion(setup, name="First charge", code="FIRST", first_n_sessions=1,
                            benefit={"kind": "percent_off_energy", "percent": "50"})
    expired = promotion(setup, name="Old", code="OLD", ends_at="2025-02-01T00:00:00Z",
                        benefit={"kind": "percent_off_energy", "percent": "50"})

    with_expired = quote(setup.operator.admin, setup, driver_id=driver, promo_code="old",
                         **SESSION)

    assert cents(with_expired) == (1400, 1680)
    assert with_expired["refused_promotions"] == [{
        "promotion_id": expired["id"], "reason": "promotion_expired",
        "detail": "the promotion ended at 2025-02-01T00:00:00+00:00"}]
    assert first["id"] not in str(with_expired["refused_promotions"])


def test_the_loyalty_tier_follows_the_rolling_90_day_energy(engine, setup):
    admin = setup.operator.admin
    admin.create("loyalty-tiers", {"name": "Silver", "min_energy_kwh": "40", "benefit": {
        "kind": "percent_off_energy", "percent": "5"}})
    admin.create("loyalty-tiers", {"name": "Gold", "min_energy_kwh": "100", "benefit": {
        "kind": "percent_off_energy", "percent": "10"}})
    driver = setup.driver()
    store(engine, setup, driver, "2025-03-22T10:00:00", "60", 120)  # 80 days before 10 June
    store(engine, setup, driver, "2025-05-31T10:00:00", "45", 90)  # 10 days before

    gold = quote(admin, setup, driver_id=driver, **SESSION)
    later = {**SESSION, "start_at": "2025-06-25T10:00:00Z"}  # the 60 kWh are 95 days old
    silver = quote(admin, setup, driver_id=driver, **later)
    store(engine, setup, driver, "2025-06-24T10:00:00", "60", 120)  # the day before
    gold_again = quote(admin, setup, driver_id=driver, **later)

    # 60 + 45 = 105 kWh in the last 90 days: Gold, 10 % of 12.00 energy = 1.20 incl, 1.00 excl:
    # 16.80 - 1.20 = 15.60 incl, 14.00 - 1.00 = 13.00 excl.
    assert gold["loyalty"] == {"tier": "Gold", "energy_kwh": "105", "window_days": 90}
    assert lines(gold)[-1] == ("loyalty", -100, -120)
    assert gold["lines"][-1]["description"] == "Loyalty Gold: 10% off energy"
    assert cents(gold) == (1300, 1560)
    # 15 days later only the 45 kWh are in the window: Silver, 5 % = 0.60 incl, 0.50 excl.
    assert silver["loyalty"]["tier"] == "Silver" and silver["loyalty"]["energy_kwh"] == "45"
    assert cents(silver) == (1350, 1620)
    # Another 60 kWh the day before: 105 kWh, Gold again.
    assert gold_again["loyalty"]["tier"] == "Gold"
    assert cents(gold_again) == (1300, 1560)


def test_a_quote_without_a_driver_has_no_loyalty_and_no_plan(setup):
    result = quote(setup.operator.admin, setup, **SESSION)

    assert (result["driver_id"], result["plan"], result["loyalty"]) == (None, None, None)
    assert cents(result) == (1400, 1680)
    assert lines(result) == [("energy", 1000, 1200), ("idle_time", 300, 360),
                             ("session_fee", 100, 120)]


# -- who may quote, brute force, bad bodies -------------------------------------------------------
def test_a_driver_quotes_for_themselves_and_not_for_another_driver(setup, problem):
    me = setup.driver()
    other = setup.driver()
    driver = setup.operator.caller("driver", driver_id=me)

    mine = quote(driver, setup, **SESSION)
    refused = driver.post("/quotes", {"site_id": setup.site_id, "driver_id": other,
                                      **SESSION})

    assert mine["driver_id"] == me
    assert problem(refused, 403, "forbidden")["field"] == "driver_id"


def test_staff_cannot_quote_for_a_driver_of_another_operator(setup, other_operator, problem):
    stranger = other_operator.new("drivers")["id"]

    response = setup.operator.admin.post("/quotes", {"site_id": setup.site_id,
                                                     "driver_id": stranger, **SESSION})

    problem(response, 404, "not_found")


def test_guessing_promo_codes_is_429_after_five_wrong_ones(setup, problem):
    promotion(setup, name="Welcome", code="WELCOME10",
              benefit={"kind": "percent_off_energy", "percent": "10"})
    driver = setup.operator.caller("driver", driver_id=setup.driver())

    wrong = [driver.post("/quotes", {"site_id": setup.site_id, "promo_code": f"GUESS{n}",
                                     **SESSION}) for n in range(5)]
    locked = driver.post("/quotes", {"site_id": setup.site_id, "promo_code": "WELCOME10",
                                     **SESSION})
    without_code = driver.post("/quotes", {"site_id": setup.site_id, **SESSION})

    for response in wrong:
        assert problem(response, 422, "unknown_promo_code")["field"] == "promo_code"
    problem(locked, 429, "rate_limited")
    assert int(locked.headers["Retry-After"]) > 0
    assert without_code.status_code == 200, without_code.text


def test_wrong_codes_are_also_counted_per_client_address(setup, problem):
    first = setup.operator.caller("driver", driver_id=setup.driver())
    second = setup.operator.caller("driver", driver_id=setup.driver())
    for n in range(5):
        first.post("/quotes", {"site_id": setup.site_id, "promo_code": f"GUESS{n}", **SESSION})

    response = second.post("/quotes", {"site_id": setup.site_id, "promo_code": "OTHER",
                                       **SESSION})

    problem(response, 429, "rate_limited")


def test_a_quote_body_with_an_unknown_field_is_rejected(setup, problem):
    response = setup.operator.admin.post("/quotes", {"site_id": setup.site_id,
                                                     "discount_percent": "100", **SESSION})

    body = problem(response, 422, "validation_error")
    assert body["errors"][0]["field"] == "discount_percent"


# -- plan advisor ---------------------------------------------------------------------------------
def advice(caller, body: dict[str, Any]) -> dict[str, Any]:
    response = caller.post("/plan-advisor", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def totals(result: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(p["plan_id"], p["total_excl_vat_minor"], p["total_incl_vat_minor"])
            for p in result["plans"]]


def test_the_advisor_prices_the_last_90_days_under_every_plan_cheapest_first(
        app, engine, monkeypatch, setup):
    driver = setup.driver()
    put_on_plan(app, monkeypatch, setup, driver, setup.payg, "2024-02-01T10:00:00")
    for day in ("06", "13", "20"):  # three 40 kWh / 60 min sessions in May 2024
        store(engine, setup, driver, f"2024-05-{day}T16:00:00", "40", 60)
    store(engine, setup, driver, "2024-02-20T16:00:00", "40", 60)  # before the window

    result = advice(setup.operator.admin, {"driver_id": driver,
                                           "as_of": "2024-05-31T22:00:00Z"})

    # The window: 3 March - 31 May (Berlin), 90 days. March has 29 of its 31 days in it, so
    # fees and allowances are allocate(x, [29, 2])[0]; April and May are whole.
    # Subscription: fees 935 (allocate(999, [29, 2])) + 999 + 999 = 29.33 excl;
    #   incl 935 x 1.2 = 11.22, 999 x 1.2 = 11.988 -> 11.99 twice: 35.20.
    #   May's 100 kWh cover sessions 1, 2 and half of 3: 20 kWh x 0.30 = 6.00 (7.20) and
    #   30 of its 60 min x 1.20/h = 0.60 (0.72): 6.60 (7.92). Total 35.93 / 43.12.
    # Pay as you go: 3 x (40 x 0.50 + 1.00) = 63.00 excl, 3 x (24.00 + 1.20) = 75.60 incl.
    # Flat rate: fees only (120 kWh < 300): allocate(4999, [29, 2])[0] = 4676, + 4999 x 2
    #   = 146.74 excl; incl 4676 x 1.2 = 56.112 -> 56.11, 4999 x 1.2 = 59.988 -> 59.99 twice:
    #   176.09.
    assert totals(result) == [(setup.subscription, 3593, 4312), (setup.payg, 6300, 7560),
                              (setup.flat_rate, 14674, 17609)]
    assert (result["sessions"], result["source"], result["site_id"]) == (3, "history",
                                                                         setup.site_id)
    assert (result["window_start_at"], result["window_end_at"]) == (
        "2024-03-02T23:00:00Z", "2024-05-31T22:00:00Z")
    assert [p["current"] for p in result["plans"]] == [False, True, False]
    subscription = result["plans"][0]
    assert [(p["days_in_window"], p["fee_excl_vat_minor"], p["energy_allowance_kwh"])
            for p in subscription["periods"]] == [(29, 935, "93.548387"), (30, 999, "100"),
                                                  (31, 999, "100")]
    breakdown = {b["code"]: (b["amount_excl_vat_minor"], b["amount_incl_vat_minor"])
                 for b in subscription["breakdown"]}
    assert breakdown["plan_fee"] == (2933, 3520)
    assert breakdown["energy"] == (600, 720) and breakdown["charging_time"] == (60, 72)


def test_the_advisor_prices_a_typed_usage_profile(setup):
    result = advice(setup.operator.admin, {"site_id": setup.site_id, "usage_profile": {
        "energy_kwh_per_month": "200", "sessions_per_month": 8, "charging_minutes_avg": 45,
        "idle_minutes_avg": 15, "start_hour_local": 18, "month": "2024-05-01",
        "time_zone": BERLIN}})

    # 8 sessions of 25 kWh, 45 min charging + 15 min idle, in May 2024 (the whole month):
    # Subscription: fee 9.99 (11.99); 100 kWh cover 4 sessions; 4 x (25 x 0.30 + 0.75 h x
    #   1.20) = 4 x 8.40 = 33.60 (4 x 10.08 = 40.32); the member tariff has no idle price.
    #   43.59 / 52.31.
    # Flat rate: fee 49.99 (59.99); energy within the cap; idle is never covered:
    #   8 x 0.25 h x 6.00 = 12.00 (14.40). 61.99 / 74.39.
    # Pay as you go: 8 x (12.50 + 1.50 + 1.00) = 120.00 / 144.00.
    assert totals(result) == [(setup.subscription, 4359, 5231), (setup.flat_rate, 6199, 7439),
                              (setup.payg, 12000, 14400)]
    assert (result["sessions"], result["source"]) == (8, "usage_profile")


def test_a_driver_asks_the_advisor_about_themselves_only(setup, problem):
    me = setup.driver()
    driver = setup.operator.caller("driver", driver_id=me)

    mine = advice(driver, {"as_of": "2024-05-31T22:00:00Z"})
    other = driver.post("/plan-advisor", {"driver_id": setup.driver()})

    assert mine["driver_id"] == me and mine["sessions"] == 0
    # No sessions: fees only, pay as you go first.
    assert [p["plan_id"] for p in mine["plans"]][0] == setup.payg
    problem(other, 403, "forbidden")


def test_the_advisor_needs_a_driver_or_a_profile(setup, problem):
    response = setup.operator.admin.post("/plan-advisor", {"site_id": setup.site_id})

    assert problem(response, 422, "validation_error")["field"] == "driver_id"


# -- the catalog snapshot: a write is seen by the very next quote ---------------------------------
# Quotes read the catalog from a per-process snapshot checked against the operator's catalog
# generation (services/catalog_cache.py). The API does not tell the cache about writes: each
# test below would fail if a write did not bump the generation in its transaction, on this node
# exactly as on another.
def test_a_corrected_tariff_version_prices_the_next_quote(setup):
    admin = setup.operator.admin
    before = quote(admin, setup, **SESSION)
    public_id = before["tariff"]["id"]
    dearer = tariff_document(component("FLAT", "1.00"), component("ENERGY", "0.60"),
                             component("PARKING_TIME", "6.00"))
    response = admin.put(f"/tariffs/{public_id}/versions/1", {"document": dearer})
    assert response.status_code == 200, response.text

    after = quote(admin, setup, **SESSION)

    # energy 20 x 0.60 = 12.00 / 14.40, idle 3.00 / 3.60, fee 1.00 / 1.20
    assert cents(before) == (1400, 1680)
    assert cents(after) == (1600, 1920)


def test_a_new_tariff_assignment_prices_the_next_quote(setup):
    admin = setup.operator.admin
    quote(admin, setup, **SESSION)
    cheap = setup.operator.new("tariffs", document=tariff_document(component("ENERGY", "0.10")))
    setup.operator.new("tariff-assignments", tariff_id=cheap["id"], site_id=setup.site_id,
                       valid_from="2025-06-01T00:00:00Z")

    after = quote(admin, setup, **SESSION)

    # the later valid_from wins: 20 kWh x 0.10 = 2.00 / 2.40, nothing else
    assert after["tariff"]["id"] == cheap["id"]
    assert cents(after) == (200, 240)


def test_a_promotion_switched_off_is_gone_from_the_next_quote(setup):
    admin = setup.operator.admin
    spring = promotion(setup, name="Spring", benefit={"kind": "percent_off_energy",
                                                      "percent": "10"})
    with_it = quote(admin, setup, **SESSION)
    response = admin.patch(f"/promotions/{spring['id']}", {"active": False})
    assert response.status_code == 200, response.text

    without = quote(admin, setup, **SESSION)

    assert [a["promotion_id"] for a in with_it["applied_promotions"]] == [spring["id"]]
    assert cents(with_it) == (1300, 1560)  # 10 % of 12.00 energy = 1.20 / 1.00
    assert without["applied_promotions"] == [] and cents(without) == (1400, 1680)


def test_a_loyalty_tier_created_applies_to_the_next_quote(engine, setup):
    admin = setup.operator.admin
    driver = setup.driver()
    store(engine, setup, driver, "2025-05-31T10:00:00", "45", 90)
    before = quote(admin, setup, driver_id=driver, **SESSION)
    admin.create("loyalty-tiers", {"name": "Silver", "min_energy_kwh": "40", "benefit": {
        "kind": "percent_off_energy", "percent": "5"}})

    after = quote(admin, setup, driver_id=driver, **SESSION)

    assert before["loyalty"] is None and cents(before) == (1400, 1680)
    assert after["loyalty"]["tier"] == "Silver" and cents(after) == (1350, 1620)


def test_an_edited_plan_prices_the_next_quote(setup):
    admin = setup.operator.admin
    future = {**SESSION, "start_at": "2099-06-10T10:00:00Z"}  # after the edit below
    before = quote(admin, setup, plan_id=setup.payg, **future)
    response = admin.patch(f"/plans/{setup.payg}", {"name": "Pay as you go 2"})
    assert response.status_code == 200, response.text

    after = quote(admin, setup, plan_id=setup.payg, **future)

    assert (before["plan"]["name"], before["plan"]["version"]) == ("Pay as you go", 1)
    assert (after["plan"]["name"], after["plan"]["version"]) == ("Pay as you go 2", 2)


def test_a_site_time_zone_change_is_seen_by_the_next_quote(setup):
    admin = setup.operator.admin
    before = quote(admin, setup, **SESSION)
    response = admin.patch(f"/sites/{setup.site_id}", {"time_zone": "America/New_York"})
    assert response.status_code == 200, response.text

    after = quote(admin, setup, **SESSION)

    assert (before["time_zone"], after["time_zone"]) == (BERLIN, "America/New_York")


def test_another_node_sees_a_write_at_once(app, engine, setup):
    """Two processes = two caches over one database; the write goes through this node."""
    other_node = CatalogCache(GenerationReader(engine))
    req = QuoteRequest(operator_id=setup.operator.operator_id, site_id=setup.site_id,
                       connector_id=None, start_at=utc("2025-06-10T10:00:00"),
                       energy_milliwh=20 * KWH, charging_ms=60 * MINUTE, idle_ms=30 * MINUTE)

    def other_node_total() -> int:
        with ReadConnection(engine) as connect:
            return quote_service(connect, req, other_node).priced.total_incl_vat.amount_minor

    before = other_node_total()
    promotion(setup, name="Spring", benefit={"kind": "percent_off_energy", "percent": "10"})
    after = other_node_total()

    assert (before, after) == (1680, 1560)


def test_every_catalog_write_bumps_the_operator_catalog_generation(engine, setup):
    operator, admin = setup.operator, setup.operator.admin

    def generation() -> int:
        with engine.connect() as conn:
            return catalog_generation(conn, operator.operator_id)

    site = operator.new("sites")
    writes: list[tuple[str, Any]] = [
        ("site", lambda: admin.patch(f"/sites/{site['id']}", {"vat_percent": "7.00"})),
        ("connector", lambda: operator.new("connectors")),
        ("tariff", lambda: operator.new("tariffs", document=PUBLIC)),
        ("tariff version", lambda: admin.post(f"/tariffs/{setup_tariff}/versions",
                                              {"document": PUBLIC})),
        ("assignment", lambda: operator.new("tariff-assignments", tariff_id=setup_tariff,
                                            site_id=site["id"])),
        ("plan", lambda: admin.patch(f"/plans/{setup.payg}", {"name": "renamed"})),
        ("promotion", lambda: promotion(setup, name="P", benefit={
            "kind": "percent_off_energy", "percent": "1"})),
        ("tier", lambda: admin.create("loyalty-tiers", {"name": "T", "min_energy_kwh": "1"})),
        ("site deleted", lambda: admin.delete(f"/sites/{operator.new('sites')['id']}")),
    ]
    setup_tariff = quote(admin, setup, **SESSION)["tariff"]["id"]
    for name, write in writes:
        before = generation()
        response = write()
        if hasattr(response, "status_code"):
            assert response.status_code < 300, (name, response.text)
        assert generation() > before, name


def test_the_generation_reader_reconnects_after_losing_its_connection(engine, setup):
    reader = GenerationReader(engine)
    operator_id = setup.operator.operator_id
    before = reader.generation(operator_id)
    reader._connection.dbapi_connection.close()  # the database restarted, the network dropped
    promotion(setup, name="Spring", benefit={"kind": "percent_off_energy", "percent": "10"})

    after = reader.generation(operator_id)
    reader.close()

    assert after == before + 1


# -- the fast path answers exactly as FastAPI does ------------------------------------------------
# ``QuotesFastPath`` takes POST /quotes from callers in the principal cache; the first request of
# a token (not cached yet) goes through FastAPI. Each pair below is one request both ways.
def both_ways(caller, body: Any, **kwargs: Any) -> tuple[Any, Any]:
    forget_all_tokens()
    through_fastapi = caller.post("/quotes", body, **kwargs)
    assert cached_principal(f"Bearer {caller.token}", caller.client.app.state.engine) is not None
    fast = caller.post("/quotes", body, **kwargs)
    return through_fastapi, fast


def same_answer(first: Any, second: Any) -> None:
    assert (first.status_code, first.content) == (second.status_code, second.content)
    assert dict(first.headers) == dict(second.headers)


def test_the_fast_path_answers_a_quote_as_fastapi_does(setup):
    same_answer(*both_ways(setup.operator.admin, {"site_id": setup.site_id, **SESSION}))


@pytest.mark.parametrize("body", [
    {"energy_kwh": "20", "charging_minutes": "60", "start_at": "2025-06-10T10:00:00Z"},
    {"site_id": "x", "start_at": "2025-06-10T10:00:00Z", "energy_kwh": "20.1234567",
     "charging_minutes": "60"},
    {"site_id": "x", "start_at": "2025-06-10T10:00:00Z", "energy_kwh": "20",
     "charging_minutes": "60", "surprise": True},
    [1, 2, 3],
], ids=["no location", "too many decimals", "unknown field", "not an object"])
def test_the_fast_path_leaves_bodies_that_do_not_validate_to_fastapi(setup, problem, body):
    first, second = both_ways(setup.operator.admin, body)
    problem(first, 422, "validation_error")
    same_answer(first, second)


def test_the_fast_path_renders_domain_errors_with_the_app_handlers(setup, problem):
    first, second = both_ways(setup.operator.admin, {"site_id": "site_missing", **SESSION})
    problem(first, 404, "not_found")
    same_answer(first, second)


def test_the_fast_path_leaves_other_media_types_to_fastapi(setup, problem):
    admin = setup.operator.admin
    text = json.dumps({"site_id": setup.site_id, **SESSION})

    def send() -> Any:
        return admin.client.post("/api/v1/quotes", content=text, headers={
            "Authorization": f"Bearer {admin.token}", "Content-Type": "text/plain"})

    forget_all_tokens()
    first = send()
    second = send()

    problem(first, 422, "validation_error")
    same_answer(first, second)
