"""The simulator's charging curves: physics a billing system can rely on, and determinism."""
# ruff: noqa: S311 (seeded simulation randomness, not security)

from __future__ import annotations

import random

import pytest

from evbilling.simulator.curves import (
    AC_11KW,
    AC_22KW,
    CONNECTORS,
    DC_150KW,
    ChargingCurve,
    Connector,
    arrival_gap_s,
    plan_session,
    random_connector,
    random_session,
)

SAMPLE_MS = 60_000
SEEDS = range(200)


def sessions(connector: Connector | None = None, seeds: range = SEEDS) -> list[ChargingCurve]:
    curves = []
    for seed in seeds:
        rng = random.Random(seed)
        curves.append(random_session(rng, connector or random_connector(rng)))
    return curves


def integral_j(curve: ChargingCurve, start_ms: int, end_ms: int) -> int:
    """Power is constant over whole seconds, so summing it per second is the exact integral."""
    assert start_ms % 1000 == 0 and end_ms % 1000 == 0
    return sum(curve.power_w(t_ms) for t_ms in range(start_ms, end_ms, 1000))


def test_energy_between_samples_is_the_integral_of_power_within_one_wh() -> None:
    for curve in sessions(seeds=range(60)):
        end_ms = curve.departure_ms + 2 * SAMPLE_MS
        for start_ms in range(0, end_ms, SAMPLE_MS):
            delivered_wh = curve.register_wh(start_ms + SAMPLE_MS) - curve.register_wh(start_ms)
            exact_j = integral_j(curve, start_ms, start_ms + SAMPLE_MS)
            assert abs(delivered_wh * 3600 - exact_j) < 3600, (curve.plan, start_ms)


def test_total_energy_is_the_integral_over_the_whole_session() -> None:
    for curve in sessions(seeds=range(40)):
        exact_j = integral_j(curve, 0, curve.departure_ms)
        assert curve.energy_wh_total == exact_j // 3600
        assert curve.energy_mj(curve.departure_ms) == exact_j * 1000


def test_meter_register_is_an_integer_that_never_goes_down() -> None:
    for curve in sessions(seeds=range(50)):
        readings = [curve.register_wh(t_ms, register_wh_start=1_234_567)
                    for t_ms in range(0, curve.departure_ms + 10_000, 7_000)]
        assert all(isinstance(value, int) for value in readings)
        assert readings == sorted(readings)
        assert readings[0] == 1_234_567
        assert readings[-1] == 1_234_567 + curve.energy_wh_total


def test_power_never_exceeds_the_car_or_the_connector() -> None:
    for connector in CONNECTORS:
        for curve in sessions(connector, seeds=range(40)):
            assert curve.plan.power_w_max <= connector.power_w_max
            peak = max(curve.power_w(t_ms) for t_ms in range(0, curve.departure_ms, 5_000))
            assert peak <= curve.plan.power_w_max


def test_power_is_constant_below_the_taper_point_after_the_ramp() -> None:
    for curve in sessions(DC_150KW, seeds=range(40)):
        plan = curve.plan
        for t_ms in range(20_000, curve.full_ms or curve.departure_ms, 10_000):
            if curve.sample(t_ms).soc_permille < plan.soc_permille_taper:
                # small dips only (at most 1.5 %): the car, not the charger, asks for less
                assert curve.power_w(t_ms) >= plan.power_w_max * 985 // 1000


def test_power_tapers_above_the_taper_point_until_the_car_is_full() -> None:
    tapered = 0
    for curve in sessions(DC_150KW, seeds=range(80)):
        plan, full_ms = curve.plan, curve.full_ms
        if full_ms is None:
            continue
        taper = [curve.power_w(t_ms) for t_ms in range(20_000, full_ms, 1_000)
                 if curve.sample(t_ms).soc_permille >= plan.soc_permille_taper]
        assert taper == sorted(taper, reverse=True), "power only falls in the taper"
        if len(taper) > 60:
            tapered += 1
            assert taper[-1] < plan.power_w_max * 95 // 100
            assert taper[-1] >= plan.power_w_min
    assert tapered > 40


def test_a_full_car_still_plugged_in_draws_zero_watts() -> None:
    idle_sessions = 0
    for curve in sessions(AC_22KW):
        full_ms = curve.full_ms
        if full_ms is None or curve.departure_ms - full_ms < SAMPLE_MS:
            continue
        idle_sessions += 1
        at_full = curve.sample(full_ms)
        assert at_full.soc_permille >= curve.plan.soc_permille_target
        for t_ms in range(full_ms, curve.departure_ms, SAMPLE_MS):
            sample = curve.sample(t_ms)
            assert (sample.state, sample.power_w) == ("suspended_ev", 0)
            assert sample.current_da == (0, 0, 0)
            assert sample.energy_wh == at_full.energy_wh
        assert curve.sample(curve.departure_ms).state == "unplugged"
    assert idle_sessions > 50


def test_some_drivers_leave_their_car_plugged_in_for_hours() -> None:
    idle_s = [curve.departure_ms // 1000 - curve.full_ms // 1000
              for curve in sessions(AC_11KW, seeds=range(400)) if curve.full_ms is not None]
    assert sum(1 for s in idle_s if s > 3 * 3600) >= 5
    assert sum(1 for s in idle_s if s < 15 * 60) > len(idle_s) // 2


def test_some_drivers_leave_before_the_car_is_full() -> None:
    early = [curve for curve in sessions(AC_11KW, seeds=range(200)) if curve.full_ms is None]
    assert early
    for curve in early:
        assert curve.departure_ms == (curve.plan.dwell_s_max or 0) * 1000
        assert curve.sample(curve.departure_ms - 1_000).state == "charging"


def test_three_phase_current_follows_power() -> None:
    curve = ChargingCurve(plan_session(random.Random(7), AC_22KW))
    sample = curve.sample(10 * 60_000)
    if curve.plan.phases == 3:
        l1, l2, l3 = sample.current_da
        assert l1 == l2 == l3 == sample.power_w * 10 // (3 * 230)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**40])
def test_the_same_seed_gives_the_same_session(seed: int) -> None:
    def draw(seed: int) -> tuple[object, list[object]]:
        rng = random.Random(seed)
        curve = random_session(rng, random_connector(rng))
        return curve.plan, [curve.sample(t_ms) for t_ms in range(0, curve.departure_ms, 30_000)]

    assert draw(seed) == draw(seed)
    assert draw(seed) != draw(seed + 1)


def test_arrival_gaps_are_bounded() -> None:
    rng = random.Random(3)
    gaps = [arrival_gap_s(rng) for _ in range(2_000)]
    assert min(gaps) >= 60 and max(gaps) <= 6 * 3600
    assert 20 * 60 < sum(gaps) / len(gaps) < 40 * 60

