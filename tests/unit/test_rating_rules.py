"""Rating, one worked example per rule (OCPI 2.2.1 mod_tariffs / mod_cdrs; brief "Rules").

Every expected amount is computed by hand in a comment next to it. Amounts are full precision
(12 places), so ``Decimal("0.35") == Decimal("0.350000000000")`` holds and the examples read as
the spec writes them. 2024-05-06 is a Monday; the time zone is UTC unless a test says otherwise.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from evbilling.domain.errors import RatingError, TariffParseError
from evbilling.domain.periods import (
    MAX_SESSION_DURATION_MS,
    MAX_SESSION_ENERGY_MILLIWH,
    ChargingPeriod,
    SessionFacts,
    epoch_ms,
)
from evbilling.domain.rating import (
    RatedDimension,
    RatedSession,
    SessionRater,
    UnratableSessionError,
    rate,
)
from evbilling.domain.tariffs import Price, Tariff, parse_tariff

BERLIN = "Europe/Berlin"

# -- builders: OCPI JSON for tariffs (parsed, so every tariff here is a valid one) ---------------


def tariff(*elements: dict[str, Any], **header: Any) -> Tariff:
    return parse_tariff({"id": "T-1", "currency": "EUR", "elements": list(elements), **header})


def element(*components: dict[str, Any], **restrictions: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"price_components": list(components)}
    if restrictions:
        out["restrictions"] = restrictions
    return out


def _component(kind: str, price: str, step: int | None, vat: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "price": price}
    if step is not None:
        out["step_size"] = step
    if vat is not None:
        out["vat"] = vat
    return out


def energy(price: str, step: int = 1, vat: str | None = None) -> dict[str, Any]:
    return _component("ENERGY", price, step, vat)


def time(price: str, step: int = 1, vat: str | None = None) -> dict[str, Any]:
    return _component("TIME", price, step, vat)


def parking(price: str, step: int = 1, vat: str | None = None) -> dict[str, Any]:
    return _component("PARKING_TIME", price, step, vat)


def flat(price: str, vat: str | None = None) -> dict[str, Any]:
    return _component("FLAT", price, None, vat)


# -- builders: sessions ----------------------------------------------------------------------------


def at(wall_clock: str, tz: str = "UTC") -> int:
    """Epoch ms of a wall-clock time "YYYY-MM-DD HH:MM" in ``tz``."""
    return epoch_ms(dt.datetime.fromisoformat(wall_clock).replace(tzinfo=ZoneInfo(tz)))


def utc(instant: str) -> int:
    return at(instant, "UTC")


def _ms(minutes: int | str) -> int:
    return int(Decimal(minutes) * 60_000)


def charging(start: int, *, kwh: str = "0", minutes: int | str = 0, **extra: int) -> ChargingPeriod:
    return ChargingPeriod(start_epoch_ms=start, energy_milliwh=int(Decimal(kwh) * 1_000_000),
                          time_ms=_ms(minutes), **extra)


def parked(start: int, *, minutes: int | str) -> ChargingPeriod:
    return ChargingPeriod(start_epoch_ms=start, parking_ms=_ms(minutes))


def reserved(start: int, *, minutes: int | str) -> ChargingPeriod:
    return ChargingPeriod(start_epoch_ms=start, reservation_ms=_ms(minutes))


def rated(t: Tariff, *periods: ChargingPeriod, tz: str = "UTC", end: int | None = None,
          start: int | None = None, reservation_expired: bool | None = None) -> RatedSession:
    return rate(t, SessionFacts(periods=periods, time_zone=tz, start_epoch_ms=start,
                                end_epoch_ms=end, reservation_expired=reservation_expired))


def price(excl: str, incl: str | None = None) -> Price:
    return Price(Decimal(excl), Decimal(incl if incl is not None else excl))


def energy_price_at(t: Tariff, start: int, tz: str = "UTC", **extra: int) -> Decimal:
    """The excl-VAT cost of 1 kWh charged in a period starting at ``start`` = the unit price."""
    return rated(t, charging(start, kwh="1", **extra), tz=tz).total_energy_cost.excl_vat


def dimension(session: RatedSession, period: int, kind: str) -> RatedDimension:
    (found,) = [d for d in session.periods()[period].dimensions if d.type == kind]
    return found


# -- which element prices a dimension -----------------------------------------------------------


def test_the_first_matching_element_with_the_dimension_prices_it() -> None:
    # Both elements match at 10:00; the first in the list wins: 10 kWh * 0.40 = 4.00
    t = tariff(element(energy("0.40"), start_time="08:00", end_time="18:00"),
               element(energy("0.30")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10"))
    assert session.total_energy_cost == price("4.00")


def test_an_earlier_element_without_the_dimension_does_not_block_a_later_one() -> None:
    # Element 0 prices only TIME; ENERGY comes from element 1: 10 kWh * 0.30 = 3.00
    t = tariff(element(time("2.00")), element(energy("0.30")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10", minutes=30))
    assert dimension(session, 0, "ENERGY").element_index == 1
    assert session.total_energy_cost == price("3.00")


def test_each_dimension_picks_its_own_element_in_the_same_period() -> None:
    # TIME from element 0 (30 min * 2.00/h = 1.00), ENERGY from element 1 (3.00): total 4.00
    t = tariff(element(time("2.00")), element(energy("0.30")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10", minutes=30))
    assert session.total_cost == price("4.00")


def test_an_element_whose_restrictions_do_not_match_falls_through_to_the_fallback() -> None:
    # 20:00 is outside 08:00-18:00, so the unrestricted element 1 applies: 10 * 0.30 = 3.00
    t = tariff(element(energy("0.40"), start_time="08:00", end_time="18:00"),
               element(energy("0.30")))
    session = rated(t, charging(utc("2024-05-06 20:00"), kwh="10"))
    assert (dimension(session, 0, "ENERGY").element_index, session.total_energy_cost) == (
        1, price("3.00"))


def test_an_element_applies_only_when_all_its_restrictions_match() -> None:
    # 10:00 fits the hours but Monday is not SATURDAY (logical AND): fallback 0.30
    t = tariff(element(energy("0.40"), start_time="08:00", end_time="18:00",
                       day_of_week=["SATURDAY"]),
               element(energy("0.30")))
    assert energy_price_at(t, utc("2024-05-06 10:00")) == Decimal("0.30")


def test_a_dimension_without_a_matching_element_costs_nothing() -> None:
    # ENERGY only before 18:00; at 20:00 nothing prices it. TIME 30 min * 2.00 = 1.00 is all.
    t = tariff(element(time("2.00")),
               element(energy("0.40"), start_time="08:00", end_time="18:00"))
    session = rated(t, charging(utc("2024-05-06 20:00"), kwh="10", minutes=30))
    assert (session.total_energy_cost, session.total_cost) == (price("0"), price("1.00"))


def test_energy_without_a_matching_element_is_reported() -> None:
    t = tariff(element(time("2.00")))
    session = rated(t, charging(utc("2024-05-06 20:00"), kwh="10", minutes=30))
    assert "energy_not_priced" in session.warnings


def test_unpriced_energy_still_counts_in_total_energy() -> None:
    t = tariff(element(time("2.00")))
    session = rated(t, charging(utc("2024-05-06 20:00"), kwh="10", minutes=30))
    assert session.total_energy == Decimal("10")


def test_an_unpriced_dimension_names_no_element_in_the_breakdown() -> None:
    t = tariff(element(time("2.00")))
    session = rated(t, charging(utc("2024-05-06 20:00"), kwh="10", minutes=30))
    assert dimension(session, 0, "ENERGY") == RatedDimension(
        "ENERGY", Decimal(10), Decimal(10), None, None, None, price("0"))


# -- time of day -------------------------------------------------------------------------------

DAYTIME = tariff(element(energy("0.40"), start_time="08:00", end_time="18:00"),
                 element(energy("0.20")))


@pytest.mark.parametrize(
    ("clock", "unit_price"),
    [("07:59", "0.20"), ("08:00", "0.40"), ("17:59", "0.40"), ("18:00", "0.20")],
)
def test_start_time_is_inclusive_and_end_time_exclusive(clock: str, unit_price: str) -> None:
    assert energy_price_at(DAYTIME, utc(f"2024-05-06 {clock}")) == Decimal(unit_price)


def test_restrictions_are_evaluated_at_the_period_start() -> None:
    # The period starts at 17:30 and runs past 18:00: all 10 kWh at 0.40 = 4.00
    session = rated(DAYTIME, charging(utc("2024-05-06 17:30"), kwh="10", minutes=60))
    assert session.total_energy_cost == price("4.00")


NIGHT = tariff(element(energy("0.10"), start_time="22:00", end_time="06:00"),
               element(energy("0.30")))


@pytest.mark.parametrize(
    ("clock", "unit_price"),
    [("23:00", "0.10"), ("05:00", "0.10"), ("12:00", "0.30"),
     ("22:00", "0.10"), ("05:59", "0.10"), ("06:00", "0.30"), ("21:59", "0.30"),
     ("00:00", "0.10")],
)
def test_a_window_ending_before_it_starts_wraps_midnight(clock: str, unit_price: str) -> None:
    assert energy_price_at(NIGHT, utc(f"2024-05-06 {clock}")) == Decimal(unit_price)


EVENING = tariff(element(energy("0.50"), start_time="18:00", end_time="00:00"),
                 element(energy("0.30")))


@pytest.mark.parametrize(
    ("clock", "unit_price"),
    [("17:59", "0.30"), ("18:00", "0.50"), ("23:59", "0.50"), ("00:00", "0.30")],
)
def test_end_time_midnight_means_end_of_day(clock: str, unit_price: str) -> None:
    assert energy_price_at(EVENING, utc(f"2024-05-06 {clock}")) == Decimal(unit_price)


# -- dates and days ----------------------------------------------------------------------------

PROMOTION = tariff(element(energy("0.10"), start_date="2024-05-06", end_date="2024-05-08"),
                   element(energy("0.30")))


@pytest.mark.parametrize(
    ("wall_clock", "unit_price"),
    [("2024-05-05 23:59", "0.30"), ("2024-05-06 00:00", "0.10"),
     ("2024-05-07 23:59", "0.10"), ("2024-05-08 00:00", "0.30")],
)
def test_start_date_is_inclusive_and_end_date_exclusive(wall_clock: str, unit_price: str) -> None:
    assert energy_price_at(PROMOTION, utc(wall_clock)) == Decimal(unit_price)


def test_dates_are_local_dates() -> None:
    # 00:30 on 6 May in Berlin (CEST, UTC+2) is still 5 May 22:30 UTC: the promotion applies.
    assert energy_price_at(PROMOTION, at("2024-05-06 00:30", BERLIN), tz=BERLIN) == \
        Decimal("0.10")


WEEKEND = tariff(element(energy("0.10"), day_of_week=["SATURDAY", "SUNDAY"]),
                 element(energy("0.30")))


@pytest.mark.parametrize(
    ("wall_clock", "unit_price"),
    [("2024-05-06 12:00", "0.30"), ("2024-05-10 23:59", "0.30"),
     ("2024-05-11 00:00", "0.10"), ("2024-05-12 23:59", "0.10")],
)
def test_day_of_week_limits_an_element_to_those_days(wall_clock: str, unit_price: str) -> None:
    assert energy_price_at(WEEKEND, utc(wall_clock)) == Decimal(unit_price)


def test_day_of_week_is_the_local_day() -> None:
    # Monday 01:00 in Berlin is Sunday 23:00 UTC: not the weekend locally.
    assert energy_price_at(WEEKEND, at("2024-05-13 01:00", BERLIN), tz=BERLIN) == \
        Decimal("0.30")


# -- kWh tiers ---------------------------------------------------------------------------------

TIERS = tariff(element(energy("0.20"), max_kwh="10"), element(energy("0.30"), min_kwh="10"))


def test_kwh_tiers_use_the_energy_consumed_before_the_period() -> None:
    # before: 0 -> tier 1; 6 -> tier 1 (the period crosses 10 kWh but starts below it);
    # 12 -> tier 2.  (6 + 6) * 0.20 + 3 * 0.30 = 2.40 + 0.90 = 3.30
    start = utc("2024-05-06 10:00")
    session = rated(TIERS, charging(start, kwh="6"), charging(start + 600_000, kwh="6"),
                    charging(start + 1_200_000, kwh="3"))
    assert session.total_energy_cost == price("3.30")


def test_a_period_starting_at_exactly_max_kwh_goes_to_the_next_tier() -> None:
    # before the 2nd period: 10 kWh; max_kwh is exclusive, min_kwh inclusive:
    # 10 * 0.20 + 5 * 0.30 = 2.00 + 1.50 = 3.50
    start = utc("2024-05-06 10:00")
    session = rated(TIERS, charging(start, kwh="10"), charging(start + 600_000, kwh="5"))
    assert (dimension(session, 1, "ENERGY").element_index, session.total_energy_cost) == (
        1, price("3.50"))


# -- duration ----------------------------------------------------------------------------------


def test_max_duration_is_exclusive() -> None:
    # 1st hour at 1.00/h (max_duration 3600 s), the period starting at 3600 s at 2.00/h:
    # 1 h * 1.00 + 0.5 h * 2.00 = 2.00
    t = tariff(element(time("1.00"), max_duration=3600), element(time("2.00")))
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=60),
                    charging(utc("2024-05-06 11:00"), minutes=30))
    assert session.total_time_cost == price("2.00")


def test_min_duration_is_inclusive() -> None:
    # from 1800 s on: 5.00/h; before: 1.00/h.  0.5 h * 1.00 + 0.5 h * 5.00 = 3.00
    t = tariff(element(time("5.00"), min_duration=1800), element(time("1.00")))
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=30),
                    charging(utc("2024-05-06 10:30"), minutes=30))
    assert session.total_time_cost == price("3.00")


def test_duration_counts_from_the_first_charging_period_not_the_reservation() -> None:
    # Reserved 09:40-10:00 (unpriced here). Charging at 10:00 is at duration 0 (1.00/h),
    # at 10:10 at 600 s (5.00/h): 10 min * 1.00/h + 10 min * 5.00/h = 1/6 + 5/6 = 1.00
    t = tariff(element(time("5.00"), min_duration=600), element(time("1.00")))
    session = rated(t, reserved(utc("2024-05-06 09:40"), minutes=20),
                    charging(utc("2024-05-06 10:00"), minutes=10),
                    charging(utc("2024-05-06 10:10"), minutes=10))
    assert session.total_time_cost == price("1.00")


# -- current and power -------------------------------------------------------------------------

MIN_CURRENT = tariff(element(energy("0.50"), min_current="32"), element(energy("0.30")))
MAX_CURRENT = tariff(element(energy("0.20"), max_current="16"), element(energy("0.30")))


@pytest.mark.parametrize(("current_ma_min", "unit_price"), [(32_000, "0.50"), (31_999, "0.30")])
def test_min_current_reads_min_current_inclusively(current_ma_min: int, unit_price: str) -> None:
    assert energy_price_at(MIN_CURRENT, utc("2024-05-06 10:00"),
                           current_ma_min=current_ma_min) == Decimal(unit_price)


def test_min_current_falls_back_to_current() -> None:
    assert energy_price_at(MIN_CURRENT, utc("2024-05-06 10:00"), current_ma=40_000) == \
        Decimal("0.50")


def test_min_current_prefers_min_current_over_current() -> None:
    assert energy_price_at(MIN_CURRENT, utc("2024-05-06 10:00"), current_ma_min=10_000,
                           current_ma=40_000) == Decimal("0.30")


@pytest.mark.parametrize(("current_ma_max", "unit_price"), [(15_999, "0.20"), (16_000, "0.30")])
def test_max_current_reads_max_current_exclusively(current_ma_max: int, unit_price: str) -> None:
    assert energy_price_at(MAX_CURRENT, utc("2024-05-06 10:00"),
                           current_ma_max=current_ma_max) == Decimal(unit_price)


def test_max_current_falls_back_to_current() -> None:
    assert energy_price_at(MAX_CURRENT, utc("2024-05-06 10:00"), current_ma=10_000) == \
        Decimal("0.20")


def test_max_current_prefers_max_current_over_current() -> None:
    assert energy_price_at(MAX_CURRENT, utc("2024-05-06 10:00"), current_ma_max=20_000,
                           current_ma=10_000) == Decimal("0.30")


def test_a_current_restriction_without_current_data_does_not_match() -> None:
    assert energy_price_at(MAX_CURRENT, utc("2024-05-06 10:00")) == Decimal("0.30")


def test_a_current_restriction_without_current_data_is_reported() -> None:
    session = rated(MAX_CURRENT, charging(utc("2024-05-06 10:00"), kwh="1"))
    assert "current_unknown_for_current_restriction" in session.warnings


# The mod_tariffs max_power example: < 16 kW 0.20, 16-32 kW 0.35, else 0.50.
MAX_POWER = tariff(element(energy("0.20"), max_power="16.00"),
                   element(energy("0.35"), max_power="32.00"),
                   element(energy("0.50")))


@pytest.mark.parametrize(
    ("power_w_max", "unit_price"),
    [(10_000, "0.20"), (15_999, "0.20"), (16_000, "0.35"), (31_999, "0.35"), (32_000, "0.50")],
)
def test_max_power_reads_max_power_exclusively(power_w_max: int, unit_price: str) -> None:
    assert energy_price_at(MAX_POWER, utc("2024-05-06 10:00"), power_w_max=power_w_max) == \
        Decimal(unit_price)


def test_max_power_falls_back_to_power() -> None:
    assert energy_price_at(MAX_POWER, utc("2024-05-06 10:00"), power_w=20_000) == \
        Decimal("0.35")


def test_max_power_prefers_max_power_over_power() -> None:
    assert energy_price_at(MAX_POWER, utc("2024-05-06 10:00"), power_w_max=40_000,
                           power_w=10_000) == Decimal("0.50")


MIN_POWER = tariff(element(energy("0.59"), min_power="50"), element(energy("0.39")))


@pytest.mark.parametrize(("power_w_min", "unit_price"), [(50_000, "0.59"), (49_999, "0.39")])
def test_min_power_reads_min_power_inclusively(power_w_min: int, unit_price: str) -> None:
    assert energy_price_at(MIN_POWER, utc("2024-05-06 10:00"), power_w_min=power_w_min) == \
        Decimal(unit_price)


def test_min_power_falls_back_to_power() -> None:
    assert energy_price_at(MIN_POWER, utc("2024-05-06 10:00"), power_w=150_000) == \
        Decimal("0.59")


def test_min_power_prefers_min_power_over_power() -> None:
    assert energy_price_at(MIN_POWER, utc("2024-05-06 10:00"), power_w_min=11_000,
                           power_w=150_000) == Decimal("0.39")


def test_a_power_restriction_without_power_data_is_reported_and_does_not_match() -> None:
    session = rated(MIN_POWER, charging(utc("2024-05-06 10:00"), kwh="1"))
    assert (session.total_energy_cost, session.warnings) == (
        price("0.39"), ("power_unknown_for_power_restriction",))


# The mod_tariffs "complex tariff" example (tariff_4_complex.json).
COMPLEX = tariff(
    element(flat("2.50", vat="15.0")),
    element(time("1.00", 900, "20.0"), max_current="32.00"),
    element(time("2.00", 600, "20.0"), min_current="32.00",
            day_of_week=["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]),
    element(time("1.25", 600, "20.0"), min_current="32.00", day_of_week=["SATURDAY", "SUNDAY"]),
    element(parking("5.00", 300, "10.0"), start_time="09:00", end_time="18:00",
            day_of_week=["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]),
    element(parking("6.00", 300, "10.0"), start_time="10:00", end_time="17:00",
            day_of_week=["SATURDAY"]),
)


def test_the_spec_complex_example_on_a_monday_morning() -> None:
    # Monday 09:30, 165 min charging at max 16 A, then 42 min parking (spec: 9.00 / 10.30):
    #   FLAT 2.50                         incl 2.50 * 1.15 = 2.875
    #   TIME 2.75 h * 1.00 (< 32 A)  2.75, incl 3.30   (not rounded: parking follows)
    #   PARKING 42 -> 45 min * 5.00 = 3.75, incl 4.125 (step 300 s)
    #   total 9.00, incl 10.30
    session = rated(COMPLEX,
                    charging(utc("2024-05-06 09:30"), minutes=165, current_ma_max=16_000),
                    parked(utc("2024-05-06 12:15"), minutes=42),
                    end=utc("2024-05-06 12:57"))
    assert session.total_cost == price("9.00", "10.30")


def test_the_spec_complex_example_on_a_saturday_afternoon() -> None:
    # Saturday 13:30, 114 min at min 43 A, then 71 min parking. The spec prints 2.28 for the
    # charging time, which is 1.9 h * 1.20; at the tariff's 1.25/h it is 2.375:
    #   FLAT 2.50, incl 2.875
    #   TIME 1.9 h * 1.25 = 2.375, incl 2.85
    #   PARKING 71 -> 75 min * 6.00 = 7.50, incl 8.25
    #   total 12.375, incl 13.975
    session = rated(COMPLEX,
                    charging(utc("2024-05-11 13:30"), minutes=114, current_ma_min=43_000),
                    parked(utc("2024-05-11 15:24"), minutes=71))
    assert session.total_cost == price("12.375", "13.975")


# -- local time across DST (Europe/Berlin) -----------------------------------------------------


def test_an_element_for_the_skipped_spring_forward_hour_never_matches() -> None:
    # On 2024-03-31 Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC): 02:00-03:00 local
    # does not exist. Twelve quarter-hours from 23:00 UTC (00:00 CET) to 01:45 UTC (03:45 CEST),
    # 1 kWh each, are all priced by the fallback: 12 * 0.30 = 3.60.
    t = tariff(element(energy("0.10"), start_time="02:00", end_time="03:00"),
               element(energy("0.30")))
    start = utc("2024-03-30 23:00")
    periods = [charging(start + i * 900_000, kwh="1") for i in range(12)]
    session = rated(t, *periods, tz=BERLIN)
    assert session.total_energy_cost == price("3.60")


def test_a_window_straddling_the_skipped_hour_matches_only_its_existing_part() -> None:
    # 02:30-03:30 on spring-forward night: 02:30 never happens, 03:00-03:30 CEST does.
    # 00:45 UTC = 01:45 CET (0.30); 01:00 UTC = 03:00 CEST (0.10); 01:30 UTC = 03:30 (0.30)
    t = tariff(element(energy("0.10"), start_time="02:30", end_time="03:30"),
               element(energy("0.30")))
    assert [energy_price_at(t, utc(f"2024-03-31 {clock}"), tz=BERLIN)
            for clock in ("00:45", "01:00", "01:30")] == [
        Decimal("0.30"), Decimal("0.10"), Decimal("0.30")]


def test_the_first_instant_after_spring_forward_is_three_oclock_local() -> None:
    # 00:59 UTC = 01:59 CET (fallback 0.30); 01:00 UTC = 03:00 CEST (element 0, 0.10)
    t = tariff(element(energy("0.10"), start_time="03:00", end_time="04:00"),
               element(energy("0.30")))
    assert (energy_price_at(t, utc("2024-03-31 00:59"), tz=BERLIN),
            energy_price_at(t, utc("2024-03-31 01:00"), tz=BERLIN)) == (
        Decimal("0.30"), Decimal("0.10"))


def test_a_night_window_across_spring_forward_follows_the_local_clock() -> None:
    # Night 22:00-03:00 at 0.10, else 0.30. Hourly 1 kWh periods from 21:00 UTC:
    #   21:00Z 22:00 CET night | 22:00Z 23:00 night | 23:00Z 00:00 night | 00:00Z 01:00 night
    #   01:00Z 03:00 CEST day  | 02:00Z 04:00 day
    # 4 * 0.10 + 2 * 0.30 = 1.00 (a fixed UTC+1 would see 02:00 at 01:00Z and charge 0.80)
    t = tariff(element(energy("0.10"), start_time="22:00", end_time="03:00"),
               element(energy("0.30")))
    start = utc("2024-03-30 21:00")
    session = rated(t, *[charging(start + i * 3_600_000, kwh="1") for i in range(6)], tz=BERLIN)
    assert session.total_energy_cost == price("1.00")


def test_the_repeated_fall_back_hour_matches_twice() -> None:
    # On 2024-10-27 Berlin goes from 03:00 CEST back to 02:00 CET (01:00 UTC), so 02:00-03:00
    # local happens twice. 1 kWh periods at
    #   23:30Z 01:30 CEST (0.30) | 00:30Z 02:30 CEST (0.10) | 01:30Z 02:30 CET (0.10)
    #   02:30Z 03:30 CET (0.30)
    # = 0.30 + 0.10 + 0.10 + 0.30 = 0.80
    t = tariff(element(energy("0.10"), start_time="02:00", end_time="03:00"),
               element(energy("0.30")))
    session = rated(t, *[charging(utc("2024-10-26 23:30") + i * 3_600_000, kwh="1")
                         for i in range(4)], tz=BERLIN)
    assert session.total_energy_cost == price("0.80")


PEAK = tariff(element(energy("0.50"), start_time="17:00", end_time="21:00"),
              element(energy("0.30")))


def test_five_pm_local_is_four_pm_utc_in_winter() -> None:
    assert (energy_price_at(PEAK, utc("2024-01-15 15:59"), tz=BERLIN),
            energy_price_at(PEAK, utc("2024-01-15 16:00"), tz=BERLIN)) == (
        Decimal("0.30"), Decimal("0.50"))


def test_five_pm_local_is_three_pm_utc_in_summer() -> None:
    assert (energy_price_at(PEAK, utc("2024-07-15 14:59"), tz=BERLIN),
            energy_price_at(PEAK, utc("2024-07-15 15:00"), tz=BERLIN)) == (
        Decimal("0.30"), Decimal("0.50"))


# -- step_size ---------------------------------------------------------------------------------


def evening_energy(before_step: int, after_step: int) -> Tariff:
    # mod_cdrs step_size example: 0.20/kWh before 17:00, 0.27/kWh after.
    return tariff(element(energy("0.20", before_step), end_time="17:00"),
                  element(energy("0.27", after_step), start_time="17:00"))


def evening_session(t: Tariff) -> RatedSession:
    return rated(t, charging(utc("2024-05-06 16:00"), kwh="4.3"),
                 charging(utc("2024-05-06 17:00"), kwh="1.1"))


def test_energy_step_rounds_the_session_total_with_the_extra_at_the_last_price() -> None:
    # 4.3 + 1.1 = 5.4 kWh -> 5.5 kWh (500 Wh steps); the extra 0.1 kWh at 0.27:
    # 4.3 * 0.20 + 1.2 * 0.27 = 0.86 + 0.324 = 1.184
    assert evening_session(evening_energy(500, 500)).total_energy_cost == price("1.184")


def test_energy_step_of_the_last_period_is_used() -> None:
    # the 17:00 element's step (500 Wh) applies even though the first element's is 1 Wh: 1.184
    assert evening_session(evening_energy(1, 500)).total_energy_cost == price("1.184")


def test_energy_step_of_an_earlier_period_is_ignored() -> None:
    # last step 1 Wh: 5.4 kWh is whole Wh, nothing added: 0.86 + 1.1 * 0.27 = 1.157
    assert evening_session(evening_energy(500, 1)).total_energy_cost == price("1.157")


@pytest.mark.parametrize(
    ("step", "cost"),
    # mod_tariffs step_size note, 115.2 Wh at 0.25/kWh:
    #   step 1:   116 Wh -> 0.029
    #   step 25:  125 Wh -> 0.03125 (the spec prints it rounded, 0.031)
    #   step 500: 500 Wh -> 0.125
    #   step 0:   read as 1 -> 116 Wh -> 0.029
    [(1, "0.029"), (25, "0.03125"), (500, "0.125"), (0, "0.029")],
)
def test_energy_step_rounds_up_to_whole_steps_of_wh(step: int, cost: str) -> None:
    t = tariff(element(energy("0.25", step)))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="0.1152"))
    assert session.total_cost == price(cost)


def test_energy_on_a_whole_step_is_not_rounded() -> None:
    t = tariff(element(energy("0.25", 500)))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="1.5"))
    assert session.total_cost == price("0.375")  # 1.5 kWh * 0.25


def test_time_step_rounds_the_session_total_at_the_last_price() -> None:
    # mod_cdrs: 5.00/h before 17:00, 7.00/h after, both 10 min steps; 6 + 22 = 28 -> 30 min,
    # so 24 min after 17:00: 6/60 * 5 + 24/60 * 7 = 0.50 + 2.80 = 3.30
    t = tariff(element(time("5.00", 600), end_time="17:00"),
               element(time("7.00", 600), start_time="17:00"))
    session = rated(t, charging(utc("2024-05-06 16:54"), minutes=6),
                    charging(utc("2024-05-06 17:00"), minutes=22))
    assert session.total_time_cost == price("3.30")


def test_time_is_not_rounded_when_parking_time_follows() -> None:
    # mod_cdrs: TIME 1.00/h and PARKING 2.00/h, both 10 min steps; 21 min charging then 16 min
    # parking. Only parking is rounded (16 -> 20 min): TIME 21/60 * 1.00 = 0.35
    t = tariff(element(time("1.00", 600), parking("2.00", 600)))
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=21),
                    parked(utc("2024-05-06 10:21"), minutes=16))
    assert session.total_time_cost == price("0.35")


def test_parking_time_last_in_the_session_is_rounded() -> None:
    # same session: PARKING 20/60 h * 2.00 = 0.666666666667 (12 places, half-up)
    t = tariff(element(time("1.00", 600), parking("2.00", 600)))
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=21),
                    parked(utc("2024-05-06 10:21"), minutes=16))
    assert session.total_parking_cost == price("0.666666666667")


def test_time_last_in_the_session_is_rounded() -> None:
    # 21 min charging, nothing after: 30 min * 1.00/h = 0.50
    t = tariff(element(time("1.00", 600), parking("2.00", 600)))
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=21))
    assert session.total_time_cost == price("0.50")


# mod_tariffs tariff_14_step_size.json
STEPS = tariff(element(time("1.20", 1800), end_time="17:00"),
               element(time("2.40", 900), start_time="17:00"),
               element(parking("1.00", 900), end_time="20:00"))


def test_the_spec_step_size_example_switching_element() -> None:
    # 16:55 charge 5 min at 1.20 (0.10), 17:00 charge 5 min at 2.40 (0.20), 17:05 park 2 min
    # -> 15 min at 1.00 (0.25). Charging time is not rounded. Total 0.55.
    session = rated(STEPS, charging(utc("2024-05-06 16:55"), minutes=5),
                    charging(utc("2024-05-06 17:00"), minutes=5),
                    parked(utc("2024-05-06 17:05"), minutes=2))
    assert session.total_cost == price("0.55")


def test_the_spec_step_size_example_rounding_with_the_last_elements_step() -> None:
    # 16:35 charge 25 min at 1.20 (0.50), 17:00 charge 10 min at 2.40; total 35 min rounded to
    # 45 with the last step (900 s), the extra 10 min at 2.40: 20 min * 2.40/h = 0.80.
    # Total 1.30.
    session = rated(STEPS, charging(utc("2024-05-06 16:35"), minutes=25),
                    charging(utc("2024-05-06 17:00"), minutes=10))
    assert session.total_cost == price("1.30")


def free_parking_after_eight() -> RatedSession:
    # 19:40 charge 12 min at 2.40 (0.48); 19:52 park 8 min at 1.00; 20:00 park 12 min, free.
    # Billable parking 8 min -> 15 min (step of the last priced time component): 0.25.
    return rated(STEPS, charging(utc("2024-05-06 19:40"), minutes=12),
                 parked(utc("2024-05-06 19:52"), minutes=8),
                 parked(utc("2024-05-06 20:00"), minutes=12))


def test_the_spec_step_size_example_switching_to_free_parking() -> None:
    # 0.48 + 0.25 = 0.73
    assert free_parking_after_eight().total_cost == price("0.73")


def test_the_step_extra_sits_on_the_last_priced_time_period() -> None:
    # period 1 (19:52): 8 min volume, billed 15 min = 0.25 h, element 2, 1.00/h, no VAT, 0.25
    assert dimension(free_parking_after_eight(), 1, "PARKING_TIME") == RatedDimension(
        type="PARKING_TIME", volume=Decimal("0.133333333333"), billed_volume=Decimal("0.25"),
        element_index=2, price=Decimal("1.00"), vat=None, cost=price("0.25"))


def test_a_free_period_after_the_last_priced_one_names_no_element() -> None:
    assert dimension(free_parking_after_eight(), 2, "PARKING_TIME") == RatedDimension(
        type="PARKING_TIME", volume=Decimal("0.2"), billed_volume=Decimal("0.2"),
        element_index=None, price=None, vat=None, cost=price("0"))


def test_the_energy_step_extra_sits_on_the_last_energy_period() -> None:
    # 4.3 kWh billed as 4.3; 1.1 kWh billed as 1.2 (the 0.1 kWh extra)
    session = evening_session(evening_energy(500, 500))
    assert ((dimension(session, 0, "ENERGY").billed_volume,
             dimension(session, 1, "ENERGY").billed_volume)) == (Decimal("4.3"), Decimal("1.2"))


def test_the_breakdown_names_the_element_of_each_dimension() -> None:
    # 16:55 TIME from element 0, 17:00 TIME from element 1, 17:05 PARKING from element 2
    session = rated(STEPS, charging(utc("2024-05-06 16:55"), minutes=5),
                    charging(utc("2024-05-06 17:00"), minutes=5),
                    parked(utc("2024-05-06 17:05"), minutes=2))
    assert [d.element_index for p in session.periods() for d in p.dimensions] == [0, 1, 2]


def test_the_breakdown_costs_add_up_to_the_total() -> None:
    session = free_parking_after_eight()
    assert sum(d.cost.excl_vat for p in session.periods() for d in p.dimensions) == \
        session.total_cost.excl_vat


# -- FLAT --------------------------------------------------------------------------------------


def test_flat_is_charged_once_however_many_periods() -> None:
    # FLAT 1.00 once + 4 kWh * 0.25 = 1.00 + 1.00 = 2.00
    t = tariff(element(flat("1.00"), energy("0.25")))
    start = utc("2024-05-06 10:00")
    session = rated(t, *[charging(start + i * 900_000, kwh="1") for i in range(4)])
    assert (session.total_fixed_cost, session.total_cost) == (price("1.00"), price("2.00"))


def test_flat_comes_from_the_first_period_where_an_element_with_flat_matches() -> None:
    # FLAT 2.00 only from 18:00; periods at 17:00, 18:00, 19:00 -> one FLAT, on period 1
    t = tariff(element(flat("2.00"), start_time="18:00"), element(energy("0.30")))
    start = utc("2024-05-06 17:00")
    session = rated(t, *[charging(start + i * 3_600_000, kwh="1") for i in range(3)])
    assert session.total_fixed_cost == price("2.00")
    assert [i for i, p in enumerate(session.periods())
            if any(d.type == "FLAT" for d in p.dimensions)] == [1]


def test_flat_is_decided_once_at_the_first_match() -> None:
    # 17:00 matches only the fallback FLAT 0.50; the 18:00 FLAT 2.00 is not added later.
    t = tariff(element(flat("2.00"), start_time="18:00"), element(flat("0.50")))
    session = rated(t, charging(utc("2024-05-06 17:00"), minutes=60),
                    charging(utc("2024-05-06 18:00"), minutes=60))
    assert session.total_fixed_cost == price("0.50")


def test_a_free_of_charge_tariff_costs_nothing() -> None:
    t = tariff(element(flat("0.00")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="30", minutes=60))
    assert session.total_cost == price("0")


# -- min_price / max_price ---------------------------------------------------------------------


def energy_only(kwh: str, vat: str | None, **header: Any) -> RatedSession:
    t = tariff(element(energy("0.25", 1, vat)), **header)
    return rated(t, charging(utc("2024-05-06 10:00"), kwh=kwh))


def test_min_price_lifts_excl_and_incl() -> None:
    # 8 kWh * 0.25 = 2.00, incl 20 % 2.40 -> min (5.00, 6.00); added 3.00 / 3.60
    session = energy_only("8", "20", min_price={"excl_vat": "5.00", "incl_vat": "6.00"})
    assert (session.total_cost, session.price_bound, session.price_bound_adjustment) == (
        price("5.00", "6.00"), "min_price", price("3.00", "3.60"))


def test_min_price_can_lift_only_incl() -> None:
    # 6 kWh * 0.25 = 1.50, no VAT so incl 1.50. excl 1.50 >= 1.00 stays; incl 1.50 < 2.00
    # is lifted: (1.50, 2.00), added (0, 0.50)
    session = energy_only("6", None, min_price={"excl_vat": "1.00", "incl_vat": "2.00"})
    assert (session.total_cost, session.price_bound, session.price_bound_adjustment) == (
        price("1.50", "2.00"), "min_price", price("0", "0.50"))


def test_max_price_caps_excl_and_incl() -> None:
    # 60 kWh * 0.25 = 15.00, incl 19 % 17.85 -> (10.00, 12.00); adjustment -5.00 / -5.85
    session = energy_only("60", "19", max_price={"excl_vat": "10.00", "incl_vat": "12.00"})
    assert (session.total_cost, session.price_bound, session.price_bound_adjustment) == (
        price("10.00", "12.00"), "max_price", price("-5.00", "-5.85"))


def test_max_price_can_cap_only_incl() -> None:
    # 38 kWh * 0.25 = 9.50 (<= 10.00 stays), incl 9.50 * 1.19 = 11.305 > 11.00 is capped
    session = energy_only("38", "19", max_price={"excl_vat": "10.00", "incl_vat": "11.00"})
    assert (session.total_cost, session.price_bound, session.price_bound_adjustment) == (
        price("9.50", "11.00"), "max_price", price("0", "-0.305"))


def test_a_session_within_its_bounds_is_not_adjusted() -> None:
    # 20 kWh * 0.25 = 5.00 is between 1.00 and 10.00
    session = energy_only("20", None, min_price={"excl_vat": "1.00"},
                          max_price={"excl_vat": "10.00"})
    assert (session.total_cost, session.price_bound, session.price_bound_adjustment) == (
        price("5.00"), None, price("0"))


def test_max_price_without_incl_scales_incl_by_the_same_factor() -> None:
    # ENERGY 40 kWh * 0.25 = 10.00 (20 %: 12.00) + TIME 5 h * 1.00 = 5.00 (no VAT: 5.00)
    # = 15.00 / 17.00; capped at 10.00 excl, incl scaled by 10/15: 17 * 2/3 = 11.333...
    t = tariff(element(energy("0.25", 1, "20"), time("1.00")), max_price={"excl_vat": "10.00"})
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="40", minutes=300))
    assert session.total_cost == price("10.00", "11.333333333333")


def test_min_price_without_incl_scales_incl_by_the_same_factor() -> None:
    # 8 kWh * 0.25 = 2.00, incl 2.40; lifted to 5.00, incl 2.40 * 5/2 = 6.00
    session = energy_only("8", "20", min_price={"excl_vat": "5.00"})
    assert session.total_cost == price("5.00", "6.00")


def test_min_price_without_incl_on_a_free_session_sets_incl_to_excl() -> None:
    # nothing to scale from (0.00): incl = excl = 1.00
    t = tariff(element(flat("0.00")), min_price={"excl_vat": "1.00"})
    session = rated(t, charging(utc("2024-05-06 10:00"), minutes=10))
    assert session.total_cost == price("1.00")


def test_the_bound_does_not_change_the_component_totals() -> None:
    session = energy_only("60", "19", max_price={"excl_vat": "10.00", "incl_vat": "12.00"})
    assert session.total_energy_cost == price("15.00", "17.85")


# -- VAT ---------------------------------------------------------------------------------------


def test_vat_applies_per_component() -> None:
    # ENERGY 10 kWh * 0.30 = 3.00, 20 % -> 3.60; TIME 1 h * 2.00 = 2.00, 5 % -> 2.10
    # total 5.00 / 5.70
    t = tariff(element(energy("0.30", 1, "20"), time("2.00", 1, "5")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10", minutes=60))
    assert (session.total_energy_cost, session.total_time_cost, session.total_cost) == (
        price("3.00", "3.60"), price("2.00", "2.10"), price("5.00", "5.70"))


def test_a_component_without_vat_has_incl_equal_to_excl() -> None:
    t = tariff(element(energy("0.30")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10"))
    assert (session.total_cost, dimension(session, 0, "ENERGY").vat) == (price("3.00"), None)


def test_zero_percent_vat_is_reported_as_zero_not_as_not_applicable() -> None:
    t = tariff(element(energy("0.30", 1, "0")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10"))
    assert dimension(session, 0, "ENERGY").vat == Decimal(0)


def test_a_fractional_vat_rate_is_exact() -> None:
    # 10 kWh * 0.30 = 3.00 at 7.75 % -> 3.2325
    t = tariff(element(energy("0.30", 1, "7.75")))
    session = rated(t, charging(utc("2024-05-06 10:00"), kwh="10"))
    assert session.total_cost == price("3.00", "3.2325")


# -- reservations ------------------------------------------------------------------------------

# mod_tariffs tariff_15: reservation 5.00/h (20 %, per minute), FLAT 0.50 (20 %),
# ENERGY 0.25/kWh (10 %, per Wh).
RESERVATION_15 = tariff(
    element(time("5.00", 60, "20.0"), reservation="RESERVATION"),
    element(flat("0.50", "20.0"), energy("0.25", 1, "10.0")),
)


def reserved_then_charged(t: Tariff, reserved_minutes: int) -> RatedSession:
    charging_start = utc("2024-05-06 10:00")
    return rated(t, reserved(charging_start - reserved_minutes * 60_000,
                             minutes=reserved_minutes),
                 charging(charging_start, kwh="20", minutes=60),
                 end=charging_start + 3_600_000)


def test_the_spec_reservation_example() -> None:
    # FLAT 0.50 / 0.60 + ENERGY 20 * 0.25 = 5.00 / 5.50 + reservation 15 min * 5.00/h
    # = 1.25 / 1.50 -> 6.75 / 7.60
    assert reserved_then_charged(RESERVATION_15, 15).total_cost == price("6.75", "7.60")


def test_reservation_time_has_its_own_total() -> None:
    session = reserved_then_charged(RESERVATION_15, 15)
    assert (session.total_reservation_time, session.total_reservation_cost) == (
        Decimal("0.25"), price("1.25", "1.50"))


def test_the_charging_flat_fee_is_fixed_cost_and_reservation_is_not() -> None:
    assert reserved_then_charged(RESERVATION_15, 15).total_fixed_cost == price("0.50", "0.60")


# tariff_16: reservation fee 2.00 + 5.00/h, per 5 min, 20 %.
RESERVATION_16 = tariff(
    element(flat("2.00", "20.0"), time("5.00", 300, "20.0"), reservation="RESERVATION"),
    element(flat("0.50", "20.0"), energy("0.25", 1, "10.0")),
)


def test_the_spec_reservation_fee_example() -> None:
    # reservation: fee 2.00 + 13 -> 15 min * 5.00/h = 1.25 -> 3.25 / 3.90
    # charging: FLAT 0.50 / 0.60 + ENERGY 5.00 / 5.50
    # total 8.75 / 10.00
    session = reserved_then_charged(RESERVATION_16, 13)
    assert (session.total_reservation_cost, session.total_cost) == (
        price("3.25", "3.90"), price("8.75", "10.00"))


def test_reservation_time_is_rounded_on_its_own() -> None:
    # 13 min reserved -> 15 min billed, on the reservation period
    assert dimension(reserved_then_charged(RESERVATION_16, 13), 0, "RESERVATION_TIME") \
        .billed_volume == Decimal("0.25")


# tariff_17: reservation 2.00/h per 10 min; 4.00 fee when it expires.
RESERVATION_17 = tariff(
    element(time("2.00", 600, "20.0"), reservation="RESERVATION"),
    element(flat("4.00", "20.0"), reservation="RESERVATION_EXPIRES"),
    element(flat("0.50", "20.0"), energy("0.25", 1, "10.0")),
)


def test_a_used_reservation_pays_no_expiry_fee() -> None:
    # 22 -> 30 min * 2.00/h = 1.00 / 1.20 + FLAT 0.50 / 0.60 + ENERGY 5.00 / 5.50 = 6.50 / 7.30
    assert reserved_then_charged(RESERVATION_17, 22).total_cost == price("6.50", "7.30")


def test_an_expired_reservation_pays_the_time_and_the_expiry_fee() -> None:
    # only reservation periods = expired: 60 min * 2.00/h = 2.00 + fee 4.00 = 6.00 / 7.20
    session = rated(RESERVATION_17, reserved(utc("2024-05-06 10:00"), minutes=60),
                    end=utc("2024-05-06 11:00"))
    assert (session.total_cost, session.total_reservation_cost, session.total_fixed_cost) == (
        price("6.00", "7.20"), price("6.00", "7.20"), price("0"))


# tariff_18: reservation 3.00/h, 6.00/h when it expires, per 10 min.
RESERVATION_18 = tariff(
    element(time("3.00", 600, "20.0"), reservation="RESERVATION"),
    element(time("6.00", 600, "20.0"), reservation="RESERVATION_EXPIRES"),
    element(flat("0.50", "20.0"), energy("0.25", 1, "10.0")),
)


def test_a_used_reservation_is_priced_by_the_reservation_element() -> None:
    # 22 -> 30 min * 3.00/h = 1.50 / 1.80 + 0.50 / 0.60 + 5.00 / 5.50 = 7.00 / 7.90
    assert reserved_then_charged(RESERVATION_18, 22).total_cost == price("7.00", "7.90")


def test_an_expired_reservation_prefers_the_reservation_expires_element() -> None:
    # 90 min * 6.00/h = 9.00 / 10.80 (not 3.00/h, although that element comes first)
    session = rated(RESERVATION_18, reserved(utc("2024-05-06 10:00"), minutes=90),
                    end=utc("2024-05-06 11:30"))
    assert session.total_cost == price("9.00", "10.80")


def test_a_reservation_marked_expired_charges_no_charging_flat() -> None:
    # reservation_expired=True: 30 min * 6.00/h = 3.00; the charging FLAT 0.50 is not charged
    # and ENERGY 20 kWh * 0.25 = 5.00 still is: 8.00
    session = rated(RESERVATION_18, reserved(utc("2024-05-06 09:30"), minutes=30),
                    charging(utc("2024-05-06 10:00"), kwh="20"), reservation_expired=True)
    assert (session.total_fixed_cost, session.total_cost.excl_vat) == (
        price("0"), Decimal("8.00"))


# -- totals ------------------------------------------------------------------------------------


def test_total_time_runs_from_the_first_period_to_the_end() -> None:
    # CDR starts 09:55 (authorisation), first period 10:00, end 11:30: 1.5 h
    session = rated(STEPS, charging(utc("2024-05-06 10:00"), minutes=60),
                    parked(utc("2024-05-06 11:00"), minutes=30),
                    start=utc("2024-05-06 09:55"), end=utc("2024-05-06 11:30"))
    assert session.total_time == Decimal("1.5")


def test_total_time_leaves_out_the_reservation() -> None:
    # reserved 09:45-10:00, charging 10:00-11:00: total_time 1 h, reservation 0.25 h
    session = reserved_then_charged(RESERVATION_15, 15)
    assert (session.total_time, session.total_reservation_time) == (
        Decimal("1"), Decimal("0.25"))


def test_total_parking_time_sums_the_parking_volumes() -> None:
    assert free_parking_after_eight().total_parking_time == Decimal("0.333333333333")  # 20 min


def test_periods_before_the_session_start_are_reported() -> None:
    session = rated(STEPS, charging(utc("2024-05-06 10:00"), minutes=60),
                    start=utc("2024-05-06 10:05"), end=utc("2024-05-06 11:00"))
    assert "periods_before_session_start" in session.warnings


def test_periods_out_of_time_order_cannot_be_rated() -> None:
    with pytest.raises(UnratableSessionError):
        rated(STEPS, charging(utc("2024-05-06 10:00"), minutes=5),
              charging(utc("2024-05-06 09:59"), minutes=5))


def test_a_session_without_periods_costs_nothing_and_says_so() -> None:
    session = rated(STEPS)
    assert (session.total_cost, session.warnings) == (price("0"), ("no_charging_periods",))


# -- live rating -------------------------------------------------------------------------------

LIVE_TARIFF = tariff(
    element(time("3.00", 600, "19"), flat("1.00", "19"), reservation="RESERVATION"),
    element(flat("0.50", "19"), energy("0.30", 500, "19"), time("0.60", 300, "19"),
            max_power="22"),
    element(energy("0.45", 1, "19"), time("1.20", 900, "19"), end_time="18:00"),
    element(energy("0.25", 100, "7"), parking("2.00", 600, "19")),
    min_price={"excl_vat": "2.00"}, max_price={"excl_vat": "40.00", "incl_vat": "45.00"},
)


def live_session() -> SessionFacts:
    start = at("2024-05-06 17:20", BERLIN)
    minute = 60_000
    periods = (
        reserved(start, minutes=10),
        charging(start + 10 * minute, kwh="3.3333", minutes=20, power_w_max=50_000),
        charging(start + 30 * minute, kwh="5.1", minutes=20, power_w_max=11_000),
        charging(start + 50 * minute, kwh="2.0005", minutes=17, power_w=30_000),
        parked(start + 67 * minute, minutes=33),
    )
    return SessionFacts(periods=periods, time_zone=BERLIN, start_epoch_ms=start,
                        end_epoch_ms=start + 100 * minute)


def test_live_snapshots_never_change_the_final_result() -> None:
    facts = live_session()
    rater = SessionRater(LIVE_TARIFF, facts.time_zone, facts.start_epoch_ms)
    for period in facts.periods:
        rater.add(period)
        rater.snapshot()
        rater.snapshot(period.start_epoch_ms + 60_000)
    final = rater.snapshot(facts.end_epoch_ms, final=True)
    expected = rate(LIVE_TARIFF, facts)
    assert (final, final.periods()) == (expected, expected.periods())


def test_each_live_snapshot_equals_rating_the_periods_so_far() -> None:
    facts = live_session()
    rater = SessionRater(LIVE_TARIFF, facts.time_zone, facts.start_epoch_ms)
    snapshots, expected = [], []
    for n, period in enumerate(facts.periods, start=1):
        rater.add(period)
        snapshots.append(rater.snapshot())
        expected.append(rate(LIVE_TARIFF, SessionFacts(
            periods=facts.periods[:n], time_zone=facts.time_zone,
            start_epoch_ms=facts.start_epoch_ms)))
    assert snapshots == expected


def test_a_snapshot_while_ongoing_is_not_final() -> None:
    facts = live_session()
    rater = SessionRater(LIVE_TARIFF, facts.time_zone, facts.start_epoch_ms)
    rater.add(facts.periods[1])
    assert rater.snapshot(facts.periods[1].start_epoch_ms + 60_000).final is False


def test_rating_a_session_without_an_end_is_not_final() -> None:
    facts = live_session()
    ongoing = SessionFacts(periods=facts.periods, time_zone=facts.time_zone,
                           start_epoch_ms=facts.start_epoch_ms)
    assert (rate(LIVE_TARIFF, ongoing).final, rate(LIVE_TARIFF, facts).final) == (False, True)


def test_a_live_snapshot_measures_total_time_up_to_the_given_end() -> None:
    # charging from 10:00; a snapshot "now" at 10:45 has 0.75 h
    rater = SessionRater(STEPS)
    rater.add(charging(utc("2024-05-06 10:00"), minutes=30))
    assert rater.snapshot(utc("2024-05-06 10:45")).total_time == Decimal("0.75")


def test_a_batch_refused_for_time_order_leaves_the_live_rater_consistent() -> None:
    # All-or-nothing (only p0) or the good prefix (p0, p1, p2) are both consistent answers.
    t = tariff(element(flat("1.00"), energy("0.25", 500)))
    start = utc("2024-05-06 10:00")
    p0, p1, p2 = (charging(start + i * 60_000, kwh="1.1") for i in range(3))
    rater = SessionRater(t)
    rater.add(p0)
    with pytest.raises(UnratableSessionError):
        rater.add_all([p1, p2, charging(start - 60_000, kwh="1")])
    assert rater.snapshot() in (rated(t, p0), rated(t, p0, p1, p2))


def test_a_tariff_that_parses_can_be_rated_whatever_the_precision_of_its_price_bound() -> None:
    # Either fix is fine: refuse the bound when parsing, or rate with it (1 kWh * 0.25 = 0.25,
    # above the 0.123... minimum).
    try:
        t = tariff(element(energy("0.25")), min_price={"excl_vat": "0.1234567890123"})
    except TariffParseError:
        return
    assert rated(t, charging(utc("2024-05-06 10:00"), kwh="1")).total_cost == price("0.25")


def test_a_session_with_more_energy_than_the_limit_is_refused() -> None:
    t = tariff(element(energy("0.25")))
    huge = ChargingPeriod(utc("2024-05-06 10:00"), energy_milliwh=MAX_SESSION_ENERGY_MILLIWH + 1)
    with pytest.raises(RatingError):
        rated(t, huge)


def test_a_session_longer_than_the_limit_is_refused() -> None:
    t = tariff(element(time("1.00")))
    start = utc("2024-05-06 10:00")
    with pytest.raises(RatingError):
        rated(t, charging(start, minutes=60), end=start + MAX_SESSION_DURATION_MS + 1)
