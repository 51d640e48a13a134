"""Tariffs through /api/v1: OCPI 2.2.1 documents, exact decimals, versions that freeze once used."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from sqlalchemy import update

from evbilling.adapters.db import schema


def exact(value: Any) -> Any:
    """A JSON document with every number (or numeric string) as a Decimal, for comparisons that
    ignore how a number is spelled (2.50 == "2.5") but not its value."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [exact(v) for v in value]
    if isinstance(value, float):
        raise AssertionError(f"a binary float in a tariff document: {value!r}")
    if isinstance(value, str | int | Decimal) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]


def energy_tariff(price: str | Decimal, currency: str = "EUR") -> dict[str, Any]:
    return {"country_code": "DE", "party_id": "EVB", "id": "energy", "currency": currency,
            "elements": [{"price_components": [
                {"type": "ENERGY", "price": price, "vat": "19", "step_size": 1}]}]}


def price_of(document: dict[str, Any]) -> Any:
    return document["elements"][0]["price_components"][0]["price"]


@pytest.fixture
def tariff(operator):
    return operator.new("tariffs", document=energy_tariff("0.3949"))


def set_used(engine, tariff_id: str, version: int) -> None:
    v = schema.tariff_versions.c
    with engine.begin() as conn:
        conn.execute(update(schema.tariff_versions).where(v.tariff_id == tariff_id,
                                                          v.version == version)
                     .values(used_at=dt.datetime.now(dt.UTC)))


@pytest.mark.parametrize("example", ["tariff_1_simple_2hour.json", "tariff_4_complex.json",
                                     "tariff_12_025kwh_min_price.json",
                                     "tariff_14_step_size.json"])
def test_a_tariff_is_created_from_an_ocpi_example(operator, ocpi_example, example):
    document = ocpi_example(example)

    response = operator.admin.post("/tariffs", {"name": "Public AC", "document": document})

    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["current_version"], created["currency"]) == (1, document["currency"])
    assert exact(created["document"]) == exact(document)
    assert operator.admin.get(f"/tariffs/{created['id']}").json() == created


def test_prices_come_back_as_exact_decimal_strings(operator, ocpi_example):
    created = operator.new("tariffs", document=ocpi_example("tariff_4_complex.json"))

    numbers = [leaf for leaf in leaves(created["document"]) if isinstance(leaf, float)]
    assert numbers == []
    assert isinstance(price_of(created["document"]), str)
    assert Decimal(price_of(created["document"])) == Decimal("2.50")


@pytest.mark.parametrize("price", [Decimal("0.3949"), "0.3949", Decimal("1234.123456")])
def test_a_price_keeps_every_decimal_whether_sent_as_number_or_string(operator, price):
    created = operator.new("tariffs", document=energy_tariff(price))

    assert Decimal(price_of(created["document"])) == Decimal(price)


@pytest.mark.parametrize("bad_price", ["abc", None, Decimal("0.1234567")])
def test_a_bad_document_names_the_offending_field(operator, problem, bad_price):
    document = energy_tariff("0.3949")
    document["elements"][0]["price_components"][0]["price"] = bad_price

    found = problem(operator.admin.post("/tariffs", {"name": "Bad", "document": document}),
                    422, "invalid_tariff")

    assert found["field"] == "document.elements[0].price_components[0].price"
    assert operator.admin.get("/tariffs").json()["data"] == []


def test_a_document_without_elements_is_refused(operator, problem):
    document = energy_tariff("0.3949") | {"elements": []}

    found = problem(operator.admin.post("/tariffs", {"name": "Empty", "document": document}),
                    422, "invalid_tariff")

    assert found["field"] == "document.elements"


def test_a_tariff_body_rejects_unknown_fields(operator, problem):
    body = {"name": "X", "document": energy_tariff("1"), "currency": "USD"}

    found = problem(operator.admin.post("/tariffs", body), 422, "validation_error")

    assert [e["field"] for e in found["errors"]] == ["currency"]


