"""OCPI 2.2.1 tariff and CDR JSON -> domain objects, with errors that name the exact field."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
import simplejson

from evbilling.domain.cdrs import parse_cdr
from evbilling.domain.errors import CdrParseError, TariffParseError
from evbilling.domain.money import Currency
from evbilling.domain.periods import ChargingPeriod, epoch_ms
from evbilling.domain.tariffs import (
    DayOfWeek,
    DimensionType,
    DisplayText,
    Price,
    PriceComponent,
    ReservationRestriction,
    TariffRestrictions,
    TariffType,
    parse_tariff,
    tariff_to_ocpi,
)

UTC = dt.UTC


def decoded(text: str) -> Any:
    """JSON as the API and the CLI decode it: numbers with a fraction become exact Decimals."""
    return json.loads(text, parse_float=Decimal)


FULL_TARIFF_JSON = """
{
  "country_code": "DE",
  "party_id": "EVB",
  "id": "T-FULL-1",
  "currency": "EUR",
  "type": "PROFILE_GREEN",
  "tariff_alt_text": [
    {"language": "en", "text": "0.35 EUR/kWh, 2 EUR/h parking"},
    {"language": "de", "text": "0,35 EUR/kWh, 2 EUR/h Parken"}
  ],
  "tariff_alt_url": "https://example.com/tariffs/full",
  "min_price": {"excl_vat": 0.50, "incl_vat": 0.60},
  "max_price": {"excl_vat": 50.00, "incl_vat": 59.50},
  "elements": [
    {
      "price_components": [
        {"type": "ENERGY", "price": 0.3949, "vat": 19.0, "step_size": 1},
        {"type": "TIME", "price": 1.20, "vat": 19.0, "step_size": 60}
      ],
      "restrictions": {
        "start_time": "07:00",
        "end_time": "22:00",
        "start_date": "2024-01-01",
        "end_date": "2025-01-01",
        "min_kwh": 0,
        "max_kwh": 50.5,
        "min_current": 6,
        "max_current": 32.5,
        "min_power": 1.4,
        "max_power": 22,
        "min_duration": 60,
        "max_duration": 7200,
        "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]
      }
    },
    {
      "price_components": [
        {"type": "PARKING_TIME", "price": 2, "step_size": 300},
        {"type": "FLAT", "price": 0.5, "vat": 7.75}
      ]
    },
    {
      "price_components": [
        {"type": "TIME", "price": 3.00, "vat": 19, "step_size": 600},
        {"type": "FLAT", "price": 1.00, "vat": 19, "step_size": 1}
      ],
      "restrictions": {"reservation": "RESERVATION"}
    },
    {
      "price_components": [{"type": "TIME", "price": 6.00, "vat": 19, "step_size": 600}],
      "restrictions": {"reservation": "RESERVATION_EXPIRES"}
    }
  ],
  "start_date_time": "2024-01-01T00:00:00Z",
  "end_date_time": "2025-01-01T00:00:00+01:00",
  "energy_mix": {
    "is_green_energy": true,
    "energy_sources": [{"source": "SOLAR", "percentage": 60.5}],
    "supplier_name": "Sunny GmbH"
  },
  "last_updated": "2024-06-01T12:00:00Z"
}
"""


def full_tariff_document() -> Any:
    return decoded(FULL_TARIFF_JSON)


def minimal_tariff_document() -> dict[str, Any]:
    return {
        "id": "T-MIN",
        "currency": "EUR",
        "elements": [{"price_components": [
            {"type": "ENERGY", "price": Decimal("0.25"), "step_size": 1},
        ]}],
    }


def parse_error(document: object) -> TariffParseError:
    with pytest.raises(TariffParseError) as caught:
        parse_tariff(document)
    return caught.value


def with_component(**fields: object) -> dict[str, Any]:
    """A minimal tariff whose only price component has ``fields`` changed (None = removed)."""
    doc = minimal_tariff_document()
    component = doc["elements"][0]["price_components"][0]
    for key, value in fields.items():
        if value is None:
            component.pop(key, None)
        else:
            component[key] = value
    return doc


def with_restrictions(**fields: object) -> dict[str, Any]:
    doc = minimal_tariff_document()
    doc["elements"][0]["restrictions"] = dict(fields)
    return doc


# -- a good tariff -----------------------------------------------------------------------------


def test_a_full_tariff_reads_its_header_fields() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert (tariff.id, tariff.country_code, tariff.party_id, tariff.currency, tariff.type) == (
        "T-FULL-1", "DE", "EVB", Currency.of("EUR"), TariffType.PROFILE_GREEN)


def test_a_full_tariff_reads_its_alt_text_in_order() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.tariff_alt_text == (
        DisplayText("en", "0.35 EUR/kWh, 2 EUR/h parking"),
        DisplayText("de", "0,35 EUR/kWh, 2 EUR/h Parken"),
    )


def test_a_full_tariff_reads_its_alt_url() -> None:
    assert parse_tariff(full_tariff_document()).tariff_alt_url == \
        "https://example.com/tariffs/full"


def test_a_full_tariff_reads_min_and_max_price_exactly() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert (tariff.min_price, tariff.max_price) == (
        Price(Decimal("0.50"), Decimal("0.60")), Price(Decimal("50.00"), Decimal("59.50")))


def test_a_full_tariff_reads_its_validity_window_in_utc() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert (tariff.start_date_time, tariff.end_date_time) == (
        dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 12, 31, 23, tzinfo=UTC))


def test_a_full_tariff_reads_last_updated() -> None:
    assert parse_tariff(full_tariff_document()).last_updated == \
        dt.datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_a_full_tariff_passes_its_energy_mix_through_untouched() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.energy_mix == {
        "is_green_energy": True,
        "energy_sources": [{"source": "SOLAR", "percentage": Decimal("60.5")}],
        "supplier_name": "Sunny GmbH",
    }


def test_a_full_tariff_reads_every_price_component_field() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.elements[0].price_components == (
        PriceComponent(DimensionType.ENERGY, Decimal("0.3949"), 1, Decimal("19.0")),
        PriceComponent(DimensionType.TIME, Decimal("1.20"), 60, Decimal("19.0")),
    )


def test_a_component_without_vat_has_no_vat_rather_than_zero() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.elements[1].component(DimensionType.PARKING_TIME) == \
        PriceComponent(DimensionType.PARKING_TIME, Decimal(2), 300, None)


def test_a_flat_component_without_step_size_gets_step_one() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.elements[1].component(DimensionType.FLAT) == \
        PriceComponent(DimensionType.FLAT, Decimal("0.5"), 1, Decimal("7.75"))


def test_a_full_tariff_reads_every_restriction_field() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert tariff.elements[0].restrictions == TariffRestrictions(
        start_time=dt.time(7, 0),
        end_time=dt.time(22, 0),
        start_date=dt.date(2024, 1, 1),
        end_date=dt.date(2025, 1, 1),
        min_kwh=Decimal(0),
        max_kwh=Decimal("50.5"),
        min_current=Decimal(6),
        max_current=Decimal("32.5"),
        min_power=Decimal("1.4"),
        max_power=Decimal(22),
        min_duration=60,
        max_duration=7200,
        day_of_week=frozenset({DayOfWeek.MONDAY, DayOfWeek.TUESDAY, DayOfWeek.WEDNESDAY,
                               DayOfWeek.THURSDAY, DayOfWeek.FRIDAY}),
        reservation=None,
    )


def test_an_element_without_restrictions_has_none() -> None:
    assert parse_tariff(full_tariff_document()).elements[1].restrictions is None


def test_a_reservation_restriction_is_read() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert [e.restrictions.reservation for e in tariff.elements[2:]
            if e.restrictions is not None] == [ReservationRestriction.RESERVATION,
                                                ReservationRestriction.RESERVATION_EXPIRES]


def test_a_price_given_as_a_numeric_string_is_read_exactly() -> None:
    tariff = parse_tariff(with_component(price="0.3949"))
    assert tariff.elements[0].price_components[0].price == Decimal("0.3949")


def test_unknown_fields_are_ignored_as_ocpi_receivers_must() -> None:
    doc = minimal_tariff_document()
    doc["some_future_field"] = {"x": 1}
    assert parse_tariff(doc).id == "T-MIN"


# -- round trip --------------------------------------------------------------------------------


def test_a_full_tariff_survives_a_round_trip_through_its_ocpi_form() -> None:
    tariff = parse_tariff(full_tariff_document())
    assert parse_tariff(tariff_to_ocpi(tariff)) == tariff


def test_a_round_trip_keeps_the_energy_mix() -> None:
    # energy_mix is excluded from equality, so check it on its own.
    tariff = parse_tariff(full_tariff_document())
    assert parse_tariff(tariff_to_ocpi(tariff)).energy_mix == tariff.energy_mix


def test_a_full_tariff_survives_a_round_trip_through_json_text() -> None:
    tariff = parse_tariff(full_tariff_document())
    text = simplejson.dumps(tariff_to_ocpi(tariff), use_decimal=True)
    assert parse_tariff(decoded(text)) == tariff


def test_a_minimal_tariff_survives_a_round_trip() -> None:
    tariff = parse_tariff(minimal_tariff_document())
    assert parse_tariff(tariff_to_ocpi(tariff)) == tariff


def test_the_ocpi_form_writes_date_times_in_utc_with_z() -> None:
    out = tariff_to_ocpi(parse_tariff(full_tariff_document()))
    assert out["end_date_time"] == "2024-12-31T23:00:00Z"


# -- tariff errors name the field and the reason -----------------------------------------------


def test_a_missing_currency_is_named() -> None:
    doc = minimal_tariff_document()
    del doc["currency"]
    error = parse_error(doc)
    assert (error.field, error.reason) == ("currency", "is required")


def test_an_unknown_currency_is_named() -> None:
    doc = minimal_tariff_document()
    doc["currency"] = "XYZ"
    error = parse_error(doc)
    assert error.field == "currency" and "unknown ISO 4217 currency" in error.reason


def test_empty_elements_are_refused() -> None:
    doc = minimal_tariff_document()
    doc["elements"] = []
    error = parse_error(doc)
    assert (error.field, error.reason) == ("elements", "must be a non-empty list")


def test_missing_elements_are_refused() -> None:
    doc = minimal_tariff_document()
    del doc["elements"]
    assert parse_error(doc).field == "elements"


def test_an_element_without_price_components_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["elements"].append({"price_components": []})
    error = parse_error(doc)
    assert (error.field, error.reason) == ("elements[1].price_components",
                                           "must be a non-empty list")


def test_a_price_string_that_is_not_a_number_is_named() -> None:
    error = parse_error(with_component(price="twenty cents"))
    assert (error.field, error.reason) == ("elements[0].price_components[0].price",
                                           "must be a number, got 'twenty cents'")


def test_a_price_decoded_as_a_binary_float_is_refused_with_the_fix() -> None:
    doc = json.loads(simplejson.dumps(minimal_tariff_document(), use_decimal=True))
    error = parse_error(doc)
    assert error.field == "elements[0].price_components[0].price"
    assert "parse_float=Decimal" in error.reason


def test_a_nan_price_is_refused() -> None:
    error = parse_error(with_component(price=Decimal("NaN")))
    assert (error.field, error.reason) == ("elements[0].price_components[0].price",
                                           "must be a finite number")


def test_a_boolean_price_is_refused() -> None:
    assert parse_error(with_component(price=True)).field == \
        "elements[0].price_components[0].price"


def test_a_price_with_more_than_six_decimals_is_refused() -> None:
    error = parse_error(with_component(price=Decimal("0.1234567")))
    assert error.field == "elements[0].price_components[0].price"
    assert "more than 6 decimal places" in error.reason


def test_a_price_with_extra_decimals_beyond_28_significant_digits_is_refused() -> None:
    error = parse_error(with_component(price=Decimal("0.25000000000000000000000000000001")))
    assert error.field == "elements[0].price_components[0].price"


def test_a_price_with_six_decimals_is_accepted() -> None:
    tariff = parse_tariff(with_component(price=Decimal("0.123456")))
    assert tariff.elements[0].price_components[0].price == Decimal("0.123456")


def test_a_negative_price_is_accepted_for_dynamic_energy_prices() -> None:
    tariff = parse_tariff(with_component(price=Decimal("-0.05")))
    assert tariff.elements[0].price_components[0].price == Decimal("-0.05")


def test_a_negative_vat_is_refused() -> None:
    error = parse_error(with_component(vat=Decimal("-1")))
    assert error.field == "elements[0].price_components[0].vat"
    assert "at least 0" in error.reason


def test_a_vat_above_100_percent_is_refused() -> None:
    error = parse_error(with_component(vat=Decimal("100.5")))
    assert error.field == "elements[0].price_components[0].vat"
    assert "between 0 and 100" in error.reason


def test_a_vat_of_exactly_100_percent_is_accepted() -> None:
    assert parse_tariff(with_component(vat=100)).elements[0].price_components[0].vat == 100


def test_a_vat_with_more_than_two_decimals_is_refused() -> None:
    assert parse_error(with_component(vat=Decimal("19.125"))).field == \
        "elements[0].price_components[0].vat"


def test_an_unknown_dimension_type_is_named() -> None:
    error = parse_error(with_component(type="CHARGING"))
    assert error.field == "elements[0].price_components[0].type"
    assert "must be one of ENERGY, FLAT, PARKING_TIME, TIME" in error.reason


def test_a_dimension_twice_in_one_element_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["elements"][0]["price_components"].append(
        {"type": "ENERGY", "price": Decimal("0.30"), "step_size": 1})
    error = parse_error(doc)
    assert error.field == "elements[0].price_components[1].type"
    assert "ENERGY appears twice in one element" in error.reason


def test_the_same_dimension_in_two_elements_is_accepted() -> None:
    doc = minimal_tariff_document()
    doc["elements"].append({"price_components": [
        {"type": "ENERGY", "price": Decimal("0.30"), "step_size": 1}]})
    assert len(parse_tariff(doc).elements) == 2


def test_a_reservation_element_with_an_energy_component_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["elements"].append({
        "price_components": [
            {"type": "TIME", "price": 3, "step_size": 60},
            {"type": "ENERGY", "price": Decimal("0.25"), "step_size": 1},
        ],
        "restrictions": {"reservation": "RESERVATION"},
    })
    error = parse_error(doc)
    assert error.field == "elements[1].price_components[1].type"
    assert "only have FLAT and TIME" in error.reason


def test_a_reservation_element_with_a_parking_component_is_refused() -> None:
    doc = with_restrictions(reservation="RESERVATION_EXPIRES")
    doc["elements"][0]["price_components"] = [
        {"type": "PARKING_TIME", "price": 3, "step_size": 60}]
    assert parse_error(doc).field == "elements[0].price_components[0].type"


def test_an_unknown_reservation_restriction_is_named() -> None:
    assert parse_error(with_restrictions(reservation="MAYBE")).field == \
        "elements[0].restrictions.reservation"


def test_a_negative_step_size_is_refused() -> None:
    error = parse_error(with_component(step_size=-1))
    assert error.field == "elements[0].price_components[0].step_size"
    assert "at least 0" in error.reason


def test_a_fractional_step_size_is_refused() -> None:
    error = parse_error(with_component(step_size=Decimal("1.5")))
    assert error.field == "elements[0].price_components[0].step_size"
    assert "whole number" in error.reason


def test_a_missing_step_size_is_refused_for_energy() -> None:
    error = parse_error(with_component(step_size=None))
    assert (error.field, error.reason) == ("elements[0].price_components[0].step_size",
                                           "is required")


@pytest.mark.parametrize("kind", ["TIME", "PARKING_TIME"])
def test_a_missing_step_size_is_refused_for_time_dimensions(kind: str) -> None:
    assert parse_error(with_component(type=kind, step_size=None)).field == \
        "elements[0].price_components[0].step_size"


def test_a_missing_step_size_is_allowed_for_flat() -> None:
    tariff = parse_tariff(with_component(type="FLAT", step_size=None))
    assert tariff.elements[0].price_components[0].step_size == 1


def test_a_step_size_of_zero_is_accepted() -> None:
    assert parse_tariff(with_component(step_size=0)).elements[0].price_components[0] \
        .step_size == 0


def test_a_whole_step_size_written_with_a_fraction_is_accepted() -> None:
    assert parse_tariff(with_component(step_size=Decimal("300.0"))) \
        .elements[0].price_components[0].step_size == 300


@pytest.mark.parametrize("value", ["24:00", "7:00", "07:60", "0700", "07:00:00"])
def test_a_bad_start_time_is_named(value: str) -> None:
    error = parse_error(with_restrictions(start_time=value))
    assert error.field == "elements[0].restrictions.start_time"
    assert "HH:MM" in error.reason


def test_a_bad_end_time_is_named() -> None:
    assert parse_error(with_restrictions(end_time="24:00")).field == \
        "elements[0].restrictions.end_time"


def test_end_time_midnight_is_accepted_as_end_of_day() -> None:
    restrictions = parse_tariff(with_restrictions(start_time="18:00", end_time="00:00")) \
        .elements[0].restrictions
    assert restrictions is not None and restrictions.end_time == dt.time(0, 0)


def test_a_date_that_does_not_exist_is_named() -> None:
    error = parse_error(with_restrictions(start_date="2023-02-29"))
    assert error.field == "elements[0].restrictions.start_date"
    assert "not a calendar date" in error.reason


@pytest.mark.parametrize("value", ["2024-13-01", "24-01-01", "2024-1-1", "2024/01/01"])
def test_a_malformed_date_is_named(value: str) -> None:
    error = parse_error(with_restrictions(end_date=value))
    assert error.field == "elements[0].restrictions.end_date"
    assert "YYYY-MM-DD" in error.reason


def test_an_unknown_day_of_week_names_its_position() -> None:
    error = parse_error(with_restrictions(day_of_week=["MONDAY", "FUNDAY"]))
    assert error.field == "elements[0].restrictions.day_of_week[1]"
    assert "'FUNDAY'" in error.reason


def test_min_kwh_equal_to_max_kwh_is_refused() -> None:
    error = parse_error(with_restrictions(min_kwh=10, max_kwh=10))
    assert error.field == "elements[0].restrictions.max_kwh"
    assert "greater than min_kwh" in error.reason


def test_min_kwh_above_max_kwh_is_refused() -> None:
    assert parse_error(with_restrictions(min_kwh=20, max_kwh=10)).field == \
        "elements[0].restrictions.max_kwh"


def test_a_negative_min_kwh_is_refused() -> None:
    assert parse_error(with_restrictions(min_kwh=-1)).field == \
        "elements[0].restrictions.min_kwh"


def test_start_date_not_before_end_date_is_refused() -> None:
    assert parse_error(with_restrictions(start_date="2024-05-01", end_date="2024-05-01")) \
        .field == "elements[0].restrictions.end_date"


def test_a_fractional_duration_is_refused() -> None:
    assert parse_error(with_restrictions(min_duration=Decimal("1.5"))).field == \
        "elements[0].restrictions.min_duration"


def test_end_date_time_before_start_date_time_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["start_date_time"] = "2024-06-01T00:00:00Z"
    doc["end_date_time"] = "2024-05-01T00:00:00Z"
    error = parse_error(doc)
    assert error.field == "end_date_time"
    assert "after start_date_time" in error.reason


def test_end_date_time_equal_to_start_date_time_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["start_date_time"] = "2024-06-01T02:00:00+02:00"
    doc["end_date_time"] = "2024-06-01T00:00:00Z"
    assert parse_error(doc).field == "end_date_time"


def test_a_malformed_date_time_is_named() -> None:
    doc = minimal_tariff_document()
    doc["start_date_time"] = "yesterday"
    assert parse_error(doc).field == "start_date_time"


def test_min_price_above_max_price_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["min_price"] = {"excl_vat": 10}
    doc["max_price"] = {"excl_vat": 5}
    assert parse_error(doc).field == "min_price"


def test_a_price_bound_whose_incl_is_below_excl_is_refused() -> None:
    doc = minimal_tariff_document()
    doc["max_price"] = {"excl_vat": 10, "incl_vat": 9}
    assert parse_error(doc).field == "max_price.incl_vat"


def test_a_tariff_that_is_not_an_object_is_refused() -> None:
    error = parse_error(["not", "a", "tariff"])
    assert (error.field, error.reason) == ("", "must be a JSON object, got a list")


def test_the_error_message_starts_with_the_field() -> None:
    error = parse_error(with_component(price="x"))
    assert str(error).startswith("elements[0].price_components[0].price: ")


def test_a_tariff_parse_error_has_a_stable_code() -> None:
    assert parse_error(with_component(price="x")).code == "invalid_tariff"


# -- CDRs --------------------------------------------------------------------------------------


def cdr_document() -> dict[str, Any]:
    return {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:00:00Z",
        "charging_periods": [
            {"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [
                {"type": "ENERGY", "volume": Decimal("1.234567")},
                {"type": "TIME", "volume": Decimal("0.0834")},
                {"type": "MAX_CURRENT", "volume": Decimal("16.5")},
                {"type": "STATE_OF_CHARGE", "volume": 80},
            ]},
            {"start_date_time": "2024-05-06T10:05:00.240Z", "dimensions": [
                {"type": "PARKING_TIME", "volume": Decimal("0.25")},
            ]},
        ],
        "total_cost": {"excl_vat": 999},  # ignored: rating computes the totals
    }


def cdr_error(document: object) -> CdrParseError:
    with pytest.raises(CdrParseError) as caught:
        parse_cdr(document)
    return caught.value


def with_dimension(kind: str, volume: Decimal) -> dict[str, Any]:
    doc = cdr_document()
    doc["charging_periods"][0]["dimensions"] = [{"type": kind, "volume": volume}]
    return doc


def test_a_cdr_becomes_periods_on_exact_integer_scales() -> None:
    session = parse_cdr(cdr_document(), time_zone="Europe/Berlin")
    assert session.periods == (
        ChargingPeriod(
            start_epoch_ms=epoch_ms(dt.datetime(2024, 5, 6, 10, tzinfo=UTC)),
            energy_milliwh=1_234_567, time_ms=300_240, current_ma_max=16_500),
        ChargingPeriod(
            start_epoch_ms=epoch_ms(dt.datetime(2024, 5, 6, 10, 5, 0, 240_000, tzinfo=UTC)),
            parking_ms=900_000),
    )


def test_a_cdr_keeps_its_start_end_and_time_zone() -> None:
    session = parse_cdr(cdr_document(), time_zone="Europe/Berlin")
    assert (session.start_epoch_ms, session.end_epoch_ms, session.time_zone) == (
        epoch_ms(dt.datetime(2024, 5, 6, 10, tzinfo=UTC)),
        epoch_ms(dt.datetime(2024, 5, 6, 11, tzinfo=UTC)),
        "Europe/Berlin")


def test_a_cdr_in_an_ocpi_response_envelope_is_unwrapped() -> None:
    envelope = {"data": cdr_document(), "status_code": 1000}
    assert parse_cdr(envelope) == parse_cdr(cdr_document())


def test_a_cdr_without_charging_periods_is_refused() -> None:
    doc = cdr_document()
    del doc["charging_periods"]
    error = cdr_error(doc)
    assert (error.field, error.reason) == ("charging_periods", "is required")


def test_a_cdr_period_without_dimensions_is_refused() -> None:
    doc = cdr_document()
    doc["charging_periods"][1]["dimensions"] = []
    assert cdr_error(doc).field == "charging_periods[1].dimensions"


def test_an_unknown_cdr_dimension_type_is_named() -> None:
    error = cdr_error(with_dimension("VOLTAGE", Decimal(230)))
    assert error.field == "charging_periods[0].dimensions[0].type"
    assert "'VOLTAGE'" in error.reason


def test_a_cdr_dimension_twice_in_one_period_is_refused() -> None:
    doc = cdr_document()
    doc["charging_periods"][1]["dimensions"].append({"type": "PARKING_TIME", "volume": 1})
    error = cdr_error(doc)
    assert error.field == "charging_periods[1].dimensions[1].type"


def test_a_time_volume_finer_than_a_millisecond_is_refused() -> None:
    # 0.0000001 h = 0.36 ms
    error = cdr_error(with_dimension("TIME", Decimal("0.0000001")))
    assert error.field == "charging_periods[0].dimensions[0].volume"
    assert "finer than the supported resolution" in error.reason


def test_a_parking_volume_finer_than_a_millisecond_is_refused() -> None:
    assert cdr_error(with_dimension("PARKING_TIME", Decimal("0.00000001"))).field == \
        "charging_periods[0].dimensions[0].volume"


def test_an_energy_volume_finer_than_a_milliwatt_hour_is_refused() -> None:
    error = cdr_error(with_dimension("ENERGY", Decimal("1.0000001")))
    assert error.field == "charging_periods[0].dimensions[0].volume"
    assert "1 mWh" in error.reason


def test_an_energy_volume_finer_than_a_milliwatt_hour_beyond_28_digits_is_refused() -> None:
    error = cdr_error(with_dimension("ENERGY", Decimal("1.0000000000000000000000000000001")))
    assert error.field == "charging_periods[0].dimensions[0].volume"


def test_a_time_volume_finer_than_a_millisecond_beyond_28_digits_is_refused() -> None:
    error = cdr_error(with_dimension("TIME", Decimal("1.0000000000000000000000000000001")))
    assert error.field == "charging_periods[0].dimensions[0].volume"


def test_an_energy_volume_of_one_milliwatt_hour_is_accepted() -> None:
    session = parse_cdr(with_dimension("ENERGY", Decimal("0.000001")))
    assert session.periods[0].energy_milliwh == 1


def test_a_negative_energy_volume_is_accepted_as_net_export() -> None:
    session = parse_cdr(with_dimension("ENERGY", Decimal("-0.5")))
    assert session.periods[0].energy_milliwh == -500_000


def test_periods_out_of_time_order_are_refused() -> None:
    doc = cdr_document()
    doc["charging_periods"][1]["start_date_time"] = "2024-05-06T09:59:59Z"
    error = cdr_error(doc)
    assert error.field == "charging_periods[1].start_date_time"
    assert "time order" in error.reason


def test_a_negative_time_volume_is_refused() -> None:
    error = cdr_error(with_dimension("TIME", Decimal("-0.1")))
    assert (error.field, error.reason) == ("charging_periods[0].dimensions",
                                           "TIME volume must not be negative")


def test_a_negative_parking_volume_is_refused() -> None:
    error = cdr_error(with_dimension("PARKING_TIME", Decimal("-0.1")))
    assert error.reason == "PARKING volume must not be negative"


def test_a_cdr_ending_before_it_starts_is_refused() -> None:
    doc = cdr_document()
    doc["end_date_time"] = "2024-05-06T09:00:00Z"
    assert cdr_error(doc).field == "end_date_time"


def test_a_cdr_volume_decoded_as_a_binary_float_is_refused() -> None:
    doc = copy.deepcopy(cdr_document())
    doc["charging_periods"][0]["dimensions"][0]["volume"] = 1.5
    error = cdr_error(doc)
    assert error.field == "charging_periods[0].dimensions[0].volume"
    assert "parse_float=Decimal" in error.reason


def test_a_cdr_period_without_start_is_named() -> None:
    doc = cdr_document()
    del doc["charging_periods"][1]["start_date_time"]
    assert cdr_error(doc).field == "charging_periods[1].start_date_time"


def test_a_cdr_parse_error_in_an_envelope_names_the_data_path() -> None:
    doc = cdr_document()
    doc["charging_periods"][0]["dimensions"][0]["type"] = "VOLTAGE"
    assert cdr_error({"data": doc}).field == "data.charging_periods[0].dimensions[0].type"
