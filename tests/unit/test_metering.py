"""Meter samples become OCPI charging periods, cut at every tariff-relevant moment."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evbilling.domain.errors import MeterClosedError, MeterError, MeterLimitError
from evbilling.domain.metering import MeterSample, SessionMeter, periods_from_samples
from evbilling.domain.periods import (
    MAX_PERIODS_PER_SESSION,
    MAX_SESSION_DURATION_MS,
    ChargingPeriod,
    SessionFacts,
    epoch_ms,
)
from evbilling.domain.profiles import (
    clock_cuts_s,
    energy_share_milliwh,
    local_clock_cuts_ms,
    synthesize_periods,
)
from evbilling.domain.rating import (
    CompiledTariff,
    RatedSession,
    SessionRater,
    compile_tariff,
    rate,
)
from evbilling.domain.tariffs import parse_tariff

BERLIN = "Europe/Berlin"
MIN = 60_000
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def at(text: str) -> int:
    return epoch_ms(dt.datetime.fromisoformat(text))


def tariff(*elements: dict[str, Any]) -> CompiledTariff:
    return compile_tariff(parse_tariff({"id": "T-METER", "currency": "EUR",
                                        "elements": list(elements)}))


def energy(price: str, **restrictions: Any) -> dict[str, Any]:
    element: dict[str, Any] = {"price_components": [
        {"type": "ENERGY", "price": Decimal(price), "step_size": 1}]}
    if restrictions:
        element["restrictions"] = restrictions
    return element


PARKING = {"price_components": [{"type": "PARKING_TIME", "price": Decimal(6), "step_size": 60}]}
NIGHT = tariff(energy("0.40", start_time="22:00", end_time="06:00"), energy("0.25"))
EVENING = tariff(energy("0.40", start_time="17:00", end_time="22:00"), energy("0.25"))
TIERED = tariff(energy("0.30", max_kwh=Decimal(10)), energy("0.20"))
FAST_CHARGE = tariff(energy("0.50", min_power=Decimal(22)), energy("0.30"))


def feed(meter: SessionMeter, samples: list[MeterSample], end_ms: int,
         energy_end: int | None) -> tuple[ChargingPeriod, ...]:
    out: list[ChargingPeriod] = []
    for sample in samples:
        out.extend(meter.add(sample).closed)
    out.extend(meter.close(end_ms, energy_end))
    return tuple(out)


def steady(start_ms: int, register: int, step_ms: int, delta: int, count: int,
           **fields: Any) -> list[MeterSample]:
    """``count`` samples ``step_ms`` apart, the register growing by ``delta`` each time."""
    return [MeterSample(start_ms + i * step_ms, register + i * delta, **fields)
            for i in range(1, count + 1)]


def starts(periods: tuple[ChargingPeriod, ...]) -> list[str]:
    return [p.start_at.strftime("%d %H:%M") for p in periods]


def elements_used(session: RatedSession, kind: str = "ENERGY") -> list[int | None]:
    return [d.element_index for p in session.periods() for d in p.dimensions if d.type == kind]


# -- worked examples -----------------------------------------------------------------------


def test_a_time_of_use_boundary_at_22_00_berlin_splits_a_period_exactly_there() -> None:
    # Winter (UTC+1): 22:00 local = 21:00Z. The interval 20:57Z-21:04Z straddles it: 3 of its
    # 7 minutes come first, floor(1 000 001 * 3 / 7) = 428 571 mWh; the rest goes after.
    start = at("2026-11-20T20:30:00+00:00")
    samples = [MeterSample(start + 10 * MIN, 1_200_000), MeterSample(start + 20 * MIN, 2_400_000),
               MeterSample(start + 27 * MIN, 3_400_001), MeterSample(start + 34 * MIN, 4_400_002)]
    periods = feed(SessionMeter(EVENING, BERLIN, start, 0), samples, start + 40 * MIN,
                   5_600_002)
    assert starts(periods) == ["20 20:30", "20 21:00"]
    assert [p.energy_milliwh for p in periods] == [3_400_001 + 428_571, 571_430 + 1_200_000]
    assert [p.time_ms for p in periods] == [30 * MIN, 10 * MIN]
    rated = rate(EVENING, SessionFacts(periods, BERLIN, start, start + 40 * MIN))
    assert elements_used(rated) == [0, 1]


@pytest.mark.parametrize(("start", "end", "cuts"), [
    # DST ends 2024-10-27 01:00Z: 22:00 CEST = 20:00Z, 06:00 CET = 05:00Z, 22:00 CET = 21:00Z.
    ("2024-10-26T19:00:00+00:00", "2024-10-27T22:00:00+00:00",
     ["26 19:00", "26 20:00", "27 05:00", "27 21:00"]),
    # DST starts 2024-03-31 01:00Z: 22:00 CET = 21:00Z, 06:00 CEST = 04:00Z, 22:00 CEST = 20:00Z.
    ("2024-03-30T20:00:00+00:00", "2024-03-31T21:00:00+00:00",
     ["30 20:00", "30 21:00", "31 04:00", "31 20:00"]),
])
def test_the_22_00_boundary_follows_berlin_local_time_across_a_daylight_saving_change(
        start: str, end: str, cuts: list[str]) -> None:
    start_ms, end_ms = at(start), at(end)
    # 3.6 kW = 1 mWh per ms, a sample every 30 min
    samples = steady(start_ms, 0, 30 * MIN, 30 * MIN, (end_ms - start_ms) // (30 * MIN) - 1)
    periods = feed(SessionMeter(NIGHT, BERLIN, start_ms, 0), samples, end_ms,
                   end_ms - start_ms)
    assert starts(periods) == cuts
    assert [p.energy_milliwh for p in periods] == [p.time_ms for p in periods]
    rated = rate(NIGHT, SessionFacts(periods, BERLIN, start_ms, end_ms))
    assert elements_used(rated) == [1, 0, 1, 0]


def test_an_evening_rate_that_ends_at_midnight_is_cut_at_local_midnight() -> None:
    # end_time 00:00 means end of day: at 00:00 local (23:00Z in winter) the rate stops.
    late = tariff(energy("0.40", start_time="20:00", end_time="00:00"), energy("0.25"))
    start = at("2026-11-20T22:00:00+00:00")
    metered = feed(SessionMeter(late, BERLIN, start, 0), [], start + 120 * MIN, 7_200_000)
    quoted = synthesize_periods(late, BERLIN, start, 120 * MIN, 7_200_000, 0)
    assert starts(metered) == starts(quoted) == ["20 22:00", "20 23:00"]
    rated = rate(late, SessionFacts(metered, BERLIN, start, start + 120 * MIN))
    assert elements_used(rated) == [0, 1]


def test_a_kwh_tier_threshold_splits_at_the_ms_it_is_reached() -> None:
    # 11 kW: 1 833 333 mWh per 10 min. After 5 intervals 9 166 665 mWh; 833 335 more are
    # reached ceil(833 335 * 600 000 / 1 833 333) = 272 728 ms into the sixth.
    start = at("2026-05-04T08:00:00+00:00")
    samples = steady(start, 5_000_000, 10 * MIN, 1_833_333, 8)
    periods = feed(SessionMeter(TIERED, BERLIN, start, 5_000_000), samples[:-1],
                   samples[-1].at_ms, samples[-1].energy_milliwh)
    assert [p.start_epoch_ms - start for p in periods] == [0, 50 * MIN + 272_728]
    assert periods[0].energy_milliwh == 10_000_000
    assert energy_share_milliwh(1_833_333, 10 * MIN, 272_727) < 833_335  # one ms earlier
    assert sum(p.energy_milliwh for p in periods) == 8 * 1_833_333
    rated = rate(TIERED, SessionFacts(periods, BERLIN, start, samples[-1].at_ms))
    assert elements_used(rated) == [0, 1]


def test_idle_after_the_battery_is_full_becomes_parking_periods() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    charging = steady(start, 0, 10 * MIN, 2_000_000, 3)
    full = steady(start + 30 * MIN, 6_000_000, 10 * MIN, 0, 3)
    meter = SessionMeter(tariff(energy("0.30"), PARKING), BERLIN, start, 0)
    periods = feed(meter, charging + full, start + 70 * MIN, 6_000_000)
    assert [(p.time_ms, p.parking_ms, p.energy_milliwh) for p in periods] == [
        (30 * MIN, 0, 6_000_000), (0, 40 * MIN, 0)]


def test_a_suspended_ev_is_idle_even_while_the_charger_draws_standby_energy() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    samples = [MeterSample(start + 10 * MIN, 2_000_000),
               MeterSample(start + 20 * MIN, 2_100_000, charging=False)]  # 600 W, SuspendedEV
    periods = feed(SessionMeter(NIGHT, BERLIN, start, 0), samples, start + 20 * MIN, None)
    assert [(p.time_ms, p.parking_ms, p.energy_milliwh) for p in periods] == [
        (10 * MIN, 0, 2_000_000), (0, 10 * MIN, 100_000)]


def test_a_power_limit_crossing_starts_a_new_period() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    samples = [MeterSample(start + 10 * MIN, 8_000_000, power_w=50_000),
               MeterSample(start + 20 * MIN, 16_000_000, power_w=48_000),
               MeterSample(start + 30 * MIN, 18_000_000, power_w=11_000)]
    periods = feed(SessionMeter(FAST_CHARGE, BERLIN, start, 0), samples, start + 30 * MIN,
                   None)
    assert [(p.power_w_min, p.power_w_max, p.time_ms) for p in periods] == [
        (48_000, 50_000, 20 * MIN), (11_000, 11_000, 10 * MIN)]
    rated = rate(FAST_CHARGE, SessionFacts(periods, BERLIN, start, start + 30 * MIN))
    assert elements_used(rated) == [0, 1]


def test_a_register_reset_counts_the_new_reading_as_energy_since_zero() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 90_000_000)
    assert not meter.add(MeterSample(start + 10 * MIN, 92_000_000)).meter_reset
    update = meter.add(MeterSample(start + 20 * MIN, 1_500_000))
    assert update.meter_reset and update.accepted
    meter.add(MeterSample(start + 30 * MIN, 3_000_000))
    assert (meter.energy_milliwh, meter.meter_resets) == (2_000_000 + 1_500_000 + 1_500_000, 1)


def test_duplicated_and_late_samples_are_ignored_and_flagged() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    meter.add(MeterSample(start + 10 * MIN, 2_000_000))
    meter.add(MeterSample(start + 20 * MIN, 4_000_000))
    before = meter.to_state()
    for sample in (MeterSample(start + 20 * MIN, 4_000_000),  # duplicate
                   MeterSample(start + 15 * MIN, 3_000_000),  # late
                   MeterSample(start, 0)):  # at the start itself
        update = meter.add(sample)
        assert (update.accepted, update.late, update.closed) == (False, True, ())
    assert meter.to_state() == before


def test_a_sample_without_an_energy_reading_is_ignored() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    update = meter.add(MeterSample(start + 10 * MIN, None, power_w=7_000))
    assert (update.accepted, update.missing_energy, meter.last_at_ms) == (False, True, start)


def test_a_stop_reading_at_the_last_sample_time_joins_the_open_period() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    meter.add(MeterSample(start + 10 * MIN, 2_000_000))
    assert meter.close(start + 10 * MIN, 2_000_500) == (
        ChargingPeriod(start, energy_milliwh=2_000_500, time_ms=10 * MIN,
                       power_w_min=12_000, power_w_max=12_000),)


def test_a_session_without_samples_has_one_empty_period() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    assert SessionMeter(NIGHT, BERLIN, start, 0).close(start, None) == (ChargingPeriod(start),)


def test_a_stop_without_reading_leaves_the_register_unchanged_so_the_tail_is_idle() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    periods = feed(SessionMeter(NIGHT, BERLIN, start, 0),
                   [MeterSample(start + 10 * MIN, 2_000_000)], start + 15 * MIN, None)
    assert [(p.time_ms, p.parking_ms) for p in periods] == [(10 * MIN, 0), (0, 5 * MIN)]


# -- refusals --------------------------------------------------------------------------------


def test_negative_times_and_readings_are_refused() -> None:
    meter = SessionMeter(NIGHT, BERLIN, 1_000, 0)
    with pytest.raises(MeterError) as negative_time:
        meter.add(MeterSample(-1, 0))
    with pytest.raises(MeterError) as negative_reading:
        meter.add(MeterSample(2_000, -5))
    assert (negative_time.value.code, negative_reading.value.code) == (
        "invalid_meter_data", "invalid_meter_data")
    with pytest.raises(MeterError):
        SessionMeter(NIGHT, BERLIN, -1, 0)


def test_a_sample_more_than_a_session_length_away_is_refused() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    with pytest.raises(MeterLimitError) as exc:
        meter.add(MeterSample(start + MAX_SESSION_DURATION_MS + 1, 1_000))
    assert exc.value.code == "meter_limit_exceeded"
    assert meter.last_at_ms == start


def test_a_refused_sample_changes_nothing() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    meter.add(MeterSample(start + 10 * MIN, 2_000_000))
    before = meter.to_state()
    with pytest.raises(MeterLimitError):
        meter.add(MeterSample(start + 20 * MIN, 2_000_000 + 100_000 * 1_000_000 + 1))
    assert meter.to_state() == before


def test_more_periods_than_a_session_may_have_are_refused() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    with pytest.raises(MeterLimitError):
        for i in range(1, MAX_PERIODS_PER_SESSION + 2):  # charging and idle alternate
            meter.add(MeterSample(start + i * 1_000, i, charging=bool(i % 2)))
    assert meter.periods_closed + 1 == MAX_PERIODS_PER_SESSION


def test_a_closed_meter_refuses_samples_and_a_stop_before_a_sample_is_refused() -> None:
    start = at("2026-05-04T08:00:00+00:00")
    meter = SessionMeter(NIGHT, BERLIN, start, 0)
    meter.add(MeterSample(start + 10 * MIN, 2_000_000))
    with pytest.raises(MeterError):
        meter.close(start + 5 * MIN, 2_000_000)
    meter.close(start + 10 * MIN, None)
    with pytest.raises(MeterClosedError):
        meter.add(MeterSample(start + 20 * MIN, 3_000_000))


def test_a_saved_state_under_another_tariff_or_malformed_is_refused() -> None:
    state = SessionMeter(NIGHT, BERLIN, 1_000, 0).to_state()
    other = compile_tariff(parse_tariff({"id": "OTHER", "currency": "EUR",
                                         "elements": [energy("0.1")]}))
    with pytest.raises(MeterError):
        SessionMeter.from_state(other, state)
    with pytest.raises(MeterError):
        SessionMeter.from_state(NIGHT, {**state, "last_at_ms": "soon"})


# -- generated sessions --------------------------------------------------------------------

DST_NIGHTS_MS = (at("2024-03-30T23:00:00+00:00"), at("2024-10-26T22:00:00+00:00"))
times_of_day = st.sampled_from(["00:00", "02:30", "06:00", "08:00", "17:00", "22:00",
                                "23:59"])
powers_w = st.sampled_from([0, 30, 1_400, 3_700, 7_400, 11_000, 22_000, 50_000, 150_000])


@st.composite
def restrictions(draw: st.DrawFn) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for kind in draw(st.lists(st.sampled_from(["tod", "dow", "kwh", "duration", "power",
                                               "current"]), min_size=1, max_size=2,
                              unique=True)):
        if kind == "tod":
            r["start_time"], r["end_time"] = draw(times_of_day), draw(times_of_day)
        elif kind == "dow":
            r["day_of_week"] = draw(st.lists(st.sampled_from(
                ["MONDAY", "WEDNESDAY", "SATURDAY", "SUNDAY"]), min_size=1, unique=True))
        elif kind == "kwh":
            r[draw(st.sampled_from(["min_kwh", "max_kwh"]))] = draw(st.sampled_from(
                [Decimal(1), Decimal("2.5"), Decimal(10), Decimal(20)]))
        elif kind == "duration":
            r[draw(st.sampled_from(["min_duration", "max_duration"]))] = draw(
                st.sampled_from([600, 1800, 3600, 7200]))
        elif kind == "power":
            r[draw(st.sampled_from(["min_power", "max_power"]))] = draw(
                st.sampled_from([Decimal(11), Decimal(22), Decimal(50)]))
        else:
            r[draw(st.sampled_from(["min_current", "max_current"]))] = draw(
                st.sampled_from([Decimal(16), Decimal(32)]))
    return r


@st.composite
def tariffs(draw: st.DrawFn, *, kinds: tuple[str, ...] = ("tod", "dow", "kwh", "duration",
                                                         "power", "current")
            ) -> CompiledTariff:
    elements: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 4))):
        dims = draw(st.lists(st.sampled_from(["ENERGY", "TIME", "PARKING_TIME", "FLAT"]),
                             min_size=1, unique=True))
        element: dict[str, Any] = {"price_components": [
            {"type": d, "price": draw(st.decimals(Decimal(0), Decimal(5), places=4)),
             "step_size": draw(st.sampled_from([1, 60, 300] if d != "ENERGY" else [1, 500]))}
            for d in dims]}
        if i < 3 and draw(st.integers(0, 4)):
            r = {k: v for k, v in draw(restrictions()).items() if _kind(k) in kinds}
            if r:
                element["restrictions"] = r
        elements.append(element)
    return tariff(*elements)


def _kind(key: str) -> str:
    """The kind of a restriction key: start_time -> tod, min_kwh -> kwh, ..."""
    if key in ("start_time", "end_time"):
        return "tod"
    if key == "day_of_week":
        return "dow"
    return key.split("_", 1)[1]


@st.composite
def session_starts(draw: st.DrawFn) -> int:
    if draw(st.booleans()):
        return draw(st.sampled_from(DST_NIGHTS_MS)) + draw(st.integers(0, 6 * 3_600_000))
    return at("2024-01-01T00:00:00+00:00") + draw(st.integers(0, 365 * 86_400_000))


@st.composite
def metered_sessions(draw: st.DrawFn, *, resets: bool = True, missing: bool = True
                     ) -> tuple[int, int, list[MeterSample], int, int | None]:
    """(start, start reading, samples in time order, end, stop reading)."""
    start = draw(session_starts())
    register = register_start = draw(st.integers(0, 10**9))
    t = start
    samples: list[MeterSample] = []
    for _ in range(draw(st.integers(0, 30))):
        gap = draw(st.integers(1, 40)) * MIN + draw(st.integers(0, 999))
        if draw(st.integers(0, 6)) == 0:
            gap = draw(st.integers(1, 5_000))  # a burst of samples
        t += gap
        kind = draw(st.integers(0, 9))
        power = draw(powers_w)
        if resets and kind == 0:
            register = draw(st.integers(0, 2_000_000))
        elif kind <= 2:
            register += draw(st.integers(0, 20))  # standby draw
        else:
            register += power * gap // 3_600 + draw(st.integers(0, 999))
        samples.append(MeterSample(
            t, None if missing and draw(st.integers(0, 15)) == 0 else register,
            power_w=draw(st.one_of(st.none(), st.just(power))),
            current_ma=draw(st.sampled_from([None, 6_000, 16_000, 40_000])),
            charging=draw(st.sampled_from([None, None, True, False]))))
    end = t + draw(st.integers(0, 30 * MIN))
    end_reading = None if draw(st.integers(0, 3)) == 0 else register + draw(
        st.integers(0, 5_000_000))
    return start, register_start, samples, end, end_reading


def register_deltas(register_start: int, readings: list[int | None]) -> int:
    """Energy the readings describe, by the reset rule, computed independently of the meter."""
    total, previous = 0, register_start
    for reading in readings:
        if reading is None:
            continue
        total += reading - previous if reading >= previous else reading
        previous = reading
    return total


@FAST
@given(t=tariffs(), session=metered_sessions())
def test_periods_energy_sums_to_the_register_delta_and_time_to_the_session_length(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None]
        ) -> None:
    start, reg0, samples, end, end_reading = session
    periods = feed(SessionMeter(t, BERLIN, start, reg0), samples, end, end_reading)
    readings = [s.energy_milliwh for s in samples] + [end_reading]
    assert sum(p.energy_milliwh for p in periods) == register_deltas(reg0, readings)
    assert sum(p.time_ms + p.parking_ms for p in periods) == end - start
    # contiguous: each period ends where the next starts
    ends = [p.start_epoch_ms + p.time_ms + p.parking_ms for p in periods]
    assert [p.start_epoch_ms for p in periods[1:]] == ends[:-1]
    assert (periods[0].start_epoch_ms, ends[-1]) == (start, end)


@FAST
@given(t=tariffs(), session=metered_sessions(), data=st.data())
def test_fed_one_by_one_equals_fed_at_once_in_any_order_with_duplicates(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None],
        data: st.DataObject) -> None:
    start, reg0, samples, end, end_reading = session
    streamed = feed(SessionMeter(t, BERLIN, start, reg0), samples, end, end_reading)
    delivered = samples + data.draw(st.lists(st.sampled_from(samples), max_size=5)
                                    if samples else st.just([]))
    delivered = data.draw(st.permutations(delivered))
    assert periods_from_samples(t, BERLIN, start, reg0, delivered, end, end_reading) == \
        streamed


@FAST
@given(t=tariffs(), session=metered_sessions(), data=st.data())
def test_duplicated_and_late_samples_change_nothing(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None],
        data: st.DataObject) -> None:
    start, reg0, samples, end, end_reading = session
    clean = feed(SessionMeter(t, BERLIN, start, reg0), samples, end, end_reading)
    meter = SessionMeter(t, BERLIN, start, reg0)
    out: list[ChargingPeriod] = []
    for sample in samples:
        out.extend(meter.add(sample).closed)
        for _ in range(data.draw(st.integers(0, 2))):
            late = MeterSample(data.draw(st.integers(start - MIN, meter.last_at_ms)),
                               data.draw(st.integers(0, 10**9)),
                               power_w=data.draw(powers_w),
                               charging=data.draw(st.sampled_from([None, True, False])))
            update = meter.add(late)
            assert (update.accepted, update.late, update.closed) == (False, True, ())
    out.extend(meter.close(end, end_reading))
    assert tuple(out) == clean


@FAST
@given(t=tariffs(), session=metered_sessions(), data=st.data())
def test_a_meter_saved_and_resumed_builds_the_same_periods(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None],
        data: st.DataObject) -> None:
    start, reg0, samples, end, end_reading = session
    whole = feed(SessionMeter(t, BERLIN, start, reg0), samples, end, end_reading)
    cut = data.draw(st.integers(0, len(samples)))
    first = SessionMeter(t, BERLIN, start, reg0)
    out = [p for s in samples[:cut] for p in first.add(s).closed]
    saved = json.loads(json.dumps(first.to_state()))
    resumed = SessionMeter.from_state(t, saved)
    assert resumed.pending() == first.pending()
    assert tuple(out) + feed(resumed, samples[cut:], end, end_reading) == whole


@FAST
@given(t=tariffs(kinds=("tod", "dow")), session=metered_sessions(resets=False))
def test_a_time_of_day_or_weekday_restriction_never_changes_inside_a_period(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None]
        ) -> None:
    """Checked at every whole minute (where local boundaries and DST changes fall) inside each
    period, with the rater's own local time."""
    start, reg0, samples, end, end_reading = session
    periods = feed(SessionMeter(t, BERLIN, start, reg0), samples, end, end_reading)

    def matches(at_ms: int, p: ChargingPeriod) -> tuple[bool, ...]:
        s = at_ms // 1000
        day, sod = divmod(s + t.offsets(BERLIN, s).offset_s(s), 86_400)
        return tuple(el.matches(sod, day, (day + 3) % 7, 0, 0, p) for el in t.elements)

    for p in periods:
        span_end = p.start_epoch_ms + p.time_ms + p.parking_ms
        first = matches(p.start_epoch_ms, p)
        minute = -(-p.start_epoch_ms // MIN) * MIN
        while minute < span_end:
            assert matches(minute, p) == first, (p, minute)
            minute += MIN


@settings(max_examples=200, deadline=None)
@given(t=tariffs(kinds=("tod", "dow")), lo=session_starts(), span=st.integers(2, 3 * 86_400_000))
def test_every_local_clock_cut_shows_a_boundary_value_or_is_a_daylight_saving_jump(
        t: CompiledTariff, lo: int, span: int) -> None:
    cuts = local_clock_cuts_ms(t, BERLIN, lo, lo + span)
    assert cuts == sorted(set(cuts))
    assert all(lo < c < lo + span and c % 1000 == 0 for c in cuts)
    values = clock_cuts_s(t)
    for c in cuts:
        s = c // 1000
        table = t.offsets(BERLIN, s)
        local_sod = (s + table.offset_s(s)) % 86_400
        assert local_sod in values or table.offset_s(s - 1) != table.offset_s(s), c


# -- cross-checks against independent paths ----------------------------------------------------


@FAST
@given(t=tariffs(kinds=("tod", "dow", "kwh", "duration")), start=session_starts(),
       rate_milliwh_per_ms=st.sampled_from([1, 2, 3, 6, 14]),
       charging_steps=st.lists(st.integers(1, 45 * MIN), max_size=12),
       idle_steps=st.lists(st.integers(1, 45 * MIN), max_size=6))
def test_rating_metered_periods_equals_rating_synthesized_periods_at_constant_power(
        t: CompiledTariff, start: int, rate_milliwh_per_ms: int, charging_steps: list[int],
        idle_steps: list[int]) -> None:
    """Two independent paths: samples of a constant-power session through the meter, and the
    session's totals through ``profiles.synthesize_periods``. At a whole number of mWh per ms
    both energy splits are exact, so the periods and their prices agree exactly."""
    samples: list[MeterSample] = []
    now, register = start, 0
    for step in charging_steps:
        now += step
        register += step * rate_milliwh_per_ms
        samples.append(MeterSample(now, register, charging=True))
    charge_end = now
    for step in idle_steps:
        now += step
        samples.append(MeterSample(now, register, charging=False))
    metered = periods_from_samples(t, BERLIN, start, 0, samples, now, register)
    synthesized = synthesize_periods(t, BERLIN, start, charge_end - start, register,
                                     now - charge_end)

    def without_power(periods: tuple[ChargingPeriod, ...]) -> tuple[ChargingPeriod, ...]:
        return tuple(replace(p, power_w=None, power_w_min=None, power_w_max=None)
                     for p in periods)

    assert without_power(metered) == without_power(synthesized)
    a = rate(t, SessionFacts(metered, BERLIN, start, now))
    b = rate(t, SessionFacts(synthesized, BERLIN, start, now))
    assert (a, a.periods()) == (b, b.periods())


@FAST
@given(t=tariffs(), session=metered_sessions(), data=st.data())
def test_a_preview_with_the_open_period_equals_a_fresh_rater_and_leaves_the_rater_unchanged(
        t: CompiledTariff, session: tuple[int, int, list[MeterSample], int, int | None],
        data: st.DataObject) -> None:
    start, reg0, samples, end, end_reading = session
    meter = SessionMeter(t, BERLIN, start, reg0)
    rater = SessionRater(t, BERLIN, start)
    closed: list[ChargingPeriod] = []
    for sample in samples:
        update = meter.add(sample)
        rater.add_all(update.closed)
        closed.extend(update.closed)
        pending = meter.pending()
        now = sample.at_ms + data.draw(st.integers(0, MIN))
        preview = rater.snapshot_with(pending, now)
        fresh = SessionRater(t, BERLIN, start)
        fresh.add_all(closed + ([pending] if pending is not None else []))
        expected = fresh.snapshot(now)
        assert (preview, preview.periods()) == (expected, expected.periods())
    rest = meter.close(end, end_reading)
    rater.add_all(rest)
    live = rater.snapshot(end, final=True)
    whole = rate(t, SessionFacts(tuple(closed) + rest, BERLIN, start, end))
    assert (live, live.periods()) == (whole, whole.periods())
