"""OCPI 2.2.1 CDR (or Session) JSON -> ``SessionFacts`` for rating.

Only what rating needs is read: start/end, and the charging periods with their dimensions. The
CDR's own totals are ignored (rating computes them). Volumes are converted exactly to the integer
scales of ``domain/periods.py``; a volume finer than those scales is refused with the field named.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Context, Decimal

from evbilling.domain.errors import CdrParseError
from evbilling.domain.money import exact_multiply, to_scaled_int
from evbilling.domain.ocpi_json import Reader
from evbilling.domain.periods import (
    MAX_PERIODS_PER_SESSION,
    MS_PER_HOUR,
    ChargingPeriod,
    SessionFacts,
    epoch_ms,
)

_WIDE = Context(prec=1000)

#: OCPI CdrDimensionType values -> ChargingPeriod field and its scale.
_DIMENSIONS: dict[str, tuple[str | None, str]] = {
    "ENERGY": ("energy_milliwh", "kwh"),
    "TIME": ("time_ms", "hours"),
    "PARKING_TIME": ("parking_ms", "hours"),
    "RESERVATION_TIME": ("reservation_ms", "hours"),
    "MIN_CURRENT": ("current_ma_min", "milli"),
    "MAX_CURRENT": ("current_ma_max", "milli"),
    "CURRENT": ("current_ma", "milli"),
    "MIN_POWER": ("power_w_min", "milli"),
    "MAX_POWER": ("power_w_max", "milli"),
    "POWER": ("power_w", "milli"),
    # Known, not used for pricing:
    "ENERGY_EXPORT": (None, ""),
    "ENERGY_IMPORT": (None, ""),
    "STATE_OF_CHARGE": (None, ""),
}


def parse_cdr(data: object, time_zone: str = "UTC", path: str = "") -> SessionFacts:
    """Read an OCPI CDR (or Session) object. Also accepts an OCPI response envelope."""
    if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping) \
            and "charging_periods" not in data:
        data = data["data"]
        path = f"{path}.data" if path else "data"
    r = Reader(data, path, CdrParseError)
    start = r.datetime("start_date_time")
    end = r.datetime("end_date_time")
    if start is not None and end is not None and end < start:
        r.fail("end_date_time", "must not be before start_date_time")
    periods = r.objects("charging_periods", _parse_period, required=True)
    if len(periods) > MAX_PERIODS_PER_SESSION:
        r.fail("charging_periods", f"at most {MAX_PERIODS_PER_SESSION} periods are supported")
    for i in range(1, len(periods)):
        if periods[i].start_epoch_ms < periods[i - 1].start_epoch_ms:
            r.fail(f"charging_periods[{i}].start_date_time",
                   "periods must be in time order; this one starts before the previous one")
    return SessionFacts(
        periods=periods,
        time_zone=time_zone,
        start_epoch_ms=None if start is None else epoch_ms(start),
        end_epoch_ms=None if end is None else epoch_ms(end),
    )


def _parse_period(r: Reader) -> ChargingPeriod:
    start = r.datetime("start_date_time", required=True)
    if start is None:  # pragma: no cover - required=True already raised
        r.fail("start_date_time", "is required")
    values: dict[str, int] = {}
    seen: set[str] = set()
    for i, raw in enumerate(r.array("dimensions", required=True, non_empty=True)):
        d = r.child(f"dimensions[{i}]", raw)
        kind = d.req_string("type")
        if kind not in _DIMENSIONS:
            d.fail("type", f"unknown CDR dimension type {kind!r}")
        if kind in seen:
            d.fail("type", f"{kind} appears twice in one period")
        seen.add(kind)
        volume = d.req_number("volume")
        target, scale = _DIMENSIONS[kind]
        if target is None:
            continue
        values[target] = _scaled_volume(d, volume, scale)
    for key in ("time_ms", "parking_ms", "reservation_ms"):
        if values.get(key, 0) < 0:
            r.fail("dimensions", f"{key.split('_')[0].upper()} volume must not be negative")
    return ChargingPeriod(start_epoch_ms=epoch_ms(start), **values)


def _scaled_volume(d: Reader, volume: Decimal, scale: str) -> int:
    try:
        if scale == "kwh":
            return to_scaled_int(volume, 6)  # kWh -> milliwh
        if scale == "milli":
            return to_scaled_int(volume, 3)  # A -> mA, kW -> W
        ms = exact_multiply(volume, MS_PER_HOUR)  # hours -> ms, never rounded
        if ms != ms.to_integral_value(context=_WIDE):
            raise ValueError
        return int(ms)
    except ValueError:
        unit = {"kwh": "1 mWh (6 decimals of kWh)", "milli": "3 decimals",
                "hours": "1 ms (hours x 3 600 000 must be whole)"}[scale]
        d.fail("volume", f"{volume} is finer than the supported resolution of {unit}")
