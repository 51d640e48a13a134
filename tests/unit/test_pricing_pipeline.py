"""The pricing pipeline: rating -> plan coverage -> promotions and loyalty -> amounts
(``domain/pricing.py``; rules in ``docs/plans.md``).

Tariffs here use 20 % VAT, so incl = 1.2 x excl. Sessions are on Monday 2024-05-06; times are
UTC (Berlin is UTC+2). Every expected amount is worked out in a comment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evbilling
from evbilling.domain.errors import CurrencyMismatchError
from evbilling.domain.money import Money
from evbilling.domain.periods import ChargingPeriod, SessionFacts, epoch_ms
from evbilling.domain.plans import Plan, PlanUsage
from evbilling.domain.pricing import (
    LineCode,
    LineKind,
    PlanTariffMismatchError,
    PlanTariffMissingError,
    PlanTariffs,
    PlanUsageMismatchError,
    PlanUsageRequiredError,
    PricedSession,
    PricingRequest,
    price_plan_fee,
    price_session,
)
from evbilling.domain.promotions import (
    Benefit,
    LoyaltyTier,
    Promotion,
    PromotionContext,
    PromotionScope,
    Refusal,
    Stacking,
    TooManyPromotionsError,
    UsageRecord,
    rolling_energy_milliwh,
    tier_for,
)
from evbilling.domain.tariffs import Price, Tariff, parse_tariff

BERLIN = "Europe/Berlin"
KWH = 1_000_000
MINUTE = 60_000

# -- builders -------------------------------------------------------------------------------------


def component(kind: str, price: str, step: int = 1) -> dict[str, Any]:
    return {"type": kind, "price": Decimal(price), "vat": Decimal("20"), "step_size": step}


def tariff(tariff_id: str, *components: dict[str, Any], currency: str = "EUR",
           **header: Any) -> Tariff:
    return parse_tariff({"id": tariff_id, "currency": currency,
                         "elements": [{"price_components": list(components)}], **header})


#: public: 1.00 a session, 0.50 /kWh, idle 6.00 /h
PUBLIC = tariff("public", component("FLAT", "1.00"), component("ENERGY", "0.50"),
                component("PARKING_TIME", "6.00"))
#: member: 0.50 a session (waived), 0.30 /kWh, charging time 1.20 /h
MEMBER = tariff("member", component("FLAT", "0.50"), component("ENERGY", "0.30"),
                component("TIME", "1.20"))
#: flat-rate fallback: 1.00 a session (waived), 0.40 /kWh, idle 6.00 /h
FALLBACK = tariff("fallback", component("FLAT", "1.00"), component("ENERGY", "0.40"),
                  component("PARKING_TIME", "6.00"))

PAYG = Plan.pay_per_use("payg", "op-1", "Pay as you go", "EUR")
SUBSCRIPTION = Plan.subscription("sub", "op-1", "Member", "EUR", fee_minor=999,
                                 included_energy_milliwh=100 * KWH, member_tariff_id="member",
                                 fee_vat_percent=Decimal("20"))
FLAT_RATE = Plan.flat_rate("flat", "op-1", "Flat", "EUR", fee_minor=4999,
                           fair_use_cap_milliwh=300 * KWH, fallback_tariff_id="fallback")
TARIFFS = PlanTariffs(public=PUBLIC, member=MEMBER, fallback=FALLBACK)


def at(hhmm: str, day: str = "2024-05-06") -> int:
    return epoch_ms(dt.datetime.fromisoformat(f"{day} {hhmm}").replace(tzinfo=dt.UTC))


def charge(start: int, kwh: str, minutes: int = 0) -> ChargingPeriod:
    return ChargingPeriod(start, energy_milliwh=int(Decimal(kwh) * KWH),
                          time_ms=minutes * MINUTE)


def park(start: int, minutes: int) -> ChargingPeriod:
    return ChargingPeriod(start, parking_ms=minutes * MINUTE)


def session(*periods: ChargingPeriod, end: int | None = None) -> SessionFacts:
    return SessionFacts(periods, BERLIN, start_epoch_ms=periods[0].start_epoch_ms,
                        end_epoch_ms=end)


def usage(plan: Plan, used_kwh: str = "0", day: str = "2024-05-06") -> PlanUsage:
    start = dt.datetime.fromisoformat(f"{day} 00:00").replace(tzinfo=dt.UTC)
    return PlanUsage.for_period(plan, start, BERLIN).with_energy(int(Decimal(used_kwh) * KWH))


def price(facts: SessionFacts, plan: Plan = PAYG, **options: Any) -> PricedSession:
    if plan is not PAYG and "usage" not in options:
        options["usage"] = usage(plan)
    return price_session(PricingRequest(facts, plan, TARIFFS, **options))


def rows(priced: PricedSession) -> list[tuple[str, str, int, int]]:
    """(code, description, excl cents, incl cents) per line."""
    return [(line.code.value, line.description, line.amount_excl_vat.amount_minor,
             line.amount_incl_vat.amount_minor) for line in priced.lines]


def totals(priced: PricedSession) -> tuple[int, int]:
    return priced.total_excl_vat.amount_minor, priced.total_incl_vat.amount_minor


#: 20 kWh in an hour, then 30 minutes idle.
TYPICAL = session(charge(at("10:00"), "10", 30), charge(at("10:30"), "10", 30),
                  park(at("11:00"), 30), end=at("11:30"))


# -- pay per use ----------------------------------------------------------------------------------


def test_pay_per_use_prices_the_public_tariff_line_by_line() -> None:
    priced = price(TYPICAL)
    # energy 20 kWh x 0.50 = 10.00 (12.00 incl); idle 0.5 h x 6.00 = 3.00 (3.60); fee 1.00 (1.20)
    assert rows(priced) == [
        ("energy", "Energy 20.000 kWh @ 0.50 EUR/kWh", 1000, 1200),
        ("idle_time", "Idle time 0:30:00 @ 6.00 EUR/h", 300, 360),
        ("session_fee", "Session fee @ 1.00 EUR", 100, 120),
    ]
    assert totals(priced) == (1400, 1680)
    assert priced.rated.total_cost.excl_vat == Decimal("14")  # the rating engine agrees
    (vat,) = priced.vat_summary
    assert (vat.vat_percent, vat.amount_excl_vat.amount_minor, vat.vat_amount.amount_minor,
            vat.amount_incl_vat.amount_minor) == (Decimal("20"), 1400, 280, 1680)
    assert priced.usage_after is None  # pay-per-use given no usage record: nothing tracked


def test_the_tariffs_max_price_is_its_own_line_as_the_rating_engine_computes_it() -> None:
    capped = dataclasses.replace(PUBLIC, max_price=_price("10.00", "12.00"))
    priced = price_session(PricingRequest(session(charge(at("10:00"), "30", 60)), PAYG,
                                          PlanTariffs(public=capped)))
    # 30 kWh x 0.50 + 1.00 = 16.00 (19.20 incl) -> capped to 10.00 / 12.00: -6.00 / -7.20
    assert rows(priced)[-1] == ("max_price", "Maximum price 10.00 EUR excl. VAT", -600, -720)
    assert totals(priced) == (1000, 1200)
    assert priced.rated.total_cost.incl_vat == Decimal("12")


def _price(excl: str, incl: str) -> Price:
    return Price(Decimal(excl), Decimal(incl))


# -- subscription: allowance crossing -------------------------------------------------------------


CROSSING = session(charge(at("10:00"), "5", 30), charge(at("10:30"), "10", 30),
                   charge(at("11:00"), "5", 30), end=at("11:30"))


def test_a_subscription_allowance_running_out_mid_session_splits_the_period() -> None:
    priced = price(CROSSING, SUBSCRIPTION, usage=usage(SUBSCRIPTION, "92.3"))
    # 100 kWh included, 92.3 used: 7.7 kWh left.
    #   period 1: 5 kWh, all covered (2.7 left); period 2: 10 kWh, 2.7 covered, 7.3 charged;
    #   period 3: 5 kWh charged. Energy charged 12.3 kWh x 0.30 = 3.69 (4.428 -> 4.43 incl).
    # Charging time, split like the energy: period 1 covered; period 2: 30 min = 1 800 000 ms,
    #   covered 1 800 000 x 2.7 / 10 = 486 000, charged 1 314 000; period 3: 1 800 000 charged.
    #   3 114 000 ms = 0.865 h x 1.20 = 1.038 -> 1.04 (1.2456 -> 1.25 incl).
    # The 0.50 session fee is waived.
    assert rows(priced) == [
        ("energy", "Energy 12.300 kWh @ 0.30 EUR/kWh, member tariff", 369, 443),
        ("charging_time", "Charging time 0:51:54 @ 1.20 EUR/h, member tariff", 104, 125),
        ("included_energy", "Included energy 7.700 kWh (subscription)", 0, 0),
        ("covered_charging_time", "Charging time covered by the plan 0:38:06", 0, 0),
        ("session_fee_waived", "Session fee 0.50 EUR waived (subscription)", 0, 0),
    ]
    assert [line.quantity for line in priced.lines[:2]] == [12_300_000, 3_114_000]
    assert totals(priced) == (473, 568)
    assert (priced.energy_milliwh, priced.energy_covered_milliwh) == (20 * KWH, 7_700_000)
    assert priced.usage_after is not None
    assert priced.usage_after.energy_used_milliwh == 112_300_000  # 92.3 + 20
    assert priced.usage_after.energy_remaining_milliwh == 0


def test_a_session_inside_the_allowance_costs_nothing() -> None:
    priced = price(CROSSING, SUBSCRIPTION)
    assert totals(priced) == (0, 0)
    assert [line.kind for line in priced.lines] == [LineKind.PLAN_BENEFIT] * 3
    assert priced.vat_summary == ()


def test_after_the_allowance_everything_is_charged_at_member_prices() -> None:
    priced = price(CROSSING, SUBSCRIPTION, usage=usage(SUBSCRIPTION, "120"))
    # 20 kWh x 0.30 = 6.00; 1.5 h x 1.20 = 1.80 -> 7.80 excl, 9.36 incl; fee still waived
    assert totals(priced) == (780, 936)
    assert priced.energy_covered_milliwh == 0


def test_step_size_extras_are_shared_pro_rata_with_the_allowance() -> None:
    stepped = tariff("member", component("ENERGY", "0.30", step=1000))
    tariffs = PlanTariffs(member=stepped)
    one_period = session(charge(at("10:00"), "2.5"))
    # Billed 3 kWh (step 1 kWh) for 2.5 measured. All 2.5 covered: the extra is covered too.
    inside = price_session(PricingRequest(one_period, SUBSCRIPTION, tariffs,
                                          usage=usage(SUBSCRIPTION)))
    assert totals(inside) == (0, 0)
    # 1 kWh left: covered share 1 / 2.5 of the billed 3 kWh = 1.2 kWh; 1.8 kWh x 0.30 = 0.54
    crossing = price_session(PricingRequest(one_period, SUBSCRIPTION, tariffs,
                                            usage=usage(SUBSCRIPTION, "99")))
    assert rows(crossing)[0] == ("energy", "Energy 1.800 kWh @ 0.30 EUR/kWh, member tariff",
                                 54, 65)
    assert crossing.energy_covered_milliwh == KWH  # the allowance counts measured energy


def test_the_member_tariffs_min_price_applies_to_what_it_charges() -> None:
    minimum = dataclasses.replace(MEMBER, min_price=_price("2.00", "2.40"))
    tariffs = PlanTariffs(member=minimum)
    small = session(charge(at("10:00"), "2"))
    # fully covered: nothing is charged by the tariff, so no minimum either
    inside = price_session(PricingRequest(small, SUBSCRIPTION, tariffs,
                                          usage=usage(SUBSCRIPTION)))
    assert totals(inside) == (0, 0)
    # 1 kWh left: 1 kWh charged x 0.30 = 0.30 (0.36) -> raised to 2.00 / 2.40
    crossing = price_session(PricingRequest(small, SUBSCRIPTION, tariffs,
                                            usage=usage(SUBSCRIPTION, "99")))
    assert rows(crossing)[-1] == ("min_price", "Minimum price 2.00 EUR excl. VAT", 170, 204)
    assert totals(crossing) == (200, 240)


# -- flat rate: fair-use cap crossing -------------------------------------------------------------


def test_a_flat_rate_charges_the_fallback_tariff_above_the_fair_use_cap() -> None:
    facts = session(charge(at("10:00"), "3", 20), charge(at("10:20"), "3", 20),
                    park(at("10:40"), 10), end=at("10:50"))
    priced = price(facts, FLAT_RATE, usage=usage(FLAT_RATE, "296"))
    # cap 300, used 296: 4 kWh left. Period 1: 3 covered; period 2: 1 covered, 2 charged.
    # 2 kWh x 0.40 = 0.80 (0.96); idle is never covered: 10 min = 1/6 h x 6.00 = 1.00 (1.20)
    assert rows(priced) == [
        ("energy", "Energy 2.000 kWh @ 0.40 EUR/kWh, fallback tariff", 80, 96),
        ("idle_time", "Idle time 0:10:00 @ 6.00 EUR/h, fallback tariff", 100, 120),
        ("fair_use_energy", "Energy within the fair-use cap 4.000 kWh", 0, 0),
        ("session_fee_waived", "Session fee 1.00 EUR waived (flat rate)", 0, 0),
    ]
    assert totals(priced) == (180, 216)
    assert priced.usage_after is not None and priced.usage_after.energy_used_milliwh == 302 * KWH


# -- promotions and loyalty -----------------------------------------------------------------------


def promo(pid: str, benefit: Benefit, **options: Any) -> Promotion:
    return Promotion(pid, "op-1", pid.title(), Money.zero("EUR").currency, benefit,
                     starts_at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC), **options)


def ctx(plan: Plan = PAYG, **options: Any) -> PromotionContext:
    return PromotionContext("driver-1", plan.id, "site-1", **options)


TEN_OFF = promo("tenoff", Benefit.percent_off_energy(Decimal("10")), priority=1)
WELCOME = promo("welcome", Benefit.amount_off_session(200), code="WELCOME", priority=2,
                first_n_sessions=1)


def test_stacked_promotions_are_named_lines_and_recorded_redemptions() -> None:
    priced = price(TYPICAL, promotions=(TEN_OFF, WELCOME),
                   promotion_context=ctx(promo_code="welcome"))
    # before: energy 10.00/12.00, idle 3.00/3.60, fee 1.00/1.20 = 14.00/16.80
    # tenoff: 10 % of 12.00 = 1.20 incl, 1.00 excl
    # welcome: 2.00 over energy 10.80, idle 3.60, fee 1.20: allocate(200, [1080, 360, 120])
    #   = 138.46 / 46.15 / 15.38 -> 138 + 46 + 15, the cent to .46: 139 + 46 + 15;
    #   excl 139/1.2 = 115.83 -> 116, 46/1.2 = 38.33 -> 38, 15/1.2 = 12.5 -> 13: 1.67
    assert rows(priced)[3:] == [
        ("promotion", "Tenoff: 10% off energy", -100, -120),
        ("promotion", "Welcome (WELCOME): 2.00 EUR off the session", -167, -200),
    ]
    assert totals(priced) == (1400 - 267, 1680 - 320)
    assert [(a.promotion_id, a.discount_incl_vat.amount_minor)
            for a in priced.applied_promotions] == [("tenoff", 120), ("welcome", 200)]


def test_an_exclusive_promotion_wins_when_it_is_worth_more() -> None:
    half = promo("half", Benefit.percent_off_energy(Decimal("50")), stacking=Stacking.EXCLUSIVE)
    priced = price(TYPICAL, promotions=(TEN_OFF, WELCOME, half),
                   promotion_context=ctx(promo_code="WELCOME"))
    # 50 % of 12.00 = 6.00 > the stack's 1.20 + 2.00
    assert [a.promotion_id for a in priced.applied_promotions] == ["half"]
    assert totals(priced) == (900, 1080)  # 14.00 - 5.00, 16.80 - 6.00
    assert {(c.promotion_id, c.refusal) for c in priced.refused_promotions} == {
        ("tenoff", Refusal.NOT_BEST_OFFER), ("welcome", Refusal.NOT_BEST_OFFER)}


def test_refused_promotions_say_why() -> None:
    capped = promo("capped", Benefit.amount_off_session(100), redemptions_max_total=10)
    big_spend = promo("bigspend", Benefit.amount_off_session(100), min_spend_minor=2000)
    priced = price(TYPICAL, promotions=(WELCOME, capped, big_spend),
                   promotion_context=ctx(promo_code="WELCOME", sessions_before=1,
                                         redemptions_total={"capped": 10}))
    assert [(c.promotion_id, c.refusal) for c in priced.refused_promotions] == [
        ("welcome", Refusal.FIRST_SESSIONS_ONLY),
        ("capped", Refusal.REDEMPTION_CAP_REACHED),
        ("bigspend", Refusal.MIN_SPEND_NOT_MET),  # 16.80 < 20.00
    ]
    assert totals(priced) == (1400, 1680)


@pytest.mark.parametrize(("start", "applies"), [("21:30", True), ("10:00", False)])
def test_a_night_promotion_follows_the_sites_local_time(start: str, applies: bool) -> None:
    night = promo("night", Benefit.percent_off_energy(Decimal("20")),
                  scope=PromotionScope(local_start_time=dt.time(22), local_end_time=dt.time(6)))
    facts = session(charge(at(start), "20", 60))  # 21:30 UTC = 23:30 in Berlin
    priced = price(facts, promotions=(night,), promotion_context=ctx())
    # 20 % of 12.00 = 2.40
    assert (priced.total_incl_vat.amount_minor == 1320 - 240) is applies
    if not applies:
        assert priced.refused_promotions[0].refusal is Refusal.NOT_IN_SCOPE


def test_a_plan_without_promotions_still_gets_its_loyalty_benefit() -> None:
    no_promos = Plan.pay_per_use("payg", "op-1", "PAYG", "EUR", promotions_eligible=False)
    gold = LoyaltyTier("Gold", 100 * KWH, Benefit.percent_off_energy(Decimal("10")))
    priced = price_session(PricingRequest(TYPICAL, no_promos, TARIFFS, promotions=(TEN_OFF,),
                                          promotion_context=ctx(), loyalty_tier=gold))
    assert priced.refused_promotions[0].refusal is Refusal.PLAN_EXCLUDED
    assert rows(priced)[-1] == ("loyalty", "Loyalty Gold: 10% off energy", -100, -120)


def test_a_loyalty_tier_change_changes_the_discount() -> None:
    silver = LoyaltyTier("Silver", 40 * KWH, Benefit.percent_off_energy(Decimal("5")))
    gold = LoyaltyTier("Gold", 100 * KWH, Benefit.percent_off_energy(Decimal("10")))
    start = dt.datetime(2024, 5, 6, 10, tzinfo=dt.UTC)
    history = [UsageRecord(start - dt.timedelta(days=30), 95 * KWH)]
    before = tier_for(rolling_energy_milliwh(history, start, 90), [silver, gold])
    history.append(UsageRecord(start - dt.timedelta(days=1), 5 * KWH))  # 100 kWh: Gold
    after = tier_for(rolling_energy_milliwh(history, start, 90), [silver, gold])
    assert (before, after) == (silver, gold)
    # Silver: 5 % of 12.00 = 0.60 (0.50 excl); Gold: 10 % = 1.20 (1.00 excl)
    assert totals(price(TYPICAL, loyalty_tier=before)) == (1400 - 50, 1680 - 60)
    assert totals(price(TYPICAL, loyalty_tier=after)) == (1400 - 100, 1680 - 120)


def test_more_candidate_promotions_than_the_limit_are_refused() -> None:
    many = tuple(promo(f"p{i}", Benefit.amount_off_session(1)) for i in range(65))
    with pytest.raises(TooManyPromotionsError) as err:
        price(TYPICAL, promotions=many, promotion_context=ctx())
    assert err.value.code == "too_many_promotions"


def test_promotions_apply_to_what_the_plan_charges() -> None:
    priced = price(CROSSING, SUBSCRIPTION, usage=usage(SUBSCRIPTION, "92.3"),
                   promotions=(TEN_OFF,), promotion_context=ctx(SUBSCRIPTION))
    # 10 % of the charged energy 4.43 = 0.443 -> 0.44 (excl 0.44/1.2 = 0.367 -> 0.37)
    assert rows(priced)[-1] == ("promotion", "Tenoff: 10% off energy", -37, -44)
    assert totals(priced) == (473 - 37, 568 - 44)


# -- live == final --------------------------------------------------------------------------------


def live_and_final(facts: SessionFacts) -> tuple[SessionFacts, SessionFacts]:
    return (dataclasses.replace(facts, end_epoch_ms=None),
            dataclasses.replace(facts, end_epoch_ms=at("12:00")))


@pytest.mark.parametrize(("plan", "used"), [(PAYG, "0"), (SUBSCRIPTION, "92.3"),
                                            (FLAT_RATE, "299")])
def test_the_live_price_equals_the_final_price_for_the_same_periods(plan: Plan,
                                                                    used: str) -> None:
    live, final = live_and_final(CROSSING)
    options: dict[str, Any] = {"usage": usage(plan, used), "promotions": (TEN_OFF, WELCOME),
                               "promotion_context": ctx(plan, promo_code="WELCOME")}
    priced_live, priced_final = price(live, plan, **options), price(final, plan, **options)
    assert priced_live.rated.final is False and priced_final.rated.final is True
    assert priced_live == priced_final


def test_the_running_price_ends_at_the_final_price() -> None:
    periods = CROSSING.periods
    running = [price(session(*periods[:n]), SUBSCRIPTION, usage=usage(SUBSCRIPTION, "92.3"))
               for n in range(1, len(periods) + 1)]
    final = price(dataclasses.replace(CROSSING, end_epoch_ms=at("11:30")), SUBSCRIPTION,
                  usage=usage(SUBSCRIPTION, "92.3"))
    # After 5 kWh: all covered. After 15 kWh: 7.3 kWh x 0.30 = 2.19 (2.628 -> 2.63 incl) and
    # 1 314 000 ms = 0.365 h x 1.20 = 0.438 (0.5256 -> 0.53 incl): 3.16. Then 5.68 (as above).
    assert [totals(r)[1] for r in running] == [0, 316, 568]
    assert running[-1] == final


# -- errors ---------------------------------------------------------------------------------------


def test_a_subscription_needs_its_usage_record() -> None:
    with pytest.raises(PlanUsageRequiredError) as err:
        price_session(PricingRequest(CROSSING, SUBSCRIPTION, TARIFFS))
    assert err.value.code == "plan_usage_required"


def test_a_usage_record_of_another_period_is_refused() -> None:
    with pytest.raises(PlanUsageMismatchError):
        price(CROSSING, SUBSCRIPTION, usage=usage(SUBSCRIPTION, day="2024-04-10"))


def test_a_usage_record_of_another_plan_is_refused() -> None:
    with pytest.raises(PlanUsageMismatchError):
        price(CROSSING, SUBSCRIPTION, usage=usage(FLAT_RATE))


def test_the_member_tariff_must_be_the_one_the_plan_names() -> None:
    other = dataclasses.replace(MEMBER, id="member-2")
    with pytest.raises(PlanTariffMismatchError):
        price_session(PricingRequest(CROSSING, SUBSCRIPTION, PlanTariffs(member=other),
                                     usage=usage(SUBSCRIPTION)))


def test_a_missing_tariff_is_named() -> None:
    with pytest.raises(PlanTariffMissingError, match="fallback tariff"):
        price_session(PricingRequest(CROSSING, FLAT_RATE, PlanTariffs(public=PUBLIC),
                                     usage=usage(FLAT_RATE)))


def test_a_tariff_in_another_currency_is_refused() -> None:
    chf = tariff("public", component("ENERGY", "0.50"), currency="CHF")
    with pytest.raises(CurrencyMismatchError):
        price_session(PricingRequest(CROSSING, PAYG, PlanTariffs(public=chf)))


# -- plan fee -------------------------------------------------------------------------------------


def test_a_plan_fee_promotion_discounts_the_fee_incl_vat() -> None:
    half = promo("halffee", Benefit.percent_off_plan_fee(Decimal("50")))
    fee = price_plan_fee(SUBSCRIPTION, at=dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
                         time_zone=BERLIN, promotions=(half, TEN_OFF),
                         promotion_context=PromotionContext("driver-1", "sub"))
    # 9.99 excl, 9.99 x 1.2 = 11.988 -> 11.99 incl; 50 % of 11.99 = 5.995 -> 6.00 (half-up),
    # excl 6.00 / 1.2 = 5.00. The energy promotion is not for a fee.
    assert [(line.code, line.amount_excl_vat.amount_minor, line.amount_incl_vat.amount_minor)
            for line in fee.lines] == [(LineCode.PLAN_FEE, 999, 1199),
                                       (LineCode.PROMOTION, -500, -600)]
    assert (fee.total_excl_vat.amount_minor, fee.total_incl_vat.amount_minor) == (499, 599)
    assert fee.refused_promotions[0].refusal is Refusal.NOT_FOR_THIS_CHARGE


def test_a_prorated_fee_from_a_plan_change_is_priced_the_same_way() -> None:
    fee = price_plan_fee(SUBSCRIPTION, at=dt.datetime(2024, 5, 10, tzinfo=dt.UTC),
                         time_zone=BERLIN, fee_minor=709)
    assert (fee.total_excl_vat.amount_minor, fee.total_incl_vat.amount_minor) == (709, 851)


# -- properties -----------------------------------------------------------------------------------

DEMO_TOU = parse_tariff(json.loads(
    (Path(evbilling.__file__).parent / "demo" / "tou_tariff.json").read_text(),
    parse_float=Decimal))
TOU_SUBSCRIPTION = Plan.subscription("tou-sub", "op-1", "TOU member", "EUR", fee_minor=0,
                                     included_energy_milliwh=30 * KWH,
                                     member_tariff_id=DEMO_TOU.id)
TOU_PAYG = Plan.pay_per_use("tou-payg", "op-1", "TOU", "EUR")


@st.composite
def sessions(draw: st.DrawFn) -> SessionFacts:
    start = at("00:00") + draw(st.integers(0, 6 * 24 * 60)) * MINUTE
    periods = []
    t = start
    for _ in range(draw(st.integers(1, 6))):
        minutes = draw(st.integers(1, 180))
        if draw(st.booleans()):
            periods.append(ChargingPeriod(t, energy_milliwh=draw(st.integers(0, 40 * KWH)),
                                          time_ms=minutes * MINUTE))
        else:
            periods.append(park(t, minutes))
        t += minutes * MINUTE
    return SessionFacts(tuple(periods), BERLIN, start_epoch_ms=start, end_epoch_ms=t)


discount_promotions = st.lists(st.one_of(
    st.integers(1, 10_000).map(lambda p: promo(f"pct{p}", Benefit.percent_off_energy(
        Decimal(p) / 100))),
    st.integers(1, 10_000).map(lambda a: promo(f"amt{a}", Benefit.amount_off_session(a),
                                               stacking=Stacking.EXCLUSIVE)),
    st.integers(1, 60).map(lambda m: promo(f"idle{m}", Benefit.free_idle_time(m))),
), max_size=4, unique_by=lambda p: p.id)


@settings(max_examples=150, deadline=None)
@given(facts=sessions(), plan=st.sampled_from([TOU_PAYG, TOU_SUBSCRIPTION]),
       used_kwh=st.integers(0, 40), promotions=discount_promotions)
def test_lines_sum_to_the_total_which_discounts_never_make_negative(
        facts: SessionFacts, plan: Plan, used_kwh: int, promotions: list[Promotion]) -> None:
    start = dt.datetime.fromtimestamp(facts.periods[0].start_epoch_ms // 1000, dt.UTC)
    record = PlanUsage.for_period(plan, start, BERLIN).with_energy(used_kwh * KWH)
    request = PricingRequest(facts, plan, PlanTariffs(public=DEMO_TOU, member=DEMO_TOU),
                             usage=record, promotions=tuple(promotions),
                             promotion_context=ctx(plan))
    priced = price_session(request)
    excl = sum(line.amount_excl_vat.amount_minor for line in priced.lines)
    incl = sum(line.amount_incl_vat.amount_minor for line in priced.lines)
    assert totals(priced) == (excl, incl)
    assert priced.total_excl_vat.amount_minor >= 0 and priced.total_incl_vat.amount_minor >= 0
    assert sum(v.amount_incl_vat.amount_minor for v in priced.vat_summary) == incl
    assert sum(v.amount_excl_vat.amount_minor for v in priced.vat_summary) == excl
    # the allowance covers at most what was left, and usage grows by the session's energy
    assert priced.energy_covered_milliwh <= record.energy_remaining_milliwh
    assert priced.usage_after == record.with_energy(priced.energy_milliwh)
    # live == final
    live = price_session(dataclasses.replace(
        request, session=dataclasses.replace(facts, end_epoch_ms=None)))
    assert live == priced
