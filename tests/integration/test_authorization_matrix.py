"""RELIABILITY S2, the authorization matrix: every /api/v1 route x every kind of caller.

The cells are generated from the app's route table. ``POLICY`` restates the documented policy
(docs/api.md, "Authentication and roles") and ``ROUTES`` says what each route does (read or
write, which resource, a valid body), so the test fails when a route's behaviour drifts from
the policy, and when a route is added without an entry here. Expected answers:

* anonymous: 401;
* a role the policy doesn't allow: 403;
* another operator's admin: 404 on every object (a record of another tenant is a missing
  record); on collections it acts in its own tenant, where the home tenant's records it names
  don't exist (``foreign_status``) and lists never show them;
* a driver: their own driver record, tokens and vehicles (another driver's answer 404), plus
  the public sites and tariffs;
* anything else the policy allows: 2xx; a list shows the record exactly to those who may see it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient  # conftest imported it first, hushing its warning
from sqlalchemy import insert

from evbilling.adapters.db import schema
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.entrypoints.api.app import create_app
from evbilling.entrypoints.api.limits import login_limiter

READ, WRITE = "read", "write"
STAFF = frozenset({"admin", "operator_staff"})
STAFF_AND_FINANCE = STAFF | {"finance"}
EVERYONE = STAFF_AND_FINANCE | {"driver"}
ADMIN = frozenset({"admin"})


@dataclass(frozen=True)
class Policy:
    read: frozenset[str]
    write: frozenset[str]
    driver_owned: bool = False  # a driver sees only their own records of this kind


POLICY = {
    "sites": Policy(read=EVERYONE, write=STAFF),
    "chargers": Policy(read=STAFF_AND_FINANCE, write=STAFF),
    "evses": Policy(read=STAFF_AND_FINANCE, write=STAFF),
    "connectors": Policy(read=STAFF_AND_FINANCE, write=STAFF),
    "tariff-assignments": Policy(read=STAFF_AND_FINANCE, write=STAFF),
    "tariffs": Policy(read=EVERYONE, write=STAFF),
    "drivers": Policy(read=EVERYONE, write=STAFF, driver_owned=True),
    "tokens": Policy(read=EVERYONE, write=STAFF, driver_owned=True),
    "vehicles": Policy(read=EVERYONE, write=STAFF | {"driver"}, driver_owned=True),
    "users": Policy(read=ADMIN, write=ADMIN),
    "api-keys": Policy(read=ADMIN, write=ADMIN),
    "quotes": Policy(read=EVERYONE, write=frozenset()),
    "plans": Policy(read=EVERYONE, write=STAFF),
    "promotions": Policy(read=STAFF_AND_FINANCE, write=STAFF),
    "loyalty-tiers": Policy(read=EVERYONE, write=STAFF),
    "driver-plans": Policy(read=EVERYONE, write=STAFF | {"driver"}, driver_owned=True),
    "plan-advisor": Policy(read=EVERYONE, write=frozenset()),
    "sessions": Policy(read=EVERYONE, write=STAFF | {"driver"}, driver_owned=True),
    "notifications": Policy(read=EVERYONE, write=EVERYONE, driver_owned=True),
    "notification-rules": Policy(read=EVERYONE, write=STAFF | {"driver"}, driver_owned=True),
    "webhook-endpoints": Policy(read=STAFF, write=STAFF),
    "wallets": Policy(read=EVERYONE, write=STAFF, driver_owned=True),
    "fleet-accounts": Policy(read=STAFF_AND_FINANCE, write=frozenset()),
    "me": Policy(read=EVERYONE, write=EVERYONE),  # who am I, log out
    "public": Policy(read=frozenset(), write=frozenset()),  # log in: tested in test_api_access
}


@dataclass(frozen=True)
class World:
    """Built once per module and backend: the home operator with a user per staff role and a
    driver user, and another operator."""

    home: Any  # Tenant
    away: Any  # Tenant
    emails: dict[str, str]  # admin, operator_staff, finance, other_driver -> e-mail
    quote_site_id: str
    engine: Any  # for records no API creates (charging sessions come from chargers)


@dataclass(frozen=True)
class Route:
    resource: str
    access: str
    body: Callable[[World], Any] | None = None
    #: a collection route whose body names the home tenant's records: the other operator's status
    foreign_status: int | None = None
    #: the answer an allowed caller gets when the business outcome is not a 2xx (e.g. a remote
    #: stop with no charger connected: 409); None = any 2xx
    allowed_status: int | None = None
    #: query parameters for every call (e.g. to end a stream)
    params: dict[str, Any] | None = None
    #: headers for every call (e.g. a fresh Idempotency-Key)
    headers: Callable[[], dict[str, str]] | None = None


SIMPLE_TARIFF = {"country_code": "DE", "party_id": "EVB", "id": "m", "currency": "EUR",
                 "elements": [{"price_components": [{"type": "ENERGY", "price": "0.30",
                                                     "step_size": 1}]}]}


def crud(resource: str, *, change: dict[str, Any] | None = None, deletable: bool = True,
         foreign_status: int | None = None) -> dict[tuple[str, str], Route]:
    path = f"/api/v1/{resource}"
    routes = {
        ("GET", path): Route(resource, READ),
        ("POST", path): Route(resource, WRITE, lambda w: w.home.body(resource), foreign_status),
        ("GET", path + "/{row_id}"): Route(resource, READ),
    }
    if change is not None:
        routes["PATCH", path + "/{row_id}"] = Route(resource, WRITE, lambda w: change)
    if deletable:
        routes["DELETE", path + "/{row_id}"] = Route(resource, WRITE)
    return routes


def quote_body(world: World) -> dict[str, Any]:
    return {"site_id": world.quote_site_id, "start_at": "2025-03-03T10:00:00Z",
            "energy_kwh": "10", "charging_minutes": "60"}


_tier_thresholds = itertools.count(1)
#: Valid create bodies of plans, promotions and loyalty tiers (tiers need distinct names and
#: thresholds within one operator).
CATALOG_BODIES: dict[str, Callable[[World], dict[str, Any]]] = {
    "plans": lambda w: {"kind": "pay_per_use", "name": w.home.ref("plan")},
    "promotions": lambda w: {"name": w.home.ref("promo"), "starts_at": "2025-01-01T00:00:00Z",
                             "benefit": {"kind": "percent_off_energy", "percent": "10"}},
    "loyalty-tiers": lambda w: {"name": w.home.ref("tier"),
                                "min_energy_kwh": str(next(_tier_thresholds))},
}


def catalog_routes(resource: str, change: dict[str, Any], *, deletable: bool = True,
                   versions: bool = False) -> dict[tuple[str, str], Route]:
    path = f"/api/v1/{resource}"
    routes = {
        ("GET", path): Route(resource, READ),
        ("POST", path): Route(resource, WRITE, CATALOG_BODIES[resource]),
        ("GET", path + "/{row_id}"): Route(resource, READ),
        ("PATCH", path + "/{row_id}"): Route(resource, WRITE, lambda w: change),
    }
    if deletable:
        routes["DELETE", path + "/{row_id}"] = Route(resource, WRITE)
    if versions:
        routes["GET", path + "/{row_id}/versions"] = Route(resource, READ)
    return routes


def advisor_body(world: World) -> dict[str, Any]:
    return {"site_id": world.quote_site_id, "usage_profile": {
        "energy_kwh_per_month": "100", "sessions_per_month": 4, "charging_minutes_avg": 60}}


ROUTES: dict[tuple[str, str], Route] = {
    **crud("sites", change={"name": "Renamed"}),
    **crud("chargers", change={"vendor": "ABB"}, foreign_status=422),
    **crud("evses", foreign_status=422),
    **crud("connectors", change={"max_power_w": 11_000}, foreign_status=422),
    **crud("tariff-assignments", change={"valid_to": "2030-01-01T00:00:00Z"},
           foreign_status=422),
    **crud("drivers", change={"fleet_account": "ACME"}),
    **crud("tokens", change={"status": "BLOCKED"}, foreign_status=422),
    **crud("vehicles", change={"model": "Megane"}, foreign_status=422),
    **crud("users", change={"disabled": False}, deletable=False),
    ("GET", "/api/v1/tariffs"): Route("tariffs", READ),
    ("POST", "/api/v1/tariffs"): Route("tariffs", WRITE, lambda w: w.home.body("tariffs")),
    ("GET", "/api/v1/tariffs/{tariff_id}"): Route("tariffs", READ),
    ("GET", "/api/v1/tariffs/{tariff_id}/versions"): Route("tariffs", READ),
    ("POST", "/api/v1/tariffs/{tariff_id}/versions"):
        Route("tariffs", WRITE, lambda w: {"document": SIMPLE_TARIFF}),
    ("PUT", "/api/v1/tariffs/{tariff_id}/versions/{version}"):
        Route("tariffs", WRITE, lambda w: {"document": SIMPLE_TARIFF}),
    ("GET", "/api/v1/api-keys"): Route("api-keys", READ),
    ("POST", "/api/v1/api-keys"): Route("api-keys", WRITE, lambda w: {"name": "integration"}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): Route("api-keys", WRITE),
    ("POST", "/api/v1/quotes"): Route("quotes", READ, quote_body, foreign_status=404),
    **catalog_routes("plans", {"name": "Renamed"}, deletable=False, versions=True),
    **catalog_routes("promotions", {"priority": 5}),
    **catalog_routes("loyalty-tiers", {"window_days": 90}),
    ("GET", "/api/v1/drivers/{row_id}/plan"): Route("driver-plans", READ),
    ("POST", "/api/v1/drivers/{row_id}/plan"): Route("driver-plans", WRITE, lambda w: {
        "plan_id": w.home.admin.create("plans", CATALOG_BODIES["plans"](w))["id"],
        "effective": "now"}),
    ("POST", "/api/v1/plan-advisor"): Route("plan-advisor", READ, advisor_body,
                                            foreign_status=404),
    ("GET", "/api/v1/sessions"): Route("sessions", READ),
    ("GET", "/api/v1/sessions/{session_id}"): Route("sessions", READ),
    ("PUT", "/api/v1/sessions/{session_id}/cap"):
        Route("sessions", WRITE, lambda w: {"cap_minor": 1500, "cap_kwh": "20"}),
    ("POST", "/api/v1/sessions/{session_id}/stop"): Route("sessions", WRITE,
                                                          allowed_status=409),
    ("GET", "/api/v1/sessions/{session_id}/live"): Route("sessions", READ,
                                                         params={"max_events": 1}),
    ("GET", "/api/v1/notifications"): Route("notifications", READ),
    ("GET", "/api/v1/notifications/{row_id}"): Route("notifications", READ),
    ("POST", "/api/v1/notifications/{row_id}/read"): Route("notifications", WRITE),
    ("GET", "/api/v1/notification-rules"): Route("notification-rules", READ),
    ("POST", "/api/v1/notification-rules"): Route("notification-rules", WRITE, lambda w: {
        "event": "session.cost_threshold", "amount_minor": 500, "channels": ["in_app"]}),
    ("GET", "/api/v1/notification-rules/{row_id}"): Route("notification-rules", READ),
    ("PATCH", "/api/v1/notification-rules/{row_id}"): Route("notification-rules", WRITE,
                                                            lambda w: {"active": False}),
    ("DELETE", "/api/v1/notification-rules/{row_id}"): Route("notification-rules", WRITE),
    ("GET", "/api/v1/webhook-endpoints"): Route("webhook-endpoints", READ),
    ("POST", "/api/v1/webhook-endpoints"): Route("webhook-endpoints", WRITE, lambda w: {
        "url": "https://example.com/hooks"}),
    ("GET", "/api/v1/webhook-endpoints/{row_id}"): Route("webhook-endpoints", READ),
    ("PATCH", "/api/v1/webhook-endpoints/{row_id}"): Route("webhook-endpoints", WRITE,
                                                           lambda w: {"active": False}),
    ("DELETE", "/api/v1/webhook-endpoints/{row_id}"): Route("webhook-endpoints", WRITE),
    ("GET", "/api/v1/drivers/{row_id}/wallet"): Route("wallets", READ),
    ("POST", "/api/v1/drivers/{row_id}/wallet/top-ups"): Route(
        "wallets", WRITE, lambda w: {"amount_minor": 1000, "reference": "matrix"},
        headers=lambda: {"Idempotency-Key": new_id("key")}),
    ("GET", "/api/v1/fleet-accounts"): Route("fleet-accounts", READ),
    ("GET", "/api/v1/fleet-accounts/{account}/statements/{month}"):
        Route("fleet-accounts", READ),
    ("GET", "/api/v1/me"): Route("me", READ),
    ("POST", "/api/v1/auth/logout"): Route("me", WRITE),
    ("POST", "/api/v1/auth/login"): Route("public", WRITE),
}

ROLE_OF = {"owner": "driver", "other_driver": "driver", "admin": "admin",
           "operator_staff": "operator_staff", "finance": "finance",
           "other_operator": "admin", "anonymous": None}


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every /api/v1 route of the real app."""
    app = create_app("sqlite://")
    app.state.engine.dispose()
    # FastAPI >= 0.160 keeps included routers nested; iter_route_contexts flattens them.
    routes = getattr(fastapi.routing, "iter_route_contexts", iter)(app.routes)
    return sorted((method, route.path) for route in routes
                  if (route.path or "").startswith("/api/v1")
                  for method in route.methods or ())


