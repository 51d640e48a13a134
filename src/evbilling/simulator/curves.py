"""Realistic charging sessions for the charger simulator. Pure: no I/O, no clock, no global random.

A session is *planned* once from a seeded ``random.Random`` (:func:`plan_session`) and then
*read* at any time offset from plug-in (:meth:`ChargingCurve.sample`): grid power, energy
delivered, state of charge and what the car is doing. The same seed gives the same session.

The shape, per session:

1. a short ramp-up (15 s) to the session's maximum power, the lower of the car's and the
   connector's (AC 11 / 22 kW three-phase, or what a one-phase car can take; DC 50-150 kW);
2. constant power (CC) with a small dip now and then, until the state of charge reaches the
   taper point (DC around 80 %, AC around 90 %);
3. a taper (CV-like): power falls linearly with the state of charge towards a floor, recomputed
   every 30 s, until the car's target state of charge;
4. idle: the car is full but still plugged in, power 0 W, until the driver comes back; most
   come back within minutes, some after hours (a parked car overnight);
5. some drivers leave before the car is full (a dwell limit), which ends the session early.

Units are integers throughout (W, Wh, milliseconds, per mille): power is piecewise constant
over whole-second segments, energy inside a segment is ``power_w * ms`` millijoules, and the
energy reported is the whole Wh delivered so far (``floor``), so a meter register built on it
is integer and monotonic, and the energy between any two readings equals the integral of the
power over that interval within 1 Wh.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Literal

PowerType = Literal["AC", "DC"]
CurveState = Literal["charging", "suspended_ev", "unplugged"]

MJ_PER_WH = 3_600_000  # 1 Wh = 3 600 J = 3 600 000 mJ, and 1 W * 1 ms = 1 mJ
AC_VOLTAGE_V = 230  # phase-to-neutral
RAMP_STEP_MS = 5_000
RAMP_STEPS = 3  # 25 %, 50 %, 75 % of the maximum, then full power
CC_STEP_MS = 60_000
TAPER_STEP_MS = 30_000
CHARGING_S_MAX = 24 * 3600  # a limit on every session, whatever the plan says
SEGMENTS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Connector:
    """What the charger's outlet can deliver."""

    power_type: PowerType
    power_w_max: int
    phases: int  # AC: 1 or 3; DC: 0


AC_11KW = Connector("AC", 11_000, 3)
AC_22KW = Connector("AC", 22_000, 3)
DC_50KW = Connector("DC", 50_000, 0)
DC_100KW = Connector("DC", 100_000, 0)
DC_150KW = Connector("DC", 150_000, 0)
CONNECTORS = (AC_11KW, AC_22KW, DC_50KW, DC_100KW, DC_150KW)
CONNECTOR_WEIGHTS = (35, 35, 12, 10, 8)


@dataclass(frozen=True, slots=True)
class CarModel:
    """A class of car (not a brand): battery and the most each inlet takes."""

    name: str
    capacity_wh: int  # usable battery
    ac_power_w_max: int
    ac_phases: int
    dc_power_w_max: int  # 0: no DC inlet (plug-in hybrid)


