"""Simulated chargers: real OCPP 1.6J and 2.0.1 clients over a real WebSocket.

Each :class:`SimulatedCharger` opens ``{url}/{identity}`` with the subprotocol of its version and
HTTP Basic auth (security profile 1), speaks through the mobilityhouse ``ocpp`` library's
client-side ``ChargePoint`` (``ocpp.v16`` / ``ocpp.v201``, schema validation on both ways), and
drives one connector through the flows a real charger sends:

* 1.6: BootNotification -> StatusNotification Available -> Authorize -> Preparing ->
  StartTransaction -> Charging -> MeterValues every sample interval (energy register, power,
  current per phase, SoC; ``Sample.Periodic``) -> SuspendedEV when the car is full ->
  StopTransaction (with ``transactionData``) -> Finishing -> Available.
* 2.0.1: BootNotification -> StatusNotification Available / Occupied -> Authorize (ISO14443) ->
  TransactionEvent Started / Updated (``seqNo`` 0, 1, 2 ...; chargingState Charging,
  SuspendedEV) / Ended (EVConnected or Idle) -> StatusNotification Available.

It answers what a central system sends: 1.6 RemoteStopTransaction / RemoteStartTransaction /
DataTransfer (``org.openchargealliance.costmsg`` running and final cost) / ChangeConfiguration
(``MeterValueSampleInterval``) / TriggerMessage; 2.0.1 RequestStopTransaction /
RequestStartTransaction / CostUpdated / SetVariables (``SampledDataCtrlr.TxUpdatedInterval``) /
TriggerMessage. Everything it saw is in :attr:`SimulatedCharger.log` (a :class:`ChargerLog`)
for tests and the runner to read.

Time: a :class:`SimClock` compresses time (``speedup``): waits take simulated seconds / speedup
of wall time, and every timestamp sent is simulated time, so a session of two hours at speedup
600 takes 12 s and still looks like two hours to the central system.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, cast

import websockets
from ocpp import routing
from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint as _LibChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as _LibChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from evbilling.simulator.curves import AC_22KW, ChargingCurve, Connector, CurveSample

OcppVersion = Literal["1.6", "2.0.1"]
OCPP_VERSIONS: tuple[OcppVersion, ...] = ("1.6", "2.0.1")
COST_VENDOR_ID = "org.openchargealliance.costmsg"
LOG_ITEMS_MAX = 10_000  # per list in a ChargerLog: a limit on memory for long runs
REMOTE_STARTS_QUEUED_MAX = 4
BOOT_ATTEMPTS_MAX = 5

#: Why a transaction stopped, in OCPP 1.6 ``Reason`` words (2.0.1 ``stoppedReason`` uses the
#: same words), with the 2.0.1 ``triggerReason`` of the TransactionEvent Ended it causes.
STOP_TRIGGERS = {
    "EVDisconnected": "EVDeparted",
    "Remote": "RemoteStop",
    "Local": "StopAuthorized",
    "DeAuthorized": "Deauthorized",
    "Other": "AbnormalCondition",
}


class SimulatorError(Exception):
    """The simulated charger cannot go on (refused connection, boot rejected, socket lost)."""


# -- time ------------------------------------------------------------------------------------


class SimClock:
    """Simulated time running ``speedup`` times faster than the wall clock."""

    def __init__(self, speedup: float = 1.0, start_at: dt.datetime | None = None) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self.start_at = start_at or dt.datetime.now(dt.UTC).replace(microsecond=0)
        if self.start_at.tzinfo is None:
            raise ValueError("start_at must be an aware datetime")
        self._wall_start = time.monotonic()

    def elapsed_s(self) -> float:
        """Simulated seconds since the clock started."""
        return (time.monotonic() - self._wall_start) * self.speedup

    def at(self, elapsed_s: float) -> dt.datetime:
        return self.start_at + dt.timedelta(seconds=elapsed_s)

    def now(self) -> dt.datetime:
        return self.at(self.elapsed_s())

    def wall_s(self, sim_s: float) -> float:
        return sim_s / self.speedup

    async def sleep_until(self, elapsed_s: float) -> None:
        await asyncio.sleep(max(elapsed_s - self.elapsed_s(), 0) / self.speedup)


def ocpp_timestamp(at: dt.datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as chargers send it."""
    at = at.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def basic_auth_header(identity: str, password: str) -> str:
    token = base64.b64encode(f"{identity}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


# -- what a charger saw ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChargerSpec:
    identity: str
    ocpp_version: OcppVersion
    password: str | None = None  # None: no Authorization header (security profile 0)
    connector: Connector = AC_22KW
    vendor: str = "evbilling-sim"
    model: str = "SIM-1"
    firmware_version: str = "sim-1.0"


@dataclass(frozen=True, slots=True)
class DisplayCost:
    """A cost the central system asked the charger to show the driver."""

    at: dt.datetime  # simulated time of arrival
    source: str  # "RunningCost" / "FinalCost" (1.6 DataTransfer messageId), "CostUpdated",
    #              "TransactionEventResponse" (2.0.1 totalCost)
    transaction_id: str | None
    cost: Decimal | None  # as sent (the wire number's own digits), None if absent or unreadable
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    """A remote start or stop the central system sent, and what the charger answered."""

    at: dt.datetime
    action: str  # RemoteStopTransaction, RemoteStartTransaction, RequestStop..., RequestStart...
    status: str  # our answer: Accepted / Rejected
    transaction_id: str | None = None
    id_tag: str | None = None
    remote_start_id: int | None = None


@dataclass(frozen=True, slots=True)
class RemoteStart:
    """A remote start the charger accepted and has yet to act on."""

    id_tag: str
    remote_start_id: int | None = None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call the charger made: the response payload (snake_case keys) or the error."""

    at: dt.datetime
    action: str
    response: dict[str, Any] | None
    error: str | None = None


@dataclass(slots=True)
class TransactionRecord:
    """One charging session as the charger ran it."""

    id_tag: str
    plugged_in_at: dt.datetime
    remote_start_id: int | None = None
    transaction_id: str | None = None  # 1.6: the central system's integer, as text
    authorize_status: str | None = None  # None: not asked (remote start)
    start_status: str | None = None  # idTagInfo / idTokenInfo status on the start
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    meter_start_wh: int | None = None
    meter_stop_wh: int | None = None
    stop_reason: str | None = None  # 1.6 Reason words; "NotAuthorized" if never started
    samples_sent: int = 0
    charging_states: list[str] = field(default_factory=list)  # as reported, in order
    seq_nos: list[int] = field(default_factory=list)  # 2.0.1 TransactionEvent seqNo sent
    total_cost: Decimal | None = None  # 2.0.1: the last TransactionEventResponse.totalCost
    remote_stopped: bool = False

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def energy_wh(self) -> int | None:
        if self.meter_start_wh is None or self.meter_stop_wh is None:
            return None
        return self.meter_stop_wh - self.meter_start_wh


@dataclass(slots=True)
class ChargerLog:
    """Everything a simulated charger sent, received and answered (bounded)."""

    identity: str
    ocpp_version: OcppVersion
    subprotocol: str | None = None
    connected: bool = False
    boot_status: str | None = None
    heartbeat_interval_s: int | None = None
    transactions: list[TransactionRecord] = field(default_factory=list)
    display_costs: deque[DisplayCost] = field(default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    remote_stops: list[RemoteRequest] = field(default_factory=list)
    remote_starts: list[RemoteRequest] = field(default_factory=list)
    data_transfers: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    exchanges: deque[Exchange] = field(default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    statuses: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    calls_received: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_ITEMS_MAX))
    messages_sent: int = 0
    error_count: int = 0

    def costs_for(self, transaction_id: str) -> list[DisplayCost]:
        return [cost for cost in self.display_costs if cost.transaction_id == transaction_id]

    def responses(self, action: str) -> list[dict[str, Any]]:
        return [e.response for e in self.exchanges if e.action == action and e.response is not None]

    @property
    def last_display_cost(self) -> DisplayCost | None:
        return self.display_costs[-1] if self.display_costs else None

    @property
    def sessions_started(self) -> int:
        return sum(1 for t in self.transactions if t.started_at is not None)

    @property
    def sessions_stopped(self) -> int:
        return sum(1 for t in self.transactions if t.started_at is not None and t.finished)


def _decimal(value: Any) -> Decimal | None:
    """A JSON number (parsed by the library as float or int) back to the digits on the wire."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return None


def _as_dict(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, dict):
        return payload
    slots = getattr(payload, "__dataclass_fields__", None)
    if slots is None:
        return {"value": payload}
    return {name: getattr(payload, name) for name in slots}


# -- the library's client-side charge points, delegating to the simulated charger ------------

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def on(action: str) -> Callable[[_Handler], _Handler]:
    """``ocpp.routing.on`` with a type (the library has no annotations)."""
    return cast(Callable[[_Handler], _Handler], routing.on(action))


def after(action: str) -> Callable[[_Handler], _Handler]:
    """``ocpp.routing.after`` with a type."""
    return cast(Callable[[_Handler], _Handler], routing.after(action))



class _ChargePoint16(_LibChargePoint16):  # type: ignore[misc]
    def __init__(self, owner: SimulatedCharger, connection: ClientConnection,
                 response_timeout_s: float) -> None:
        super().__init__(owner.spec.identity, connection, response_timeout=response_timeout_s)
        self.owner = owner

    @on(Action16.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any
                                   ) -> result16.RemoteStopTransaction:
        status = self.owner.accept_remote_stop("RemoteStopTransaction", str(transaction_id))
        return result16.RemoteStopTransaction(status=status)

    @after(Action16.remote_stop_transaction)
    def after_remote_stop_transaction(self, transaction_id: int, **_: Any) -> None:
        self.owner.act_on_remote_stop(str(transaction_id))

    @on(Action16.remote_start_transaction)
    def on_remote_start_transaction(self, id_tag: str, **_: Any
                                    ) -> result16.RemoteStartTransaction:
        status = self.owner.accept_remote_start("RemoteStartTransaction", id_tag, None)
        return result16.RemoteStartTransaction(status=status)

    @after(Action16.remote_start_transaction)
    def after_remote_start_transaction(self, id_tag: str, **_: Any) -> None:
        self.owner.act_on_remote_start(id_tag, None)

    @on(Action16.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: Any = None, **_: Any) -> result16.DataTransfer:
        return result16.DataTransfer(status=self.owner.record_data_transfer(
            vendor_id, message_id, data))

    @on(Action16.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any
                                ) -> result16.ChangeConfiguration:
        return result16.ChangeConfiguration(status=self.owner.change_configuration(key, value))

    @on(Action16.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any
                             ) -> result16.GetConfiguration:
        known = self.owner.configuration()
        wanted = key or list(known)
        return result16.GetConfiguration(
            configuration_key=[{"key": k, "readonly": False, "value": known[k]}
                               for k in wanted if k in known],
            unknown_key=[k for k in wanted if k not in known] or None)

    @on(Action16.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> result16.TriggerMessage:
        return result16.TriggerMessage(status=self.owner.accept_trigger(requested_message))

    @after(Action16.trigger_message)
    def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        self.owner.act_on_trigger(requested_message)


class _ChargePoint201(_LibChargePoint201):  # type: ignore[misc]
    def __init__(self, owner: SimulatedCharger, connection: ClientConnection,
                 response_timeout_s: float) -> None:
        super().__init__(owner.spec.identity, connection, response_timeout=response_timeout_s)
        self.owner = owner

    @on(Action201.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **_: Any
                                    ) -> result201.RequestStopTransaction:
        status = self.owner.accept_remote_stop("RequestStopTransaction", transaction_id)
        return result201.RequestStopTransaction(status=status)

    @after(Action201.request_stop_transaction)
    def after_request_stop_transaction(self, transaction_id: str, **_: Any) -> None:
        self.owner.act_on_remote_stop(transaction_id)

    @on(Action201.request_start_transaction)
    def on_request_start_transaction(self, id_token: dict[str, Any], remote_start_id: int,
                                     **_: Any) -> result201.RequestStartTransaction:
        status = self.owner.accept_remote_start("RequestStartTransaction",
                                                str(id_token.get("id_token", "")),
                                                remote_start_id)
        return result201.RequestStartTransaction(status=status)

    @after(Action201.request_start_transaction)
    def after_request_start_transaction(self, id_token: dict[str, Any], remote_start_id: int,
                                        **_: Any) -> None:
        self.owner.act_on_remote_start(str(id_token.get("id_token", "")), remote_start_id)

    @on(Action201.cost_updated)
    def on_cost_updated(self, total_cost: Any, transaction_id: str, **_: Any
                        ) -> result201.CostUpdated:
        self.owner.record_cost("CostUpdated", transaction_id, total_cost,
                               {"total_cost": total_cost, "transaction_id": transaction_id})
        return result201.CostUpdated()

    @on(Action201.data_transfer)
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                         data: Any = None, **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status=self.owner.record_data_transfer(
            vendor_id, message_id, data))

    @on(Action201.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any
                         ) -> result201.SetVariables:
        results = []
        for item in set_variable_data:
            component = item.get("component", {}).get("name", "")
            variable = item.get("variable", {}).get("name", "")
            status = self.owner.change_configuration(f"{component}.{variable}",
                                                     str(item.get("attribute_value", "")))
            results.append({"attribute_status": "Accepted" if status == "Accepted" else
                            "UnknownVariable" if status == "NotSupported" else "Rejected",
                            "component": item.get("component", {}),
                            "variable": item.get("variable", {})})
        return result201.SetVariables(set_variable_result=results)

    @on(Action201.trigger_message)
    def on_trigger_message(self, requested_message: str, **_: Any) -> result201.TriggerMessage:
        return result201.TriggerMessage(status=self.owner.accept_trigger(requested_message))

    @after(Action201.trigger_message)
    def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        self.owner.act_on_trigger(requested_message)


# -- the simulated charger -------------------------------------------------------------------


@dataclass(slots=True)
class _Active:
    record: TransactionRecord
    curve: ChargingCurve
    t0_s: float  # clock elapsed at plug-in
    register_wh_start: int
    interrupt: asyncio.Event
    stop_at_s: float | None = None  # clock elapsed at which the simulation ends the session
    stop_reason: str | None = None
    seq_no: int = 0  # 2.0.1: the next TransactionEvent seqNo
    charging_state: str = "Charging"  # as last reported
    state_changed: bool = False  # 2.0.1: the next Updated reports a ChargingStateChanged
    sample: CurveSample | None = None


class SimulatedCharger:
    """One charger with one connector (EVSE 1, connector 1) behind a real OCPP connection.

    Use as ``async with simulated_charger(spec, url, clock) as charger:`` (connects and boots),
    then ``await charger.charge(curve, id_tag)``; read ``charger.log``.
    """

    def __init__(self, spec: ChargerSpec, url: str, clock: SimClock | None = None, *,
                 sample_interval_s: int = 60, response_timeout_s: float = 30,
                 register_wh_start: int = 0, transaction_data: bool = True) -> None:
        if sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be positive")
        self.spec = spec
        self.url = url.rstrip("/")
        self.clock = clock or SimClock()
        self.sample_interval_s = sample_interval_s
        self.response_timeout_s = response_timeout_s
        self.register_wh = register_wh_start
        self.transaction_data = transaction_data
        self.log = ChargerLog(identity=spec.identity, ocpp_version=spec.ocpp_version)
        self.remote_starts: asyncio.Queue[RemoteStart] = asyncio.Queue(
            maxsize=REMOTE_STARTS_QUEUED_MAX)
        self._connection: ClientConnection | None = None
        self._cp: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active: _Active | None = None
        self._closed = asyncio.Event()
        self._last_sent_s = 0.0
        self._status = "Available"
        self._remote_start_accepted: RemoteStart | None = None

    @property
    def uri(self) -> str:
        return f"{self.url}/{self.spec.identity}"

    @property
    def closed(self) -> bool:
        """The connection was open and is now closed (lost or closed by us)."""
        return self._closed.is_set()

    @property
    def active_transaction(self) -> TransactionRecord | None:
        return None if self._active is None else self._active.record

    # -- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        headers = {}
        if self.spec.password is not None:
            headers["Authorization"] = basic_auth_header(self.spec.identity, self.spec.password)
        subprotocol = Subprotocol(f"ocpp{self.spec.ocpp_version}")
        try:
            self._connection = await websockets.connect(
                self.uri, subprotocols=[subprotocol], additional_headers=headers,
                open_timeout=self.response_timeout_s, max_size=2**20, max_queue=64)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise SimulatorError(f"{self.spec.identity}: cannot connect to {self.uri}: "
                                 f"{exc}") from exc
        self.log.subprotocol = self._connection.subprotocol
        if self._connection.subprotocol != subprotocol:
            await self._connection.close()
            raise SimulatorError(f"{self.spec.identity}: the server did not accept "
                                 f"{subprotocol} (got {self._connection.subprotocol!r})")
        self.log.connected = True
        self._cp = self._make_charge_point(self._connection)
        self._spawn(self._read())

    def _make_charge_point(self, connection: ClientConnection) -> Any:
        raise NotImplementedError

    async def _read(self) -> None:
        try:
            await self._cp.start()
        except ConnectionClosed:
            pass
        except Exception as exc:  # the library's reader died: record it, end the connection
            self.record_error(f"reader: {exc!r}")
        finally:
            self.log.connected = False
            self._closed.set()
            if self._active is not None:
                self._active.interrupt.set()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self.log.connected = False
        self._closed.set()

    async def __aenter__(self) -> SimulatedCharger:
        await self.connect()
        await self.boot()
        await self.send_status("Available")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- calls ----------------------------------------------------------------------------

    async def _call(self, payload: Any) -> Any:
        """Send a call; record the exchange. None after a CALLERROR or a timeout."""
        if self._closed.is_set() or self._cp is None:
            raise SimulatorError(f"{self.spec.identity}: connection closed")
        action = type(payload).__name__
        self.log.messages_sent += 1
        self._last_sent_s = self.clock.elapsed_s()
        try:
            response = await self._cp.call(payload, suppress=False)
        except OCPPError as exc:
            self.record_error(f"{action}: CALLERROR {exc.code}: {exc.description}")
            self.log.exchanges.append(Exchange(self.clock.now(), action, None, str(exc.code)))
            return None
        except TimeoutError:
            if self._closed.is_set():
                raise SimulatorError(f"{self.spec.identity}: connection closed") from None
            self.record_error(f"{action}: no response within {self.response_timeout_s} s")
            self.log.exchanges.append(Exchange(self.clock.now(), action, None, "timeout"))
            return None
        except ConnectionClosed as exc:
            raise SimulatorError(f"{self.spec.identity}: connection closed: {exc}") from exc
        self.log.exchanges.append(Exchange(self.clock.now(), action, _as_dict(response)))
        return response

    def record_error(self, message: str) -> None:
        self.log.error_count += 1
        self.log.errors.append(message)

    async def boot(self) -> str:
        """BootNotification until Accepted (Pending / Rejected: retry after the interval)."""
        status = "Rejected"
        for _ in range(BOOT_ATTEMPTS_MAX):
            response = await self._call(self._boot_payload())
            if response is None:
                raise SimulatorError(f"{self.spec.identity}: BootNotification failed")
            status = str(response.status)
            self.log.boot_status = status
            self.log.heartbeat_interval_s = int(response.interval)
            if status == "Accepted":
                if self.log.heartbeat_interval_s > 0:
                    self._spawn(self._heartbeats(self.log.heartbeat_interval_s))
                return status
            await asyncio.sleep(min(max(self.clock.wall_s(response.interval), 0.05), 5))
        raise SimulatorError(f"{self.spec.identity}: BootNotification {status}")

    async def _heartbeats(self, interval_s: int) -> None:
        while not self._closed.is_set():
            due_s = self._last_sent_s + interval_s
            if self.clock.elapsed_s() >= due_s:
                with contextlib.suppress(SimulatorError):
                    await self._call(self._heartbeat_payload())
                continue
            await self.clock.sleep_until(due_s)

    async def send_status(self, status: str) -> None:
        self._status = status
        self.log.statuses.append(status)
        await self._call(self._status_payload(status, self.clock.now()))

    async def authorize(self, id_tag: str) -> str | None:
        response = await self._call(self._authorize_payload(id_tag))
        return None if response is None else self._authorize_status(response)

    # -- a charging session ---------------------------------------------------------------

    async def charge(self, curve: ChargingCurve, id_tag: str, *,
                     remote_start_id: int | None = None, remote: bool = False,
                     stop_at_s: float | None = None) -> TransactionRecord:
        """Plug in, authorize (unless started remotely), start, meter, stop, unplug.

        The session follows ``curve`` (simulated time from plug-in) and ends when the car
        leaves (``EVDisconnected``), on a remote stop (``Remote``), on :meth:`stop_local`
        (``Local``) or at ``stop_at_s`` of simulated clock time (``Local``: the simulation
        ends). Returns the record (also in ``log.transactions``).
        """
        if self._active is not None:
            raise SimulatorError(f"{self.spec.identity}: a session is already running")
        t0_s = self.clock.elapsed_s()
        record = TransactionRecord(id_tag=id_tag, plugged_in_at=self.clock.at(t0_s),
                                   remote_start_id=remote_start_id)
        self.log.transactions.append(record)
        active = _Active(record, curve, t0_s, self.register_wh, asyncio.Event(),
                         stop_at_s=stop_at_s)
        self._active = active
        try:
            await self._plug_in(active)
            if not remote:
                record.authorize_status = await self.authorize(id_tag)
                if record.authorize_status != "Accepted":
                    record.stop_reason = "NotAuthorized"
                    await self._unplug(active, rejected=True)
                    return record
            sample = curve.sample(0)
            active.sample = sample
            await self._start(active, sample)
            if record.start_status not in (None, "Accepted"):
                active.stop_reason = "DeAuthorized"
            reason = active.stop_reason or await self._meter_until_stop(active)
            end_s = self.clock.elapsed_s() if reason in ("Remote", "Local", "DeAuthorized") \
                else None
            offset_ms = self._offset_ms(active, end_s)
            sample = curve.sample(min(offset_ms, curve.departure_ms))
            active.sample = sample
            record.stop_reason = reason
            await self._stop(active, sample, reason, self._at(active, offset_ms))
            await self._unplug(active, rejected=False)
            return record
        finally:
            self.register_wh = active.register_wh_start + (
                active.sample.energy_wh if active.sample is not None else 0)
            self._active = None

    def stop_local(self) -> bool:
        """The driver stops the session at the charger (reason ``Local``)."""
        return self._interrupt("Local")

    def _interrupt(self, reason: str) -> bool:
        active = self._active
        if active is None or active.stop_reason is not None:
            return False
        active.stop_reason = reason
        active.interrupt.set()
        return True

    def _offset_ms(self, active: _Active, elapsed_s: float | None) -> int:
        if elapsed_s is None:
            return active.curve.departure_ms
        return max(int((elapsed_s - active.t0_s) * 1000), 0)

    def _at(self, active: _Active, offset_ms: int) -> dt.datetime:
        return self.clock.at(active.t0_s + offset_ms / 1000)

    async def _meter_until_stop(self, active: _Active) -> str:
        """Meter values every sample interval until something ends the session."""
        curve = active.curve
        departure_s = curve.departure_ms / 1000
        n = 1
        while True:
            next_s = n * self.sample_interval_s
            wake_s = min(next_s, departure_s)
            limit_s = None
            if active.stop_at_s is not None:
                limit_s = active.stop_at_s - active.t0_s
                wake_s = min(wake_s, max(limit_s, 0))
            interrupted = await self._wait(active, active.t0_s + wake_s)
            if self._closed.is_set():
                raise SimulatorError(f"{self.spec.identity}: connection closed mid-session")
            if interrupted:
                return active.stop_reason or "Other"
            if wake_s >= departure_s:
                return "EVDisconnected"
            if limit_s is not None and wake_s >= limit_s:
                active.stop_reason = "Local"
                return "Local"
            sample = curve.sample(int(next_s * 1000))
            active.sample = sample
            state = "Charging" if sample.state == "charging" else "SuspendedEV"
            if state != active.charging_state:
                active.charging_state = state
                active.record.charging_states.append(state)
                await self._charging_state_changed(active, sample)
            await self._send_sample(active, sample, self._at(active, sample.offset_ms))
            active.record.samples_sent += 1
            n += 1

    async def _wait(self, active: _Active, until_s: float) -> bool:
        """Wait until simulated ``until_s``; True if a stop or a lost socket cut it short."""
        wall_s = max(until_s - self.clock.elapsed_s(), 0) / self.clock.speedup
        try:
            await asyncio.wait_for(active.interrupt.wait(), timeout=wall_s)
        except TimeoutError:
            return False
        return True

    def _register(self, active: _Active, sample: CurveSample) -> int:
        return active.register_wh_start + sample.energy_wh

    # -- what the central system sends ----------------------------------------------------

    def _received(self, action: str) -> None:
        self.log.calls_received.append(action)

    def accept_remote_stop(self, action: str, transaction_id: str) -> str:
        self._received(action)
        active = self._active
        ok = (active is not None and active.record.transaction_id == transaction_id
              and active.stop_reason is None)
        status = "Accepted" if ok else "Rejected"
        self.log.remote_stops.append(RemoteRequest(self.clock.now(), action, status,
                                                   transaction_id=transaction_id))
        return status

    def act_on_remote_stop(self, transaction_id: str) -> None:
        active = self._active
        if active is not None and active.record.transaction_id == transaction_id:
            active.record.remote_stopped = True
            self._interrupt("Remote")

    def accept_remote_start(self, action: str, id_tag: str, remote_start_id: int | None) -> str:
        self._received(action)
        ok = self._active is None and not self.remote_starts.full() and bool(id_tag)
        status = "Accepted" if ok else "Rejected"
        self._remote_start_accepted = RemoteStart(id_tag, remote_start_id) if ok else None
        self.log.remote_starts.append(RemoteRequest(self.clock.now(), action, status,
                                                    id_tag=id_tag,
                                                    remote_start_id=remote_start_id))
        return status

    def act_on_remote_start(self, id_tag: str, remote_start_id: int | None) -> None:
        accepted, self._remote_start_accepted = self._remote_start_accepted, None
        if accepted is not None and not self.remote_starts.full():
            self.remote_starts.put_nowait(accepted)

    def record_data_transfer(self, vendor_id: str, message_id: str | None, data: Any) -> str:
        self._received("DataTransfer")
        self.log.data_transfers.append({"vendor_id": vendor_id, "message_id": message_id,
                                        "data": data})
        if vendor_id != COST_VENDOR_ID:
            return "UnknownVendorId"
        content: Any = data
        if isinstance(data, str):
            try:
                content = json.loads(data, parse_float=Decimal)
            except ValueError:
                content = {"text": data}
        if not isinstance(content, dict):
            content = {"value": content}
        transaction_id = content.get("transactionId", content.get("transaction_id"))
        self.record_cost(message_id or "RunningCost",
                         None if transaction_id is None else str(transaction_id),
                         content.get("cost"), content)
        return "Accepted"

    def record_cost(self, source: str, transaction_id: str | None, cost: Any,
                    raw: dict[str, Any]) -> None:
        self.log.display_costs.append(DisplayCost(self.clock.now(), source, transaction_id,
                                                  _decimal(cost), raw))

    def configuration(self) -> dict[str, str]:
        return {"MeterValueSampleInterval": str(self.sample_interval_s),
                "HeartbeatInterval": str(self.log.heartbeat_interval_s or 0)}

    def change_configuration(self, key: str, value: str) -> str:
        self._received("ChangeConfiguration")
        if key in ("MeterValueSampleInterval", "SampledDataCtrlr.TxUpdatedInterval"):
            try:
                interval_s = int(value)
            except ValueError:
                return "Rejected"
            if interval_s <= 0:
                return "Rejected"
            self.sample_interval_s = interval_s
            return "Accepted"
        return "NotSupported"

    def accept_trigger(self, requested_message: str) -> str:
        self._received("TriggerMessage")
        known = ("Heartbeat", "StatusNotification", "MeterValues")
        return "Accepted" if requested_message in known else "NotImplemented"

    def act_on_trigger(self, requested_message: str) -> None:
        if requested_message == "Heartbeat":
            self._spawn(self._quietly(self._call(self._heartbeat_payload())))
        elif requested_message == "StatusNotification":
            self._spawn(self._quietly(self._call(self._status_payload(self._status,
                                                                      self.clock.now()))))
        elif requested_message == "MeterValues" and self._active is not None:
            active = self._active
            sample = active.curve.sample(self._offset_ms(active, self.clock.elapsed_s()))
            self._spawn(self._quietly(self._send_sample(active, sample, self.clock.now(),
                                                        triggered=True)))

    async def _quietly(self, coroutine: Any) -> None:
        with contextlib.suppress(SimulatorError):
            await coroutine

    async def wait_for(self, predicate: Callable[[ChargerLog], bool],
                       timeout_s: float = 10.0) -> None:
        """Wait (wall seconds) until ``predicate(self.log)`` holds; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.log):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.spec.identity}: condition not met in {timeout_s} s")
            await asyncio.sleep(0.01)

    # -- per version ----------------------------------------------------------------------

    def _boot_payload(self) -> Any:
        raise NotImplementedError

    def _heartbeat_payload(self) -> Any:
        raise NotImplementedError

    def _status_payload(self, status: str, at: dt.datetime) -> Any:
        raise NotImplementedError

    def _authorize_payload(self, id_tag: str) -> Any:
        raise NotImplementedError

    def _authorize_status(self, response: Any) -> str | None:
        raise NotImplementedError

    async def _plug_in(self, active: _Active) -> None:
        raise NotImplementedError

    async def _start(self, active: _Active, sample: CurveSample) -> None:
        raise NotImplementedError

    async def _charging_state_changed(self, active: _Active, sample: CurveSample) -> None:
        raise NotImplementedError

    async def _send_sample(self, active: _Active, sample: CurveSample, at: dt.datetime,
                           triggered: bool = False) -> None:
        raise NotImplementedError

    async def _stop(self, active: _Active, sample: CurveSample, reason: str,
                    at: dt.datetime) -> None:
        raise NotImplementedError

    async def _unplug(self, active: _Active, *, rejected: bool) -> None:
        raise NotImplementedError


def _current_values(sample: CurveSample, phases: int) -> list[tuple[str | None, int]]:
    """(phase, deci-amperes) for the current samples: per phase on AC, one value on DC."""
    if phases == 0:
        return [(None, sample.current_da[0])]
    names = ("L1", "L2", "L3")[:phases]
    return list(zip(names, sample.current_da[:phases], strict=True))


def _deci(value_da: int) -> str:
    return f"{value_da // 10}.{value_da % 10}"


class SimulatedCharger16(SimulatedCharger):
    def _make_charge_point(self, connection: ClientConnection) -> Any:
        return _ChargePoint16(self, connection, self.response_timeout_s)

    def _boot_payload(self) -> Any:
        return call16.BootNotification(
            charge_point_model=self.spec.model, charge_point_vendor=self.spec.vendor,
            charge_point_serial_number=self.spec.identity[:25],
            firmware_version=self.spec.firmware_version)

    def _heartbeat_payload(self) -> Any:
        return call16.Heartbeat()

    def _status_payload(self, status: str, at: dt.datetime) -> Any:
        return call16.StatusNotification(connector_id=1, error_code="NoError", status=status,
                                         timestamp=ocpp_timestamp(at))

    def _authorize_payload(self, id_tag: str) -> Any:
        return call16.Authorize(id_tag=id_tag)

    def _authorize_status(self, response: Any) -> str | None:
        info = response.id_tag_info or {}
        return None if info.get("status") is None else str(info["status"])

    async def _plug_in(self, active: _Active) -> None:
        return None  # 1.6: Preparing once authorized (below), as the flow in the module doc

    async def _start(self, active: _Active, sample: CurveSample) -> None:
        record = active.record
        await self.send_status("Preparing")
        at = self._at(active, 0)
        register = self._register(active, sample)
        response = await self._call(call16.StartTransaction(
            connector_id=1, id_tag=record.id_tag, meter_start=register,
            timestamp=ocpp_timestamp(at)))
        if response is None:
            raise SimulatorError(f"{self.spec.identity}: StartTransaction failed")
        record.transaction_id = str(response.transaction_id)
        record.start_status = str((response.id_tag_info or {}).get("status"))
        record.started_at, record.meter_start_wh = at, register
        if record.start_status == "Accepted":
            record.charging_states.append("Charging")
            await self.send_status("Charging")

    async def _charging_state_changed(self, active: _Active, sample: CurveSample) -> None:
        await self.send_status(active.charging_state)

    def _sampled_values(self, active: _Active, sample: CurveSample, context: str
                        ) -> list[dict[str, Any]]:
        register = self._register(active, sample)
        values: list[dict[str, Any]] = [
            {"value": str(register), "context": context,
             "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
            {"value": str(sample.power_w), "context": context,
             "measurand": "Power.Active.Import", "location": "Outlet", "unit": "W"},
        ]
        for phase, current_da in _current_values(sample, active.curve.plan.phases):
            value: dict[str, Any] = {"value": _deci(current_da), "context": context,
                                     "measurand": "Current.Import", "location": "Outlet",
                                     "unit": "A"}
            if phase is not None:
                value["phase"] = phase
            values.append(value)
        values.append({"value": str(sample.soc_permille // 10), "context": context,
                       "measurand": "SoC", "location": "EV", "unit": "Percent"})
        return values

    async def _send_sample(self, active: _Active, sample: CurveSample, at: dt.datetime,
                           triggered: bool = False) -> None:
        record = active.record
        if record.transaction_id is None:
            return
        context = "Trigger" if triggered else "Sample.Periodic"
        await self._call(call16.MeterValues(
            connector_id=1, transaction_id=int(record.transaction_id),
            meter_value=[{"timestamp": ocpp_timestamp(at), "sampled_value":
                          self._sampled_values(active, sample, context)}]))

    async def _stop(self, active: _Active, sample: CurveSample, reason: str,
                    at: dt.datetime) -> None:
        record = active.record
        if record.transaction_id is None:
            return
        register = self._register(active, sample)
        data = None
        if self.transaction_data:
            data = [{"timestamp": ocpp_timestamp(at), "sampled_value": [
                {"value": str(register), "context": "Transaction.End",
                 "measurand": "Energy.Active.Import.Register", "location": "Outlet",
                 "unit": "Wh"}]}]
        await self._call(call16.StopTransaction(
            meter_stop=register, timestamp=ocpp_timestamp(at),
            transaction_id=int(record.transaction_id), reason=reason, id_tag=record.id_tag,
            transaction_data=data))
        record.stopped_at, record.meter_stop_wh = at, register

    async def _unplug(self, active: _Active, *, rejected: bool) -> None:
        reason = active.record.stop_reason
        if not rejected and reason != "EVDisconnected":
            await self.send_status("Finishing")  # stopped, cable still in: the driver unplugs
        await self.send_status("Available")


class SimulatedCharger201(SimulatedCharger):
    def _make_charge_point(self, connection: ClientConnection) -> Any:
        return _ChargePoint201(self, connection, self.response_timeout_s)

    def _boot_payload(self) -> Any:
        return call201.BootNotification(
            charging_station={"model": self.spec.model, "vendor_name": self.spec.vendor,
                              "serial_number": self.spec.identity[:25],
                              "firmware_version": self.spec.firmware_version},
            reason="PowerUp")

    def _heartbeat_payload(self) -> Any:
        return call201.Heartbeat()

    def _status_payload(self, status: str, at: dt.datetime) -> Any:
        return call201.StatusNotification(timestamp=ocpp_timestamp(at), connector_status=status,
                                          evse_id=1, connector_id=1)

    def _authorize_payload(self, id_tag: str) -> Any:
        return call201.Authorize(id_token={"id_token": id_tag, "type": "ISO14443"})

    def _authorize_status(self, response: Any) -> str | None:
        info = response.id_token_info or {}
        return None if info.get("status") is None else str(info["status"])

    async def _plug_in(self, active: _Active) -> None:
        await self.send_status("Occupied")

    def _sampled_values(self, active: _Active, sample: CurveSample, context: str
                        ) -> list[dict[str, Any]]:
        register = self._register(active, sample)
        values: list[dict[str, Any]] = [
            {"value": register, "context": context, "location": "Outlet",
             "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}},
            {"value": sample.power_w, "context": context, "location": "Outlet",
             "measurand": "Power.Active.Import", "unit_of_measure": {"unit": "W"}},
        ]
        for phase, current_da in _current_values(sample, active.curve.plan.phases):
            value: dict[str, Any] = {"value": Decimal(current_da) / 10, "context": context,
                                     "location": "Outlet", "measurand": "Current.Import",
                                     "unit_of_measure": {"unit": "A"}}
            if phase is not None:
                value["phase"] = phase
            values.append(value)
        values.append({"value": sample.soc_permille // 10, "context": context, "location": "EV",
                       "measurand": "SoC", "unit_of_measure": {"unit": "Percent"}})
        return values

    async def _transaction_event(self, active: _Active, event_type: str, trigger: str,
                                 at: dt.datetime, *, charging_state: str | None,
                                 meter_values: list[dict[str, Any]] | None,
                                 stopped_reason: str | None = None,
                                 with_token: bool = False) -> Any:
        record = active.record
        info: dict[str, Any] = {"transaction_id": record.transaction_id}
        if charging_state is not None:
            info["charging_state"] = charging_state
        if stopped_reason is not None:
            info["stopped_reason"] = stopped_reason
        if record.remote_start_id is not None and event_type == "Started":
            info["remote_start_id"] = record.remote_start_id
        seq_no = active.seq_no
        active.seq_no += 1
        record.seq_nos.append(seq_no)
        response = await self._call(call201.TransactionEvent(
            event_type=event_type, timestamp=ocpp_timestamp(at), trigger_reason=trigger,
            seq_no=seq_no, transaction_info=info, meter_value=meter_values,
            evse={"id": 1, "connector_id": 1} if event_type == "Started" else None,
            id_token={"id_token": record.id_tag, "type": "ISO14443"} if with_token else None))
        if response is not None:
            if response.total_cost is not None:
                record.total_cost = _decimal(response.total_cost)
                self.record_cost("TransactionEventResponse", record.transaction_id,
                                 response.total_cost, {"total_cost": response.total_cost})
            info_status = (response.id_token_info or {}).get("status")
            if info_status is not None and event_type == "Started":
                record.start_status = str(info_status)
        return response

    def _meter_value(self, active: _Active, sample: CurveSample, at: dt.datetime,
                     context: str) -> list[dict[str, Any]]:
        return [{"timestamp": ocpp_timestamp(at),
                 "sampled_value": self._sampled_values(active, sample, context)}]

    async def _start(self, active: _Active, sample: CurveSample) -> None:
        record = active.record
        record.transaction_id = str(uuid.uuid4())
        at = self._at(active, 0)
        register = self._register(active, sample)
        record.started_at, record.meter_start_wh = at, register
        record.charging_states.append("Charging")
        trigger = "RemoteStart" if record.remote_start_id is not None else "Authorized"
        await self._transaction_event(
            active, "Started", trigger, at, charging_state="Charging", with_token=True,
            meter_values=self._meter_value(active, sample, at, "Transaction.Begin"))

    async def _charging_state_changed(self, active: _Active, sample: CurveSample) -> None:
        active.state_changed = True  # travels with the Updated sent right after this

    async def _send_sample(self, active: _Active, sample: CurveSample, at: dt.datetime,
                           triggered: bool = False) -> None:
        if triggered:
            trigger = "Trigger"
        elif active.state_changed:
            trigger = "ChargingStateChanged"
        else:
            trigger = "MeterValuePeriodic"
        active.state_changed = False
        await self._transaction_event(
            active, "Updated", trigger, at, charging_state=active.charging_state,
            meter_values=self._meter_value(active, sample, at,
                                           "Trigger" if triggered else "Sample.Periodic"))

    async def _stop(self, active: _Active, sample: CurveSample, reason: str,
                    at: dt.datetime) -> None:
        record = active.record
        charging_state = "Idle" if reason == "EVDisconnected" else "EVConnected"
        record.charging_states.append(charging_state)
        await self._transaction_event(
            active, "Ended", STOP_TRIGGERS.get(reason, "AbnormalCondition"), at,
            charging_state=charging_state, stopped_reason=reason,
            meter_values=self._meter_value(active, sample, at, "Transaction.End"))
        record.stopped_at, record.meter_stop_wh = at, self._register(active, sample)

    async def _unplug(self, active: _Active, *, rejected: bool) -> None:
        await self.send_status("Available")


def simulated_charger(spec: ChargerSpec, url: str, clock: SimClock | None = None,
                      **options: Any) -> SimulatedCharger:
    """The simulated charger for ``spec.ocpp_version`` (``sample_interval_s``, ... as options)."""
    cls = SimulatedCharger16 if spec.ocpp_version == "1.6" else SimulatedCharger201
    return cls(spec, url, clock, **options)
