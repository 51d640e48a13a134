"""Integration fixtures: the API on SQLite and PostgreSQL, tenants, and callers with every role.

Every test that uses ``app`` (or anything built on it) runs twice, ids ``sqlite`` and
``postgres``. Each pytest process (each xdist worker) migrates one SQLite file and one throw-away
PostgreSQL database ``evb_test_<hex>`` once; ``app`` empties every table before each test.
PostgreSQL comes from ``EVBILLING_TEST_POSTGRES_URL`` (an admin URL; default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it is unreachable the ``postgres``
variants are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import itertools
import os
import secrets
import string
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import simplejson
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import Engine, delete, make_url

from evbilling.adapters import security
from evbilling.adapters.db import schema
from evbilling.entrypoints.api.app import create_app
from evbilling.entrypoints.api.limits import FailureLimiter, login_limiter
from evbilling.services.operators import create_operator

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

API = "/api/v1"
POSTGRES_ADMIN_URL = os.environ.get("EVBILLING_TEST_POSTGRES_URL",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "correct horse battery"  # noqa: S105 - a test password
CHARGER_PASSWORD = "charger-secret-0123456789"  # noqa: S105 - 25 characters, OCPP minimum is 16


# -- databases ------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """argon2id at its lowest cost: the same format and code paths in milliseconds rather than
    160 ms a hash (logins and users are created in almost every test)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    patch.undo()


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail under CI=true)."""
    try:
        with psycopg.connect(_libpq(POSTGRES_ADMIN_URL), connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        where = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)
        reason = f"PostgreSQL is unreachable at {where} ({' '.join(str(exc).split())})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires the PostgreSQL tests to run", pytrace=False)
        pytest.skip(f"{reason}; set EVBILLING_TEST_POSTGRES_URL, or CI=true to fail instead")
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Make throw-away databases (``evb_test_<hex>``); all are dropped at the end."""
    names: list[str] = []

    def make() -> str:
        name = f"evb_test_{secrets.token_hex(6)}"
        with psycopg.connect(_libpq(postgres_server), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return _libpq(make_url(postgres_server).set(database=name).render_as_string(False))

    yield make
    with psycopg.connect(_libpq(postgres_server), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'evbilling.sqlite3'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """One database per backend and process, migrated by the app that first serves it."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(scope="session")
def served_app(database_url: str) -> Iterator[FastAPI]:
    app = create_app(database_url)
    yield app
    app.state.engine.dispose()


def empty_all_tables(engine: Engine) -> None:
    """DELETE every row, children first. With the few rows a test leaves, this takes ~10 ms on
    PostgreSQL, where TRUNCATE of the 20 tables takes ~170 ms.

    The ledger tables reject DELETE (triggers, migration 0005). Only a superuser or the schema's
    owner can get past that: on PostgreSQL ``session_replication_role = replica`` skips the
    triggers for this transaction; on SQLite the triggers are dropped and re-created around the
    DELETEs, in the same transaction."""
    with engine.begin() as conn:
        triggers: list[Any] = []
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        else:
            triggers = list(conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name LIKE 'ledger%'"))
            for trigger in triggers:
                conn.exec_driver_sql(f'DROP TRIGGER "{trigger.name}"')
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(delete(table))
        for trigger in triggers:
            conn.exec_driver_sql(trigger.sql)


@pytest.fixture
def fresh_login_limiter() -> Iterator[FailureLimiter]:
    """The process-wide log-in limiter, without the failures of earlier tests (it also counts
    per client address, and every TestClient is "testclient")."""
    login_limiter.reset()
    yield login_limiter
    login_limiter.reset()


@pytest.fixture
def app(served_app: FastAPI, fresh_login_limiter: FailureLimiter) -> FastAPI:
    """The migrated app with empty tables and a fresh log-in rate limiter."""
    empty_all_tables(served_app.state.engine)
    return served_app


@pytest.fixture
def engine(app: FastAPI) -> Engine:
    result: Engine = app.state.engine
    return result


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


# -- callers and tenants --------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """Someone calling /api/v1 with a bearer token (or anonymously). Bodies may hold Decimals:
    they go out as exact JSON numbers."""

    client: TestClient
    token: str | None = None

    def request(self, method: str, path: str, *, json: Any = None,
                **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if json is not None:
            headers["Content-Type"] = "application/json"
            kwargs["content"] = simplejson.dumps(json, use_decimal=True)
        return self.client.request(method, API + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(f"/{collection}", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


SIMPLE_TARIFF = {  # OCPI 2.2.1 tariff, 0.3949 EUR/kWh
    "country_code": "DE", "party_id": "EVB", "id": "simple", "currency": "EUR",
    "elements": [{"price_components": [
        {"type": "ENERGY", "price": "0.3949", "vat": "19", "step_size": 1}]}],
}

# OCPI party ids are unique per country; each process has databases of its own.
_party_ids = ("".join(letters) for letters in itertools.product(string.ascii_uppercase, repeat=3))


@dataclass(frozen=True)
class Tenant:
    """An operator, its bootstrap admin API key, and helpers that create its records through
    the API with valid defaults (missing parents are created too)."""

    operator_id: str
    admin: Caller  # the bootstrap admin API key
    ref: Callable[[str], str]

    def new(self, collection: str, **fields: Any) -> dict[str, Any]:
        """Create one record of ``collection`` (e.g. ``"chargers"``) as the admin."""
        return self.admin.create(collection, self.body(collection, **fields))

    def body(self, collection: str, **fields: Any) -> dict[str, Any]:
        """A valid create body for ``collection``; ``fields`` override the defaults."""

        def parent(field: str, parent_collection: str, **parent_fields: Any) -> str:
            given: str | None = fields.get(field)
            return given or self.new(parent_collection, **parent_fields)["id"]

        defaults: dict[str, Callable[[], dict[str, Any]]] = {
            "sites": lambda: {"name": self.ref("site"), "time_zone": "Europe/Berlin",
                              "currency": "EUR", "vat_percent": "19.00", "country": "DE"},
            "chargers": lambda: {"site_id": parent("site_id", "sites"),
                                 "ocpp_identity": self.ref("CP"), "password": CHARGER_PASSWORD},
            "evses": lambda: {"charger_id": parent("charger_id", "chargers", security_profile=3),
                              "evse_uid": self.ref("DE*EVB*E"), "ocpp_evse_id": 1},
            "connectors": lambda: {"evse_id": parent("evse_id", "evses"), "connector_number": 1,
                                   "standard": "IEC_62196_T2", "power_type": "AC_3_PHASE",
                                   "max_power_w": 22_000},
            "drivers": lambda: {"name": self.ref("driver")},
            "tokens": lambda: {"driver_id": parent("driver_id", "drivers"),
                               "uid": self.ref("RFID")},
            "vehicles": lambda: {"driver_id": parent("driver_id", "drivers"), "make": "Renault",
                                 "model": "Zoe"},
            "users": lambda: {"email": f"{self.ref('user')}@example.com", "password": PASSWORD,
                              "role": "operator_staff",
                              "driver_id": parent("driver_id", "drivers")
                              if fields.get("role") == "driver" else None},
            "tariffs": lambda: {"name": self.ref("tariff"), "document": SIMPLE_TARIFF},
            "tariff-assignments": lambda: {"tariff_id": parent("tariff_id", "tariffs"),
                                           "site_id": parent("site_id", "sites"),
                                           "valid_from": "2020-01-01T00:00:00Z"},
        }
        return {**defaults[collection](), **fields}

    def anonymous(self) -> Caller:
        return Caller(self.admin.client)

    def log_in(self, email: str, password: str = PASSWORD) -> Caller:
        response = self.anonymous().post("/auth/login", {
            "operator_id": self.operator_id, "email": email, "password": password})
        assert response.status_code == 200, response.text
        return Caller(self.admin.client, response.json()["token"])

    def caller(self, role: str, driver_id: str | None = None) -> Caller:
        """A logged-in user with ``role``; a driver user gets a new driver unless given one."""
        fields = {"driver_id": driver_id} if driver_id else {}
        return self.log_in(self.new("users", role=role, **fields)["email"])


@pytest.fixture(scope="session")
def open_tenant(random_ref: Callable[[str], str]) -> Callable[[FastAPI, TestClient], Tenant]:
    """``open_tenant(app, client)``: onboard a new operator the way the CLI does."""

    def open_(app: FastAPI, client: TestClient) -> Tenant:
        with app.state.engine.begin() as conn:
            new = create_operator(conn, name=random_ref("operator"), country_code="DE",
                                  party_id=next(_party_ids), currency="EUR",
                                  admin_email=f"{random_ref('admin')}@example.com",
                                  admin_password=PASSWORD)
        return Tenant(new.operator_id, Caller(client, new.api_key), random_ref)

    return open_


@pytest.fixture
def operator(open_tenant: Callable[[FastAPI, TestClient], Tenant], app: FastAPI,
             client: TestClient) -> Tenant:
    return open_tenant(app, client)


@pytest.fixture
def other_operator(open_tenant: Callable[[FastAPI, TestClient], Tenant], app: FastAPI,
                   client: TestClient) -> Tenant:
    """A second tenant, for cross-tenant checks."""
    return open_tenant(app, client)


@pytest.fixture
def admin(operator: Tenant) -> Caller:
    return operator.admin


@pytest.fixture
def anonymous(client: TestClient) -> Caller:
    return Caller(client)


# -- assertions -----------------------------------------------------------------------------------
ProblemCheck = Callable[[httpx.Response, int, str], dict[str, Any]]


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "code", "detail"} <= body.keys(), body
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"].endswith(f"/{code}") and body["title"] and body["detail"], body
    return body


@pytest.fixture(scope="session")
def problem() -> ProblemCheck:
    """``problem(response, 409, "in_use")``: an RFC 9457 problem with that status and code;
    returns its body."""
    return _problem
