"""Charging periods from meter samples, built as the samples arrive (OCPP in, OCPI out).

A charger reports its energy register (``Energy.Active.Import.Register``) and, often, power and
current. ``SessionMeter`` turns those samples into OCPI charging periods one sample at a time:
each sample closes an *interval* (from the previous accepted sample), and intervals merge into
the open period until a tariff-relevant moment starts a new one. The cut rules are the ones of
``profiles.synthesize_periods`` and share its helpers, so a quote and a metered session are cut
alike (``docs/rating.md``, "Periods from meter data"):

* charging <-> idle (idle becomes PARKING_TIME);
* every local time-of-day boundary an element names, and local midnight when a date or weekday
  matters (DST-aware, in the site's zone; ``profiles.local_clock_cuts_ms``);
* every min/max_duration limit, counted from the session start;
* the instant the session's energy reaches a min/max_kwh limit;
* an interval whose power or current lies on the other side of a min/max power/current limit
  than the open period's samples.

Inside an interval energy is taken as drawn at constant power: the part before a cut is
``delta * elapsed // span`` (floored; the remainder goes to the later part), so the parts always
sum to the register delta, and a kWh limit is reached at the first ms where that floor reaches it
(ceiling of the inverse).

Pure and O(1) in memory per session: closed periods are handed out (to feed
``SessionRater.add_all``), never kept. ``to_state`` / ``from_state`` persist an active session.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from evbilling.domain.errors import MeterClosedError, MeterError, MeterLimitError
from evbilling.domain.periods import (
    MAX_PERIODS_PER_SESSION,
    MAX_SESSION_DURATION_MS,
    MAX_SESSION_ENERGY_MILLIWH,
    MS_PER_HOUR,
    ChargingPeriod,
)
from evbilling.domain.profiles import (
    energy_share_milliwh,
    kwh_limit_reached_ms,
    kwh_limits_milliwh,
    time_cuts_ms,
)
from evbilling.domain.rating import CompiledTariff, compile_tariff
from evbilling.domain.tariffs.model import Tariff
from evbilling.domain.timezones import zone

#: Limits (TIGER_STYLE) on single readings; far above any charger (a 10 MW site, 10 kA).
MAX_POWER_W = 10_000_000
MAX_CURRENT_MA = 10_000_000
#: Average power (W) from which an interval without an explicit state counts as charging.
IDLE_POWER_W_DEFAULT = 50
METER_STATE_VERSION = 1

_MS_PER_DAY = 24 * MS_PER_HOUR
_MILLIWH_MS_TO_W = 3_600  # 1 mWh per ms = 3 600 W


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One meter reading as the OCPP adapter delivers it (already in our units)."""

    at_ms: int  # epoch ms
    energy_milliwh: int | None  # Energy.Active.Import.Register; None = not in this sample
    power_w: int | None = None  # Power.Active.Import
    current_ma: int | None = None  # Current.Import, sum over phases
    #: Explicit state from the charger (2.0.1 chargingState, 1.6 SuspendedEV -> False);
    #: None = infer from the average power of the interval.
    charging: bool | None = None


@dataclass(frozen=True, slots=True)
class MeterUpdate:
    """What one sample did."""

    closed: tuple[ChargingPeriod, ...] = ()  # periods that can no longer change
    accepted: bool = True
    #: At or before the last accepted sample: ignored (the register already covers its energy).
    late: bool = False
    #: The register went down: the reading counts as energy since a reset to 0.
    meter_reset: bool = False
    #: No energy reading: ignored (an interval needs both ends of the register).
    missing_energy: bool = False


