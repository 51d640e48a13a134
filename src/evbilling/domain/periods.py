"""Charging periods: the facts of a session that rating prices (OCPI ``ChargingPeriod``).

Quantities are exact integers at one fixed scale each, chosen once and big enough
(``docs/money.md``):

* energy in milliwatt-hours (``*_milliwh``; 1 kWh = 1 000 000 milliwh). OCPI volumes are kWh with
  decimals, and the spec itself bills 115.2 Wh, so whole Wh are too coarse.
* time in milliseconds (``*_ms``); OCPI volumes are hours with decimals (0.0834 h = 300 240 ms).
* current in milliamperes (``*_ma``), power in watts (``*_w``).

A volume that does not land on the scale is refused rather than rounded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from evbilling.domain.invariants import require

MILLIWH_PER_KWH = 1_000_000
MILLIWH_PER_WH = 1_000
MS_PER_HOUR = 3_600_000
MS_PER_S = 1_000

#: Limits (TIGER_STYLE): a session longer or bigger than this is refused by rating.
MAX_PERIODS_PER_SESSION = 20_000
MAX_SESSION_DURATION_MS = 31 * 24 * MS_PER_HOUR
MAX_SESSION_ENERGY_MILLIWH = 100_000 * MILLIWH_PER_KWH  # 100 MWh


def epoch_ms(at: dt.datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime."""
    require(at.tzinfo is not None, "datetimes in the domain are timezone-aware")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_epoch_ms(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=value)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ChargingPeriod:
    """One OCPI charging period. It ends where the next one starts (or at the session end)."""

    start_epoch_ms: int
    energy_milliwh: int = 0  # ENERGY volume; negative = net export
    time_ms: int = 0  # TIME: charging
    parking_ms: int = 0  # PARKING_TIME: connected, not requesting power
    reservation_ms: int = 0  # RESERVATION_TIME
    current_ma_min: int | None = None  # MIN_CURRENT (sum over phases)
    current_ma_max: int | None = None  # MAX_CURRENT
    current_ma: int | None = None  # CURRENT (average; session-only in OCPI)
    power_w_min: int | None = None  # MIN_POWER
    power_w_max: int | None = None  # MAX_POWER
    power_w: int | None = None  # POWER (average; session-only in OCPI)

    @property
    def start_at(self) -> dt.datetime:
        return from_epoch_ms(self.start_epoch_ms)

    @property
    def is_reservation(self) -> bool:
        return self.reservation_ms != 0


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What rating needs to know about a session, ongoing (``end_epoch_ms`` None) or finished."""

    periods: tuple[ChargingPeriod, ...]
    time_zone: str = "UTC"
    start_epoch_ms: int | None = None  # the CDR's start_date_time, if known
    end_epoch_ms: int | None = None  # the CDR's end_date_time; None while ongoing
    #: A reservation that expired without a charging session (OCPI RESERVATION_EXPIRES).
    #: None = infer: expired when every period is a reservation period.
    reservation_expired: bool | None = None
