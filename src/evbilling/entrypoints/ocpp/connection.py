"""One connected charger: dispatch of its CALLs to the version's handlers, and our CALLs to it.

Incoming CALLs are handled one at a time, in arrival order (a charger sends its next CALL only
after our answer, OCPP-J §4.1.1; handling them in order also keeps a transaction's messages in
order). Each CALL is: schema check -> handler (which converts the payload and calls the
``ChargingPort``) -> schema check of our own answer -> CALLRESULT. What a handler wants to send
afterwards (a running cost, a remote stop) is queued and sent only after that CALLRESULT.

Our CALLs to the charger go through a small bounded queue and are sent strictly one at a time
(OCPP-J §4.1.1: at most one outstanding CALL per direction): each waits for its CALLRESULT or
CALLERROR (matched by message id) or for ``call_timeout_s``, then the next goes out. No task per
call: the next CALL is sent in the turn that sent our CALLRESULT or received the previous answer
(one timer per connection checks the outstanding call's deadline, re-armed only when it fires
early); a task exists only to start sending from elsewhere (a
remote stop asked by the API). Calls with the same ``coalesce`` key (a cost display for one
transaction) replace a queued, unsent one: under load the charger gets the newest cost, not a
backlog.

The receive loop never waits for one of our CALLs (that would deadlock: the answer arrives
through the same loop).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ocpp.exceptions import InternalError, NotSupportedError, OCPPError
from ocpp.exceptions import NotImplementedError as ActionNotImplementedError

from evbilling.entrypoints.ocpp import validation
from evbilling.entrypoints.ocpp.protocol import (
    Call,
    CallError,
    CallResult,
    FrameError,
    decode,
    encode_call,
    encode_error,
    encode_result,
)
from evbilling.services.ports import ChargerRef, ChargingPort, LiveCost

logger = logging.getLogger("evbilling.ocpp")

#: Charging state remembered per connector / transaction (to fill samples that carry none).
MAX_REMEMBERED: Final = 64
_call_ids = itertools.count(1)


class ConnectionClosedError(Exception):
    """The WebSocket is gone; nothing more can be sent on it."""


class Transport(Protocol):
    """Where frames go (the ASGI WebSocket in production, a list in unit tests)."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


@dataclass(slots=True)
class Outgoing:
    """A CALL we want to make."""

    action: str
    payload: dict[str, Any]
    #: A queued, unsent call with the same key is replaced by this one.
    coalesce: Hashable | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer: the CALLRESULT payload, and the CALLs to make after sending it."""

    payload: dict[str, Any]
    after: tuple[Outgoing, ...] = ()


Handler = Callable[["Connection", Call, str], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between OCPP 1.6 and 2.0.1 (``v16.DIALECT``, ``v201.DIALECT``)."""

    version: str
    handlers: Mapping[str, Handler]
    #: Every action of the version, either direction (unknown ones: NotImplemented).
    known_actions: frozenset[str]
    #: The CALL that stops a transaction, starts one, shows a cost (None: cannot be expressed).
    stop_request: Callable[[str], Outgoing | None]
    start_request: Callable[[str, int | None, int], Outgoing | None]
    cost_request: Callable[[LiveCost, int], Outgoing | None]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    heartbeat_interval_s: int = 300
    #: How long we wait for the charger's answer to one of our CALLs.
    call_timeout_s: float = 30.0
    #: Our CALLs waiting to be sent, per charger; more are refused (logged).
    max_queued_calls: int = 32


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class _Pending:
    __slots__ = ("out", "future")

    def __init__(self, out: Outgoing, future: asyncio.Future[dict[str, Any] | None]) -> None:
        self.out = out
        self.future = future

    def resolve(self, payload: dict[str, Any] | None) -> None:
        if not self.future.done():
            self.future.set_result(payload)


class _Waiting:
    """Our outstanding CALL: its message id, the caller's future, its deadline (loop time)."""

    __slots__ = ("unique_id", "pending", "deadline")

    def __init__(self, unique_id: str, pending: _Pending, deadline: float) -> None:
        self.unique_id = unique_id
        self.pending = pending
        self.deadline = deadline


