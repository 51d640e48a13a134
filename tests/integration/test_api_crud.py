"""The plain records of /api/v1 (sites ... users): create, read, list, filter, change, delete.

Each resource is described once in ``RESOURCES``; the tests run for every resource on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select

from evbilling.adapters.db import schema
from evbilling.adapters.security import verify_password

CHARGER_PASSWORD = "charger-secret-0123456789"  # noqa: S105 - the fixtures' charger password


@dataclass(frozen=True)
class Resource:
    name: str
    #: an exact-match filter: (query parameter, the value the n-th test record gets)
    filter: tuple[str, Callable[[Any, int], Any]]
    #: a valid PATCH body, or None when the records cannot be changed
    change: dict[str, Any] | None
    #: a field that a change may not set to null
    required: str | None = None
    #: create a record that references the given one (None: nothing can reference it)
    reference: Callable[[Any, dict[str, Any]], object] | None = None
    deletable: bool = True


RESOURCES = [
    Resource("sites", ("country", lambda t, n: ["DE", "FR"][n]),
             {"name": "Depot North", "vat_percent": "7.00"}, "time_zone",
             reference=lambda t, site: t.new("chargers", site_id=site["id"])),
    Resource("chargers", ("site_id", lambda t, n: t.new("sites")["id"]),
             {"vendor": "ABB", "model": "Terra AC"}, "security_profile",
             reference=lambda t, charger: t.new("evses", charger_id=charger["id"])),
    Resource("evses", ("charger_id", lambda t, n: t.new("chargers", security_profile=3)["id"]),
             None,
             reference=lambda t, evse: t.new("connectors", evse_id=evse["id"])),
    Resource("connectors", ("evse_id", lambda t, n: t.new("evses")["id"]),
             {"max_power_w": 11_000, "power_type": "AC_1_PHASE"}, "standard",
             reference=lambda t, con: t.new("tariff-assignments", connector_id=con["id"])),
    Resource("drivers", ("email", lambda t, n: f"driver{n}@example.com"),
             {"fleet_account": "ACME fleet", "email": "new@example.com"}, "name",
             reference=lambda t, driver: t.new("tokens", driver_id=driver["id"])),
    Resource("tokens", ("status", lambda t, n: ["ACTIVE", "BLOCKED"][n]),
             {"status": "EXPIRED"}, "status"),
    Resource("vehicles", ("driver_id", lambda t, n: t.new("drivers")["id"]),
             {"model": "Zoe E-Tech", "battery_kwh": "52.000"}, "make"),
    Resource("users", ("role", lambda t, n: ["finance", "operator_staff"][n]),
             {"disabled": True}, "disabled", deletable=False),
]

by_name = pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)


def make(operator: Any, resource: Resource, n: int = 0) -> dict[str, Any]:
    name, value = resource.filter
    return operator.new(resource.name, **{name: value(operator, n)})


def list_all(caller: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    response = caller.get(path, params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


@by_name
def test_a_created_record_reads_back_as_created(operator, resource):
    created = make(operator, resource)

    response = operator.admin.get(f"/{resource.name}/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


@by_name
def test_lists_page_with_limit_and_starting_after(operator, resource):
    created = [make(operator, resource, n % 2)["id"] for n in range(3)]
    everything = [row["id"] for row in list_all(operator.admin, f"/{resource.name}")]

    pages, cursor = [], None
    while True:
        params = {"limit": 2} | ({"starting_after": cursor} if cursor else {})
        page = operator.admin.get(f"/{resource.name}", params=params).json()
        pages.append(page)
        if not page["has_more"]:
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        cursor = page["next_cursor"]

    assert [row["id"] for page in pages for row in page["data"]] == everything
    assert everything == sorted(everything) and set(created) <= set(everything)
    assert all(len(page["data"]) == 2 for page in pages[:-1])
    assert pages[-1]["next_cursor"] is None


@by_name
def test_lists_filter_by_exact_match(operator, resource):
    first, second = make(operator, resource, 0), make(operator, resource, 1)
    name, _ = resource.filter

    found = list_all(operator.admin, f"/{resource.name}", **{name: first[name]})

    assert first in found and second not in found
    assert all(row[name] == first[name] for row in found)


@by_name
def test_a_change_applies_only_the_given_fields(operator, resource, problem):
    created = make(operator, resource)
    if resource.change is None:
        response = operator.admin.patch(f"/{resource.name}/{created['id']}", {})
        problem(response, 405, "method_not_allowed")
        return

    response = operator.admin.patch(f"/{resource.name}/{created['id']}", resource.change)

    assert response.status_code == 200, response.text
    assert response.json() == created | resource.change
    assert operator.admin.get(f"/{resource.name}/{created['id']}").json() == response.json()


@by_name
def test_a_deleted_record_is_gone(operator, resource, problem):
    created = make(operator, resource)
    path = f"/{resource.name}/{created['id']}"
    if not resource.deletable:
        problem(operator.admin.delete(path), 405, "method_not_allowed")
        return

    assert operator.admin.delete(path).status_code == 204

    problem(operator.admin.get(path), 404, "not_found")
    problem(operator.admin.delete(path), 404, "not_found")


@pytest.mark.parametrize("resource", [r for r in RESOURCES if r.reference], ids=lambda r: r.name)
def test_a_referenced_record_cannot_be_deleted(operator, resource, problem):
    created = make(operator, resource)
    resource.reference(operator, created)

    problem(operator.admin.delete(f"/{resource.name}/{created['id']}"), 409, "in_use")

    assert operator.admin.get(f"/{resource.name}/{created['id']}").status_code == 200


@by_name
def test_a_create_body_with_an_unknown_field_is_rejected_naming_it(operator, resource, problem):
    body = operator.body(resource.name) | {"operator_id": "op_of_someone_else"}

    found = problem(operator.admin.post(f"/{resource.name}", body), 422, "validation_error")

    assert found["detail"].startswith("operator_id:")
    assert [e["field"] for e in found["errors"]] == ["operator_id"]


@pytest.mark.parametrize("resource", [r for r in RESOURCES if r.change], ids=lambda r: r.name)
def test_a_change_with_an_unknown_field_is_rejected_naming_it(operator, resource, problem):
    created = make(operator, resource)

    found = problem(operator.admin.patch(f"/{resource.name}/{created['id']}",
                                         {"id": "stolen"}), 422, "validation_error")

    assert found["detail"].startswith("id:")
    assert operator.admin.get(f"/{resource.name}/{created['id']}").json() == created


@pytest.mark.parametrize("resource", [r for r in RESOURCES if r.required], ids=lambda r: r.name)
def test_a_change_to_null_of_a_required_field_is_rejected_naming_it(operator, resource, problem):
    created = make(operator, resource)

    found = problem(operator.admin.patch(f"/{resource.name}/{created['id']}",
                                         {resource.required: None}), 422, "validation_error")

    assert found["field"] == resource.required
    assert operator.admin.get(f"/{resource.name}/{created['id']}").json() == created


@by_name
def test_another_operators_record_is_not_found(operator, other_operator, resource, problem):
    theirs = make(other_operator, resource)

    problem(operator.admin.get(f"/{resource.name}/{theirs['id']}"), 404, "not_found")
    assert theirs["id"] not in {r["id"] for r in list_all(operator.admin, f"/{resource.name}")}


def test_a_reference_to_another_operators_record_is_refused(operator, other_operator, problem):
    their_site = other_operator.new("sites")

    found = problem(operator.admin.post("/chargers", operator.body(
        "chargers", site_id=their_site["id"])), 422, "unknown_reference")

    assert found["field"] == "site_id"


def test_a_second_token_with_the_same_uid_already_exists(operator, problem):
    token = operator.new("tokens")

    problem(operator.admin.post("/tokens", operator.body("tokens", uid=token["uid"])),
            409, "already_exists")


@pytest.mark.parametrize("sent", ["77.125", Decimal("77.125")], ids=["string", "number"])
def test_decimals_come_back_as_exact_strings(operator, sent):
    site = operator.new("sites", vat_percent="7.70")
    vehicle = operator.new("vehicles", battery_kwh=sent)

    assert site["vat_percent"] == "7.70"
    assert vehicle["battery_kwh"] == "77.125"


def test_a_site_needs_a_known_time_zone_and_currency(operator, problem):
    for field_name, bad in (("time_zone", "Mars/Olympus_Mons"), ("currency", "XYZ")):
        found = problem(operator.admin.post("/sites", operator.body("sites", **{field_name: bad})),
                        422, "validation_error")
        assert found["errors"][0]["field"] == field_name


@pytest.mark.parametrize("method, path, content, status, code", [
    ("GET", "/nowhere", None, 404, "not_found"),
    ("PUT", "/sites", None, 405, "method_not_allowed"),
    ("GET", "/sites?limit=0", None, 422, "validation_error"),
    ("GET", "/sites?limit=101", None, 422, "validation_error"),
    ("POST", "/sites", b"{not json", 422, "validation_error"),
    ("POST", "/sites", b"[]", 422, "validation_error"),
], ids=["unknown path", "wrong method", "limit 0", "limit 101", "broken JSON", "not an object"])
def test_malformed_requests_get_a_problem(admin, problem, method, path, content, status, code):
    problem(admin.request(method, path, content=content,
                          headers={"Content-Type": "application/json"}), status, code)


# -- charger passwords ----------------------------------------------------------------------------
def charger_password_hash(engine: Engine, charger_id: str) -> str | None:
    with engine.connect() as conn:
        value: str | None = conn.execute(select(schema.chargers.c.password_hash).where(
            schema.chargers.c.id == charger_id)).scalar_one()
    return value


@pytest.mark.parametrize("password", ["fifteen-chars-x", ""])
def test_a_charger_password_under_16_characters_is_rejected(operator, problem, password):
    body = operator.body("chargers", password=password)

    found = problem(operator.admin.post("/chargers", body), 422, "validation_error")

    assert found["errors"][0]["field"] == "password"


def test_a_basic_auth_charger_needs_a_password(operator, problem):
    body = operator.body("chargers", security_profile=2)
    del body["password"]

    assert problem(operator.admin.post("/chargers", body), 422, "validation_error"
                   )["field"] == "password"


def test_a_charger_password_is_stored_as_an_argon2id_hash(operator, engine):
    charger = operator.new("chargers")

    stored = charger_password_hash(engine, charger["id"])

    assert stored is not None and stored.startswith("$argon2id$")
    assert verify_password(stored, CHARGER_PASSWORD)


def test_a_changed_charger_password_replaces_the_hash(operator, engine):
    charger = operator.new("chargers")
    new_password = "another-secret-password"  # noqa: S105

    response = operator.admin.patch(f"/chargers/{charger['id']}", {"password": new_password})

    assert response.status_code == 200, response.text
    stored = charger_password_hash(engine, charger["id"])
    assert stored is not None and verify_password(stored, new_password)


def test_no_response_ever_shows_a_charger_password_or_its_hash(operator, engine):
    charger = operator.new("chargers")
    path = f"/chargers/{charger['id']}"
    stored = charger_password_hash(engine, charger["id"])
    responses = [
        operator.admin.post("/chargers", operator.body("chargers")),
        operator.admin.get(path),
        operator.admin.get("/chargers"),
        operator.admin.patch(path, {"password": CHARGER_PASSWORD, "vendor": "ABB"}),
    ]

    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert CHARGER_PASSWORD not in response.text and "password" not in response.text
        assert stored is not None and stored not in response.text


def test_user_passwords_are_never_returned(operator):
    created = operator.admin.post("/users", operator.body("users"))

    for response in (created, operator.admin.get("/users")):
        assert "password" not in response.text


def test_a_driver_user_needs_a_driver_and_only_a_driver_user_has_one(operator, problem):
    driver = operator.new("drivers")
    for body in (operator.body("users", role="driver", driver_id=None),
                 operator.body("users", role="finance", driver_id=driver["id"])):
        found = problem(operator.admin.post("/users", body), 422, "validation_error")
        assert found["field"] == "driver_id"


