"""OCPI 2.2.1 Tariff JSON <-> domain ``Tariff``.

``parse_tariff`` takes JSON decoded with ``parse_float=Decimal`` and raises ``TariffParseError``
whose ``field`` names the bad field (``elements[1].restrictions.start_time``). Unknown fields are
ignored, as OCPI receivers must. ``tariff_to_ocpi`` writes the same shape back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from evbilling.domain.errors import TariffParseError, UnknownCurrencyError
from evbilling.domain.money import PRICE_DECIMALS, VAT_DECIMALS, Currency, decimal_places
from evbilling.domain.ocpi_json import Reader
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

#: Limits on what one tariff may hold (TIGER_STYLE: a limit on everything).
MAX_ELEMENTS = 1_000  # element indices fit int16 in the bulk path
MAX_COMPONENTS_PER_ELEMENT = 4
MAX_STEP_SIZE = 10_000_000


def parse_tariff(data: object, path: str = "") -> Tariff:
    r = Reader(data, path, TariffParseError)
    code = r.req_string("currency", max_length=3)
    try:
        currency = Currency.of(code)
    except UnknownCurrencyError as exc:
        r.fail("currency", exc.message)
    elements = r.objects("elements", _parse_element, required=True, non_empty=True)
    if len(elements) > MAX_ELEMENTS:
        r.fail("elements", f"at most {MAX_ELEMENTS} elements are supported")
    energy_mix = r.raw("energy_mix")
    if energy_mix is not None and not isinstance(energy_mix, Mapping):
        r.fail("energy_mix", "must be a JSON object")
    tariff = Tariff(
        id=r.req_string("id", max_length=36),
        currency=currency,
        elements=elements,
        country_code=r.string("country_code", max_length=2),
        party_id=r.string("party_id", max_length=3),
        type=r.enum("type", TariffType),
        tariff_alt_text=r.objects("tariff_alt_text", _parse_display_text),
        tariff_alt_url=r.string("tariff_alt_url"),
        min_price=_parse_price(r, "min_price"),
        max_price=_parse_price(r, "max_price"),
        start_date_time=r.datetime("start_date_time"),
        end_date_time=r.datetime("end_date_time"),
        last_updated=r.datetime("last_updated"),
        energy_mix=energy_mix,
    )
    if (
        tariff.start_date_time is not None
        and tariff.end_date_time is not None
        and tariff.end_date_time <= tariff.start_date_time
    ):
        r.fail("end_date_time", "must be after start_date_time")
    if tariff.min_price is not None and tariff.max_price is not None:
        if tariff.min_price.excl_vat > tariff.max_price.excl_vat:
            r.fail("min_price", "excl_vat must not exceed max_price.excl_vat")
    return tariff


def _parse_display_text(r: Reader) -> DisplayText:
    return DisplayText(language=r.req_string("language", max_length=2),
                       text=r.req_string("text", max_length=512))


def _parse_price(parent: Reader, key: str) -> Price | None:
    if not parent.has(key):
        return None
    r = parent.child(key, parent.raw(key))
    excl = r.req_number("excl_vat")
    incl = r.number("incl_vat")
    for key, value in (("excl_vat", excl), ("incl_vat", incl)):
        if value is not None and decimal_places(value) > PRICE_DECIMALS:
            r.fail(key, f"has more than {PRICE_DECIMALS} decimal places: {value}")
    if incl is not None and incl < excl and excl >= 0:
        r.fail("incl_vat", f"must not be lower than excl_vat ({excl})")
    return Price(excl_vat=excl, incl_vat=incl)


def _parse_element(r: Reader) -> TariffElement:
    components = r.objects("price_components", _parse_component, required=True, non_empty=True)
    if len(components) > MAX_COMPONENTS_PER_ELEMENT:
        r.fail("price_components", f"has more than {MAX_COMPONENTS_PER_ELEMENT} components")
    seen: set[DimensionType] = set()
    for i, component in enumerate(components):
        if component.type in seen:
            r.fail(f"price_components[{i}].type",
                   f"{component.type.value} appears twice in one element")
        seen.add(component.type)
    restrictions = None
    if r.has("restrictions"):
        restrictions = _parse_restrictions(r.child("restrictions", r.raw("restrictions")))
        if restrictions.reservation is not None:
            for i, component in enumerate(components):
                if component.type not in (DimensionType.FLAT, DimensionType.TIME):
                    r.fail(f"price_components[{i}].type",
                           "a reservation element may only have FLAT and TIME components")
    return TariffElement(price_components=components, restrictions=restrictions)


def _parse_component(r: Reader) -> PriceComponent:
    kind = r.enum("type", DimensionType, required=True)
    if kind is None:  # pragma: no cover - required=True already raised
        r.fail("type", "is required")
    price = r.req_number("price")
    if decimal_places(price) > PRICE_DECIMALS:
        r.fail("price", f"has more than {PRICE_DECIMALS} decimal places: {price}")
    vat = r.number("vat", minimum=Decimal(0))
    if vat is not None and decimal_places(vat) > VAT_DECIMALS:
        r.fail("vat", f"has more than {VAT_DECIMALS} decimal places: {vat}")
    if vat is not None and vat > 100:
        r.fail("vat", f"must be a percentage between 0 and 100, got {vat}")
    step_size = r.integer("step_size", minimum=0)
    if step_size is None:
        # Required by OCPI; FLAT has no unit, so a missing FLAT step is harmless.
        if kind is not DimensionType.FLAT:
            r.fail("step_size", "is required")
        step_size = 1
    if step_size > MAX_STEP_SIZE:
        r.fail("step_size", f"must be at most {MAX_STEP_SIZE}")
    return PriceComponent(type=kind, price=price, vat=vat, step_size=step_size)


def _parse_restrictions(r: Reader) -> TariffRestrictions:
    days: list[DayOfWeek] = []
    for i, value in enumerate(r.array("day_of_week")):
        try:
            days.append(DayOfWeek(str(value)))
        except ValueError:
            r.fail(f"day_of_week[{i}]", f"must be a day such as MONDAY, got {value!r}")
    restrictions = TariffRestrictions(
        start_time=r.time_of_day("start_time"),
        end_time=r.time_of_day("end_time"),
        start_date=r.date("start_date"),
        end_date=r.date("end_date"),
        min_kwh=r.number("min_kwh", minimum=Decimal(0)),
        max_kwh=r.number("max_kwh", minimum=Decimal(0)),
        min_current=r.number("min_current"),
        max_current=r.number("max_current"),
        min_power=r.number("min_power"),
        max_power=r.number("max_power"),
        min_duration=r.integer("min_duration", minimum=0),
        max_duration=r.integer("max_duration", minimum=0),
        day_of_week=frozenset(days),
        reservation=r.enum("reservation", ReservationRestriction),
    )
    for low, high in (("min_kwh", "max_kwh"), ("min_current", "max_current"),
                      ("min_power", "max_power"), ("min_duration", "max_duration"),
                      ("start_date", "end_date")):
        lo, hi = getattr(restrictions, low), getattr(restrictions, high)
        if lo is not None and hi is not None and lo >= hi:
            r.fail(high, f"must be greater than {low} ({lo}), or the element never applies")
    for key in ("min_kwh", "max_kwh"):
        value = getattr(restrictions, key)
        if value is not None and decimal_places(value) > 6:
            r.fail(key, "has more than 6 decimal places (1 mWh)")
    for key in ("min_current", "max_current", "min_power", "max_power"):
        value = getattr(restrictions, key)
        if value is not None and decimal_places(value) > 3:
            r.fail(key, "has more than 3 decimal places")
    return restrictions


# -- serialising ------------------------------------------------------------------------------


def tariff_to_ocpi(tariff: Tariff) -> dict[str, Any]:
    """The OCPI 2.2.1 JSON shape of ``tariff`` (numbers as Decimal; dump with use_decimal)."""
    out: dict[str, Any] = {}
    if tariff.country_code is not None:
        out["country_code"] = tariff.country_code
    if tariff.party_id is not None:
        out["party_id"] = tariff.party_id
    out["id"] = tariff.id
    out["currency"] = tariff.currency.code
    if tariff.type is not None:
        out["type"] = tariff.type.value
    if tariff.tariff_alt_text:
        out["tariff_alt_text"] = [{"language": t.language, "text": t.text}
                                  for t in tariff.tariff_alt_text]
    if tariff.tariff_alt_url is not None:
        out["tariff_alt_url"] = tariff.tariff_alt_url
    for key in ("min_price", "max_price"):
        price: Price | None = getattr(tariff, key)
        if price is not None:
            out[key] = {"excl_vat": price.excl_vat}
            if price.incl_vat is not None:
                out[key]["incl_vat"] = price.incl_vat
    out["elements"] = [_element_to_ocpi(e) for e in tariff.elements]
    for key in ("start_date_time", "end_date_time"):
        value: dt.datetime | None = getattr(tariff, key)
        if value is not None:
            out[key] = format_datetime(value)
    if tariff.energy_mix is not None:
        out["energy_mix"] = dict(tariff.energy_mix)
    if tariff.last_updated is not None:
        out["last_updated"] = format_datetime(tariff.last_updated)
    return out


def _element_to_ocpi(element: TariffElement) -> dict[str, Any]:
    out: dict[str, Any] = {"price_components": []}
    for c in element.price_components:
        component: dict[str, Any] = {"type": c.type.value, "price": c.price}
        if c.vat is not None:
            component["vat"] = c.vat
        component["step_size"] = c.step_size
        out["price_components"].append(component)
    if element.restrictions is not None:
        out["restrictions"] = _restrictions_to_ocpi(element.restrictions)
    return out


def _restrictions_to_ocpi(r: TariffRestrictions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("start_time", "end_time"):
        value: dt.time | None = getattr(r, key)
        if value is not None:
            out[key] = value.strftime("%H:%M")
    for key in ("start_date", "end_date"):
        day: dt.date | None = getattr(r, key)
        if day is not None:
            out[key] = day.isoformat()
    for key in ("min_kwh", "max_kwh", "min_current", "max_current", "min_power", "max_power",
                "min_duration", "max_duration"):
        value_n = getattr(r, key)
        if value_n is not None:
            out[key] = value_n
    if r.day_of_week:
        out["day_of_week"] = [d.value for d in DayOfWeek if d in r.day_of_week]
    if r.reservation is not None:
        out["reservation"] = r.reservation.value
    return out


def format_datetime(value: dt.datetime) -> str:
    """OCPI DateTime: UTC with a Z suffix."""
    text = value.astimezone(dt.UTC).isoformat()
    return text.replace("+00:00", "Z")
