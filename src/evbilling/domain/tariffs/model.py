"""The OCPI 2.2.1 Tariff model as frozen domain objects.

Field names follow OCPI (``mod_tariffs``) so a reader can hold the spec next to the code.
Parsing and serialising OCPI JSON lives in ``tariffs/ocpi.py``; rating in ``domain/rating.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from evbilling.domain.money import Currency


class DimensionType(StrEnum):
    """OCPI TariffDimensionType: what a price component prices."""

    ENERGY = "ENERGY"  # per kWh, step_size multiplier 1 Wh
    FLAT = "FLAT"  # once per session
    PARKING_TIME = "PARKING_TIME"  # per hour not charging, step_size multiplier 1 s
    TIME = "TIME"  # per hour charging (or reserved, with a reservation restriction)


class DayOfWeek(StrEnum):
    MONDAY = "MONDAY"
    TUESDAY = "TUESDAY"
    WEDNESDAY = "WEDNESDAY"
    THURSDAY = "THURSDAY"
    FRIDAY = "FRIDAY"
    SATURDAY = "SATURDAY"
    SUNDAY = "SUNDAY"

    @property
    def weekday(self) -> int:
        """Monday = 0 ... Sunday = 6 (``date.weekday()``)."""
        return _DAY_INDEX[self]


_DAY_INDEX = {day: i for i, day in enumerate(DayOfWeek)}


class ReservationRestriction(StrEnum):
    RESERVATION = "RESERVATION"
    RESERVATION_EXPIRES = "RESERVATION_EXPIRES"


class TariffType(StrEnum):
    AD_HOC_PAYMENT = "AD_HOC_PAYMENT"
    PROFILE_CHEAP = "PROFILE_CHEAP"
    PROFILE_FAST = "PROFILE_FAST"
    PROFILE_GREEN = "PROFILE_GREEN"
    REGULAR = "REGULAR"


@dataclass(frozen=True, slots=True)
class DisplayText:
    language: str
    text: str


@dataclass(frozen=True, slots=True)
class Price:
    """OCPI Price: an amount excl. VAT and, when known, incl. VAT (major units, exact)."""

    excl_vat: Decimal
    incl_vat: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceComponent:
    type: DimensionType
    price: Decimal  # per unit, excl. VAT; negative prices are allowed (dynamic energy prices)
    step_size: int  # Wh for ENERGY, seconds for TIME / PARKING_TIME, ignored for FLAT
    vat: Decimal | None = None  # percent; None = no VAT applicable, which is not 0 %


@dataclass(frozen=True, slots=True)
class TariffRestrictions:
    """When an element applies. All set fields must match (logical AND)."""

    start_time: dt.time | None = None  # local time of day, inclusive
    end_time: dt.time | None = None  # local time of day, exclusive; 00:00 = end of day
    start_date: dt.date | None = None  # local date, inclusive
    end_date: dt.date | None = None  # local date, exclusive
    min_kwh: Decimal | None = None  # energy consumed before the period, inclusive
    max_kwh: Decimal | None = None  # exclusive
    min_current: Decimal | None = None  # A over all phases, inclusive
    max_current: Decimal | None = None  # exclusive
    min_power: Decimal | None = None  # kW, inclusive
    max_power: Decimal | None = None  # exclusive
    min_duration: int | None = None  # seconds since session start, inclusive
    max_duration: int | None = None  # exclusive
    day_of_week: frozenset[DayOfWeek] = frozenset()  # empty = every day
    reservation: ReservationRestriction | None = None

    @property
    def is_empty(self) -> bool:
        return self == _NO_RESTRICTIONS


_NO_RESTRICTIONS = TariffRestrictions()


@dataclass(frozen=True, slots=True)
class TariffElement:
    price_components: tuple[PriceComponent, ...]
    restrictions: TariffRestrictions | None = None

    def component(self, dimension: DimensionType) -> PriceComponent | None:
        """The element's component for ``dimension`` (OCPI allows one per dimension)."""
        for component in self.price_components:
            if component.type is dimension:
                return component
        return None


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    currency: Currency
    elements: tuple[TariffElement, ...]
    country_code: str | None = None
    party_id: str | None = None
    type: TariffType | None = None
    tariff_alt_text: tuple[DisplayText, ...] = ()
    tariff_alt_url: str | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    start_date_time: dt.datetime | None = None
    end_date_time: dt.datetime | None = None
    last_updated: dt.datetime | None = None
    # Passed through untouched (OCPI EnergyMix); not used for pricing.
    energy_mix: Mapping[str, object] | None = field(default=None, compare=False, hash=False)

    def is_valid_at(self, at: dt.datetime) -> bool:
        """Whether the tariff's own validity window contains ``at`` (aware UTC)."""
        if self.start_date_time is not None and at < self.start_date_time:
            return False
        return self.end_date_time is None or at < self.end_date_time
