"""Notification rules, notifications and the delivery outbox in the database.

``save`` writes a batch of planned notifications and their deliveries in ONE transaction with
``INSERT ... ON CONFLICT DO NOTHING``: ids are derived from the event, so a replay adds nothing
(the notification by primary key, each delivery by ``uq_deliveries_target``). Delivery targets
are resolved here, off the hot path: the driver's e-mail address, the operator's admin and staff
addresses (for notifications addressed to the operator), the operator's active webhook endpoints
that subscribe to the event (``events`` lists names, or ``["*"]``).

``claim_due`` hands out due deliveries with a lease: a conditional UPDATE moves
``next_attempt_at`` past the lease only if the row is still due and unchanged, so two workers
(threads or processes) never both claim one. A worker that dies mid-send leaves the lease to
expire; the delivery is then sent again (at least once; receivers deduplicate by event id).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.notification_rules import (
    PlannedNotification,
    Rule,
    delivery_id,
    describe,
    envelope,
)
from evbilling.services.notifications import DueDelivery

STAFF_RECIPIENTS_MAX = 20  # e-mails per operator notification
STAFF_ROLES = ("admin", "operator_staff")
ENVELOPE_KEYS = ("id", "type", "created", "data")


def _insert_ignoring_duplicates(conn: Connection, table: Table) -> Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no INSERT ... ON CONFLICT DO NOTHING for {conn.dialect.name}")


def rule_of(row: Any) -> Rule:
    return Rule(rule_id=row.id, operator_id=row.operator_id, driver_id=row.driver_id,
                event=row.event, channels=frozenset(row.channels or ()),
                amount_minor=row.amount_minor, minutes=row.minutes, active=bool(row.active))


class SqlNotificationStore:
    """``services.notifications.NotificationStore`` and ``DeliveryStore`` on SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- rules ---------------------------------------------------------------------------------
    def load_rules(self, operator_id: str) -> list[Rule]:
        r = s.notification_rules
        with self.engine.connect() as conn:
            rows = conn.execute(select(r).where(r.c.operator_id == operator_id)
                                .order_by(r.c.id)).all()
        return [rule_of(row) for row in rows]

    # -- notifications and their deliveries ----------------------------------------------------
    def save(self, batch: Sequence[PlannedNotification], now: dt.datetime) -> int:
        if not batch:
            return 0
        with write_transaction(self.engine) as conn:
            notifications = [_notification_row(p, now) for p in batch]
            conn.execute(_insert_ignoring_duplicates(conn, s.notifications), notifications)
            deliveries = self._deliveries(conn, batch, now)
            if deliveries:
                conn.execute(_insert_ignoring_duplicates(conn, s.deliveries), deliveries)
        return len(deliveries)

    def _deliveries(self, conn: Connection, batch: Sequence[PlannedNotification],
                    now: dt.datetime) -> list[dict[str, Any]]:
        driver_ids = {p.driver_id for p in batch if p.email and p.driver_id is not None}
        staff_of = {p.event.operator_id for p in batch if p.email and p.driver_id is None}
        hooks_of = {p.event.operator_id for p in batch if p.webhook}
        emails: dict[str, str] = {}
        if driver_ids:
            d = s.drivers
            emails = {row.id: row.email for row in conn.execute(
                select(d.c.id, d.c.email).where(d.c.id.in_(driver_ids),
                                                d.c.email.is_not(None)))}
        staff: dict[str, list[str]] = {}
        if staff_of:
            u = s.users
            for user in conn.execute(select(u.c.operator_id, u.c.email).where(
                    u.c.operator_id.in_(staff_of), u.c.role.in_(STAFF_ROLES),
                    u.c.disabled.is_(False)).order_by(u.c.id)):
                addresses = staff.setdefault(user.operator_id, [])
                if len(addresses) < STAFF_RECIPIENTS_MAX:
                    addresses.append(user.email)
        hooks: dict[str, list[tuple[str, list[str]]]] = {}
        if hooks_of:
            w = s.webhook_endpoints
            for hook in conn.execute(select(w.c.id, w.c.operator_id, w.c.events).where(
                    w.c.operator_id.in_(hooks_of), w.c.active.is_(True)).order_by(w.c.id)):
                hooks.setdefault(hook.operator_id, []).append((hook.id, list(hook.events or ())))
        rows: list[dict[str, Any]] = []

        def add(p: PlannedNotification, channel: str, target: str) -> None:
            rows.append({"id": delivery_id(p.notification_id, channel, target),
                         "operator_id": p.event.operator_id,
                         "notification_id": p.notification_id, "channel": channel,
                         "target": target, "status": "pending", "attempts": 0,
                         "next_attempt_at": now, "last_error": None, "delivered_at": None,
                         "created_at": now})

        for p in batch:
            if p.email:
                if p.driver_id is not None:
                    if emails.get(p.driver_id):
                        add(p, "email", emails[p.driver_id])
                else:
                    for address in staff.get(p.event.operator_id, ()):
                        add(p, "email", address)
            if p.webhook:
                for endpoint_id, events in hooks.get(p.event.operator_id, ()):
                    if "*" in events or p.event.name in events:
                        add(p, "webhook", endpoint_id)
        return rows

    # -- the outbox ----------------------------------------------------------------------------
    def claim_due(self, now: dt.datetime, limit: int,
                  lease_until: dt.datetime) -> list[DueDelivery]:
        d, n, w = s.deliveries, s.notifications, s.webhook_endpoints
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(d.c.id, d.c.attempts).where(d.c.status == "pending",
                                                   d.c.next_attempt_at <= now)
                .order_by(d.c.next_attempt_at, d.c.id).limit(limit)).all()
        if not candidates:
            return []
        with write_transaction(self.engine) as conn:
            claimed = [row.id for row in candidates if conn.execute(
                update(d).where(d.c.id == row.id, d.c.status == "pending",
                                d.c.attempts == row.attempts, d.c.next_attempt_at <= now)
                .values(next_attempt_at=lease_until)).rowcount == 1]
            if not claimed:
                return []
            rows = conn.execute(
                select(d.c.id, d.c.operator_id, d.c.notification_id, d.c.channel, d.c.target,
                       d.c.attempts, n.c.title, n.c.body, n.c.payload)
                .join(n, n.c.id == d.c.notification_id)
                .where(d.c.id.in_(claimed)).order_by(d.c.id)).all()
            endpoint_ids = {row.target for row in rows if row.channel == "webhook"}
            endpoints = {(row.operator_id, row.id): (row.url, row.secret)
                         for row in conn.execute(select(w.c.id, w.c.operator_id, w.c.url,
                                                        w.c.secret).where(
                             w.c.id.in_(endpoint_ids), w.c.active.is_(True)))
                         } if endpoint_ids else {}
        due: list[DueDelivery] = []
        for row in rows:
            url, secret = endpoints.get((row.operator_id, row.target), (None, None))
            payload = row.payload or {}
            due.append(DueDelivery(
                delivery_id=row.id, operator_id=row.operator_id,
                notification_id=row.notification_id, channel=row.channel, target=row.target,
                attempts=row.attempts, title=row.title, body=row.body,
                envelope={k: payload.get(k) for k in ENVELOPE_KEYS},
                webhook_url=url if row.channel == "webhook" else None,
                webhook_secret=secret if row.channel == "webhook" else None))
        return due

    def finish(self, delivery_id: str, *, status: str, attempts: int,
               next_attempt_at: dt.datetime | None, last_error: str | None,
               delivered_at: dt.datetime | None) -> None:
        d = s.deliveries
        with write_transaction(self.engine) as conn:
            conn.execute(update(d).where(d.c.id == delivery_id).values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_at,
                last_error=None if last_error is None else last_error[:1000],
                delivered_at=delivered_at))


def _notification_row(p: PlannedNotification, now: dt.datetime) -> dict[str, Any]:
    event = p.event
    title, body = describe(event)
    return {"id": p.notification_id, "operator_id": event.operator_id, "driver_id": p.driver_id,
            "session_id": getattr(event, "session_id", None),
            "charger_id": getattr(event, "charger_id", None), "event": event.name,
            "title": title[:200], "body": body,
            "payload": {**envelope(event), "in_app": p.in_app, "rule_id": p.rule_id,
                        "channels": [c for c, on in (("in_app", p.in_app), ("email", p.email),
                                                     ("webhook", p.webhook)) if on]},
            "read_at": None, "created_at": now}
