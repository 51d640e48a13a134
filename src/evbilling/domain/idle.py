"""When does an idle (parking) fee start? The tariff says, through the same rules rating uses.

OCPI prices idle time as the PARKING_TIME dimension: the first element that matches a parking
period and has a PARKING_TIME component prices it. Its restrictions may delay the fee: a
``min_duration`` (a grace period measured on the session), a time-of-day window (idle fees only
in the daytime), days of the week. ``idle_fee_starts_ms`` finds the first instant, from the end
of charging on, at which a parking period would be priced above zero: the moment a driver must
be warned about. The match can only change at a whole second of local time, so the search walks
the candidate instants (the end of charging, then every whole minute) up to a horizon.
"""

from __future__ import annotations

import datetime as dt

from evbilling.domain.periods import ChargingPeriod
from evbilling.domain.rating import CompiledTariff
from evbilling.domain.timezones import zone

MS_PER_MINUTE = 60_000
IDLE_FEE_HORIZON_MS = 24 * 60 * MS_PER_MINUTE


def idle_fee_starts_ms(tariff: CompiledTariff, time_zone: str, *, session_start_ms: int,
                       energy_milliwh: int, charging_end_ms: int,
                       horizon_ms: int = IDLE_FEE_HORIZON_MS) -> int | None:
    """The first instant >= ``charging_end_ms`` at which idle time costs money; None when it
    does not within ``horizon_ms`` (or the tariff has no idle fee at all)."""
    parking = [el for el in tariff.elements if el.parking is not None]
    if not any(el.parking is not None and el.parking.price_micro > 0 for el in parking):
        return None
    tz = zone(time_zone)
    first_minute = -(-charging_end_ms // MS_PER_MINUTE) * MS_PER_MINUTE
    candidates = [charging_end_ms] if first_minute != charging_end_ms else []
    t = first_minute
    while t <= charging_end_ms + horizon_ms:
        candidates.append(t)
        t += MS_PER_MINUTE
    for at_ms in candidates:
        epoch_s = at_ms // 1000
        offset = dt.datetime.fromtimestamp(epoch_s, tz).utcoffset()
        off = 0 if offset is None else offset.days * 86_400 + offset.seconds
        day, sod = divmod(epoch_s + off, 86_400)
        dow = (day + 3) % 7
        probe = ChargingPeriod(at_ms, parking_ms=MS_PER_MINUTE)
        for el in parking:
            if el.matcher(sod, day, dow, energy_milliwh, at_ms - session_start_ms, probe):
                if el.parking is not None and el.parking.price_micro > 0:
                    return at_ms
                break
    return None
