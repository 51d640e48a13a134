"""Who may call /api/v1: log-in and its rate limit, sessions, API keys, anonymous callers,
security headers."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from evbilling.adapters.db import schema
from evbilling.entrypoints.api.app import create_app
from evbilling.services.demo import DEMO_API_KEY, seed_demo

PASSWORD = "correct horse battery"  # noqa: S105 - the fixtures' user password
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "no-referrer", "cache-control": "no-store"}


@pytest.fixture
def staff_user(operator):
    return operator.new("users", role="operator_staff")


def log_in(anonymous, operator, email, password=PASSWORD):
    return anonymous.post("/auth/login", {"operator_id": operator.operator_id, "email": email,
                                          "password": password})


def audit_rows(engine, action):
    with engine.connect() as conn:
        return conn.execute(select(schema.audit_log).where(schema.audit_log.c.action == action)
                            .order_by(schema.audit_log.c.seq)).fetchall()


# -- log-in and sessions --------------------------------------------------------------------------
def test_a_user_logs_in_and_the_session_token_identifies_them(operator, anonymous, staff_user,
                                                              engine):
    response = log_in(anonymous, operator, staff_user["email"].upper())

    assert response.status_code == 200, response.text
    session = response.json()
    assert session["token"].startswith("evbs_") and session["token_type"] == "bearer"  # noqa: S105
    assert session["role"] == "operator_staff"
    me = anonymous.get("/me", headers={"Authorization": f"Bearer {session['token']}"}).json()
    assert (me["operator_id"], me["role"], me["actor"]) == (
        operator.operator_id, "operator_staff", f"user:{staff_user['id']}")
    assert [(r.outcome, r.actor) for r in audit_rows(engine, "login")] == [
        ("success", f"user:{staff_user['id']}")]


def test_a_session_token_is_stored_only_as_a_hash(operator, anonymous, staff_user, engine):
    token = log_in(anonymous, operator, staff_user["email"]).json()["token"]

    with engine.connect() as conn:
        stored = conn.execute(select(schema.auth_sessions.c.token_hash)).scalars().all()

    assert stored == [hashlib.sha256(token.encode()).hexdigest()]


@pytest.mark.parametrize("who", ["wrong password", "unknown e-mail", "other operator"])
def test_a_failed_log_in_is_401_and_audited(operator, other_operator, anonymous, staff_user,
                                            engine, problem, who):
    email, password, operator_id = staff_user["email"], PASSWORD, operator.operator_id
    if who == "wrong password":
        password = "not the password"  # noqa: S105
    elif who == "unknown e-mail":
        email = "nobody@example.com"
    else:
        operator_id = other_operator.operator_id

    response = anonymous.post("/auth/login", {"operator_id": operator_id, "email": email,
                                              "password": password})

    found = problem(response, 401, "unauthenticated")
    assert found["detail"] == "wrong e-mail or password"
    assert [(r.outcome, r.actor, r.source_ip) for r in audit_rows(engine, "login")] == [
        ("failure", f"email:{email}", "testclient")]


def test_a_disabled_user_can_neither_log_in_nor_use_a_session(operator, anonymous, staff_user,
                                                              problem):
    token = log_in(anonymous, operator, staff_user["email"]).json()["token"]

    operator.admin.patch(f"/users/{staff_user['id']}", {"disabled": True})

    problem(log_in(anonymous, operator, staff_user["email"]), 401, "unauthenticated")
    problem(anonymous.get("/me", headers={"Authorization": f"Bearer {token}"}),
            401, "unauthenticated")


def test_log_out_revokes_the_session_token(operator, staff_user, problem):
    staff = operator.log_in(staff_user["email"])

    assert staff.post("/auth/logout").status_code == 204

    problem(staff.get("/me"), 401, "unauthenticated")


def test_an_expired_session_token_is_refused(operator, staff_user, engine, problem):
    staff = operator.log_in(staff_user["email"])
    with engine.begin() as conn:
        conn.execute(update(schema.auth_sessions).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))

    problem(staff.get("/me"), 401, "unauthenticated")


# -- log-in rate limit ----------------------------------------------------------------------------
def test_the_eleventh_log_in_after_ten_failures_is_429_even_with_the_right_password(
        operator, anonymous, staff_user, problem):
    for _ in range(10):
        problem(log_in(anonymous, operator, staff_user["email"], "wrong"), 401,
                "unauthenticated")

    response = log_in(anonymous, operator, staff_user["email"])

    problem(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60


def test_failures_are_also_counted_per_client_address(operator, anonymous, staff_user,
                                                      problem):
    for n in range(10):
        log_in(anonymous, operator, f"guess{n}@example.com", "wrong")

    problem(log_in(anonymous, operator, staff_user["email"]), 429, "rate_limited")


def test_successful_log_ins_are_not_limited(operator, anonymous, staff_user):
    for _ in range(12):
        assert log_in(anonymous, operator, staff_user["email"]).status_code == 200


# -- API keys -------------------------------------------------------------------------------------
def create_key(admin, **fields):
    response = admin.post("/api-keys", {"name": "billing export", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_new_api_key_shows_its_secret_once(admin):
    key = create_key(admin, role="finance")

    assert key["secret"].startswith("evbk_") and key["prefix"] == key["secret"][:12]
    listed = admin.get("/api-keys")
    assert listed.status_code == 200
    assert key["secret"] not in listed.text and "secret" not in listed.text
    assert key["id"] in [k["id"] for k in listed.json()["data"]]


def test_an_api_key_is_stored_only_as_a_hash(admin, engine):
    key = create_key(admin)

    with engine.connect() as conn:
        row = conn.execute(select(schema.api_keys).where(
            schema.api_keys.c.id == key["id"])).one()

    assert row.key_hash == hashlib.sha256(key["secret"].encode()).hexdigest()
    assert key["secret"] not in [str(value) for value in row]


def test_a_new_api_key_acts_with_its_role(admin, client):
    key = create_key(admin, role="finance")

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key['secret']}"}).json()

    assert (me["role"], me["actor"], me["can_write"]) == ("finance", f"key:{key['id']}", True)


def test_a_revoked_api_key_is_refused(admin, client, problem):
    key = create_key(admin)

    assert admin.delete(f"/api-keys/{key['id']}").status_code == 204

    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key['secret']}"})
    problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    listed = {k["id"]: k["revoked"] for k in admin.get("/api-keys").json()["data"]}
    assert listed[key["id"]] is True
    problem(admin.delete(f"/api-keys/{key['id']}"), 404, "not_found")


def test_key_creation_and_revocation_are_audited(admin, engine):
    key = create_key(admin)
    admin.delete(f"/api-keys/{key['id']}")

    actions = [(r.action, r.target, r.outcome) for r in audit_rows(engine, "api_keys.create")
               + audit_rows(engine, "api_keys.revoke")]

    assert actions == [("api_keys.create", key["id"], "success"),
                       ("api_keys.revoke", key["id"], "success")]


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/sites", lambda operator: operator.body("sites")),
    ("PATCH", "/sites/{site}", lambda operator: {"name": "renamed"}),
    ("DELETE", "/sites/{site}", lambda operator: None),
    ("POST", "/api-keys", lambda operator: {"name": "escalate"}),
])
def test_a_read_only_api_key_may_read_but_not_write(operator, client, problem, method, path,
                                                    body):
    site = operator.new("sites")
    key = create_key(operator.admin, role="admin", scopes=["read"])
    headers = {"Authorization": f"Bearer {key['secret']}"}
    assert client.get(f"/api/v1/sites/{site['id']}", headers=headers).status_code == 200

    response = client.request(method, "/api/v1" + path.format(site=site["id"]),
                              json=body(operator), headers=headers)

    assert problem(response, 403, "forbidden")["detail"] == "this API key is read-only"
    assert operator.admin.get(f"/sites/{site['id']}").json() == site


def test_an_api_key_cannot_have_the_driver_role(admin, problem):
    problem(admin.post("/api-keys", {"name": "x", "role": "driver"}), 422, "validation_error")


# -- anonymous callers ----------------------------------------------------------------------------
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer evbk_forged", "Bearer evbs_x",
                                           "Basic dXNlcjpwYXNz", "Bearer not-a-token"])
def test_a_caller_without_a_valid_token_is_asked_to_authenticate(client, problem,
                                                                 authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/api/v1/sites", headers=headers)

    problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == "Bearer"


# -- security headers -----------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/me"), ("GET", "/api/v1/sites"), ("POST", "/api/v1/sites"),
    ("GET", "/api/v1/sites/site_missing"), ("GET", "/api/v1/nowhere"),
    ("DELETE", "/api/v1/users/usr_x"), ("GET", "/healthz"), ("GET", "/openapi.json"),
])
@pytest.mark.parametrize("authenticated", [True, False], ids=["admin", "anonymous"])
def test_every_response_carries_the_security_headers(admin, client, method, path,
                                                     authenticated):
    headers = {"Authorization": f"Bearer {admin.token}"} if authenticated else {}

    response = client.request(method, path, headers=headers, json={} if method == "POST" else None)

    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_a_token_verified_for_one_database_is_not_trusted_for_another(tmp_path):
    # The contract fuzzing runs two seeded apps in one process: the verified-token cache was
    # keyed by the header alone, so the second app got the first one's operator and a POST
    # failed on its foreign keys (500).
    apps = [create_app(f"sqlite:///{tmp_path / f'{name}.sqlite3'}") for name in ("a", "b")]
    operators = []
    for app in apps:
        with app.state.engine.begin() as conn:
            operators.append(seed_demo(conn))
    demo = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    try:
        seen = [TestClient(app).get("/api/v1/me", headers=demo).json()["operator_id"]
                for app in apps]
        created = TestClient(apps[1]).post("/api/v1/api-keys", headers=demo,
                                           json={"name": "second app"})
    finally:
        for app in apps:
            app.state.engine.dispose()
    assert seen == operators
    assert created.status_code == 201, created.text
