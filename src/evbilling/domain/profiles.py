"""Charging periods for a session described by its totals (a quote, a usage profile).

OCPI requires a new charging period at every moment that matters to the tariff (mod_cdrs,
"ChargingPeriod"). Given a start, a charging time with an energy amount (drawn at constant
power) and an idle time, ``synthesize_periods`` cuts exactly there: at every local time-of-day
boundary any element names (DST-aware), at local midnights when a date or weekday matters, at
every duration limit, and at the instant each kWh limit is reached. Energy per period is exact:
``E(t) = energy * elapsed // charging_ms`` at every cut, so the periods sum to the total.

The boundary helpers (``time_cuts_ms``, ``kwh_limits_milliwh``, ``kwh_limit_reached_ms``,
``energy_share_milliwh``) are shared with ``metering``, which cuts periods from meter samples by
the same rules.
"""

from __future__ import annotations

import bisect

from evbilling.domain.errors import RatingError
from evbilling.domain.periods import MAX_PERIODS_PER_SESSION, ChargingPeriod
from evbilling.domain.rating import CompiledTariff
from evbilling.domain.timezones import offset_table

_DAY_S = 86_400


def clock_cuts_s(tariff: CompiledTariff) -> tuple[int, ...]:
    """Seconds of the local day at which some element's restrictions can change: every
    start/end time (end 24:00 is the next midnight) and midnight when a date or weekday
    matters."""
    values: set[int] = set()
    for el in tariff.elements:
        if el.tod is not None:
            values.update(s % _DAY_S for s in el.tod)
        if el.days is not None or el.dow_mask:
            values.add(0)
    return tuple(sorted(values))


def _jump_crosses(values: tuple[int, ...], before_s: int, after_s: int) -> bool:
    """Whether the local clock, jumping from ``before_s`` (what it would show without the
    change) to ``after_s`` at a DST change, passes a boundary: the last second before the jump
    and the first after it then lie on different sides of that boundary."""
    if after_s > before_s:  # skipped: [before, after]
        lo, hi = before_s, after_s
    else:  # repeated: seconds in (after, before - 1] are passed a second time
        lo, hi = after_s + 1, before_s - 1
    for v in values:
        first = lo + (v - lo) % _DAY_S  # first local instant >= lo showing v
        if first <= hi:
            return True
    return False


