"""The OCPP endpoint: ``/ocpp/{charge_point_id}``, a plain ASGI WebSocket endpoint mounted into
the FastAPI app (``mount_ocpp``: a route, and ``OcppEntry`` in front of the router so that the
gateway gets the server's own ``send``), served by uvicorn like the rest of the app. Under
uvicorn's default WebSocket implementation the frames of one turn leave in one socket write
(``_SansIOTransport``); under anything else, as ASGI messages.

Admission, before the WebSocket is accepted (precedence top-down; the first failure answers):

1. the identity in the path is 1-48 characters of the OCPP identifierString set -> else 400;
2. a charger with that ``ocpp_identity`` exists -> else 401 (the same answer as a wrong
   password: identities are not disclosed);
3. its security profile is allowed (OCPP 1.6 security whitepaper; 2.0.1 A00): profile 3
   (client certificates) is not offered by this gateway -> 403; ``EVBILLING_ENV=production``
   refuses profiles 0 and 1 -> 403; profile 2 needs TLS (scope scheme ``wss``) -> 403;
4. profiles 1 and 2: HTTP Basic with user = identity and the charger's password (16-40
   characters, A00.FR.202/304), verified against ``chargers.password_hash`` (argon2id) -> else
   401 with ``WWW-Authenticate: Basic``; 20 failed attempts per identity in 10 minutes lock it
   for the rest of the window -> 429;
5. the charger offers the subprotocol of its configured ``ocpp_version`` (``ocpp1.6`` /
   ``ocpp2.0.1``) -> else 400.

A refusal is an HTTP response through the ASGI ``websocket.http.response`` extension (uvicorn
has it) or, without it, a close before accept; it is written to ``audit_log`` (actor = the
identity, outcome ``failure``, source IP, the reason in ``detail``). An accepted charger gets an
``ocpp.connect`` success row.

Argon2 is slow on purpose (~50 ms, 64 MiB): it runs in a worker thread, at most
``max_concurrent_verifications`` at once, and a successful verification is remembered for that
(identity, stored hash, SHA-256 of the password), so a reconnect storm after a network outage
costs one hash per charger, not one per attempt. Changing the password changes the stored hash,
which retires the remembered entry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI
from sqlalchemy import Engine, select
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.security import MIN_CHARGER_PASSWORD_LENGTH, verify_password
from evbilling.domain.promotions import SlidingWindowLimiter
from evbilling.entrypoints.api.auth import audit
from evbilling.entrypoints.ocpp import v16, v201, validation
from evbilling.entrypoints.ocpp.connection import (
    Connection,
    ConnectionClosedError,
    ConnectionSettings,
    Dialect,
    Transport,
)
from evbilling.entrypoints.ocpp.protocol import SUBPROTOCOLS
from evbilling.entrypoints.ocpp.registry import ConnectionRegistry
from evbilling.services.ports import ChargerRef, ChargingPort

try:  # uvicorn's default WebSocket implementation (websockets' Sans-I/O layer)
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _sansio_protocol,
    )
except ImportError:  # pragma: no cover - another ASGI server: ASGI messages
    _sansio_protocol = None  # type: ignore[assignment,misc]

logger = logging.getLogger("evbilling.ocpp")

PATH: Final = "/ocpp/{charge_point_id}"
MAX_CHARGER_PASSWORD_LENGTH: Final = 40  # OCPP 2.0.1 BasicAuthPassword / 1.6 whitepaper
#: OCPP 2.0.1 identifierString, at most 48 characters (chargers.ocpp_identity is String(48)).
_IDENTITY: Final = re.compile(r"[A-Za-z0-9*\-_=:+|@.]{1,48}")
DIALECTS: Final[dict[str, Dialect]] = {"1.6": v16.DIALECT, "2.0.1": v201.DIALECT}
AUDIT_ACTION: Final = "ocpp.connect"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    #: ``EVBILLING_ENV=production``: security profiles 0 and 1 (no TLS) are refused.
    production: bool = False
    max_concurrent_verifications: int = 4
    #: Remembered successful verifications (one per charger is enough).
    verified_cache_size: int = 20_000
    #: Failed admissions per identity in ``failure_window_s`` before it is locked (429).
    max_failures: int = 20
    failure_window_s: int = 600
    #: Compile the schemas of the handled messages in a background thread at mount time.
    warm_up: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        return cls(production=env.get("EVBILLING_ENV", "").strip().lower() == "production")


class Refusal(Exception):
    """An admission refused: HTTP status, the reason for the audit log, headers."""

    def __init__(self, status: int, reason: str, *, charger: Any = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.charger = charger
        self.headers = headers


_BASIC_CHALLENGE: Final = ((b"www-authenticate", b'Basic realm="OCPP", charset="UTF-8"'),)


class VerifiedCredentials:
    """Successful argon2 verifications, remembered by SHA-256(identity, stored hash, password);
    bounded (least recently used out first). Failures are never remembered as success."""

    def __init__(self, max_entries: int, concurrency: int) -> None:
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._max_entries = max_entries
        self._semaphore = asyncio.Semaphore(concurrency)
        self.hashes_computed = 0

    @staticmethod
    def _key(identity: str, password_hash: str, password: str) -> bytes:
        digest = hashlib.sha256(password.encode()).digest()
        return hashlib.sha256(b"\0".join((identity.encode(), password_hash.encode(), digest))
                              ).digest()

    async def verify(self, identity: str, password_hash: str, password: str) -> bool:
        key = self._key(identity, password_hash, password)
        if key in self._ok:
            self._ok.move_to_end(key)
            return True
        async with self._semaphore:
            if key in self._ok:  # verified by a concurrent attempt meanwhile
                return True
            self.hashes_computed += 1
            ok = await asyncio.to_thread(verify_password, password_hash, password)
        if ok:
            self._ok[key] = None
            while len(self._ok) > self._max_entries:
                self._ok.popitem(last=False)
        return ok


def basic_credentials(headers: list[tuple[bytes, bytes]] | Any) -> tuple[str, str] | None:
    """(user, password) from ``Authorization: Basic``; None when absent or malformed."""
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, token = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "basic" or len(token) > 512:
            return None
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        user, sep, password = text.partition(":")
        return (user, password) if sep else None
    return None


def _subprotocols(scope: Scope) -> list[str]:
    return [str(p) for p in scope.get("subprotocols") or ()]


class OcppGateway:
    """The ASGI app behind ``/ocpp/{charge_point_id}``."""

    def __init__(self, charging: ChargingPort, registry: ConnectionRegistry, engine: Engine,
                 settings: GatewaySettings | None = None) -> None:
        self.charging = charging
        self.registry = registry
        self.engine = engine
        self.settings = settings or GatewaySettings.from_env()
        self.credentials = VerifiedCredentials(self.settings.verified_cache_size,
                                               self.settings.max_concurrent_verifications)
        # Audit writes share the default thread pool with the charging service: at most two
        # at once, so a reconnect storm's audit rows cannot starve billing of threads.
        self._audit_slots = asyncio.Semaphore(2)
        self._background: set[asyncio.Task[None]] = set()
        self._failures = SlidingWindowLimiter(
            lambda: time.monotonic_ns() // 1_000_000, max_failures=self.settings.max_failures,
            window_ms=self.settings.failure_window_s * 1000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":  # pragma: no cover - the route is WebSocket only
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        identity = str(scope.get("path_params", {}).get("charge_point_id", ""))
        source_ip = (scope.get("client") or (None,))[0]
        try:
            charger, subprotocol = await self._admit(scope, identity)
        except Refusal as refusal:
            logger.warning("OCPP connection of %r from %s refused (%d): %s", identity[:60],
                           source_ip, refusal.status, refusal.reason)
            # audited first: when the charger learns of the refusal, the row is there
            await self._audit(identity, refusal.charger, "failure", source_ip, refusal.reason)
            await self._refuse(scope, send, refusal)
            return
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        await self._serve(charger, receive, send, source_ip)

    # -- admission ----------------------------------------------------------------------------
    async def _admit(self, scope: Scope, identity: str) -> tuple[ChargerRef, str]:
        if not _IDENTITY.fullmatch(identity):
            raise Refusal(400, "charge point identity is not an OCPP identifierString "
                               "of 1-48 characters")
        if not self._failures.check(identity).allowed:
            raise Refusal(429, "too many failed connection attempts for this identity")
        row = await asyncio.to_thread(self._charger_row, identity)
        if row is None:
            raise self._failed(identity, Refusal(401, "unknown charger",
                                                 headers=_BASIC_CHALLENGE))
        profile = int(row.security_profile)
        secure = scope.get("scheme") == "wss"
        if profile == 3:
            raise Refusal(403, "security profile 3 (TLS client certificates) is not offered "
                               "by this gateway", charger=row)
        if self.settings.production and profile < 2:
            raise Refusal(403, f"security profile {profile} is refused in production "
                               "(profile 2, TLS with Basic auth, is the minimum)", charger=row)
        if profile == 2 and not secure:
            raise Refusal(403, "security profile 2 requires TLS (wss)", charger=row)
        if profile >= 1:
            await self._check_password(scope, identity, row)
        subprotocol = SUBPROTOCOLS.get(str(row.ocpp_version))
        if subprotocol is None or subprotocol not in _subprotocols(scope):
            raise Refusal(400, f"subprotocol {subprotocol} (configured OCPP "
                               f"{row.ocpp_version}) not offered; offered: "
                               f"{', '.join(_subprotocols(scope))[:100] or 'none'}",
                          charger=row)
        ref = ChargerRef(charger_id=str(row.id), operator_id=str(row.operator_id),
                         identity=identity, site_id=str(row.site_id),
                         ocpp_version="1.6" if row.ocpp_version == "1.6" else "2.0.1")
        return ref, subprotocol

    async def _check_password(self, scope: Scope, identity: str, row: Any) -> None:
        credentials = basic_credentials(scope.get("headers") or ())
        if credentials is None:
            raise self._failed(identity, Refusal(401, "no HTTP Basic credentials", charger=row,
                                                 headers=_BASIC_CHALLENGE))
        user, password = credentials
        if user != identity:
            raise self._failed(identity, Refusal(401, "Basic user is not the charge point "
                                                      "identity", charger=row,
                                                 headers=_BASIC_CHALLENGE))
        if not MIN_CHARGER_PASSWORD_LENGTH <= len(password) <= MAX_CHARGER_PASSWORD_LENGTH:
            raise self._failed(identity, Refusal(
                401, f"password length outside {MIN_CHARGER_PASSWORD_LENGTH}-"
                     f"{MAX_CHARGER_PASSWORD_LENGTH} characters", charger=row,
                headers=_BASIC_CHALLENGE))
        if not row.password_hash:
            raise Refusal(401, "charger has no password set", charger=row,
                          headers=_BASIC_CHALLENGE)
        if not await self.credentials.verify(identity, str(row.password_hash), password):
            raise self._failed(identity, Refusal(401, "wrong password", charger=row,
                                                 headers=_BASIC_CHALLENGE))

    def _failed(self, identity: str, refusal: Refusal) -> Refusal:
        self._failures.record_failure(identity)
        return refusal

    def _charger_row(self, identity: str) -> Any:
        c = s.chargers
        with self.engine.connect() as conn:
            return conn.execute(
                select(c.c.id, c.c.operator_id, c.c.site_id, c.c.password_hash,
                       c.c.security_profile, c.c.ocpp_version)
                .join(s.sites, s.sites.c.id == c.c.site_id)
                .where(c.c.ocpp_identity == identity)).first()

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = f"{refusal.status} connection refused\n".encode()
            await send({"type": "websocket.http.response.start", "status": refusal.status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()),
                                    *refusal.headers]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # pragma: no cover - uvicorn supports the extension
            await send({"type": "websocket.close", "code": 1008})

    async def _audit(self, identity: str, charger: Any, outcome: str, source_ip: str | None,
                     detail: str) -> None:
        def write() -> None:
            with write_transaction(self.engine) as conn:
                audit(conn, operator_id=None if charger is None else str(charger.operator_id),
                      actor=identity[:100] or "-", action=AUDIT_ACTION, outcome=outcome,
                      target=None if charger is None else f"charger:{charger.id}",
                      source_ip=source_ip, detail=detail[:500])
        try:
            async with self._audit_slots:
                await asyncio.to_thread(write)
        except Exception:  # noqa: BLE001 - an audit failure must not take the gateway down
            logger.exception("audit row for OCPP connection of %r not written", identity[:60])

    # -- serving ------------------------------------------------------------------------------
    async def _serve(self, charger: ChargerRef, receive: Receive, send: Send,
                     source_ip: str | None) -> None:
        connection = Connection(charger, DIALECTS[charger.ocpp_version], transport_for(send),
                                self.charging, self.settings.connection)
        previous = self.registry.add(connection)
        if previous is not None:
            logger.info("%s reconnected; closing its previous connection", charger.identity)
            await previous.close(1000)
        # the success row is written in the background: the charger's first frames need not
        # wait for it (a refusal's row, in contrast, is written before the refusal goes out)
        task = asyncio.get_running_loop().create_task(self._audit(
            charger.identity, _Row(charger), "success", source_ip, f"OCPP {charger.ocpp_version}"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    data = message.get("text")
                    await connection.on_frame(data if data is not None
                                              else message.get("bytes") or b"")
                elif kind == "websocket.disconnect":
                    break
        except ConnectionClosedError:
            pass
        finally:
            connection.shutdown()
            self.registry.remove(connection)


@dataclass(frozen=True, slots=True)
class _Row:
    """The audit fields of an admitted charger."""

    charger: ChargerRef

    @property
    def id(self) -> str:
        return self.charger.charger_id

    @property
    def operator_id(self) -> str:
        return self.charger.operator_id


class _AsgiTransport:
    """Frames as ASGI ``websocket.send`` messages (any ASGI server)."""

    __slots__ = ("_send", "_closed")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._closed = False

    async def send(self, text: str) -> None:
        if self._closed:
            raise ConnectionClosedError()
        message: Message = {"type": "websocket.send", "text": text}
        try:
            await self._send(message)
        except Exception as exc:  # uvicorn raises its own types once the peer is gone
            self._closed = True
            raise ConnectionClosedError() from exc

    async def close(self, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception as exc:  # noqa: BLE001 - already gone
            raise ConnectionClosedError() from exc


def transport_for(send: Send) -> Transport:
    """The connection's way out: straight into uvicorn's WebSocket protocol when ``send`` is
    its own (``_SansIOTransport``), else ASGI messages."""
    protocol = getattr(send, "__self__", None)
    if _sansio_protocol is not None and type(protocol) is _sansio_protocol and all(
            hasattr(protocol, name) for name in _SANSIO_ATTRIBUTES):
        return _SansIOTransport(protocol, send)
    return _AsgiTransport(send)


_SANSIO_ATTRIBUTES: Final = ("conn", "transport", "writable", "disconnected", "close_sent")


class _SansIOTransport(_AsgiTransport):
    """Frames written into uvicorn's websockets-sansio protocol directly, the frames of one turn
    in ONE socket write.

    A MeterValues turn sends two frames: the CALLRESULT and, right after it, the running-cost
    CALL. Through ASGI each ``websocket.send`` is its own ``transport.write``, i.e. its own
    system call (on loopback it also runs the receiver's side of TCP); here the frames go into
    the protocol's WebSocket connection (``conn.send_text``, the same framing uvicorn uses) and
    the bytes leave together when the turn ends (``call_soon``). Same frames, same order, and
    the same back-pressure (a paused transport is waited for, as uvicorn's own ``send`` does).
    Measured: +12-15 % MeterValues/s at saturation (bench/README.md). Closing goes through
    ASGI, after what is pending. ``transport_for`` picks this only for uvicorn's own protocol
    class with the attributes used here; anything else gets ``_AsgiTransport``."""

    __slots__ = ("_protocol", "_flush")

    def __init__(self, protocol: Any, send: Send) -> None:
        super().__init__(send)
        self._protocol = protocol
        self._flush: asyncio.Handle | None = None

    async def send(self, text: str) -> None:
        protocol = self._protocol
        if not protocol.writable.is_set():
            await protocol.writable.wait()
        if self._closed or protocol.disconnected or protocol.close_sent \
                or protocol.transport.is_closing():
            self._closed = True
            raise ConnectionClosedError()
        try:
            protocol.conn.send_text(text.encode())
        except Exception as exc:  # the WebSocket is closing (websockets' InvalidState)
            self._closed = True
            raise ConnectionClosedError() from exc
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what the turn sent (called at the end of the turn, and before a close)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        protocol = self._protocol
        data = protocol.conn.data_to_send()
        if data and not protocol.transport.is_closing():
            protocol.transport.write(b"".join(data))

    async def close(self, code: int = 1000) -> None:
        if not self._closed:
            self.flush()
        await super().close(code)


def handled_messages() -> list[tuple[str, str, validation.Kind]]:
    """Every (version, action, kind) the gateway validates: requests and answers both ways."""
    out: list[tuple[str, str, validation.Kind]] = []
    for version, dialect in DIALECTS.items():
        for action in dialect.handlers:
            out += [(version, action, "request"), (version, action, "response")]
    for version, action in (("1.6", "RemoteStartTransaction"), ("1.6", "RemoteStopTransaction"),
                            ("1.6", "DataTransfer"), ("2.0.1", "RequestStartTransaction"),
                            ("2.0.1", "RequestStopTransaction"), ("2.0.1", "CostUpdated")):
        out += [(version, action, "request"), (version, action, "response")]
    return out


class OcppEntry:
    """Pure ASGI, in front of the router: a WebSocket to ``/ocpp/{charge_point_id}`` goes to
    the gateway with the server's own ``send``. (The route, kept in the app's route table,
    matches the same paths, but Starlette hands its endpoints a per-message wrapper of
    ``send``, which hides uvicorn's protocol from ``transport_for``.)"""

    def __init__(self, app: ASGIApp, gateway: OcppGateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            identity = path[len(_PREFIX):] if path.startswith(_PREFIX) else ""
            if identity and "/" not in identity:  # the route's {charge_point_id}: [^/]+
                await self.gateway({**scope, "path_params": {"charge_point_id": identity}},
                                   receive, send)
                return
        await self.app(scope, receive, send)


_PREFIX: Final = PATH.removesuffix("{charge_point_id}")


def mount_ocpp(app: FastAPI, charging: ChargingPort, registry: ConnectionRegistry,
               engine: Engine, settings: GatewaySettings | None = None) -> OcppGateway:
    """Serve ``/ocpp/{charge_point_id}`` from ``app``: chargers' messages go to ``charging``,
    their live connections are kept in ``registry`` (the ``ChargerCommands`` for the service)."""
    gateway = OcppGateway(charging, registry, engine, settings)
    app.router.routes.append(WebSocketRoute(PATH, gateway, name="ocpp"))
    app.add_middleware(OcppEntry, gateway=gateway)
    app.state.ocpp_registry = registry
    app.state.ocpp_gateway = gateway
    if gateway.settings.warm_up:
        threading.Thread(target=validation.warm_up, args=(handled_messages(),),
                         name="ocpp-schema-warm-up", daemon=True).start()
    return gateway