@dataclass(frozen=True, slots=True)
class _Open:
    """The period being built: it grows until the next cut."""

    start_ms: int
    charging: bool
    band: tuple[int, int]  # which side of the power / current limits its samples are on
    energy_milliwh: int
    span_ms: int  # TIME when charging, PARKING_TIME when idle
    power_w_min: int | None
    power_w_max: int | None
    current_ma_min: int | None
    current_ma_max: int | None

    def period(self) -> ChargingPeriod:
        return ChargingPeriod(
            self.start_ms, energy_milliwh=self.energy_milliwh,
            time_ms=self.span_ms if self.charging else 0,
            parking_ms=0 if self.charging else self.span_ms,
            power_w_min=self.power_w_min, power_w_max=self.power_w_max,
            current_ma_min=self.current_ma_min, current_ma_max=self.current_ma_max)

    def extended(self, energy_milliwh: int, span_ms: int, power_w: int | None,
                 current_ma: int | None) -> _Open:
        return _Open(self.start_ms, self.charging, self.band,
                     self.energy_milliwh + energy_milliwh, self.span_ms + span_ms,
                     _least(self.power_w_min, power_w), _most(self.power_w_max, power_w),
                     _least(self.current_ma_min, current_ma),
                     _most(self.current_ma_max, current_ma))


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class _Step(NamedTuple):
    """The effect of one interval, computed before anything changes (a refused sample changes
    nothing)."""

    closed: tuple[ChargingPeriod, ...]
    open: _Open | None
    at_ms: int
    register_milliwh: int
    delta_milliwh: int
    reset: bool