def callers(method: str, path: str) -> list[str]:
    route = ROUTES.get((method, path))
    if route is None:
        return ["anyone"]  # fails: the route needs an entry in ROUTES
    if route.resource == "public":
        return []
    owned = POLICY[route.resource].driver_owned
    return [c for c in ROLE_OF if c != "owner" or owned]


CELLS = [(method, path, caller) for method, path in api_routes()
         for caller in callers(method, path)]


def expected_status(method: str, path: str, caller: str) -> int | None:
    """The status the policy gives ``caller`` on this route; None: any 2xx."""
    route, role = ROUTES[method, path], ROLE_OF[caller]
    policy = POLICY[route.resource]
    if role is None:
        return 401
    if role not in (policy.read if route.access == READ else policy.write):
        return 403
    is_object = "{" in path
    if caller == "other_operator":
        return 404 if is_object else route.foreign_status
    if caller == "other_driver" and policy.driver_owned and is_object:
        return 404
    return None


def can_see_target(route: Route, caller: str) -> bool:
    policy = POLICY[route.resource]
    return caller != "other_operator" and not (caller == "other_driver" and policy.driver_owned)


# -- the world and the target of each cell --------------------------------------------------------
@pytest.fixture(scope="module")
def world(served_app, open_tenant) -> Iterator[World]:
    with TestClient(served_app) as client:
        home, away = open_tenant(served_app, client), open_tenant(served_app, client)
        emails = {role: home.new("users", role=role)["email"]
                  for role in ("admin", "operator_staff", "finance")}
        emails["other_driver"] = home.new("users", role="driver")["email"]
        site = home.new("sites")
        home.new("tariff-assignments", site_id=site["id"])
        yield World(home, away, emails, site["id"], served_app.state.engine)


