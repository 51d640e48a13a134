"""Deliveries end to end on SQLite and PostgreSQL: a REAL local SMTP server (aiosmtpd) and a REAL
local HTTP receiver (asyncio, on a free port), the delivery worker on a fake clock so back-off
takes no time."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select

from evbilling.adapters.db import schema
from evbilling.adapters.notify.email import SmtpEmailSender, SmtpSettings
from evbilling.adapters.notify.hub import LiveHub
from evbilling.adapters.notify.store import SqlNotificationStore
from evbilling.adapters.notify.webhooks import HttpWebhookSender, verify
from evbilling.domain.events import Event
from evbilling.domain.notification_rules import RETRY_DELAYS_S
from evbilling.services.notifications import DeliveryWorker, NotificationService
from notify_events import SessionEvents, charger_faulted


@dataclass
class FakeClock:
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- a real HTTP receiver ------------------------------------------------------------------------
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """A tiny HTTP/1.1 server: answers each POST with the next status of ``statuses`` (the last
    one repeats) and keeps what it got."""

    def __init__(self, statuses: Iterable[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[Received] = []
        self.sock = free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks"
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, sock=self.sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        self.requests.append(Received(head[0].split(" ")[1], headers, body, status))
        writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n"
                     "Connection: close\r\n\r\nno".encode())
        await writer.drain()
        writer.close()


# -- a real SMTP server --------------------------------------------------------------------------
class Mailbox:
    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse = set(refuse)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, SmtpSettings]]:
    box = Mailbox(refuse={"gone@example.com"})
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, SmtpSettings.from_url(f"smtp://127.0.0.1:{port}",
                                         from_address="billing@evb.example", timeout_s=5)
    finally:
        controller.stop()


# -- helpers -----------------------------------------------------------------------------------
def pipeline(engine: Engine, clock: FakeClock, *, smtp: SmtpSettings | None = None
             ) -> tuple[NotificationService, DeliveryWorker]:
    store = SqlNotificationStore(engine)
    worker = DeliveryWorker(store, clock=clock, jitter=lambda: 0,
                            email=SmtpEmailSender(smtp) if smtp else None,
                            webhooks=HttpWebhookSender(allow_private_networks=True,
                                                       timeout_s=5))
    return NotificationService(store, LiveHub(), clock=clock, batch_delay_s=0), worker


async def publish(service: NotificationService, events: Iterable[Event]) -> None:
    await service.start()
    for event in events:
        service.publish(event)
    await service.flush()
    await service.stop()


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.deliveries).order_by(schema.deliveries.c.id)))


# -- webhooks ----------------------------------------------------------------------------------
def test_a_webhook_answered_500_then_200_is_delivered_once_with_a_valid_signature(
        operator, engine):
    receiver = Receiver([500, 200])
    endpoint = operator.admin.create("webhook-endpoints", {"url": receiver.url,
                                                           "events": ["session.started"]})
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["webhook"]})
    started = SessionEvents(operator.operator_id, None).started()
    clock = FakeClock()
    service, worker = pipeline(engine, clock)

    async def scenario() -> list[int]:
        async with receiver:
            await publish(service, [started])
            attempts = [await worker.run_once()]  # 500
            attempts.append(await worker.run_once())  # not due yet
            clock.advance(seconds=RETRY_DELAYS_S[0] + 1)
            attempts.append(await worker.run_once())  # 200
            clock.advance(days=4)
            attempts.append(await worker.run_once())  # nothing left
            await worker.stop()
        return attempts

    assert asyncio.run(scenario()) == [1, 0, 1, 0]
    assert [r.status for r in receiver.requests] == [500, 200]
    for request in receiver.requests:
        assert request.path == "/hooks"
        assert request.headers["evbilling-event-id"] == started.event_id
        verify(request.body, request.headers["evbilling-signature"], endpoint["secret"])
        body = orjson.loads(request.body)
        assert (body["id"], body["type"]) == (started.event_id, "session.started")
        assert body["data"]["session_id"] == started.session_id
    [row] = deliveries(engine)
    assert (row.channel, row.target, row.status, row.attempts) == (
        "webhook", endpoint["id"], "delivered", 2)
    assert row.delivered_at is not None and row.last_error is None


def test_a_webhook_that_never_succeeds_fails_after_about_three_days(operator, engine):
    receiver = Receiver([503])
    operator.admin.create("webhook-endpoints", {"url": receiver.url})
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["webhook"]})
    clock = FakeClock()
    service, worker = pipeline(engine, clock)
    waited: list[dt.timedelta] = []

    async def scenario() -> None:
        async with receiver:
            await publish(service, [SessionEvents(operator.operator_id, None).started()])
            start = clock.now
            while await worker.run_once():
                [row] = deliveries(engine)
                if row.next_attempt_at is not None:
                    waited.append(row.next_attempt_at - clock.now)
                    clock.now = row.next_attempt_at
            waited.append(clock.now - start)
            await worker.stop()

    asyncio.run(scenario())

    [row] = deliveries(engine)
    assert (row.status, row.attempts, row.last_error) == ("failed", 13, "HTTP 503")
    assert len(receiver.requests) == 13
    assert [w.total_seconds() for w in waited[:3]] == [10, 30, 120]
    assert dt.timedelta(days=3) < waited[-1] < dt.timedelta(days=4)


def test_only_active_endpoints_subscribed_to_the_event_get_it(operator, engine):
    receiver = Receiver([200])
    wanted = operator.admin.create("webhook-endpoints", {"url": receiver.url,
                                                         "events": ["session.ended"]})
    operator.admin.create("webhook-endpoints", {"url": receiver.url,
                                                "events": ["session.started"]})
    operator.admin.create("webhook-endpoints", {"url": receiver.url, "active": False})
    operator.admin.create("notification-rules", {"event": "session.ended",
                                                 "channels": ["webhook"]})
    clock = FakeClock()
    service, worker = pipeline(engine, clock)

    async def scenario() -> None:
        async with receiver:
            await publish(service, [SessionEvents(operator.operator_id, None).ended()])
            await worker.run_once()
            await worker.stop()

    asyncio.run(scenario())

    assert [d.target for d in deliveries(engine)] == [wanted["id"]]
    assert len(receiver.requests) == 1


def test_two_workers_never_send_the_same_delivery(operator, engine):
    receiver = Receiver([200])
    operator.admin.create("webhook-endpoints", {"url": receiver.url})
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["webhook"]})
    clock = FakeClock()
    service, first = pipeline(engine, clock)
    _, second = pipeline(engine, clock)

    async def scenario() -> None:
        async with receiver:
            await publish(service, [SessionEvents(operator.operator_id, None).started()
                                    for _ in range(8)])
            await asyncio.gather(first.run_once(), second.run_once(), first.run_once(),
                                 second.run_once())
            await first.stop()
            await second.stop()

    asyncio.run(scenario())

    ids = [orjson.loads(r.body)["id"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 8
    assert {d.status for d in deliveries(engine)} == {"delivered"}


# -- e-mail ------------------------------------------------------------------------------------
def test_the_session_price_is_e_mailed_to_the_driver(operator, engine, mailbox):
    box, smtp = mailbox
    driver = operator.new("drivers", email="dana@example.com")
    operator.admin.create("notification-rules", {"event": "session.ended",
                                                 "channels": ["email"],
                                                 "driver_id": driver["id"]})
    clock = FakeClock()
    service, worker = pipeline(engine, clock, smtp=smtp)

    async def scenario() -> list[int]:
        await publish(service, [SessionEvents(operator.operator_id, driver["id"]).ended(1234)])
        sent = [await worker.run_once(), await worker.run_once()]
        await worker.stop()
        return sent

    assert asyncio.run(scenario()) == [1, 0]
    [message] = box.messages
    assert box.envelopes == [("billing@evb.example", ["dana@example.com"])]
    assert message["Subject"] == "Session ended: 12.34 EUR"
    assert message["To"] == "dana@example.com"
    [row] = deliveries(engine)
    assert message["Message-ID"] == f"<{row.notification_id}@evbilling>"
    assert "12.34 EUR incl. VAT" in message.get_content()
    assert (row.status, row.attempts, row.target) == ("delivered", 1, "dana@example.com")


def test_a_charger_fault_is_e_mailed_to_the_operators_admins_and_staff(operator, engine,
                                                                       mailbox):
    box, smtp = mailbox
    staff = operator.new("users", role="operator_staff")
    operator.new("users", role="finance")
    disabled = operator.new("users", role="admin")
    operator.admin.patch(f"/users/{disabled['id']}", {"disabled": True})
    operator.admin.create("notification-rules", {"event": "charger.faulted",
                                                 "channels": ["email"]})
    clock = FakeClock()
    service, worker = pipeline(engine, clock, smtp=smtp)
    with engine.connect() as conn:
        admins = set(conn.execute(select(schema.users.c.email).where(
            schema.users.c.operator_id == operator.operator_id,
            schema.users.c.role == "admin", schema.users.c.disabled.is_(False))).scalars())

    async def scenario() -> None:
        await publish(service, [charger_faulted(operator.operator_id, identity="CP-7")])
        await worker.run_once()
        await worker.stop()

    asyncio.run(scenario())

    assert {to for _, tos in box.envelopes for to in tos} == admins | {staff["email"]}
    assert {m["Subject"] for m in box.messages} == {"Charger CP-7 faulted"}


def test_a_mailbox_refused_for_good_is_not_retried(operator, engine, mailbox):
    box, smtp = mailbox
    driver = operator.new("drivers", email="gone@example.com")
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["email"],
                                                 "driver_id": driver["id"]})
    clock = FakeClock()
    service, worker = pipeline(engine, clock, smtp=smtp)

    async def scenario() -> None:
        await publish(service, [SessionEvents(operator.operator_id, driver["id"]).started()])
        await worker.run_once()
        await worker.stop()

    asyncio.run(scenario())

    [row] = deliveries(engine)
    assert (row.status, row.attempts) == ("failed", 1) and "550" in row.last_error
    assert box.messages == []


def test_an_unreachable_smtp_server_is_retried(operator, engine):
    driver = operator.new("drivers", email="dana@example.com")
    operator.admin.create("notification-rules", {"event": "session.started",
                                                 "channels": ["email"],
                                                 "driver_id": driver["id"]})
    closed = free_socket()  # bound, never listening: connections are refused
    clock = FakeClock()
    service, worker = pipeline(engine, clock, smtp=SmtpSettings(
        "127.0.0.1", closed.getsockname()[1], timeout_s=2))

    async def scenario() -> None:
        await publish(service, [SessionEvents(operator.operator_id, driver["id"]).started()])
        await worker.run_once()
        await worker.stop()

    try:
        asyncio.run(scenario())
    finally:
        closed.close()

    [row] = deliveries(engine)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.next_attempt_at == clock.now + dt.timedelta(seconds=RETRY_DELAYS_S[0])
