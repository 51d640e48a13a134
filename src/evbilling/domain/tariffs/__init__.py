"""OCPI 2.2.1 tariffs: the model, and its JSON form."""

from evbilling.domain.tariffs.model import (
    DayOfWeek,
    DimensionType,
    DisplayText,
    Price,
    PriceComponent,
    ReservationRestriction,
    Tariff,
    TariffElement,
    TariffRestrictions,
    TariffType,
)
from evbilling.domain.tariffs.ocpi import parse_tariff, tariff_to_ocpi

__all__ = [
    "DayOfWeek",
    "DimensionType",
    "DisplayText",
    "Price",
    "PriceComponent",
    "ReservationRestriction",
    "Tariff",
    "TariffElement",
    "TariffRestrictions",
    "TariffType",
    "parse_tariff",
    "tariff_to_ocpi",
]