def test_a_new_version_becomes_version_2_and_current(operator, tariff):
    response = operator.admin.post(f"/tariffs/{tariff['id']}/versions",
                                   {"document": energy_tariff("0.4500")})

    assert response.status_code == 201, response.text
    assert response.json()["current_version"] == 2
    current = operator.admin.get(f"/tariffs/{tariff['id']}").json()
    assert current["current_version"] == 2
    assert Decimal(price_of(current["document"])) == Decimal("0.45")


def test_versions_are_listed_newest_first(operator, tariff):
    operator.admin.post(f"/tariffs/{tariff['id']}/versions", {"document": energy_tariff("0.45")})

    versions = operator.admin.get(f"/tariffs/{tariff['id']}/versions").json()["data"]

    assert [(v["version"], v["used"]) for v in versions] == [(2, False), (1, False)]
    assert [Decimal(price_of(v["document"])) for v in versions] == [Decimal("0.45"),
                                                                    Decimal("0.3949")]


def test_an_unused_version_can_be_replaced(operator, tariff):
    response = operator.admin.put(f"/tariffs/{tariff['id']}/versions/1",
                                  {"document": energy_tariff("0.3999")})

    assert response.status_code == 200, response.text
    versions = operator.admin.get(f"/tariffs/{tariff['id']}/versions").json()["data"]
    assert [(v["version"], price_of(v["document"])) for v in versions] == [(1, "0.3999")]


def test_a_used_version_is_immutable(operator, tariff, engine, problem):
    set_used(engine, tariff["id"], 1)

    problem(operator.admin.put(f"/tariffs/{tariff['id']}/versions/1",
                               {"document": energy_tariff("0.01")}), 409, "tariff_version_in_use")

    versions = operator.admin.get(f"/tariffs/{tariff['id']}/versions").json()["data"]
    assert [(v["used"], price_of(v["document"])) for v in versions] == [(True, "0.3949")]


def test_a_used_version_is_superseded_by_a_new_version(operator, tariff, engine):
    set_used(engine, tariff["id"], 1)

    response = operator.admin.post(f"/tariffs/{tariff['id']}/versions",
                                   {"document": energy_tariff("0.01")})

    assert response.status_code == 201
    assert response.json()["current_version"] == 2


def test_replacing_a_missing_version_is_not_found(operator, tariff, problem):
    problem(operator.admin.put(f"/tariffs/{tariff['id']}/versions/2",
                               {"document": energy_tariff("1")}), 404, "not_found")


@pytest.mark.parametrize("method, path", [("POST", "/versions"), ("PUT", "/versions/1")])
def test_a_tariff_keeps_its_currency(operator, tariff, problem, method, path):
    response = operator.admin.request(method, f"/tariffs/{tariff['id']}{path}",
                                      json={"document": energy_tariff("0.39", "CHF")})

    assert problem(response, 422, "validation_error")["field"] == "document.currency"
    assert operator.admin.get(f"/tariffs/{tariff['id']}").json() == tariff


def test_a_new_version_is_validated_like_the_first(operator, tariff, problem):
    found = problem(operator.admin.post(f"/tariffs/{tariff['id']}/versions",
                                        {"document": energy_tariff("free")}),
                    422, "invalid_tariff")

    assert found["field"] == "document.elements[0].price_components[0].price"


@pytest.mark.parametrize("method, path", [("GET", ""), ("GET", "/versions"),
                                          ("POST", "/versions"), ("PUT", "/versions/1")])
def test_another_operators_tariff_is_not_found(operator, other_operator, problem, method, path):
    theirs = other_operator.new("tariffs")
    body = {"document": energy_tariff("0")} if method in ("POST", "PUT") else None

    problem(operator.admin.request(method, f"/tariffs/{theirs['id']}{path}", json=body),
            404, "not_found")

    assert other_operator.admin.get(f"/tariffs/{theirs['id']}").json() == theirs


def test_tariffs_list_in_pages(operator):
    ids = [operator.new("tariffs")["id"] for _ in range(3)]

    first = operator.admin.get("/tariffs", params={"limit": 2}).json()
    rest = operator.admin.get("/tariffs", params={"limit": 2,
                                                  "starting_after": first["next_cursor"]}).json()

    assert [t["id"] for t in first["data"] + rest["data"]] == ids
    assert (first["has_more"], rest["has_more"], rest["next_cursor"]) == (True, False, None)