CARS = (
    CarModel("city", 42_000, 11_000, 3, 50_000),
    CarModel("compact", 58_000, 11_000, 3, 120_000),
    CarModel("compact-1ph", 40_000, 7_400, 1, 50_000),
    CarModel("sedan", 77_000, 11_000, 3, 170_000),
    CarModel("suv", 95_000, 22_000, 3, 150_000),
    CarModel("van", 75_000, 11_000, 3, 100_000),
    CarModel("phev", 13_000, 3_700, 1, 0),
)
CAR_WEIGHTS = (15, 25, 10, 20, 12, 8, 10)


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Everything random about one session, drawn once; :class:`ChargingCurve` reads it."""

    car: str
    power_type: PowerType
    phases: int  # phases used: 1 or 3 on AC, 0 on DC
    capacity_wh: int
    soc_permille_start: int
    soc_permille_target: int  # the car stops charging here (its own limit)
    soc_permille_taper: int  # constant power below, taper above
    power_w_max: int  # min(car, connector)
    power_w_min: int  # the floor the taper falls to
    efficiency_permille: int  # battery energy / metered (grid) energy
    idle_s: int  # plugged in after full, power 0
    dwell_s_max: int | None  # the driver leaves after this long, full or not; None: waits
    jitter_seed: int  # for the small dips at constant power


def _draw(rng: random.Random, low: int, high: int) -> int:
    return rng.randint(low, high)


def random_connector(rng: random.Random) -> Connector:
    """A connector as found on public sites: mostly AC 11/22 kW, some DC 50-150 kW."""
    return rng.choices(CONNECTORS, weights=CONNECTOR_WEIGHTS)[0]


def plan_session(rng: random.Random, connector: Connector) -> SessionPlan:
    """Draw a plausible session on ``connector`` (a car that can use it, SoC, dwell, idle)."""
    cars = [(car, w) for car, w in zip(CARS, CAR_WEIGHTS, strict=True)
            if connector.power_type == "AC" or car.dc_power_w_max > 0]
    car = rng.choices([c for c, _ in cars], weights=[w for _, w in cars])[0]
    if connector.power_type == "AC":
        phases = min(car.ac_phases, connector.phases)
        power_w_max = min(car.ac_power_w_max, connector.power_w_max,
                          phases * AC_VOLTAGE_V * 32)
        soc_start = _draw(rng, 150, 700)
        soc_target = rng.choices((800, 900, 1000), weights=(30, 20, 50))[0]
        soc_taper = _draw(rng, 880, 950)
        efficiency = _draw(rng, 880, 930)
        dwell_s_max = _draw(rng, 20 * 60, 180 * 60) if rng.random() < 0.25 else None
        idle_s = _idle_s_ac(rng)
    else:
        phases = 0
        power_w_max = min(car.dc_power_w_max, connector.power_w_max)
        soc_start = _draw(rng, 50, 450)
        soc_target = rng.choices((800, 900, 1000), weights=(70, 15, 15))[0]
        soc_taper = _draw(rng, 750, 850)
        efficiency = _draw(rng, 920, 960)
        dwell_s_max = _draw(rng, 10 * 60, 40 * 60) if rng.random() < 0.1 else None
        idle_s = _draw(rng, 0, 10 * 60) if rng.random() < 0.9 else _draw(rng, 10 * 60, 45 * 60)
    soc_target = min(max(soc_target, soc_start + 50), 1000)
    # A DC car that stops at 80 % still tapers before it gets there; an AC car at its own
    # limit just stops (the onboard charger, not the battery, was the limit).
    soc_taper = min(soc_taper, soc_target - 50 if connector.power_type == "DC" else soc_target)
    soc_taper = max(soc_taper, soc_start)
    power_w_min = min(power_w_max, max(power_w_max * 6 // 100, 1_400))
    return SessionPlan(
        car=car.name, power_type=connector.power_type, phases=phases,
        capacity_wh=car.capacity_wh, soc_permille_start=soc_start,
        soc_permille_target=soc_target, soc_permille_taper=soc_taper,
        power_w_max=power_w_max, power_w_min=power_w_min, efficiency_permille=efficiency,
        idle_s=idle_s, dwell_s_max=dwell_s_max, jitter_seed=rng.getrandbits(32))


def _idle_s_ac(rng: random.Random) -> int:
    """Minutes for most drivers, an hour or two for some, a night for a few."""
    roll = rng.random()
    if roll < 0.60:
        return _draw(rng, 0, 15 * 60)
    if roll < 0.85:
        return _draw(rng, 15 * 60, 60 * 60)
    if roll < 0.95:
        return _draw(rng, 60 * 60, 3 * 3600)
    return _draw(rng, 3 * 3600, 10 * 3600)


def arrival_gap_s(rng: random.Random, mean_s: int = 30 * 60) -> int:
    """Time a connector stays free before the next car arrives (exponential, 1 min .. 6 h)."""
    return min(max(int(rng.expovariate(1 / mean_s)), 60), 6 * 3600)


@dataclass(frozen=True, slots=True)
class CurveSample:
    """The session as a meter and a car see it at ``offset_ms`` after plug-in."""

    offset_ms: int
    state: CurveState
    power_w: int
    energy_wh: int  # delivered since plug-in, whole Wh (floor): add to the register at start
    soc_permille: int
    current_da: tuple[int, int, int]  # deci-amperes on L1, L2, L3 (DC: the DC current on L1)
    voltage_dv: int  # deci-volts: AC phase voltage, or the DC battery voltage


@dataclass(frozen=True, slots=True)
class _Segment:
    start_ms: int
    power_w: int
    energy_mj_start: int


class ChargingCurve:
    """A planned session as piecewise-constant power over whole-second segments."""

    __slots__ = ("_energy_mj_full", "_segments", "_starts", "departure_ms", "full_ms", "plan")

    def __init__(self, plan: SessionPlan) -> None:
        self.plan = plan
        self._segments: list[_Segment] = []
        energy_mj = 0
        t_ms = 0
        target_mj = self._energy_mj_for(plan.soc_permille_target)
        taper_mj = self._energy_mj_for(plan.soc_permille_taper)
        dwell_ms = None if plan.dwell_s_max is None else plan.dwell_s_max * 1000
        limit_ms = CHARGING_S_MAX * 1000 if dwell_ms is None else min(dwell_ms,
                                                                       CHARGING_S_MAX * 1000)
        jitter = random.Random(plan.jitter_seed)  # noqa: S311 - simulation, not security
        while energy_mj < target_mj and t_ms < limit_ms:
            if len(self._segments) >= SEGMENTS_MAX:
                raise ValueError("charging curve needs too many segments")
            if t_ms < RAMP_STEPS * RAMP_STEP_MS:
                power_w = plan.power_w_max * (t_ms // RAMP_STEP_MS + 1) // (RAMP_STEPS + 1)
                step_ms = RAMP_STEP_MS
                boundary_mj = target_mj
            elif energy_mj < taper_mj:
                dip = jitter.randint(0, 15) if jitter.random() < 0.3 else 0
                power_w = plan.power_w_max * (1000 - dip) // 1000
                step_ms = CC_STEP_MS
                boundary_mj = taper_mj
            else:
                power_w = self._taper_power_w(self._soc_permille(energy_mj))
                step_ms = TAPER_STEP_MS
                boundary_mj = target_mj
            power_w = max(power_w, 1)
            # Stop the step on the whole second where the boundary (taper point or target) is
            # crossed, so the next segment starts with the right phase.
            to_boundary_s = -(-(boundary_mj - energy_mj) // (power_w * 1000))
            step_ms = min(step_ms, max(to_boundary_s, 1) * 1000, limit_ms - t_ms)
            self._segments.append(_Segment(t_ms, power_w, energy_mj))
            energy_mj += power_w * step_ms
            t_ms += step_ms
        self.full_ms: int | None = t_ms if energy_mj >= target_mj else None
        self._energy_mj_full = energy_mj
        if self.full_ms is not None:
            departure_ms = self.full_ms + plan.idle_s * 1000
            if dwell_ms is not None:
                departure_ms = min(departure_ms, max(dwell_ms, self.full_ms))
        else:
            departure_ms = t_ms
        self.departure_ms: int = departure_ms
        self._segments.append(_Segment(t_ms, 0, energy_mj))  # idle until unplugged
        self._starts = [segment.start_ms for segment in self._segments]

    # -- the physics ----------------------------------------------------------------------

    def _energy_mj_for(self, soc_permille: int) -> int:
        """Metered energy (mJ) that brings the battery from the start to ``soc_permille``."""
        plan = self.plan
        delta = max(soc_permille - plan.soc_permille_start, 0)
        return -(-delta * plan.capacity_wh * MJ_PER_WH // plan.efficiency_permille)

    def _soc_permille(self, energy_mj: int) -> int:
        plan = self.plan
        gained = energy_mj * plan.efficiency_permille // (MJ_PER_WH * plan.capacity_wh)
        return min(plan.soc_permille_start + gained, 1000)

    def _taper_power_w(self, soc_permille: int) -> int:
        plan = self.plan
        span = max(1000 - plan.soc_permille_taper, 1)
        power_w = plan.power_w_max * max(1000 - soc_permille, 0) // span
        return min(max(power_w, plan.power_w_min), plan.power_w_max)

    # -- reading --------------------------------------------------------------------------

    @property
    def energy_wh_total(self) -> int:
        """Whole Wh delivered by the time the car leaves."""
        return self._energy_mj_full // MJ_PER_WH

    @property
    def duration_ms(self) -> int:
        """Plug-in to unplug."""
        return self.departure_ms

    def energy_mj(self, offset_ms: int) -> int:
        """Energy delivered (millijoules) by ``offset_ms``: exact integral of the power."""
        if offset_ms <= 0:
            return 0
        segment = self._segments[bisect.bisect_right(self._starts, offset_ms) - 1]
        return segment.energy_mj_start + segment.power_w * (offset_ms - segment.start_ms)

    def power_w(self, offset_ms: int) -> int:
        if offset_ms < 0 or offset_ms >= self.departure_ms:
            return 0
        return self._segments[bisect.bisect_right(self._starts, offset_ms) - 1].power_w

    def register_wh(self, offset_ms: int, register_wh_start: int = 0) -> int:
        """A meter register that read ``register_wh_start`` at plug-in: integer, monotonic."""
        return register_wh_start + self.energy_mj(offset_ms) // MJ_PER_WH

    def sample(self, offset_ms: int) -> CurveSample:
        offset_ms = max(offset_ms, 0)
        energy_mj = self.energy_mj(min(offset_ms, self.departure_ms))
        power_w = self.power_w(offset_ms)
        soc = self._soc_permille(energy_mj)
        if offset_ms >= self.departure_ms:
            state: CurveState = "unplugged"
        elif power_w > 0:
            state = "charging"
        else:
            state = "suspended_ev"
        plan = self.plan
        if plan.power_type == "AC":
            voltage_dv = AC_VOLTAGE_V * 10
            per_phase = power_w * 10 // (plan.phases * AC_VOLTAGE_V)
            current_da = (per_phase, per_phase, per_phase) if plan.phases == 3 else (
                per_phase, 0, 0)
        else:
            voltage_dv = 3_500 + soc  # 350 V empty .. 450 V full
            current_da = (power_w * 100 // voltage_dv, 0, 0)
        return CurveSample(offset_ms=offset_ms, state=state, power_w=power_w,
                           energy_wh=energy_mj // MJ_PER_WH, soc_permille=soc,
                           current_da=current_da, voltage_dv=voltage_dv)


def random_session(rng: random.Random, connector: Connector) -> ChargingCurve:
    return ChargingCurve(plan_session(rng, connector))