class Connection:
    """The gateway side of one charger's WebSocket."""

    __slots__ = ("charger", "dialect", "transport", "port", "settings", "clock", "charging",
                 "tx_by_evse", "_queue", "_sender", "_waiting", "_timer", "_closed")

    def __init__(self, charger: ChargerRef, dialect: Dialect, transport: Transport,
                 port: ChargingPort, settings: ConnectionSettings | None = None,
                 clock: Callable[[], int] = _epoch_ms) -> None:
        self.charger = charger
        self.dialect = dialect
        self.transport = transport
        self.port = port
        self.settings = settings or ConnectionSettings()
        self.clock = clock
        #: Last known charging state: 1.6 by connector id, 2.0.1 by transaction id.
        self.charging: dict[Any, bool | None] = {}
        #: 2.0.1: the transaction running on each EVSE (MeterValues carry no transaction id).
        self.tx_by_evse: dict[int, str] = {}
        self._queue: deque[_Pending] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._waiting: _Waiting | None = None
        self._timer: asyncio.TimerHandle | None = None  # checks the outstanding CALL's deadline
        self._closed = False

    @property
    def version(self) -> str:
        return self.dialect.version

    @property
    def closed(self) -> bool:
        return self._closed

    def now_ms(self) -> int:
        return self.clock()

    def remember(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        """Bounded per-connection memory: the oldest entry goes first."""
        table.pop(key, None)
        table[key] = value
        if len(table) > MAX_REMEMBERED:
            del table[next(iter(table))]

    # -- incoming -------------------------------------------------------------------------
    async def on_frame(self, data: str | bytes) -> None:
        """Handle one WebSocket message. Raises ``ConnectionClosedError`` only."""
        try:
            msg = decode(data, self.version)
        except FrameError as exc:
            logger.warning("%s: %s", self.charger.identity, exc.reason)
            if exc.reply is not None:
                await self.transport.send(exc.reply)
            return
        if type(msg) is Call:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            await self._dispatch(msg, text)
        else:
            await self._answered(msg)  # type: ignore[arg-type]

    async def _dispatch(self, call: Call, text: str) -> None:
        handler = self.dialect.handlers.get(call.action)
        if handler is None:
            await self.transport.send(encode_error(call.unique_id, self._unhandled(call.action)))
            return
        version = self.version
        try:
            validation.validate(version, call.action, "request", call.payload)
            reply = await handler(self, call, text)
        except OCPPError as exc:
            logger.info("%s: %s %s refused: %s %s", self.charger.identity, call.action,
                        call.unique_id, exc.code, exc.details)
            await self.transport.send(encode_error(call.unique_id, exc))
            return
        except ConnectionClosedError:
            raise
        except Exception:  # noqa: BLE001 - answered as InternalError, logged with the frame
            logger.exception("%s: %s failed; frame %s", self.charger.identity, call.action,
                             text[:2000])
            await self.transport.send(encode_error(call.unique_id, InternalError()))
            return
        try:
            validation.validate(version, call.action, "response", reply.payload)
        except OCPPError as exc:  # our own answer is wrong: a bug, not the charger's fault
            logger.error("%s: our %s answer breaks the schema: %s", self.charger.identity,
                         call.action, exc.details)
            await self.transport.send(encode_error(call.unique_id, InternalError()))
            return
        await self.transport.send(encode_result(call.unique_id, reply.payload))
        if reply.after:
            for out in reply.after:
                self._enqueue(out)
            await self._pump()

    def _unhandled(self, action: str) -> OCPPError:
        # OCPP-J 1.6 §4.2.3 / 2.0.1 §4.2.3: NotImplemented = the action is not known;
        # NotSupported = known but not supported (here: an action we do not take from a
        # charger, e.g. one a CSMS sends). The library's default descriptions are swapped,
        # so they are given here.
        if action in self.dialect.known_actions:
            return NotSupportedError(
                description="Requested Action is recognized but not supported by the receiver",
                details={"cause": f"{action} is not accepted from a charger by this CSMS"})
        return ActionNotImplementedError(
            description="Requested Action is not known by receiver",
            details={"cause": f"{action[:50]} is not an OCPP {self.version} action"})

    # -- outgoing -------------------------------------------------------------------------
    # No task per call: our CALL goes out right after the CALLRESULT that caused it (in the
    # handler's turn), the next queued one right after the answer to the previous one (in the
    # turn that received it). A task is created only to start sending from outside a turn of
    # this connection (a remote stop from the API) or after a timeout.
    async def call(self, out: Outgoing) -> dict[str, Any] | None:
        """Send a CALL (after the ones queued before it) and return the CALLRESULT payload;
        None when the charger answered a CALLERROR, did not answer in time, the answer broke
        the schema, or the connection closed."""
        future = self._enqueue(out)
        await self._pump()
        return await future

    def call_soon(self, out: Outgoing) -> asyncio.Future[dict[str, Any] | None]:
        """Queue a CALL without waiting; the future resolves like ``call``."""
        future = self._enqueue(out)
        self._pump_soon()
        return future

    def _enqueue(self, out: Outgoing) -> asyncio.Future[dict[str, Any] | None]:
        if out.coalesce is not None:
            for pending in self._queue:
                if pending.out.coalesce == out.coalesce:
                    pending.out = out
                    return pending.future
        future: asyncio.Future[dict[str, Any] | None] = \
            asyncio.get_running_loop().create_future()
        if self._closed or len(self._queue) >= self.settings.max_queued_calls:
            logger.warning("%s: %s not sent (%s)", self.charger.identity, out.action,
                           "connection closed" if self._closed else "queue full")
            future.set_result(None)
            return future
        self._queue.append(_Pending(out, future))
        return future

    def _pump_soon(self) -> None:
        if self._waiting is None and self._queue and self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._pump_task())

    async def _pump_task(self) -> None:
        try:
            await self._pump()
        finally:
            self._sender = None

    async def _pump(self) -> None:
        """Send the next queued CALL unless one is outstanding (OCPP-J: one at a time)."""
        while self._waiting is None and self._queue and not self._closed:
            pending = self._queue.popleft()
            out = pending.out
            try:
                validation.validate(self.version, out.action, "request", out.payload)
            except OCPPError as exc:
                logger.error("%s: our %s call breaks the schema: %s", self.charger.identity,
                             out.action, exc.details)
                pending.resolve(None)
                continue
            unique_id = f"{next(_call_ids):x}"
            loop = asyncio.get_running_loop()
            timeout = self.settings.call_timeout_s
            self._waiting = _Waiting(unique_id, pending, loop.time() + timeout)
            if self._timer is None:
                self._timer = loop.call_later(timeout, self._check_deadline)
            try:
                await self.transport.send(encode_call(unique_id, out.action, out.payload))
            except ConnectionClosedError:
                self.shutdown()
        if self._closed:
            self._drain()

    def _check_deadline(self) -> None:
        """The one timer of the connection fired: expire the outstanding CALL if its deadline
        passed, else wait for its deadline. (A timer per CALL, armed and cancelled at every
        running cost, cost more than the rest of sending it; this one is armed at most once per
        timeout while calls keep being answered.)"""
        self._timer = None
        waiting = self._waiting
        if waiting is None:
            return
        loop = asyncio.get_running_loop()
        left = waiting.deadline - loop.time()
        if left > 0:
            self._timer = loop.call_later(left, self._check_deadline)
            return
        logger.warning("%s: no answer to %s %s within %.0f s", self.charger.identity,
                       waiting.pending.out.action, waiting.unique_id,
                       self.settings.call_timeout_s)
        self._waiting = None
        waiting.pending.resolve(None)
        self._pump_soon()

    async def _answered(self, msg: CallResult | CallError) -> None:
        waiting = self._waiting
        if waiting is None or waiting.unique_id != msg.unique_id:
            logger.info("%s: answer to no pending call (%s) dropped", self.charger.identity,
                        msg.unique_id)
            return
        self._waiting = None
        waiting.pending.resolve(self._checked_answer(waiting.pending.out, msg))
        await self._pump()

    def _checked_answer(self, out: Outgoing, answer: CallResult | CallError
                        ) -> dict[str, Any] | None:
        identity = self.charger.identity
        if isinstance(answer, CallError):
            logger.warning("%s: %s refused with %s %s", identity, out.action, answer.code,
                           answer.description)
            return None
        try:
            validation.validate(self.version, out.action, "response", answer.payload)
        except OCPPError as exc:
            logger.warning("%s: answer to %s breaks the schema: %s", identity, out.action,
                           exc.details)
            return None
        return answer.payload

    def _drain(self) -> None:
        """Closed: the outstanding and the queued CALLs resolve to None."""
        waiting, self._waiting = self._waiting, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiting is not None:
            waiting.pending.resolve(None)
        while self._queue:
            self._queue.popleft().resolve(None)

    # -- end --------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """The socket is gone: the outstanding and the queued CALLs resolve to None."""
        self._closed = True
        self._drain()

    async def close(self, code: int = 1000) -> None:
        self.shutdown()
        try:
            await self.transport.close(code)
        except ConnectionClosedError:
            pass