def new_target(world: World, resource: str) -> tuple[dict[str, Any] | None, str | None]:
    """A record of the home operator, and the driver who owns it (if drivers own this kind)."""
    home = world.home
    owner = home.new("drivers")["id"] if POLICY[resource].driver_owned else None
    if resource == "drivers":
        return {"id": owner}, owner
    if resource in ("tokens", "vehicles"):
        return home.new(resource, driver_id=owner), owner
    if resource == "chargers":
        return home.new("chargers", security_profile=3), None
    if resource == "users":
        return home.new("users", role="finance"), None
    if resource == "api-keys":
        return home.admin.create("api-keys", {"name": "target"}), None
    if resource in ("me", "quotes", "public"):
        return None, None
    if resource in ("driver-plans", "wallets"):
        return {"id": owner}, owner
    if resource == "fleet-accounts":
        name = home.ref("fleet")
        home.new("drivers", fleet_account=name)
        return {"id": name}, None
    if resource == "plan-advisor":
        return None, None
    if resource == "sessions":
        return {"id": active_session(world, owner)}, owner
    if resource == "notifications":
        return {"id": notification(world, owner)}, owner
    if resource == "notification-rules":
        return home.admin.create(resource, {"event": "session.started", "driver_id": owner,
                                            "channels": ["in_app", "email"]}), owner
    if resource == "webhook-endpoints":
        return home.admin.create(resource, {"url": "https://example.com/hooks"}), None
    if resource in CATALOG_BODIES:
        return home.admin.create(resource, CATALOG_BODIES[resource](world)), None
    return home.new(resource), None