def local_clock_cuts_ms(tariff: CompiledTariff, time_zone: str, lo_ms: int, hi_ms: int
                        ) -> list[int]:
    """UTC instants (ms) in (lo_ms, hi_ms) at which the local clock reaches a value of
    ``clock_cuts_s``, in time order.

    Local time is the rater's (``timezones.OffsetTable``), so a cut falls exactly where a
    restriction evaluated by rating changes. A wall time that occurs twice (DST ends) is cut at
    both instants; a DST jump that skips or repeats a boundary is cut at the jump itself (rating
    sees the restriction change there, though the clock never shows the boundary value).
    """
    values = clock_cuts_s(tariff)
    if not values or hi_ms - lo_ms < 2:
        return []
    lo_s, hi_s = lo_ms // 1000, -(-hi_ms // 1000)
    table = offset_table(time_zone, lo_s, hi_s)
    instants, offsets = table.instants_s, table.offsets_s
    i = max(bisect.bisect_right(instants, lo_s) - 1, 0)
    out: set[int] = set()
    while True:
        off = offsets[i]
        seg_lo = max(instants[i], lo_s)
        seg_hi = min(instants[i + 1] if i + 1 < len(instants) else table.hi_s, hi_s + 1)
        if i > 0 and instants[i] >= lo_s and _jump_crosses(
                values, instants[i] + offsets[i - 1], instants[i] + off):
            out.add(instants[i] * 1000)
        for day in range((seg_lo + off) // _DAY_S, (seg_hi - 1 + off) // _DAY_S + 1):
            for v in values:
                t_s = day * _DAY_S + v - off
                if seg_lo <= t_s < seg_hi:
                    out.add(t_s * 1000)
        if seg_hi > hi_s or i + 1 >= len(instants):
            break
        i += 1
    return sorted(t for t in out if lo_ms < t < hi_ms)


def time_cuts_ms(tariff: CompiledTariff, time_zone: str, session_start_ms: int, lo_ms: int,
                 hi_ms: int) -> list[int]:
    """Instants in (lo_ms, hi_ms), in time order, at which a time-of-day, date, weekday or
    duration restriction can change (durations count from ``session_start_ms``)."""
    cuts = set(local_clock_cuts_ms(tariff, time_zone, lo_ms, hi_ms))
    for el in tariff.elements:
        if el.duration is not None:
            cuts.update(session_start_ms + d for d in el.duration
                        if d is not None and lo_ms < session_start_ms + d < hi_ms)
    return sorted(cuts)


def kwh_limits_milliwh(tariff: CompiledTariff) -> tuple[int, ...]:
    """Every positive min_kwh / max_kwh of the tariff (milliwh), ascending."""
    limits: set[int] = set()
    for el in tariff.elements:
        if el.kwh is not None:
            limits.update(k for k in el.kwh if k is not None and k > 0)
    return tuple(sorted(limits))


def energy_share_milliwh(energy_milliwh: int, span_ms: int, elapsed_ms: int) -> int:
    """Energy drawn after ``elapsed_ms`` of an interval of ``span_ms`` carrying
    ``energy_milliwh`` at constant power: floored, so parts cut at several instants sum to the
    whole (the remainder goes to the later part)."""
    return energy_milliwh * elapsed_ms // span_ms


def kwh_limit_reached_ms(start_ms: int, span_ms: int, energy_milliwh: int,
                         needed_milliwh: int) -> int:
    """First ms at which ``energy_share_milliwh`` reaches ``needed_milliwh`` (0 < needed <=
    energy): the ceiling of the inverse."""
    return start_ms + -(-needed_milliwh * span_ms // energy_milliwh)


def synthesize_periods(tariff: CompiledTariff, time_zone: str, start_epoch_ms: int,
                       charging_ms: int, energy_milliwh: int, idle_ms: int
                       ) -> tuple[ChargingPeriod, ...]:
    if charging_ms < 0 or idle_ms < 0 or energy_milliwh < 0:
        raise RatingError("charging time, idle time and energy must not be negative")
    if energy_milliwh and not charging_ms:
        raise RatingError("energy needs charging time to flow in")
    charge_end = start_epoch_ms + charging_ms
    end = charge_end + idle_ms
    cuts: set[int] = {charge_end} if 0 < charging_ms and idle_ms else set()
    cuts.update(time_cuts_ms(tariff, time_zone, start_epoch_ms, start_epoch_ms, end))
    if energy_milliwh:
        cuts.update(kwh_limit_reached_ms(start_epoch_ms, charging_ms, energy_milliwh, k)
                    for k in kwh_limits_milliwh(tariff) if k <= energy_milliwh)
    bounds = [start_epoch_ms, *sorted(c for c in cuts if start_epoch_ms < c < end), end]
    if len(bounds) - 1 > MAX_PERIODS_PER_SESSION:
        raise RatingError("the session is too long to price")

    def energy_at(t: int) -> int:
        if not charging_ms:
            return 0
        return energy_share_milliwh(energy_milliwh, charging_ms,
                                    min(t, charge_end) - start_epoch_ms)

    power_w = energy_milliwh * 3_600 // charging_ms if charging_ms else None  # mWh/ms -> W
    periods: list[ChargingPeriod] = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b <= a:
            continue
        if a < charge_end:
            periods.append(ChargingPeriod(a, energy_milliwh=energy_at(b) - energy_at(a),
                                          time_ms=b - a, power_w=power_w))
        else:
            periods.append(ChargingPeriod(a, parking_ms=b - a))
    if not periods:
        periods.append(ChargingPeriod(start_epoch_ms))
    return tuple(periods)
