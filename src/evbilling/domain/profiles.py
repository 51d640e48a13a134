"""Charging periods for a session described by its totals (a quote, a usage profile).

OCPI requires a new charging period at every moment that matters to the tariff (mod_cdrs,
"ChargingPeriod"). Given a start, a charging time with an energy amount (drawn at constant
power) and an idle time, ``synthesize_periods`` cuts exactly there: at every local time-of-day
boundary any element names (DST-aware), at local midnights when a date or weekday matters, at
every duration limit, and at the instant each kWh limit is reached. Energy per period is exact:
``E(t) = energy * elapsed // charging_ms`` at every cut, so the periods sum to the total.
"""

from __future__ import annotations

import datetime as dt

from evbilling.domain.errors import RatingError
from evbilling.domain.periods import MAX_PERIODS_PER_SESSION, ChargingPeriod
from evbilling.domain.rating import CompiledTariff
from evbilling.domain.timezones import zone


def _local_instants(time_zone: str, start_ms: int, end_ms: int, seconds_of_day: set[int]
                    ) -> set[int]:
    """UTC instants (ms) in (start, end) at which the local clock shows one of the times."""
    tz = zone(time_zone)
    out: set[int] = set()
    first = dt.datetime.fromtimestamp(start_ms / 1000, tz).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(end_ms / 1000, tz).date() + dt.timedelta(days=1)
    day = first
    while day <= last:
        for sod in seconds_of_day:
            wall = dt.datetime.combine(day, dt.time(sod // 3600, sod % 3600 // 60), tzinfo=tz)
            instant = int(wall.timestamp() * 1000)
            if start_ms < instant < end_ms:
                out.add(instant)
        day += dt.timedelta(days=1)
    return out


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

    seconds_of_day: set[int] = set()
    for el in tariff.elements:
        if el.tod is not None:
            seconds_of_day.update(el.tod)
        if el.days is not None or el.dow_mask:
            seconds_of_day.add(0)
        if el.duration is not None:
            cuts.update(start_epoch_ms + d for d in el.duration if d is not None)
        if el.kwh is not None and energy_milliwh:
            for threshold in el.kwh:
                if threshold is not None and 0 < threshold <= energy_milliwh:
                    # first ms at which E(t) >= threshold (ceil of the inverse)
                    cuts.add(start_epoch_ms + -(-threshold * charging_ms // energy_milliwh))
    seconds_of_day.discard(86_400)
    cuts |= _local_instants(time_zone, start_epoch_ms, end, seconds_of_day)
    bounds = [start_epoch_ms, *sorted(c for c in cuts if start_epoch_ms < c < end), end]
    if len(bounds) - 1 > MAX_PERIODS_PER_SESSION:
        raise RatingError("the session is too long to price")

    def energy_at(t: int) -> int:
        if not charging_ms:
            return 0
        return energy_milliwh * (min(t, charge_end) - start_epoch_ms) // charging_ms

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
