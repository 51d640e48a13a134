"""The plan advisor: a driver's usage priced under every plan, cheapest first
(``domain/pricing.advise_plans``; rules in ``docs/plans.md``). 20 % VAT: incl = 1.2 x excl.
Every expected amount is worked out in a comment."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from evbilling.domain.errors import CurrencyMismatchError
from evbilling.domain.periods import ChargingPeriod, SessionFacts, epoch_ms
from evbilling.domain.plans import Plan
from evbilling.domain.pricing import (
    InvalidUsageProfileError,
    LineCode,
    PlanCost,
    PlanOption,
    PlanTariffs,
    SessionHistory,
    SessionOutsideWindowError,
    UsageProfile,
    advise_plans,
)
from evbilling.domain.tariffs import Tariff, parse_tariff

BERLIN = "Europe/Berlin"
KWH = 1_000_000
VAT = Decimal("20")


def component(kind: str, price: str) -> dict[str, Any]:
    return {"type": kind, "price": Decimal(price), "vat": VAT, "step_size": 1}


def tariff(tariff_id: str, *components: dict[str, Any], currency: str = "EUR") -> Tariff:
    return parse_tariff({"id": tariff_id, "currency": currency,
                         "elements": [{"price_components": list(components)}]})


PUBLIC = tariff("public", component("FLAT", "1.00"), component("ENERGY", "0.50"),
                component("PARKING_TIME", "6.00"))
MEMBER = tariff("member", component("FLAT", "0.50"), component("ENERGY", "0.30"),
                component("TIME", "1.20"))
TARIFFS = PlanTariffs(public=PUBLIC, member=MEMBER, fallback=PUBLIC)

PAYG = PlanOption(Plan.pay_per_use("payg", "op-1", "Pay as you go", "EUR"), TARIFFS)
SUBSCRIPTION = PlanOption(Plan.subscription(
    "sub", "op-1", "Member", "EUR", fee_minor=999, fee_vat_percent=VAT,
    included_energy_milliwh=100 * KWH, member_tariff_id="member"), TARIFFS)
FLAT_RATE = PlanOption(Plan.flat_rate(
    "flat", "op-1", "Flat", "EUR", fee_minor=4999, fee_vat_percent=VAT,
    fair_use_cap_milliwh=300 * KWH, fallback_tariff_id="public"), TARIFFS)
OPTIONS = [PAYG, FLAT_RATE, SUBSCRIPTION]


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(BERLIN))


def charging(start: str, kwh: int, minutes: int) -> SessionFacts:
    begin = epoch_ms(local(start))
    period = ChargingPeriod(begin, energy_milliwh=kwh * KWH, time_ms=minutes * 60_000)
    return SessionFacts((period,), BERLIN, begin, begin + minutes * 60_000)


MAY = SessionHistory(
    sessions=(charging("2024-05-03 10:00", 40, 60), charging("2024-05-10 10:00", 40, 60),
              charging("2024-05-20 10:00", 40, 60)),
    window_start_at=local("2024-05-01 00:00"), window_end_at=local("2024-06-01 00:00"),
    time_zone=BERLIN)


def summary(costs: list[PlanCost]) -> list[tuple[str, int, int]]:
    return [(c.plan_id, c.total_excl_vat.amount_minor, c.total_incl_vat.amount_minor)
            for c in costs]


def test_three_sessions_in_may_are_cheapest_on_the_subscription() -> None:
    costs = advise_plans(OPTIONS, MAY)
    # payg: 40 kWh x 0.50 + 1.00 = 21.00 (25.20 incl) a session, x 3 = 63.00 / 75.60
    # sub:  fee 9.99 (11.988 -> 11.99 incl); 100 kWh included: sessions 1 and 2 covered, the
    #       third half covered: 20 kWh x 0.30 = 6.00 and 30 of its 60 minutes x 1.20/h = 0.60
    #       -> 6.60 (7.92 incl); total 16.59 / 19.91
    # flat: fee 49.99 (59.988 -> 59.99 incl); 120 kWh under the 300 kWh cap: 49.99 / 59.99
    assert summary(costs) == [("sub", 1659, 1991), ("flat", 4999, 5999), ("payg", 6300, 7560)]


def test_the_allowance_is_used_up_in_time_order_whatever_the_input_order() -> None:
    shuffled = dataclasses.replace(MAY, sessions=tuple(reversed(MAY.sessions)))
    assert advise_plans(OPTIONS, shuffled) == advise_plans(OPTIONS, MAY)


def test_each_plan_comes_with_its_periods_and_a_breakdown() -> None:
    sub = next(c for c in advise_plans(OPTIONS, MAY) if c.plan_id == "sub")
    (may,) = sub.periods
    assert (may.days_in_period, may.days_in_window, may.fee_excl_vat.amount_minor,
            may.energy_allowance_milliwh, may.energy_used_milliwh, may.sessions,
            may.sessions_incl_vat.amount_minor) == (31, 31, 999, 100 * KWH, 120 * KWH, 3, 792)
    assert (sub.energy_milliwh, sub.energy_covered_milliwh) == (120 * KWH, 100 * KWH)
    breakdown = {item.code: (item.quantity, item.amount_excl_vat.amount_minor,
                             item.amount_incl_vat.amount_minor) for item in sub.breakdown}
    assert breakdown == {
        LineCode.PLAN_FEE: (None, 999, 1199),
        LineCode.ENERGY: (20 * KWH, 600, 720),
        LineCode.CHARGING_TIME: (30 * 60_000, 60, 72),
        LineCode.INCLUDED_ENERGY: (100 * KWH, 0, 0),
        LineCode.COVERED_CHARGING_TIME: (150 * 60_000, 0, 0),  # 1 h + 1 h + 30 min
        LineCode.SESSION_FEE_WAIVED: (3, 0, 0),
    }


def test_a_90_day_window_prorates_the_partial_first_month() -> None:
    history = SessionHistory(
        sessions=(charging("2024-03-10 10:00", 95, 0),),
        window_start_at=local("2024-03-03 00:00"), window_end_at=local("2024-06-01 00:00"),
        time_zone=BERLIN)
    sub = next(c for c in advise_plans([SUBSCRIPTION], history))
    march, april, may = sub.periods
    # March: 29 of 31 days in the window. Fee allocate(999, [29, 2]) = 934.55 / 64.45
    #   -> 934 + 64, the cent to .55: 935. Allowance allocate(100 kWh, [29, 2]):
    #   93 548 387.1 / 6 451 612.9 -> the unit to .9: 93 548 387 milliwh.
    assert (march.days_in_window, march.fee_excl_vat.amount_minor,
            march.energy_allowance_milliwh) == (29, 935, 93_548_387)
    assert (april.fee_excl_vat.amount_minor, may.fee_excl_vat.amount_minor) == (999, 999)
    # 95 kWh on 10 March: 95 000 000 - 93 548 387 = 1 451 613 milliwh charged
    #   x 0.30 = 0.4354839 -> 0.44 excl, 0.5225806 -> 0.52 incl
    assert march.sessions_incl_vat.amount_minor == 52
    # fees: 9.35 + 9.99 + 9.99 = 29.33 excl; incl 11.22 + 11.99 + 11.99 = 35.20
    assert (sub.fees_excl_vat.amount_minor, sub.fees_incl_vat.amount_minor) == (2933, 3520)
    assert (sub.total_excl_vat.amount_minor, sub.total_incl_vat.amount_minor) == (2977, 3572)


PROFILE = UsageProfile(energy_milliwh_per_month=200 * KWH, sessions_per_month=8,
                       charging_minutes_avg=45, idle_minutes_avg=15, start_hour_local=18,
                       month=dt.date(2024, 5, 17), time_zone=BERLIN)


def test_a_typed_profile_becomes_a_month_of_evenly_spread_sessions() -> None:
    history = PROFILE.to_history()
    starts = [dt.datetime.fromtimestamp(s.periods[0].start_epoch_ms // 1000, ZoneInfo(BERLIN))
              for s in history.sessions]
    # days 1 + i * 31 // 8 for i in 0..7, at 18:00 local
    assert [s.day for s in starts] == [1, 4, 8, 12, 16, 20, 24, 28]
    assert {s.hour for s in starts} == {18}
    assert [s.periods[0].energy_milliwh for s in history.sessions] == [25 * KWH] * 8
    assert history.sessions[0].periods[1].parking_ms == 15 * 60_000


def test_a_typed_profile_ranks_the_plans() -> None:
    costs = advise_plans(OPTIONS, PROFILE)
    # payg: 25 kWh x 0.50 + 0.25 h idle x 6.00 + 1.00 = 15.00 (18.00 incl), x 8 = 144.00
    # sub:  4 sessions inside the 100 kWh; 4 x (25 x 0.30 + 0.75 h x 1.20) = 4 x 8.40 = 33.60
    #       (4 x 10.08 = 40.32 incl); the member tariff has no idle fee; + fee 9.99 / 11.99
    #       = 43.59 / 52.31
    # flat: all energy under the cap; idle is never covered: 8 x 1.50 = 12.00 (14.40 incl)
    #       + fee 49.99 / 59.99 = 61.99 / 74.39
    assert summary(costs) == [("sub", 4359, 5231), ("flat", 6199, 7439),
                              ("payg", 12000, 14400)]


def test_no_sessions_leaves_only_the_fees() -> None:
    empty = dataclasses.replace(PROFILE, energy_milliwh_per_month=0, sessions_per_month=0)
    assert summary(advise_plans(OPTIONS, empty)) == [("payg", 0, 0), ("sub", 999, 1199),
                                                     ("flat", 4999, 5999)]


def test_a_session_outside_the_window_is_refused() -> None:
    late = dataclasses.replace(MAY, sessions=(charging("2024-06-02 10:00", 10, 10),))
    with pytest.raises(SessionOutsideWindowError) as err:
        advise_plans(OPTIONS, late)
    assert err.value.code == "session_outside_window"


def test_plans_in_different_currencies_cannot_be_ranked() -> None:
    chf = PlanOption(Plan.pay_per_use("chf", "op-1", "CHF", "CHF"),
                     PlanTariffs(public=tariff("public", component("ENERGY", "0.5"),
                                               currency="CHF")))
    with pytest.raises(CurrencyMismatchError):
        advise_plans([PAYG, chf], MAY)


def test_a_profile_field_out_of_range_is_named() -> None:
    with pytest.raises(InvalidUsageProfileError) as err:
        dataclasses.replace(PROFILE, start_hour_local=24)
    assert (err.value.code, err.value.field) == ("invalid_usage_profile", "start_hour_local")
