"""Notifications over the API: the in-app list, rules, webhook endpoints, and the live stream.

* ``GET /notifications`` (drivers: their own; staff and finance: the operator's), ``GET
  /notifications/{id}``, ``POST /notifications/{id}/read``. Only notifications with the in-app
  channel are listed.
* ``/notification-rules``: CRUD; a driver manages their own rules, staff the operator-wide ones
  and any driver's. Every write drops this process's cached rules of the operator.
* ``/webhook-endpoints``: CRUD for admins and staff; the signing secret is generated here and
  shown once, in the answer to the create.
* ``GET /sessions/{id}/live``: server-sent events; ``/sessions/{id}/live`` as a WebSocket too.
  The driver of the session or the operator's staff and finance; the token in ``Authorization``
  or, for browsers' ``EventSource`` / ``WebSocket`` that cannot set headers, ``?access_token=``.
  The first message is ``session.snapshot`` (the last stored running cost); then every event of
  the session as it happens; the stream ends after ``session.ended`` (or ``max_events``).

``setup(app, engine)`` builds the notification service from the environment and registers it
to start and stop with the server (``app.state.notifications``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, delete, func, insert, select, true, update
from starlette.background import BackgroundTask
from starlette.websockets import WebSocketDisconnect

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.adapters.notify.email import SmtpEmailSender, SmtpSettings
from evbilling.adapters.notify.hub import LiveHub, TooManySubscribersError
from evbilling.adapters.notify.redis_hub import RedisLiveHub
from evbilling.adapters.notify.store import SqlNotificationStore
from evbilling.adapters.notify.webhooks import HttpWebhookSender, check_url, new_secret
from evbilling.domain.notification_rules import (
    MINUTES_MAX,
    RULE_EVENTS,
    STEP_MINOR_MAX,
    check_rule,
)
from evbilling.entrypoints.api import auth
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    CurrentPrincipal,
    Principal,
    audit,
    now,
    require_role,
)
from evbilling.entrypoints.api.crud import MAX_PAGE, Page, Resource, build_router
from evbilling.entrypoints.api.errors import ApiError, problem
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Out, Strict
from evbilling.entrypoints.api.sessions import running_state
from evbilling.services.notifications import DeliveryWorker, LiveHubPort, NotificationService

RULES_PER_OPERATOR_MAX = 500
RULES_PER_DRIVER_MAX = 20
ENDPOINTS_PER_OPERATOR_MAX = 20
HEARTBEAT_S = 15.0
STREAM_EVENTS_MAX = 100_000

RuleEvent = Literal["session.started", "session.cost_threshold", "session.cap_approaching",
                    "session.cap_reached", "session.charging_completed",
                    "session.idle_fee_soon", "session.ended", "charger.faulted"]
Channel = Literal["in_app", "email", "webhook"]
Id = Annotated[str, Field(min_length=1, max_length=40)]


# -- wiring ---------------------------------------------------------------------------------------
def setup(app: FastAPI, engine: Engine) -> NotificationService:
    """The notification service of ``app`` from the environment:

    * ``EVBILLING_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``): live stream across
      processes; unset, in process only;
    * ``EVBILLING_SMTP_URL`` (``smtp://host:port``, ``smtps://...``, ``?starttls=true``) and
      ``EVBILLING_SMTP_FROM``: e-mail; unset, e-mail deliveries fail at once;
    * ``EVBILLING_WEBHOOKS_ALLOW_PRIVATE=true``: allow webhook endpoints on private addresses
      (development; refused otherwise)."""
    store = SqlNotificationStore(engine)
    redis_url = os.environ.get("EVBILLING_REDIS_URL")
    hub: LiveHubPort = RedisLiveHub(redis_url) if redis_url else LiveHub()
    smtp_url = os.environ.get("EVBILLING_SMTP_URL")
    email = SmtpEmailSender(SmtpSettings.from_url(
        smtp_url, from_address=os.environ.get("EVBILLING_SMTP_FROM"))) if smtp_url else None
    allow_private = os.environ.get("EVBILLING_WEBHOOKS_ALLOW_PRIVATE", "").lower() in (
        "1", "true", "yes")
    worker = DeliveryWorker(store, email=email,
                            webhooks=HttpWebhookSender(allow_private_networks=allow_private))
    service = NotificationService(store, hub, worker=worker)
    app.state.notifications = service
    app.state.background.append(service)
    return service


router = APIRouter()


# -- the in-app list ------------------------------------------------------------------------------
class NotificationOut(BaseModel):
    id: str
    created_at: dt.datetime
    event: str
    driver_id: str | None
    session_id: str | None
    charger_id: str | None
    title: str
    body: str
    event_id: str | None = Field(description="the event that made it")
    data: dict[str, Any] = Field(description="the event's data (amounts as decimal strings)")
    read_at: dt.datetime | None


def _notification_out(row: Any) -> dict[str, Any]:
    payload = row.payload or {}
    return {"id": row.id, "created_at": _aware(row.created_at), "event": row.event,
            "driver_id": row.driver_id, "session_id": row.session_id,
            "charger_id": row.charger_id, "title": row.title, "body": row.body,
            "event_id": payload.get("id"), "data": payload.get("data", {}),
            "read_at": _aware(row.read_at)}


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _notification_scope(principal: Principal) -> list[Any]:
    c = s.notifications.c
    conditions = [c.operator_id == principal.operator_id,
                  c.payload["in_app"].as_boolean() == true()]
    if principal.is_driver:
        conditions.append(c.driver_id == principal.driver_id)
    return conditions


@router.get("/notifications", tags=["notifications"],
            summary="In-app notifications (drivers: their own; staff: the operator's)",
            response_model=Page[NotificationOut])
def list_notifications(request: Request, principal: CurrentPrincipal,
                       limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                       starting_after: Annotated[str | None, Query(max_length=64)] = None,
                       session_id: Annotated[str | None, Query(max_length=64)] = None,
                       event: Annotated[str | None, Query(max_length=40)] = None,
                       unread: Annotated[bool | None, Query()] = None) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    c = s.notifications.c
    conditions = _notification_scope(principal)
    if session_id is not None:
        conditions.append(c.session_id == session_id)
    if event is not None:
        conditions.append(c.event == event)
    if unread is not None:
        conditions.append(c.read_at.is_(None) if unread else c.read_at.is_not(None))
    if starting_after:
        conditions.append(c.id > starting_after)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(s.notifications).where(*conditions).order_by(c.id)
                            .limit(limit + 1)).fetchall()
    page = rows[:limit]
    return {"data": [_notification_out(r) for r in page], "has_more": len(rows) > limit,
            "next_cursor": page[-1].id if len(rows) > limit else None}


@router.get("/notifications/{row_id}", tags=["notifications"], summary="One notification",
            response_model=NotificationOut)
def get_notification(row_id: str, request: Request, principal: CurrentPrincipal
                     ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(s.notifications).where(
            s.notifications.c.id == row_id, *_notification_scope(principal))).first()
    if row is None:
        raise ApiError("not_found", f"no notification {row_id!r}")
    return _notification_out(row)


@router.post("/notifications/{row_id}/read", tags=["notifications"],
             summary="Mark a notification read (idempotent)", response_model=NotificationOut)
def read_notification(row_id: str, request: Request, principal: CurrentPrincipal
                      ) -> dict[str, Any]:
    require_role(principal, EVERYONE, write=True)
    c = s.notifications.c
    scoped = [c.id == row_id, *_notification_scope(principal)]
    with write_transaction(request.app.state.engine) as conn:
        conn.execute(update(s.notifications).where(*scoped, c.read_at.is_(None))
                     .values(read_at=now()))
        row = conn.execute(select(s.notifications).where(*scoped)).first()
    if row is None:
        raise ApiError("not_found", f"no notification {row_id!r}")
    return _notification_out(row)


# -- rules ----------------------------------------------------------------------------------------
class RuleCreate(Strict):
    event: RuleEvent
    driver_id: Id | None = Field(default=None, description="staff: a driver's rule; drivers "
                                 "always create their own; none: operator-wide")
    channels: list[Channel] = Field(min_length=1, max_length=3)
    amount_minor: int | None = Field(default=None, ge=1, le=STEP_MINOR_MAX,
                                     description="session.cost_threshold: every N minor units")
    minutes: int | None = Field(default=None, ge=1, le=MINUTES_MAX,
                                description="session.idle_fee_soon: N minutes before")
    active: bool = True


class RuleUpdate(Strict):
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=3)
    amount_minor: int | None = Field(default=None, ge=1, le=STEP_MINOR_MAX)
    minutes: int | None = Field(default=None, ge=1, le=MINUTES_MAX)
    active: bool | None = None


class RuleOut(Out):
    driver_id: str | None
    event: str
    channels: list[str]
    amount_minor: int | None
    minutes: int | None
    active: bool


def _rule_values(values: dict[str, Any], principal: Principal, conn: Connection,
                 creating: bool) -> dict[str, Any]:
    if not creating:
        return values
    check_rule(event=values["event"], driver_id=values.get("driver_id"),
               channels=values["channels"], amount_minor=values.get("amount_minor"),
               minutes=values.get("minutes"))
    r = s.notification_rules.c
    count = conn.execute(select(func.count()).select_from(s.notification_rules).where(
        r.operator_id == principal.operator_id)).scalar_one()
    if count >= RULES_PER_OPERATOR_MAX:
        raise ApiError("rule_limit_reached",
                       f"an operator has at most {RULES_PER_OPERATOR_MAX} rules")
    driver_id = values.get("driver_id")
    if driver_id is not None and conn.execute(
            select(func.count()).select_from(s.notification_rules).where(
                r.operator_id == principal.operator_id, r.driver_id == driver_id)
    ).scalar_one() >= RULES_PER_DRIVER_MAX:
        raise ApiError("rule_limit_reached", f"a driver has at most {RULES_PER_DRIVER_MAX} rules")
    return values


def _rule_update_check(current: Any, values: dict[str, Any]) -> None:
    channels = values.get("channels", current.channels)
    check_rule(event=current.event, driver_id=current.driver_id,
               channels=channels if channels is not None else [],
               amount_minor=values.get("amount_minor", current.amount_minor),
               minutes=values.get("minutes", current.minutes))


RULES = Resource("notification-rules", s.notification_rules, "nr", RuleCreate, RuleUpdate,
                 RuleOut, read_roles=EVERYONE, write_roles=STAFF, driver_column="driver_id",
                 references={"driver_id": s.drivers}, filters=("event", "driver_id"),
                 prepare=_rule_values, drivers_write_own=True,
                 check_update=_rule_update_check,
                 write_codes=("invalid_notification_rule", "rule_limit_reached"))


async def _forget_cached_rules(request: Request, principal: CurrentPrincipal
                               ) -> AsyncIterator[None]:
    yield
    if request.method != "GET":
        notifications = getattr(request.app.state, "notifications", None)
        if notifications is not None:
            notifications.rules_changed(principal.operator_id)


router.include_router(build_router(RULES), dependencies=[Depends(_forget_cached_rules)])


# -- webhook endpoints ----------------------------------------------------------------------------
WebhookEvent = Literal["*", "session.started", "session.cost_threshold",
                       "session.cap_approaching", "session.cap_reached",
                       "session.charging_completed", "session.idle_fee_soon", "session.ended",
                       "charger.faulted"]


if set(get_args(RuleEvent)) != set(RULE_EVENTS) or \
        set(get_args(WebhookEvent)) != {"*", *RULE_EVENTS}:
    raise RuntimeError("the API's event names must be the domain's RULE_EVENTS")


def _every_event() -> list[WebhookEvent]:
    return ["*"]


class EndpointCreate(Strict):
    url: str = Field(min_length=8, max_length=500, examples=["https://example.com/hooks"])
    events: list[WebhookEvent] = Field(default_factory=lambda: _every_event(), min_length=1,
                                       max_length=len(RULE_EVENTS) + 1)
    active: bool = True


class EndpointUpdate(Strict):
    url: str | None = Field(default=None, min_length=8, max_length=500)
    events: list[WebhookEvent] | None = Field(default=None, min_length=1,
                                              max_length=len(RULE_EVENTS) + 1)
    active: bool | None = None


class EndpointOut(BaseModel):
    id: str
    created_at: dt.datetime
    url: str
    events: list[str]
    active: bool


class EndpointCreated(EndpointOut):
    secret: str = Field(description="the signing secret (whsec_...), shown once")


def _endpoint_out(row: Any) -> dict[str, Any]:
    return EndpointOut(id=row.id, created_at=row.created_at, url=row.url,
                       events=list(row.events), active=row.active).model_dump(mode="json")


def _check_endpoint(values: dict[str, Any]) -> dict[str, Any]:
    if values.get("url") is not None:
        try:
            check_url(values["url"])
        except ValueError as exc:
            raise ApiError("validation_error", f"url: {exc}", extra={"field": "url"}) from exc
    if values.get("events") is not None:
        events = values["events"]
        if len(set(events)) != len(events):
            raise ApiError("validation_error", "events: each event once",
                           extra={"field": "events"})
        values["events"] = ["*"] if "*" in events else sorted(events)
    for name in ("url", "events", "active"):
        if name in values and values[name] is None:
            raise ApiError("validation_error", f"{name}: may not be null",
                           extra={"field": name})
    return values


@router.get("/webhook-endpoints", tags=["webhook-endpoints"],
            summary="List webhook endpoints (never their secrets)",
            response_model=Page[EndpointOut])
def list_endpoints(request: Request, principal: CurrentPrincipal,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                   starting_after: Annotated[str | None, Query(max_length=64)] = None
                   ) -> dict[str, Any]:
    require_role(principal, STAFF)
    w = s.webhook_endpoints.c
    conditions = [w.operator_id == principal.operator_id]
    if starting_after:
        conditions.append(w.id > starting_after)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(s.webhook_endpoints).where(*conditions).order_by(w.id)
                            .limit(limit + 1)).fetchall()
    page = rows[:limit]
    return {"data": [_endpoint_out(r) for r in page], "has_more": len(rows) > limit,
            "next_cursor": page[-1].id if len(rows) > limit else None}


@router.post("/webhook-endpoints", status_code=201, tags=["webhook-endpoints"],
             summary="Create a webhook endpoint (the signing secret is shown once)",
             openapi_extra=raises("endpoint_limit_reached"), response_model=EndpointCreated)
def create_endpoint(body: EndpointCreate, request: Request, principal: CurrentPrincipal
                    ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = _check_endpoint(body.model_dump())
    secret = new_secret()
    endpoint_id = new_id("whe")
    w = s.webhook_endpoints.c
    with write_transaction(request.app.state.engine) as conn:
        count = conn.execute(select(func.count()).select_from(s.webhook_endpoints).where(
            w.operator_id == principal.operator_id)).scalar_one()
        if count >= ENDPOINTS_PER_OPERATOR_MAX:
            raise ApiError("endpoint_limit_reached",
                           f"an operator has at most {ENDPOINTS_PER_OPERATOR_MAX} endpoints")
        conn.execute(insert(s.webhook_endpoints).values(
            id=endpoint_id, operator_id=principal.operator_id, secret=secret,
            created_at=now(), **values))
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="webhook_endpoints.create", target=endpoint_id, outcome="success")
        row = conn.execute(select(s.webhook_endpoints).where(w.id == endpoint_id)).one()
    return {**_endpoint_out(row), "secret": secret}


def _endpoint_scope(principal: Principal, row_id: str) -> list[Any]:
    w = s.webhook_endpoints.c
    return [w.id == row_id, w.operator_id == principal.operator_id]


@router.get("/webhook-endpoints/{row_id}", tags=["webhook-endpoints"],
            summary="One webhook endpoint (never its secret)", response_model=EndpointOut)
def get_endpoint(row_id: str, request: Request, principal: CurrentPrincipal
                 ) -> dict[str, Any]:
    require_role(principal, STAFF)
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(s.webhook_endpoints).where(
            *_endpoint_scope(principal, row_id))).first()
    if row is None:
        raise ApiError("not_found", f"no webhook endpoint {row_id!r}")
    return _endpoint_out(row)


@router.patch("/webhook-endpoints/{row_id}", tags=["webhook-endpoints"],
              summary="Change a webhook endpoint's URL, events or state",
              response_model=EndpointOut)
def update_endpoint(row_id: str, body: EndpointUpdate, request: Request,
                    principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = _check_endpoint(body.model_dump(exclude_unset=True))
    scoped = _endpoint_scope(principal, row_id)
    with write_transaction(request.app.state.engine) as conn:
        if values:
            conn.execute(update(s.webhook_endpoints).where(*scoped).values(**values))
        row = conn.execute(select(s.webhook_endpoints).where(*scoped)).first()
        if row is None:
            raise ApiError("not_found", f"no webhook endpoint {row_id!r}")
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="webhook_endpoints.update", target=row_id, outcome="success")
    return _endpoint_out(row)


@router.delete("/webhook-endpoints/{row_id}", status_code=204, tags=["webhook-endpoints"],
               summary="Delete a webhook endpoint (its pending deliveries fail)")
def delete_endpoint(row_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    require_role(principal, STAFF, write=True)
    with write_transaction(request.app.state.engine) as conn:
        result = conn.execute(delete(s.webhook_endpoints).where(
            *_endpoint_scope(principal, row_id)))
        if result.rowcount == 0:
            raise ApiError("not_found", f"no webhook endpoint {row_id!r}")
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="webhook_endpoints.delete", target=row_id, outcome="success")
    return Response(status_code=204)


# -- the live stream ------------------------------------------------------------------------------
def _bearer(authorization: str | None, access_token: str | None) -> str | None:
    if authorization:
        return authorization
    return f"Bearer {access_token}" if access_token else None


def _authorize_live(engine: Engine, authorization: str | None,
                    session_id: str) -> tuple[Principal, Any]:
    """The caller and the session, or ``ApiError`` (401; 404 for a session not theirs)."""
    with engine.connect() as conn:
        principal = auth.authenticate(conn, authorization)
        require_role(principal, EVERYONE)
        c = s.charging_sessions.c
        row = conn.execute(select(c.id, c.operator_id, c.driver_id, c.status, c.currency,
                                  c.energy_milliwh, c.total_incl_minor, c.live).where(
            c.id == session_id, c.operator_id == principal.operator_id)).first()
    if row is None or (principal.is_driver and row.driver_id != principal.driver_id):
        raise ApiError("not_found", f"no session {session_id!r}")
    return principal, row


def _snapshot(app: Any, row: Any) -> bytes:
    live = running_state(app, row)
    return orjson.dumps({
        "session_id": row.id, "status": row.status, "currency": row.currency,
        "energy_milliwh": live.get("energy_milliwh", row.energy_milliwh),
        "amount_minor_incl": live.get("amount_minor_incl", row.total_incl_minor),
        "total_excl": live.get("total_excl"), "total_incl": live.get("total_incl"),
        "sample_at_ms": live.get("at_ms")})


async def _subscribe(request_app: Any, session_id: str) -> Any:
    try:
        return await request_app.state.notifications.hub.subscribe(session_id)
    except TooManySubscribersError as exc:
        raise ApiError("rate_limited", "too many live streams for this session",
                       headers={"Retry-After": "30"}) from exc


@router.get("/sessions/{session_id}/live", tags=["sessions"], response_class=StreamingResponse,
            summary="The session's events as they happen (server-sent events)",
            openapi_extra=raises("rate_limited", authenticated=True),
            responses={200: {"description": "`text/event-stream`: `id:` the event id, "
                             "`event:` its name, `data:` JSON (amounts as decimal strings)",
                             "content": {"text/event-stream": {}}}})
async def live_stream(session_id: str, request: Request,
                      access_token: Annotated[str | None, Query(max_length=200)] = None,
                      max_events: Annotated[int | None,
                                            Query(ge=1, le=STREAM_EVENTS_MAX)] = None
                      ) -> StreamingResponse:
    _principal, row = await asyncio.to_thread(
        _authorize_live, request.app.state.engine,
        _bearer(request.headers.get("authorization"), access_token), session_id)
    sub = await _subscribe(request.app, session_id)  # before the snapshot: nothing is missed
    limit = max_events or STREAM_EVENTS_MAX

    async def frames() -> AsyncIterator[bytes]:
        try:
            snapshot = _snapshot(request.app, row)
            yield b"retry: 3000\nevent: session.snapshot\ndata: " + snapshot + b"\n\n"
            sent = 1
            if row.status != "active":
                return
            while sent < limit:
                try:
                    message = await asyncio.wait_for(sub.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield message.sse
                sent += 1
                if message.name == "session.ended":
                    return
        finally:
            sub.close()

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"},
                             background=BackgroundTask(sub.close))


@router.websocket("/sessions/{session_id}/live")
async def live_socket(websocket: WebSocket, session_id: str) -> None:
    """The same stream as the server-sent events, one JSON text message per event:
    ``{"id", "event", "data"}``. Refused before the handshake completes (401/404 problem when
    the server can send one, else close code 1008)."""
    authorization = _bearer(websocket.headers.get("authorization"),
                            websocket.query_params.get("access_token"))
    try:
        _principal, row = await asyncio.to_thread(
            _authorize_live, websocket.app.state.engine, authorization, session_id)
        sub = await _subscribe(websocket.app, session_id)
    except ApiError as exc:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(problem(
                exc.status, exc.code, exc.detail, instance=websocket.url.path,
                headers=exc.headers))
        else:
            await websocket.close(code=1008, reason=exc.code)
        return
    receiver: asyncio.Future[Any] | None = None
    getter: asyncio.Future[Any] | None = None
    try:
        await websocket.accept()
        await websocket.send_text('{"event":"session.snapshot","data":%s}'  # noqa: UP031
                                  % _snapshot(websocket.app, row).decode())
        if row.status != "active":
            await websocket.close(code=1000)
            return
        receiver = asyncio.ensure_future(websocket.receive())
        while True:
            getter = getter or asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({getter, receiver}, timeout=HEARTBEAT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                if receiver.result().get("type") == "websocket.disconnect":
                    return
                receiver = asyncio.ensure_future(websocket.receive())  # client text: ignored
            if getter in done:
                message = getter.result()
                getter = None
                await websocket.send_text(message.text)
                if message.name == "session.ended":
                    await websocket.close(code=1000)
                    return
    except WebSocketDisconnect:
        return
    finally:
        for task in (receiver, getter):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sub.close()

