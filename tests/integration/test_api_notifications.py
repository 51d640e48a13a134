"""Notification rules, webhook endpoints and the in-app list over the API, on SQLite and
PostgreSQL, with events published into a real NotificationService and stored in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from evbilling.adapters.db import schema
from evbilling.adapters.notify.hub import LiveHub
from evbilling.adapters.notify.store import SqlNotificationStore
from evbilling.domain.events import Event
from evbilling.services.notifications import NotificationService
from notify_events import SessionEvents, charger_faulted


def deliver(service: NotificationService, events: Iterable[Event]) -> None:
    """Start the service, publish, wait until everything is stored, stop."""

    async def scenario() -> None:
        await service.start()
        try:
            for event in events:
                service.publish(event)
            await service.flush()
        finally:
            await service.stop()

    asyncio.run(scenario())


def fresh_service(engine: Engine) -> NotificationService:
    """A service of its own (a process restarted: no memory of earlier events)."""
    return NotificationService(SqlNotificationStore(engine), LiveHub(), batch_delay_s=0)


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# -- rules -------------------------------------------------------------------------------------
def test_a_driver_creates_rules_for_themselves_only(operator):
    other = operator.new("drivers")
    driver = operator.caller("driver")

    rule = driver.create("notification-rules", {
        "event": "session.cost_threshold", "amount_minor": 500, "channels": ["in_app", "email"],
        "driver_id": other["id"]})

    me = driver.get("/me").json()
    assert rule["driver_id"] == me["driver_id"] != other["id"]
    assert (rule["event"], rule["amount_minor"], rule["active"]) == (
        "session.cost_threshold", 500, True)


def test_staff_create_operator_wide_rules_and_rules_for_a_driver(operator):
    staff = operator.caller("operator_staff")
    driver = operator.new("drivers")

    wide = staff.create("notification-rules", {"event": "charger.faulted",
                                               "channels": ["email", "webhook"]})
    own = staff.create("notification-rules", {"event": "session.idle_fee_soon", "minutes": 10,
                                              "channels": ["in_app"], "driver_id": driver["id"]})

    assert wide["driver_id"] is None and own["driver_id"] == driver["id"]
    listed = staff.get("/notification-rules", params={"driver_id": driver["id"]}).json()
    assert [r["id"] for r in listed["data"]] == [own["id"]]


@pytest.mark.parametrize("body, field", [
    ({"event": "session.cost_threshold", "channels": ["in_app"]}, "amount_minor"),
    ({"event": "session.started", "channels": ["in_app"], "minutes": 5}, "minutes"),
    ({"event": "session.idle_fee_soon", "channels": ["in_app", "in_app"], "minutes": 5},
     "channels"),
])
def test_a_rule_that_cannot_work_is_refused_naming_the_field(admin, problem, body, field):
    body = problem(admin.post("/notification-rules", body), 422, "invalid_notification_rule")

    assert body["field"] == field


def test_webhooks_and_charger_faults_are_the_operators_not_a_drivers(operator, problem):
    driver = operator.caller("driver")

    webhook = problem(driver.post("/notification-rules", {
        "event": "session.started", "channels": ["webhook"]}), 422,
        "invalid_notification_rule")
    fault = problem(driver.post("/notification-rules", {
        "event": "charger.faulted", "channels": ["in_app"]}), 422, "invalid_notification_rule")

    assert (webhook["field"], fault["field"]) == ("channels", "event")


def test_a_change_is_checked_against_the_stored_rule(admin, problem):
    rule = admin.create("notification-rules", {"event": "session.cost_threshold",
                                               "amount_minor": 500, "channels": ["in_app"]})

    changed = admin.patch(f"/notification-rules/{rule['id']}", {"amount_minor": 1000})
    refused = problem(admin.patch(f"/notification-rules/{rule['id']}", {"minutes": 5}), 422,
                      "invalid_notification_rule")

    assert changed.status_code == 200 and changed.json()["amount_minor"] == 1000
    assert refused["field"] == "minutes"


def test_a_driver_sees_only_their_own_rules(operator):
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["in_app"]})
    driver = operator.caller("driver")
    own = driver.create("notification-rules", {"event": "session.ended", "channels": ["email"]})

    listed = driver.get("/notification-rules").json()["data"]

    assert [r["id"] for r in listed] == [own["id"]]


def test_a_rule_for_another_operators_driver_is_an_unknown_reference(operator, other_operator,
                                                                     problem):
    foreign = other_operator.new("drivers")

    body = problem(operator.admin.post("/notification-rules", {
        "event": "session.started", "channels": ["in_app"], "driver_id": foreign["id"]}),
        422, "unknown_reference")

    assert body["field"] == "driver_id"


# -- webhook endpoints -------------------------------------------------------------------------
def test_the_signing_secret_is_shown_once(admin, engine):
    created = admin.create("webhook-endpoints", {"url": "https://example.com/hooks",
                                                 "events": ["session.ended", "charger.faulted"]})

    listed = admin.get("/webhook-endpoints").json()["data"]
    one = admin.get(f"/webhook-endpoints/{created['id']}").json()

    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["charger.faulted", "session.ended"]
    assert "secret" not in one and all("secret" not in e for e in listed)
    assert created["secret"] not in admin.get("/webhook-endpoints").text
    with engine.connect() as conn:
        stored = conn.execute(select(schema.webhook_endpoints.c.secret)).scalar_one()
    assert stored == created["secret"]


def test_an_endpoint_can_be_changed_and_deleted(admin, problem):
    created = admin.create("webhook-endpoints", {"url": "https://example.com/a"})

    changed = admin.patch(f"/webhook-endpoints/{created['id']}",
                          {"url": "https://example.com/b", "active": False, "events": ["*"]})
    deleted = admin.delete(f"/webhook-endpoints/{created['id']}")

    assert changed.json()["url"] == "https://example.com/b" and not changed.json()["active"]
    assert deleted.status_code == 204
    problem(admin.get(f"/webhook-endpoints/{created['id']}"), 404, "not_found")


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/hooks"}, "url"),
    ({"url": "https://user:pw@example.com/hooks"}, "url"),
    ({"url": "https://example.com/hooks", "events": ["session.ended", "session.ended"]},
     "events"),
])
def test_a_bad_endpoint_is_refused_naming_the_field(admin, problem, body, field):
    assert problem(admin.post("/webhook-endpoints", body), 422,
                   "validation_error")["field"] == field


def test_an_unknown_event_name_is_refused(admin, problem):
    problem(admin.post("/webhook-endpoints", {"url": "https://example.com/h",
                                              "events": ["session.cost_updated"]}),
            422, "validation_error")


# -- the in-app list ---------------------------------------------------------------------------
def test_drivers_list_their_own_notifications_and_staff_the_operators(operator, engine):
    admin = operator.admin
    alice, bob = operator.new("drivers"), operator.new("drivers")
    admin.create("notification-rules", {"event": "session.started", "channels": ["in_app"]})
    admin.create("notification-rules", {"event": "charger.faulted", "channels": ["in_app"]})
    admin.create("notification-rules", {"event": "session.ended", "channels": ["webhook"]})
    a, b = SessionEvents(operator.operator_id, alice["id"]), SessionEvents(
        operator.operator_id, bob["id"])

    deliver(fresh_service(engine), [a.started(), b.started(), a.ended(), b.ended(),
                                    charger_faulted(operator.operator_id)])

    as_alice = operator.caller("driver", driver_id=alice["id"])
    mine = as_alice.get("/notifications").json()["data"]
    everything = operator.caller("operator_staff").get("/notifications").json()["data"]
    assert [(n["event"], n["session_id"]) for n in mine] == [("session.started", a.session_id)]
    assert mine[0]["title"] == "Charging started" and mine[0]["read_at"] is None
    assert mine[0]["event_id"] == a.started().event_id
    assert sorted(n["event"] for n in everything) == [
        "charger.faulted", "session.started", "session.started"]  # webhook-only: not listed
    assert count(engine, schema.notifications) == 5


def test_a_notification_is_marked_read_once(operator, engine, problem):
    driver = operator.new("drivers")
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["in_app"]})
    deliver(fresh_service(engine), [SessionEvents(operator.operator_id, driver["id"]).started()])
    caller = operator.caller("driver", driver_id=driver["id"])
    [notification] = caller.get("/notifications", params={"unread": True}).json()["data"]

    first = caller.post(f"/notifications/{notification['id']}/read").json()
    again = caller.post(f"/notifications/{notification['id']}/read").json()

    assert first["read_at"] is not None and again["read_at"] == first["read_at"]
    assert caller.get("/notifications", params={"unread": True}).json()["data"] == []
    other = operator.caller("driver")
    problem(other.post(f"/notifications/{notification['id']}/read"), 404, "not_found")


def test_notifications_page_in_time_order(operator, engine):
    driver = operator.new("drivers")
    operator.admin.create("notification-rules", {"event": "session.cost_threshold",
                                                 "amount_minor": 100, "channels": ["in_app"]})
    events = SessionEvents(operator.operator_id, driver["id"])
    start = dt.datetime.now(dt.UTC)
    deliver(fresh_service(engine), [events.cost(100 * n, at=start + dt.timedelta(seconds=n))
                                    for n in range(1, 6)])
    caller = operator.caller("driver", driver_id=driver["id"])

    first = caller.get("/notifications", params={"limit": 2}).json()
    rest = caller.get("/notifications", params={"limit": 10,
                                                "starting_after": first["next_cursor"]}).json()

    assert first["has_more"] and not rest["has_more"]
    thresholds = [n["data"]["threshold_minor"] for n in first["data"] + rest["data"]]
    assert thresholds == [100, 200, 300, 400, 500]


def test_a_replayed_stream_stores_nothing_new(operator, engine):
    driver = operator.new("drivers", email="driver@example.com")
    operator.admin.create("notification-rules", {
        "event": "session.cost_threshold", "amount_minor": 500, "channels": ["in_app", "email"],
        "driver_id": driver["id"]})
    operator.admin.create("notification-rules", {"event": "session.ended",
                                                 "channels": ["in_app", "email"]})
    events = SessionEvents(operator.operator_id, driver["id"])
    stream = [events.started(), events.cost(300), events.cost(700), events.cost(1_200),
              events.ended()]

    deliver(fresh_service(engine), stream)
    stored = (count(engine, schema.notifications), count(engine, schema.deliveries))
    deliver(fresh_service(engine), stream)  # after a restart: no memory, same ids

    assert stored == (3, 3)  # 5.00, 10.00, ended; each with one e-mail
    assert (count(engine, schema.notifications), count(engine, schema.deliveries)) == stored


def test_a_rule_written_through_the_api_applies_to_the_next_event(app, operator, engine):
    service: NotificationService = app.state.notifications
    driver = operator.new("drivers")
    events = [SessionEvents(operator.operator_id, driver["id"]) for _ in range(2)]
    original_ttl = service.rules_ttl_s
    service.rules_ttl_s = 3600  # only the invalidation can make the new rule visible

    async def scenario() -> None:
        await service.start()
        try:
            service.publish(events[0].started())
            await service.flush()
            operator.admin.create("notification-rules", {"event": "session.started",
                                                         "channels": ["in_app"]})
            service.publish(events[1].started())
            await service.flush()
        finally:
            await service.stop()

    try:
        asyncio.run(scenario())
    finally:
        service.rules_ttl_s = original_ttl

    with engine.connect() as conn:
        sessions = conn.execute(select(schema.notifications.c.session_id)).scalars().all()
    assert sessions == [events[1].session_id]