def active_session(world: World, driver_id: str | None) -> str:
    """An active charging session of ``driver_id`` at the home tenant's quote site."""
    session_id = new_id("cs")
    with write_transaction(world.engine) as conn:
        conn.execute(insert(schema.charging_sessions).values(
            id=session_id, operator_id=world.home.operator_id, driver_id=driver_id,
            site_id=world.quote_site_id, started_at=dt.datetime.now(dt.UTC), energy_milliwh=0,
            periods=[], currency="EUR", status="active", created_at=dt.datetime.now(dt.UTC)))
    return session_id


def notification(world: World, driver_id: str | None) -> str:
    """An in-app notification for ``driver_id`` (notifications come from events, not the API)."""
    notification_id = new_id("ntf")
    with write_transaction(world.engine) as conn:
        conn.execute(insert(schema.notifications).values(
            id=notification_id, operator_id=world.home.operator_id, driver_id=driver_id,
            event="session.started", title="Charging started", body="Charging started.",
            payload={"id": "evt_x", "type": "session.started", "created": 0, "data": {},
                     "in_app": True}, created_at=dt.datetime.now(dt.UTC)))
    return notification_id


@pytest.fixture(scope="module")
def shared_target(world) -> Callable[[str], tuple[dict[str, Any] | None, str | None]]:
    """One record per kind for the cells that don't change it (reads, lists, creates)."""
    cache: dict[str, tuple[dict[str, Any] | None, str | None]] = {}

    def target(resource: str) -> tuple[dict[str, Any] | None, str | None]:
        if resource not in cache:
            cache[resource] = new_target(world, resource)
        return cache[resource]

    return target


