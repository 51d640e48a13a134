"""Sessions described by totals are cut into periods at every tariff-relevant moment."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from evbilling.domain.periods import epoch_ms
from evbilling.domain.profiles import synthesize_periods
from evbilling.domain.rating import compile_tariff
from evbilling.domain.tariffs import parse_tariff

MIN = 60_000
TOU = compile_tariff(parse_tariff({"id": "t", "currency": "EUR", "elements": [
    {"price_components": [{"type": "ENERGY", "price": Decimal("0.20"), "step_size": 1}],
     "restrictions": {"max_kwh": Decimal(10)}},
    {"price_components": [{"type": "ENERGY", "price": Decimal("0.40"), "step_size": 1}],
     "restrictions": {"start_time": "17:00", "end_time": "22:00"}},
    {"price_components": [{"type": "ENERGY", "price": Decimal("0.30"), "step_size": 1},
                          {"type": "PARKING_TIME", "price": Decimal("6"), "step_size": 60}],
     "restrictions": {"min_duration": 7200}},
    {"price_components": [{"type": "ENERGY", "price": Decimal("0.25"), "step_size": 1}]},
]}))


def at(text: str) -> int:
    return epoch_ms(dt.datetime.fromisoformat(text))


def test_periods_are_cut_at_local_time_of_day_kwh_and_duration_boundaries() -> None:
    # Berlin winter (UTC+1): 16:30 local start, 2 h charging of 40 kWh (20 kWh/h), 30 min idle.
    start = at("2026-11-20T15:30:00+00:00")
    periods = synthesize_periods(TOU, "Europe/Berlin", start, 120 * MIN, 40_000_000, 30 * MIN)
    starts = [p.start_at.strftime("%H:%M") for p in periods]
    # 10 kWh reached after 30 min (16:00Z), 17:00 local = 16:00Z too, 2 h duration at 17:30Z
    # = charge end, 22:00 local = 21:00Z is after the end.
    assert starts == ["15:30", "16:00", "17:30"]
    assert [p.energy_milliwh for p in periods] == [10_000_000, 30_000_000, 0]
    assert [p.time_ms for p in periods] == [30 * MIN, 90 * MIN, 0]
    assert periods[-1].parking_ms == 30 * MIN


def test_the_local_boundary_moves_with_daylight_saving_time() -> None:
    summer = synthesize_periods(TOU, "Europe/Berlin", at("2026-07-01T14:00:00+00:00"),
                                150 * MIN, 1_000_000, 0)
    winter = synthesize_periods(TOU, "Europe/Berlin", at("2026-12-01T14:00:00+00:00"),
                                150 * MIN, 1_000_000, 0)
    assert "15:00" in [p.start_at.strftime("%H:%M") for p in summer]  # 17:00 CEST
    assert "16:00" in [p.start_at.strftime("%H:%M") for p in winter]  # 17:00 CET


@settings(max_examples=200, deadline=None)
@given(start_min=st.integers(0, 60 * 24 * 60), charging_min=st.integers(0, 600),
       idle_min=st.integers(0, 300), energy=st.integers(0, 120_000_000))
def test_synthesized_periods_add_up_to_the_totals_in_time_order(
        start_min: int, charging_min: int, idle_min: int, energy: int) -> None:
    if charging_min == 0:
        energy = 0
    start = at("2026-03-01T00:00:00+00:00") + start_min * MIN
    periods = synthesize_periods(TOU, "Europe/Berlin", start, charging_min * MIN, energy,
                                 idle_min * MIN)
    assert sum(p.energy_milliwh for p in periods) == energy
    assert sum(p.time_ms for p in periods) == charging_min * MIN
    assert sum(p.parking_ms for p in periods) == idle_min * MIN
    assert [p.start_epoch_ms for p in periods] == sorted(p.start_epoch_ms for p in periods)