class SessionMeter:
    """Streaming builder of one session's charging periods from its meter samples."""

    __slots__ = ("tariff", "time_zone", "start_ms", "energy_milliwh_start", "idle_power_w",
                 "_last_at_ms", "_register_milliwh", "_energy_milliwh", "_periods_closed",
                 "_meter_resets", "_open", "_finished", "_kwh_limits", "_power_limits",
                 "_current_limits", "_cut_window", "_cuts", "_pending")

    def __init__(self, tariff: Tariff | CompiledTariff, time_zone: str, start_ms: int,
                 energy_milliwh_start: int, *, idle_power_w: int = IDLE_POWER_W_DEFAULT
                 ) -> None:
        if start_ms < 0 or energy_milliwh_start < 0 or idle_power_w < 0:
            raise MeterError("start time, start reading and idle power must not be negative")
        zone(time_zone)  # an unknown zone is refused here, not at the first boundary
        self.tariff = compile_tariff(tariff)
        self.time_zone = time_zone
        self.start_ms = start_ms
        self.energy_milliwh_start = energy_milliwh_start
        self.idle_power_w = idle_power_w
        self._last_at_ms = start_ms
        self._register_milliwh = energy_milliwh_start
        self._energy_milliwh = 0
        self._periods_closed = 0
        self._meter_resets = 0
        self._open: _Open | None = None
        self._pending: ChargingPeriod | None = None  # self._open.period(), made once
        self._finished = False
        els = self.tariff.elements
        self._kwh_limits = kwh_limits_milliwh(self.tariff)
        self._power_limits = tuple(sorted({v for e in els if e.power is not None
                                           for v in e.power if v is not None}))
        self._current_limits = tuple(sorted({v for e in els if e.current is not None
                                             for v in e.current if v is not None}))
        self._cut_window = (0, 0)  # (lo, hi): self._cuts holds every time cut in (lo, hi)
        self._cuts: list[int] = []

    # -- reading -------------------------------------------------------------------------
    @property
    def energy_milliwh(self) -> int:
        """Energy since the session start (register deltas, across resets)."""
        return self._energy_milliwh

    @property
    def last_at_ms(self) -> int:
        """Time of the last accepted sample (the start before any)."""
        return self._last_at_ms

    @property
    def register_milliwh(self) -> int:
        return self._register_milliwh

    @property
    def meter_resets(self) -> int:
        return self._meter_resets

    @property
    def periods_closed(self) -> int:
        return self._periods_closed

    @property
    def finished(self) -> bool:
        return self._finished

    def pending(self) -> ChargingPeriod | None:
        """The open period so far (for a live cost with ``SessionRater.snapshot_with``)."""
        if self._pending is None and self._open is not None:
            self._pending = self._open.period()
        return self._pending

    # -- feeding -------------------------------------------------------------------------
    def add(self, sample: MeterSample) -> MeterUpdate:
        """Take the next sample. Errors: see ``errors.MeterError`` for the precedence."""
        self._check_not_finished()
        self._check_reading(sample.at_ms, sample.energy_milliwh)
        for value, limit, what in ((sample.power_w, MAX_POWER_W, "power"),
                                   (sample.current_ma, MAX_CURRENT_MA, "current")):
            if value is not None and abs(value) > limit:
                raise MeterLimitError(f"a {what} reading beyond {limit} is not a charger's")
        self._check_distance(sample.at_ms)
        if sample.at_ms <= self._last_at_ms:
            return MeterUpdate(accepted=False, late=True)
        if sample.energy_milliwh is None:
            return MeterUpdate(accepted=False, missing_energy=True)
        step = self._step(sample.at_ms, sample.energy_milliwh, sample.charging,
                          sample.power_w, sample.current_ma)
        self._commit(step)
        return MeterUpdate(step.closed, meter_reset=step.reset)

    def close(self, end_ms: int, energy_milliwh_end: int | None) -> tuple[ChargingPeriod, ...]:
        """End the session: the stop reading counts like a last sample (none: the register is
        taken as unchanged since the last sample). Returns the remaining periods; a session
        without any gets one empty period at its start (OCPI needs at least one)."""
        self._check_not_finished()
        self._check_reading(end_ms, energy_milliwh_end)
        if end_ms < self._last_at_ms:
            raise MeterError("the stop is before an accepted sample")
        self._check_distance(end_ms)
        reading = self._register_milliwh if energy_milliwh_end is None else energy_milliwh_end
        if end_ms > self._last_at_ms:
            step = self._step(end_ms, reading, None, None, None)
        else:  # a stop reading at the time of the last sample: its energy joins the open period
            delta, reset = self._delta(reading)
            closed: tuple[ChargingPeriod, ...] = ()
            open_ = self._open
            if delta and open_ is not None:
                open_ = replace(open_, energy_milliwh=open_.energy_milliwh + delta)
            elif delta:
                closed = (ChargingPeriod(end_ms, energy_milliwh=delta),)
            step = _Step(closed, open_, end_ms, reading, delta, reset)
        rest = step.closed
        if step.open is not None:
            rest += (step.open.period(),)
        if self._periods_closed + len(rest) == 0:
            rest = (ChargingPeriod(self.start_ms),)
        self._check_count(len(rest))
        self._commit(step._replace(closed=rest, open=None))
        self._finished = True
        return rest

    # -- internals -----------------------------------------------------------------------
    def _check_not_finished(self) -> None:
        if self._finished:
            raise MeterClosedError("the session meter is closed")

    @staticmethod
    def _check_reading(at_ms: int, energy_milliwh: int | None) -> None:
        if at_ms < 0:
            raise MeterError("a meter time must not be negative")
        if energy_milliwh is not None and energy_milliwh < 0:
            raise MeterError("an energy register reading must not be negative")

    def _check_distance(self, at_ms: int) -> None:
        if abs(at_ms - self.start_ms) > MAX_SESSION_DURATION_MS:
            raise MeterLimitError("a meter sample lies more than 31 days from the session start")

    def _check_count(self, more: int) -> None:
        if self._periods_closed + more > MAX_PERIODS_PER_SESSION:
            raise MeterLimitError(
                f"a session may have at most {MAX_PERIODS_PER_SESSION} charging periods")

    def _delta(self, reading: int) -> tuple[int, bool]:
        """(energy since the last reading, whether the register was reset)."""
        if reading >= self._register_milliwh:
            delta, reset = reading - self._register_milliwh, False
        else:
            delta, reset = reading, True
        if self._energy_milliwh + delta > MAX_SESSION_ENERGY_MILLIWH:
            raise MeterLimitError("a session may deliver at most 100 MWh")
        return delta, reset

    def _band(self, power_w: int | None, current_ma: int | None) -> tuple[int, int]:
        """Between which power and current limits a reading lies (-1: unknown)."""
        pb = cb = 0
        if self._power_limits:
            pb = -1 if power_w is None else bisect.bisect_right(self._power_limits, power_w)
        if self._current_limits:
            cb = -1 if current_ma is None else bisect.bisect_right(self._current_limits,
                                                                   current_ma)
        return pb, cb

    def _time_cuts(self, a: int, b: int) -> list[int]:
        """Time-of-day, midnight and duration cuts in (a, b], from a cache a day wide."""
        lo, hi = self._cut_window
        if not (lo <= a and b < hi):
            hi = max(b + 1, a + _MS_PER_DAY)
            self._cuts = time_cuts_ms(self.tariff, self.time_zone, self.start_ms, a, hi)
            self._cut_window = (a, hi)
        cuts = self._cuts
        return cuts[bisect.bisect_right(cuts, a):bisect.bisect_right(cuts, b)]

    def _step(self, b: int, reading: int, charging: bool | None, power_w: int | None,
              current_ma: int | None) -> _Step:
        """The interval (last sample, b] with the register at ``reading``: its cuts, the periods
        it closes and the open period after it. Changes nothing but the cut cache."""
        a = self._last_at_ms
        span = b - a
        delta, reset = self._delta(reading)
        if charging is None:
            charging = delta > 0 and delta * _MILLIWH_MS_TO_W >= self.idle_power_w * span
        if power_w is None:
            power_w = delta * _MILLIWH_MS_TO_W // span  # the interval's average
        band = self._band(power_w, current_ma)

        cuts = self._time_cuts(a, b)
        cum = self._energy_milliwh
        reached = [kwh_limit_reached_ms(a, span, delta, limit - cum)
                   for limit in self._kwh_limits if cum < limit <= cum + delta]
        if reached:
            cuts = sorted(set(cuts).union(reached))
        cut_at_end = bool(cuts) and cuts[-1] == b

        closed: list[ChargingPeriod] = []
        open_ = self._open
        if open_ is not None and (open_.charging != charging or open_.band != band):
            closed.append(open_.period())
            open_ = None
        x, energy_x = a, 0
        for y in [*(c for c in cuts if c < b), b]:
            if x > a and open_ is not None:  # x is a cut: what came before it is final
                closed.append(open_.period())
                open_ = None
            energy_y = energy_share_milliwh(delta, span, y - a)
            if open_ is None:
                open_ = _Open(x, charging, band, energy_y - energy_x, y - x,
                              power_w, power_w, current_ma, current_ma)
            else:
                open_ = open_.extended(energy_y - energy_x, y - x, power_w, current_ma)
            x, energy_x = y, energy_y
        if cut_at_end and open_ is not None:
            closed.append(open_.period())
            open_ = None
        self._check_count(len(closed) + (open_ is not None))
        return _Step(tuple(closed), open_, b, reading, delta, reset)

    def _commit(self, step: _Step) -> None:
        self._open = step.open
        self._pending = None
        self._last_at_ms = step.at_ms
        self._register_milliwh = step.register_milliwh
        self._energy_milliwh += step.delta_milliwh
        self._periods_closed += len(step.closed)
        self._meter_resets += step.reset

    # -- persistence ---------------------------------------------------------------------
    def to_state(self) -> dict[str, object]:
        """A JSON-safe snapshot (ints, strings, null) from which ``from_state`` resumes."""
        o = self._open
        return {
            "version": METER_STATE_VERSION,
            "tariff_id": self.tariff.tariff.id,
            "time_zone": self.time_zone,
            "start_ms": self.start_ms,
            "energy_milliwh_start": self.energy_milliwh_start,
            "idle_power_w": self.idle_power_w,
            "last_at_ms": self._last_at_ms,
            "register_milliwh": self._register_milliwh,
            "energy_milliwh": self._energy_milliwh,
            "periods_closed": self._periods_closed,
            "meter_resets": self._meter_resets,
            "finished": int(self._finished),
            "open": None if o is None else {
                "start_ms": o.start_ms, "charging": int(o.charging),
                "energy_milliwh": o.energy_milliwh, "span_ms": o.span_ms,
                "power_w_min": o.power_w_min, "power_w_max": o.power_w_max,
                "current_ma_min": o.current_ma_min, "current_ma_max": o.current_ma_max,
            },
        }

    @classmethod
    def from_state(cls, tariff: Tariff | CompiledTariff, state: Mapping[str, object]
                   ) -> SessionMeter:
        """Resume a meter saved by ``to_state`` under the same tariff."""
        s = _StateReader(state)
        if s.integer("version") != METER_STATE_VERSION:
            raise MeterError("saved meter state: unknown version")
        compiled = compile_tariff(tariff)
        if s.text("tariff_id") != compiled.tariff.id:
            raise MeterError("saved meter state: it was built under another tariff")
        meter = cls(compiled, s.text("time_zone"), s.integer("start_ms"),
                    s.integer("energy_milliwh_start"), idle_power_w=s.integer("idle_power_w"))
        meter._last_at_ms = s.integer("last_at_ms")
        meter._register_milliwh = s.integer("register_milliwh")
        meter._energy_milliwh = s.integer("energy_milliwh")
        meter._periods_closed = s.integer("periods_closed")
        meter._meter_resets = s.integer("meter_resets")
        meter._finished = s.flag("finished")
        raw = state.get("open")
        if raw is not None:
            if not isinstance(raw, Mapping):
                raise MeterError("saved meter state: open must be an object or null")
            o = _StateReader(raw)
            p_min, c_min = o.optional("power_w_min"), o.optional("current_ma_min")
            meter._open = _Open(
                o.integer("start_ms"), o.flag("charging"), meter._band(p_min, c_min),
                o.integer("energy_milliwh"), o.integer("span_ms"), p_min,
                o.optional("power_w_max"), c_min, o.optional("current_ma_max"))
        if (meter._last_at_ms < meter.start_ms or meter._register_milliwh < 0
                or meter._periods_closed < 0 or meter._meter_resets < 0
                or (meter._open is not None and not (
                    meter.start_ms <= meter._open.start_ms <= meter._last_at_ms))):
            raise MeterError("saved meter state: inconsistent values")
        return meter


