"""Plans, promotions, loyalty tiers and a driver's plan through /api/v1, on SQLite and PostgreSQL.

Fees carry 20 % VAT, so incl. = 1.2 x excl., rounded once. Drivers live in Europe/Berlin.
Proration amounts are worked out by hand in comments (the rule: docs/plans.md, "Switching").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from evbilling.adapters.db import schema
from evbilling.services.demo import DEMO_PASSWORD, seed_demo

BERLIN = "Europe/Berlin"


def energy_tariff(price: str) -> dict[str, Any]:
    return {"country_code": "DE", "party_id": "EVB", "id": "t", "currency": "EUR",
            "elements": [{"price_components": [
                {"type": "ENERGY", "price": price, "vat": "20", "step_size": 1}]}]}


@pytest.fixture
def member_tariff(operator) -> str:
    return str(operator.new("tariffs", document=energy_tariff("0.30"))["id"])


@pytest.fixture
def subscription(operator, member_tariff) -> dict[str, Any]:
    created: dict[str, Any] = operator.admin.create("plans", {
        "kind": "subscription", "name": "Member 100", "fee_minor": 999,
        "fee_vat_percent": "20", "included_energy_kwh": "100",
        "member_tariff_id": member_tariff})
    return created


@pytest.fixture
def flat_rate(operator, member_tariff) -> dict[str, Any]:
    created: dict[str, Any] = operator.admin.create("plans", {
        "kind": "flat_rate", "name": "Flat 300", "fee_minor": 2999, "fee_vat_percent": "20",
        "fair_use_cap_kwh": "300", "fallback_tariff_id": member_tariff})
    return created


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# -- plans ----------------------------------------------------------------------------------------
def test_a_subscription_plan_is_created_with_exact_terms(subscription, member_tariff):
    assert {k: subscription[k] for k in (
        "kind", "currency", "period", "fee_minor", "fee_vat_percent", "fee_incl_vat_minor",
        "included_energy_kwh", "member_tariff_id", "waive_flat_fee", "active", "version")} == {
        "kind": "subscription", "currency": "EUR", "period": "month", "fee_minor": 999,
        "fee_vat_percent": "20", "fee_incl_vat_minor": 1199,  # 9.99 x 1.2 = 11.988 -> 11.99
        "included_energy_kwh": "100", "member_tariff_id": member_tariff,
        "waive_flat_fee": True, "active": True, "version": 1}


def test_an_edit_publishes_the_next_version_and_keeps_the_old_one(operator, subscription):
    admin, plan_id = operator.admin, subscription["id"]

    edited = admin.patch(f"/plans/{plan_id}", {"fee_minor": 1299,
                                               "included_energy_kwh": "120.5"})
    versions = admin.get(f"/plans/{plan_id}/versions").json()["data"]

    assert edited.status_code == 200, edited.text
    assert (edited.json()["version"], edited.json()["fee_minor"],
            edited.json()["included_energy_kwh"]) == (2, 1299, "120.5")
    assert [(v["version"], v["fee_minor"], v["included_energy_kwh"]) for v in versions] == [
        (2, 1299, "120.5"), (1, 999, "100")]
    assert admin.get(f"/plans/{plan_id}").json()["version"] == 2


def test_an_empty_edit_publishes_no_version(operator, subscription):
    response = operator.admin.patch(f"/plans/{subscription['id']}", {})

    assert response.json()["version"] == 1


def test_a_quote_uses_the_plan_version_in_force_at_its_start(operator, subscription):
    site = operator.new("sites", time_zone=BERLIN)
    operator.new("tariff-assignments", site_id=site["id"])
    operator.admin.patch(f"/plans/{subscription['id']}", {"included_energy_kwh": "0"})
    body = {"site_id": site["id"], "plan_id": subscription["id"], "energy_kwh": "10",
            "charging_minutes": "60"}

    past = operator.admin.post("/quotes", {**body, "start_at": "2025-01-10T10:00:00Z"}).json()
    future = operator.admin.post("/quotes", {**body, "start_at": "2099-01-10T10:00:00Z"}).json()

    # Version 1 (100 kWh included) was in force in 2025: 10 kWh covered, 0.00.
    # Version 2 (nothing included) from now on: 10 x 0.30 = 3.00, x 1.2 = 3.60.
    assert (past["plan"]["version"], past["total"]["incl_vat_minor"]) == (1, 0)
    assert (future["plan"]["version"], future["total"]["incl_vat_minor"]) == (2, 360)


def test_the_kind_of_a_plan_cannot_change(operator, subscription, problem):
    response = operator.admin.patch(f"/plans/{subscription['id']}", {"kind": "flat_rate"})

    assert problem(response, 422, "validation_error")["errors"][0]["field"] == "kind"


@pytest.mark.parametrize("body, field", [
    ({"kind": "pay_per_use", "fee_minor": 500}, "fee_minor"),
    ({"kind": "subscription", "fee_minor": 999}, "member_tariff_id"),
    ({"kind": "flat_rate", "fee_minor": 999, "included_energy_kwh": "10"},
     "included_energy_kwh"),
    ({"kind": "fleet"}, "credit_limit_minor"),
    ({"kind": "prepaid_wallet", "wallet_top_up_amount_minor": 2000},
     "wallet_top_up_threshold_minor"),
])
def test_a_plan_that_breaks_a_rule_is_refused_naming_the_field(operator, problem, body, field):
    response = operator.admin.post("/plans", {"name": "Broken", **body})

    assert problem(response, 422, "invalid_plan")["field"] == field


def test_a_plan_naming_another_operators_tariff_is_refused(operator, other_operator, problem):
    foreign = other_operator.new("tariffs", document=energy_tariff("0.30"))["id"]

    response = operator.admin.post("/plans", {
        "kind": "subscription", "name": "Member", "member_tariff_id": foreign})

    assert problem(response, 422, "unknown_reference")["field"] == "member_tariff_id"


def test_a_plan_body_with_an_unknown_field_is_rejected(operator, problem):
    response = operator.admin.post("/plans", {"kind": "pay_per_use", "name": "PAYG",
                                              "discount": "100"})

    assert problem(response, 422, "validation_error")["errors"][0]["field"] == "discount"


def test_drivers_read_plans_but_cannot_manage_them(operator, subscription, problem):
    driver = operator.caller("driver")

    listed = driver.get("/plans")
    created = driver.post("/plans", {"kind": "pay_per_use", "name": "Mine"})
    edited = driver.patch(f"/plans/{subscription['id']}", {"fee_minor": 1})

    assert [p["id"] for p in listed.json()["data"]] == [subscription["id"]]
    problem(created, 403, "forbidden")
    problem(edited, 403, "forbidden")


def test_another_operators_plan_is_not_found(other_operator, subscription, problem):
    problem(other_operator.admin.get(f"/plans/{subscription['id']}"), 404, "not_found")
    problem(other_operator.admin.patch(f"/plans/{subscription['id']}", {"name": "x"}), 404,
            "not_found")


# -- promotions -----------------------------------------------------------------------------------
WELCOME = {"name": "Welcome", "code": " welcome10 ", "starts_at": "2025-01-01T00:00:00Z",
           "benefit": {"kind": "percent_off_energy", "percent": "10"},
           "redemptions_max_per_driver": 1}


def test_a_promotion_is_stored_with_its_code_upper_case(operator):
    created = operator.admin.create("promotions", WELCOME)

    assert (created["code"], created["automatic"], created["benefit"]["percent"],
            created["label"], created["redemptions"]) == (
        "WELCOME10", False, "10", "Welcome (WELCOME10): 10% off energy", 0)
    assert operator.admin.get("/promotions", params={"code": "Welcome10"}).json()["data"][0][
        "id"] == created["id"]


def test_promo_codes_are_unique_per_operator(operator, other_operator, problem):
    operator.admin.create("promotions", WELCOME)

    again = operator.admin.post("/promotions", {**WELCOME, "code": "WELCOME10"})
    elsewhere = other_operator.admin.post("/promotions", WELCOME)

    assert problem(again, 409, "already_exists")["field"] == "code"
    assert elsewhere.status_code == 201, elsewhere.text


def test_a_promotion_edit_is_validated_by_the_domain(operator, problem):
    created = operator.admin.create("promotions", WELCOME)

    edited = operator.admin.patch(f"/promotions/{created['id']}",
                                  {"active": False, "priority": 5})
    wrong = operator.admin.patch(f"/promotions/{created['id']}",
                                 {"ends_at": "2024-12-31T00:00:00Z"})

    assert (edited.json()["active"], edited.json()["priority"]) == (False, 5)
    assert problem(wrong, 422, "invalid_promotion")["field"] == "ends_at"


@pytest.mark.parametrize("change, code, field", [
    ({"benefit": {"kind": "percent_off_energy"}}, "invalid_promotion", "benefit.percent"),
    ({"benefit": {"kind": "free_energy", "percent": "5"}}, "invalid_promotion",
     "benefit.percent"),
    ({"code": "no spaces"}, "invalid_promotion", "code"),
    ({"scope": {"site_ids": ["site_nope"]}}, "unknown_reference", "scope.site_ids"),
])
def test_a_promotion_that_breaks_a_rule_is_refused_naming_the_field(operator, problem, change,
                                                                    code, field):
    response = operator.admin.post("/promotions", {**WELCOME, **change})

    assert problem(response, 422, code)["field"] == field


def test_drivers_may_not_list_or_read_promotions(operator, problem):
    created = operator.admin.create("promotions", WELCOME)
    driver = operator.caller("driver")

    problem(driver.get("/promotions"), 403, "forbidden")
    problem(driver.get(f"/promotions/{created['id']}"), 403, "forbidden")
    problem(driver.post("/promotions", WELCOME), 403, "forbidden")
    assert operator.caller("finance").get("/promotions").json()["data"][0]["id"] == \
        created["id"]


def test_a_redeemed_promotion_cannot_be_deleted(operator, engine, problem):
    unused = operator.admin.create("promotions", {**WELCOME, "code": "UNUSED"})
    redeemed = operator.admin.create("promotions", WELCOME)
    driver = operator.new("drivers")["id"]
    with engine.begin() as conn:
        conn.execute(schema.promotion_redemptions.insert().values(
            id="red_1", operator_id=operator.operator_id, promotion_id=redeemed["id"],
            driver_id=driver, session_id="cs_1", amount_minor=120,
            created_at=dt.datetime.now(dt.UTC)))

    assert operator.admin.delete(f"/promotions/{unused['id']}").status_code == 204
    problem(operator.admin.delete(f"/promotions/{redeemed['id']}"), 409, "in_use")
    assert operator.admin.get(f"/promotions/{redeemed['id']}").json()["redemptions"] == 1


def test_a_nested_unknown_field_is_rejected(operator, problem):
    response = operator.admin.post("/promotions", {
        **WELCOME, "benefit": {"kind": "percent_off_energy", "percent": "10", "bonus": "5"}})

    assert problem(response, 422, "validation_error")["errors"][0]["field"] == "benefit.bonus"


def test_a_change_cannot_null_a_field_that_has_no_unset_state(operator, subscription, problem):
    promotion = operator.admin.create("promotions", WELCOME)
    tier = operator.admin.create("loyalty-tiers", SILVER)

    for path, field in ((f"/plans/{subscription['id']}", "active"),
                        (f"/promotions/{promotion['id']}", "starts_at"),
                        (f"/loyalty-tiers/{tier['id']}", "min_energy_kwh")):
        response = operator.admin.patch(path, {field: None})
        assert problem(response, 422, "validation_error")["field"] == field


# -- loyalty tiers --------------------------------------------------------------------------------
SILVER = {"name": "Silver", "min_energy_kwh": "100",
          "benefit": {"kind": "percent_off_energy", "percent": "5"}}


def test_loyalty_tiers_form_one_programme(operator, problem):
    admin = operator.admin
    silver = admin.create("loyalty-tiers", SILVER)

    same_threshold = admin.post("/loyalty-tiers", {**SILVER, "name": "Gold"})
    other_window = admin.post("/loyalty-tiers", {"name": "Gold", "min_energy_kwh": "300",
                                                 "window_days": 30})
    promotion_kind = admin.post("/loyalty-tiers", {"name": "Gold", "min_energy_kwh": "300",
                                                   "benefit": {"kind": "amount_off_session",
                                                               "amount_minor": 100}})
    gold = admin.create("loyalty-tiers", {"name": "Gold", "min_energy_kwh": "300.5",
                                          "benefit": {"kind": "free_idle_time",
                                                      "free_idle_minutes": 30}})

    assert (silver["min_energy_kwh"], silver["window_days"], silver["label"]) == (
        "100", 90, "Loyalty Silver: 5% off energy")
    assert problem(same_threshold, 422, "invalid_loyalty_tier")["field"] == "min_energy_kwh"
    assert problem(other_window, 422, "invalid_loyalty_tier")["field"] == "window_days"
    assert problem(promotion_kind, 422, "invalid_loyalty_tier")["field"] == "benefit.kind"
    assert gold["min_energy_kwh"] == "300.5"
    assert [t["name"] for t in admin.get("/loyalty-tiers").json()["data"]] == ["Silver", "Gold"]


def test_drivers_read_the_tiers_but_cannot_change_them(operator, problem):
    tier = operator.admin.create("loyalty-tiers", SILVER)
    driver = operator.caller("driver")

    assert driver.get(f"/loyalty-tiers/{tier['id']}").json()["name"] == "Silver"
    problem(driver.patch(f"/loyalty-tiers/{tier['id']}", {"name": "Platinum"}), 403,
            "forbidden")
    problem(driver.delete(f"/loyalty-tiers/{tier['id']}"), 403, "forbidden")


# -- a driver's plan: switching with proration ----------------------------------------------------
@pytest.fixture
def clock(app):
    """Set the time of plan switches (``app.state.clock``)."""
    now: list[dt.datetime] = [dt.datetime.now(dt.UTC)]
    app.state.clock = lambda: now[0]

    def set_to(text: str) -> None:
        now[0] = utc(text)

    yield set_to
    del app.state.clock


def switch(caller, driver_id: str, plan_id: str, effective: str) -> dict[str, Any]:
    response = caller.post(f"/drivers/{driver_id}/plan", {"plan_id": plan_id,
                                                          "effective": effective})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_switching_now_credits_and_charges_pro_rata_by_day(operator, subscription, flat_rate,
                                                           clock):
    driver = operator.new("drivers", time_zone=BERLIN)["id"]
    clock("2024-05-01T08:00:00")  # 1 May, 10:00 in Berlin
    joined = switch(operator.admin, driver, subscription["id"], "now")
    clock("2024-05-10T10:00:00")  # 10 May: 22 of May's 31 days remain (the 10th counts)
    moved = switch(operator.admin, driver, flat_rate["id"], "now")

    # From no plan on the 1st: nothing credited, the whole 9.99 (11.99) charged.
    assert (joined["from_plan_id"], joined["credit"]["excl_vat_minor"],
            joined["charge"]["excl_vat_minor"], joined["charge"]["incl_vat_minor"]) == (
        None, 0, 999, 1199)
    # credit: allocate(999, [22, 9]) = 708.97 / 290.03 -> 708 + 290, the cent to .97: 709;
    #   incl 709 x 1.2 = 850.8 -> 851.
    # charge: allocate(2999, [22, 9]) = 2128.32 / 870.68 -> 2128 + 870, the cent to .68:
    #   2128; incl 2128 x 1.2 = 2553.6 -> 2554.
    # net 2128 - 709 = 14.19 excl; 2554 - 851 = 17.03 incl.
    # cap for the rest of May: 300 kWh x 22/31 = 212.903226 kWh (largest remainder).
    assert (moved["from_plan_id"], moved["effective"], moved["effective_at"]) == (
        subscription["id"], "now", "2024-05-10T10:00:00Z")
    assert {k: moved["credit"][k] for k in ("excl_vat_minor", "incl_vat_minor",
                                            "days_remaining", "days_in_period")} == {
        "excl_vat_minor": 709, "incl_vat_minor": 851, "days_remaining": 22,
        "days_in_period": 31}
    assert (moved["charge"]["excl_vat_minor"], moved["charge"]["incl_vat_minor"]) == (2128,
                                                                                      2554)
    assert moved["net"] == {"excl_vat_minor": 1419, "incl_vat_minor": 1703,
                            "excl_vat": "14.19", "incl_vat": "17.03"}
    assert moved["allowance"]["energy_allowance_kwh"] == "212.903226"

    view = operator.admin.get(f"/drivers/{driver}/plan").json()
    assert (view["plan"]["id"], view["current"]["starts_at"], view["pending"]) == (
        flat_rate["id"], "2024-05-10T10:00:00Z", None)
    assert view["usage"]["energy_allowance_kwh"] == "212.903226"


def test_switching_next_period_moves_no_money_now(operator, engine, subscription, flat_rate,
                                                  clock):
    driver = operator.new("drivers", time_zone=BERLIN)["id"]
    clock("2024-04-30T22:00:00")  # 1 May 00:00 in Berlin
    switch(operator.admin, driver, subscription["id"], "now")
    clock("2024-05-10T10:00:00")
    moved = switch(operator.admin, driver, flat_rate["id"], "next_period")

    # Effective at the end of May in Berlin (1 June 00:00 = 31 May 22:00 UTC): no credit, and
    # the flat rate's whole first month is due then: 29.99 (2999 x 1.2 = 3598.8 -> 35.99).
    assert (moved["effective_at"], moved["credit"]["excl_vat_minor"]) == (
        "2024-05-31T22:00:00Z", 0)
    assert (moved["charge"]["excl_vat_minor"], moved["charge"]["incl_vat_minor"]) == (2999,
                                                                                      3599)
    assert moved["allowance"]["energy_allowance_kwh"] == "300"
    view = operator.admin.get(f"/drivers/{driver}/plan").json()
    assert (view["plan"]["id"], view["current"]["ends_at"]) == (subscription["id"],
                                                                "2024-05-31T22:00:00Z")
    assert view["pending"] == {"plan_id": flat_rate["id"], "starts_at": "2024-05-31T22:00:00Z",
                               "ends_at": None}
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(schema.driver_plans).where(
            schema.driver_plans.c.driver_id == driver)).scalar_one()
    assert rows == 2


def test_a_new_switch_replaces_a_pending_one(operator, subscription, flat_rate, clock):
    driver = operator.new("drivers", time_zone=BERLIN)["id"]
    payg = operator.admin.create("plans", {"kind": "pay_per_use", "name": "PAYG"})
    clock("2024-05-01T08:00:00")
    switch(operator.admin, driver, subscription["id"], "now")
    switch(operator.admin, driver, flat_rate["id"], "next_period")

    switch(operator.admin, driver, payg["id"], "next_period")

    view = operator.admin.get(f"/drivers/{driver}/plan").json()
    assert view["pending"]["plan_id"] == payg["id"]


def test_switching_to_the_same_or_a_withdrawn_plan_is_refused(operator, subscription,
                                                              flat_rate, clock, problem):
    driver = operator.new("drivers", time_zone=BERLIN)["id"]
    clock("2024-05-01T08:00:00")
    switch(operator.admin, driver, subscription["id"], "now")
    operator.admin.patch(f"/plans/{flat_rate['id']}", {"active": False})

    same = operator.admin.post(f"/drivers/{driver}/plan", {"plan_id": subscription["id"],
                                                           "effective": "now"})
    withdrawn = operator.admin.post(f"/drivers/{driver}/plan", {"plan_id": flat_rate["id"],
                                                                "effective": "now"})
    bad_effective = operator.admin.post(f"/drivers/{driver}/plan", {
        "plan_id": flat_rate["id"], "effective": "yesterday"})

    problem(same, 409, "plan_unchanged")
    problem(withdrawn, 409, "plan_inactive")
    problem(bad_effective, 422, "validation_error")


def test_drivers_switch_their_own_plan_only(operator, subscription, clock, problem):
    me = operator.new("drivers", time_zone=BERLIN)["id"]
    other = operator.new("drivers", time_zone=BERLIN)["id"]
    driver = operator.caller("driver", driver_id=me)
    clock("2024-05-01T08:00:00")

    mine = switch(driver, me, subscription["id"], "now")
    theirs = driver.post(f"/drivers/{other}/plan", {"plan_id": subscription["id"],
                                                    "effective": "now"})
    theirs_read = driver.get(f"/drivers/{other}/plan")
    finance = operator.caller("finance").post(f"/drivers/{me}/plan", {
        "plan_id": subscription["id"], "effective": "now"})

    assert mine["to_plan_id"] == subscription["id"]
    assert driver.get(f"/drivers/{me}/plan").json()["plan"]["id"] == subscription["id"]
    problem(theirs, 404, "not_found")
    problem(theirs_read, 404, "not_found")
    problem(finance, 403, "forbidden")


def test_a_driver_of_another_operator_is_not_found(other_operator, operator, subscription,
                                                   problem):
    stranger = other_operator.new("drivers")["id"]

    problem(operator.admin.post(f"/drivers/{stranger}/plan", {
        "plan_id": subscription["id"], "effective": "now"}), 404, "not_found")


def test_switching_to_a_plan_of_another_operator_is_an_unknown_reference(
        other_operator, subscription, problem):
    # 404 says the driver of the path is missing (schemathesis' stateful check read it so);
    # a body naming a missing record is unknown_reference, as everywhere else.
    own_driver = other_operator.new("drivers")["id"]
    refused = problem(other_operator.admin.post(f"/drivers/{own_driver}/plan", {
        "plan_id": subscription["id"], "effective": "now"}), 422, "unknown_reference")
    assert refused["field"] == "plan_id"


# -- the demo operator ----------------------------------------------------------------------------
def test_the_demo_catalog_is_seeded_once_and_alice_gets_advice(app, client, engine):
    with engine.begin() as conn:
        operator_id = seed_demo(conn)
    with engine.begin() as conn:
        assert seed_demo(conn) == operator_id
        counts = {t.name: conn.execute(select(func.count()).select_from(t).where(
            t.c.operator_id == operator_id)).scalar_one()
            for t in (schema.plans, schema.promotions, schema.loyalty_tiers,
                      schema.driver_plans)}
    assert counts == {"plans": 5, "promotions": 2, "loyalty_tiers": 2, "driver_plans": 2}

    login = client.post("/api/v1/auth/login", json={
        "operator_id": operator_id, "email": "alice@demo.evbilling.dev",
        "password": DEMO_PASSWORD})
    token = {"Authorization": f"Bearer {login.json()['token']}"}
    me = client.get("/api/v1/me", headers=token).json()
    advice = client.post("/api/v1/plan-advisor", json={}, headers=token)
    plan = client.get(f"/api/v1/drivers/{me['driver_id']}/plan", headers=token)

    assert advice.status_code == 200, advice.text
    result = advice.json()
    assert result["sessions"] > 15 and len(result["plans"]) == 5
    totals = [p["total_incl_vat_minor"] for p in result["plans"]]
    assert totals == sorted(totals)
    assert [p["kind"] for p in result["plans"] if p["current"]] == ["subscription"]
    assert plan.json()["plan"]["name"] == "Member 100"
