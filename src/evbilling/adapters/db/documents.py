"""Documents stored in JSON columns (OCPI tariffs, plan terms, charging periods): exact decimals
as strings, periods as integers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from evbilling.domain.periods import ChargingPeriod
from evbilling.domain.tariffs import Tariff, tariff_to_ocpi


def storable(value: Any) -> Any:
    """A JSON-storable copy of ``value``: Decimals become exact positional strings."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def tariff_document(tariff: Tariff) -> dict[str, Any]:
    """The canonical stored form of a tariff (its OCPI JSON, numbers as exact strings)."""
    document: dict[str, Any] = storable(tariff_to_ocpi(tariff))
    return document


# -- charging periods -----------------------------------------------------------------------------
_PERIOD_FIELDS = ("energy_milliwh", "time_ms", "parking_ms", "reservation_ms", "current_ma_min",
                  "current_ma_max", "current_ma", "power_w_min", "power_w_max", "power_w")


def periods_document(periods: Sequence[ChargingPeriod]) -> list[dict[str, int]]:
    """Charging periods in their exact stored form: integers only (epoch ms, mWh, ms, mA, W),
    zero / unknown fields left out. (OCPI's decimal hours cannot hold every millisecond exactly;
    ``ocpi_charging_periods`` renders this form as OCPI JSON where a document needs it.)"""
    out: list[dict[str, int]] = []
    for p in periods:
        item = {"start_ms": p.start_epoch_ms}
        for name in _PERIOD_FIELDS:
            value = getattr(p, name)
            if value:
                item[name] = value
        out.append(item)
    return out


def is_periods_document(document: Any) -> bool:
    return isinstance(document, list) and all(
        isinstance(item, dict) and "start_ms" in item for item in document)


def periods_from_document(document: Sequence[Mapping[str, Any]]) -> tuple[ChargingPeriod, ...]:
    periods = []
    for item in document:
        values = {name: item[name] for name in _PERIOD_FIELDS if name in item}
        if any(type(v) is not int for v in values.values()) or type(item["start_ms"]) is not int:
            raise ValueError("stored charging periods hold integers only")
        periods.append(ChargingPeriod(item["start_ms"], **values))
    return tuple(periods)