class _StateReader:
    """Typed reads from a saved state; anything unexpected is a ``MeterError``."""

    __slots__ = ("_state",)

    def __init__(self, state: Mapping[str, object]) -> None:
        self._state = state

    def integer(self, key: str) -> int:
        value = self._state.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise MeterError(f"saved meter state: {key} must be an integer")
        return value

    def optional(self, key: str) -> int | None:
        return None if self._state.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self.integer(key)
        if value not in (0, 1):
            raise MeterError(f"saved meter state: {key} must be 0 or 1")
        return value == 1

    def text(self, key: str) -> str:
        value = self._state.get(key)
        if not isinstance(value, str):
            raise MeterError(f"saved meter state: {key} must be a string")
        return value


def _sample_order(sample: MeterSample) -> tuple[int, int, int, int, int]:
    """A total order on samples, so the same set gives the same periods in any arrival order.
    At one instant a sample with an energy reading sorts after one without (which is ignored
    anyway), and the lower reading wins (the others are then late)."""
    return (sample.at_ms,
            -1 if sample.energy_milliwh is None else sample.energy_milliwh,
            -1 if sample.charging is None else int(sample.charging),
            -(MAX_POWER_W + 1) if sample.power_w is None else sample.power_w,
            -(MAX_CURRENT_MA + 1) if sample.current_ma is None else sample.current_ma)


def periods_from_samples(tariff: Tariff | CompiledTariff, time_zone: str, start_ms: int,
                         energy_milliwh_start: int, samples: Iterable[MeterSample],
                         end_ms: int, energy_milliwh_end: int | None, *,
                         idle_power_w: int = IDLE_POWER_W_DEFAULT
                         ) -> tuple[ChargingPeriod, ...]:
    """All periods of a finished session at once (settlement): the samples are sorted first,
    so late or out-of-order deliveries give the same CDR. Samples after the stop are dropped:
    the stop time is the CDR's end."""
    meter = SessionMeter(tariff, time_zone, start_ms, energy_milliwh_start,
                         idle_power_w=idle_power_w)
    out: list[ChargingPeriod] = []
    for sample in sorted((s for s in samples if s.at_ms <= end_ms), key=_sample_order):
        out.extend(meter.add(sample).closed)
    out.extend(meter.close(end_ms, energy_milliwh_end))
    return tuple(out)