@pytest.fixture(scope="module")
def session_of(world) -> Callable[[str, str | None, bool], Any]:
    """``session_of(caller, owner_driver_id, fresh)``: a caller, logged in once per module
    unless ``fresh`` (logging out revokes the session)."""
    cache: dict[tuple[str, str | None], Any] = {}

    def log_in(caller: str, owner: str | None) -> Any:
        if caller == "anonymous":
            return world.home.anonymous()
        if caller == "other_operator":
            return world.away.admin
        login_limiter.reset()  # other modules' failed log-ins must not lock this client out
        if caller == "owner":
            return world.home.caller("driver", driver_id=owner)
        return world.home.log_in(world.emails[caller])

    def session(caller: str, owner: str | None, fresh: bool) -> Any:
        if fresh:
            return log_in(caller, owner)
        key = (caller, owner if caller == "owner" else None)
        if key not in cache:
            cache[key] = log_in(caller, owner)
        return cache[key]

    return session


# -- the tests ------------------------------------------------------------------------------------
def test_every_api_route_has_an_entry_in_the_matrix():
    assert set(ROUTES) == set(api_routes())


def test_the_log_in_route_needs_no_token(world):
    user = world.home.new("users")
    response = world.home.anonymous().post("/auth/login", {
        "operator_id": world.home.operator_id, "email": user["email"],
        "password": "correct horse battery"})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("method, path, caller", CELLS,
                         ids=[f"{m} {p.removeprefix('/api/v1')} as {c}" for m, p, c in CELLS])
def test_only_the_allowed_callers_get_a_2xx(world, shared_target, session_of, method, path,
                                            caller):
    route = ROUTES.get((method, path))
    assert route is not None, f"{method} {path}: add the route to ROUTES with its policy"
    is_list = method == "GET" and "{" not in path
    changes_target = route.access == WRITE and "{" in path
    target, owner = (new_target(world, route.resource) if changes_target
                     else shared_target(route.resource))
    who = session_of(caller, owner, path.endswith("/logout"))
    target_id = target["id"] if target else ""
    url = path.removeprefix("/api/v1").format(row_id=target_id, tariff_id=target_id,
                                              key_id=target_id, session_id=target_id,
                                              account=target_id, version=1, month="2026-11")
    # lists are sorted by id: start just before the target so it is on the first page
    params = {"limit": 100, "starting_after": target_id[:-1]} if is_list and target else None
    if route.params:
        params = {**(params or {}), **route.params}

    response = who.request(method, url, json=route.body(world) if route.body else None,
                           params=params, headers=route.headers() if route.headers else None)

    expected = expected_status(method, path, caller)
    if expected is not None:
        assert response.status_code == expected, response.text
        return
    if route.allowed_status is not None:
        assert response.status_code == route.allowed_status, response.text
        return
    assert 200 <= response.status_code < 300, response.text
    if is_list and target:
        assert (target_id in response.text) == can_see_target(route, caller), response.text
