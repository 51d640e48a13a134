"""Rules that span stored and new values, and other edges found by the integration suite."""

from __future__ import annotations

from sqlalchemy import select

from evbilling.adapters.db import schema
from evbilling.adapters.security import verify_password

CHARGER_PASSWORD = "charger-secret-0123456789"  # noqa: S105 - a test password
SIMPLE_TARIFF = {"id": "simple", "currency": "EUR", "elements": [{"price_components": [
    {"type": "ENERGY", "price": "0.3949", "vat": "19", "step_size": 1}]}]}


def test_a_charger_cannot_be_patched_to_basic_auth_without_a_password(operator, problem):
    charger = operator.new("chargers", security_profile=0, password=None)
    response = operator.admin.patch(f"/chargers/{charger['id']}", {"security_profile": 2})
    assert problem(response, 422, "validation_error")["field"] == "password"
    response = operator.admin.patch(f"/chargers/{charger['id']}",
                                    {"security_profile": 2, "password": CHARGER_PASSWORD})
    assert response.status_code == 200, response.text


def test_a_patched_valid_to_must_stay_after_the_stored_valid_from(operator, problem):
    assignment = operator.new("tariff-assignments", valid_from="2024-06-01T00:00:00Z")
    response = operator.admin.patch(f"/tariff-assignments/{assignment['id']}",
                                    {"valid_to": "2024-05-01T00:00:00Z"})
    assert problem(response, 422, "validation_error")["field"] == "valid_to"


def test_the_user_email_filter_ignores_case(operator):
    user = operator.new("users", email="Mixed.Case@Example.com")
    found = operator.admin.get("/users", params={"email": "MIXED.case@example.COM"}).json()
    assert [u["id"] for u in found["data"]] == [user["id"]]


def test_a_failed_log_in_for_an_unknown_account_is_audited_under_the_operator(
        operator, anonymous, engine, problem):
    response = anonymous.post("/auth/login", {"operator_id": operator.operator_id,
                                              "email": "nobody@example.com", "password": "x"})
    problem(response, 401, "unauthenticated")
    with engine.connect() as conn:
        rows = conn.execute(select(schema.audit_log).where(
            schema.audit_log.c.action == "login",
            schema.audit_log.c.outcome == "failure")).all()
    assert [(r.operator_id, r.actor) for r in rows] == \
        [(operator.operator_id, "email:nobody@example.com")]


def test_replacing_an_unused_tariff_version_is_audited(operator, engine):
    tariff = operator.new("tariffs")
    response = operator.admin.put(f"/tariffs/{tariff['id']}/versions/1",
                                  {"document": SIMPLE_TARIFF})
    assert response.status_code == 200, response.text
    with engine.connect() as conn:
        actions = conn.execute(select(schema.audit_log.c.action).where(
            schema.audit_log.c.target == f"{tariff['id']}@1")).scalars().all()
    assert actions == ["tariffs.replace_version"]


def test_an_absurd_tariff_price_is_refused_with_the_field_named(operator, problem):
    document = {**SIMPLE_TARIFF, "elements": [{"price_components": [
        {"type": "ENERGY", "price": "1e999", "step_size": 1}]}]}
    response = operator.admin.post("/tariffs", {"name": "absurd", "document": document})
    body = problem(response, 422, "invalid_tariff")
    assert body["field"] == "document.elements[0].price_components[0].price"


def test_a_charger_password_keeps_its_surrounding_spaces(operator, engine):
    password = "  spaces-matter-here  "  # noqa: S105 - a test password
    charger = operator.new("chargers", password=password)
    with engine.connect() as conn:
        stored = conn.execute(select(schema.chargers.c.password_hash).where(
            schema.chargers.c.id == charger["id"])).scalar_one()
    assert verify_password(stored, password)
    assert not verify_password(stored, password.strip())


def test_an_unexpected_error_is_a_500_problem_with_the_security_headers(app, client):
    def broken() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/v1/_broken_for_test", broken, include_in_schema=False)
    try:
        response = client.get("/api/v1/_broken_for_test")
    finally:
        app.router.routes.pop()
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal_error"
    assert "boom" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
