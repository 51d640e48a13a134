"""Documents stored in JSON columns (OCPI tariffs, plan terms): exact decimals as strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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
