"""Ports: the small protocols services talk through, and the commands they accept.

The charging flow has three parties, wired in ``bootstrap.py``:

* the OCPP gateway (``entrypoints/ocpp``) turns frames into the commands below and calls the
  ``ChargingPort`` (implemented by ``services/charging.ChargingService``); it implements
  ``ChargerCommands`` so the service can tell a connected charger to stop or show a cost;
* the charging service publishes ``domain.events`` to an ``EventSink`` (implemented by the
  notifications service: live stream, in-app list, e-mail, webhooks).

Wire types are converted at the edge: the gateway hands over integer milliwatt-hours, epoch
milliseconds and plain strings; the service never sees camelCase or OCPP floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from evbilling.domain.events import Event
from evbilling.domain.metering import MeterSample

TokenStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]


@dataclass(frozen=True, slots=True)
class ChargerRef:
    """A charger that passed authentication (what the gateway knows about the connection)."""

    charger_id: str
    operator_id: str
    identity: str  # OCPP charge point id
    site_id: str
    ocpp_version: Literal["1.6", "2.0.1"]


@dataclass(frozen=True, slots=True)
class RawFrame:
    """The frame as received (stored verbatim before anything is acknowledged)."""

    unique_id: str
    action: str
    text: str


@dataclass(frozen=True, slots=True)
class StartTransaction:
    charger: ChargerRef
    connector_number: int  # OCPP 1.6 connectorId / 2.0.1 connector id (1 when absent)
    evse_number: int | None  # OCPP 2.0.1 evse.id; None on 1.6 (connector = evse)
    id_token: str | None
    #: The meter register at the start; None when the charger sent none (2.0.1 Started without
    #: a register): the first sample's reading becomes the start.
    energy_milliwh_start: int | None
    started_at_ms: int
    frame: RawFrame
    ocpp_transaction_id: str | None = None  # 2.0.1: the charger's; 1.6: None, we assign
    seq_no: int | None = None
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    session_id: str | None  # None when the token was refused (no session opened)
    ocpp_transaction_id: str  # 1.6: our integer as text
    token_status: TokenStatus


@dataclass(frozen=True, slots=True)
class RecordMeterValues:
    charger: ChargerRef
    ocpp_transaction_id: str | None  # None: samples outside a transaction (kept as status only)
    connector_number: int | None
    samples: tuple[MeterSample, ...]
    frame: RawFrame
    seq_no: int | None = None


@dataclass(frozen=True, slots=True)
class LiveCost:
    """The running (or final) cost of a session, for the driver and the charger display."""

    session_id: str
    ocpp_transaction_id: str
    currency: str
    energy_milliwh: int
    total_excl: Decimal  # exact, 12 decimals
    total_incl: Decimal
    amount_minor_incl: int  # rounded once for display (money.round_to_minor)
    final: bool = False
    stop_requested: bool = False  # the spending cap was reached: the gateway stops the charger


@dataclass(frozen=True, slots=True)
class StopTransaction:
    charger: ChargerRef
    ocpp_transaction_id: str
    stopped_at_ms: int
    energy_milliwh_stop: int | None
    reason: str | None
    id_token: str | None
    samples: tuple[MeterSample, ...]  # 1.6 transactionData / 2.0.1 meterValue of Ended
    frame: RawFrame
    seq_no: int | None = None


@dataclass(frozen=True, slots=True)
class ChargerStatus:
    charger: ChargerRef
    connector_number: int | None  # None or 0 = the charger itself
    status: str  # OCPP status text (Available, Charging, SuspendedEV, Faulted, ...)
    error_code: str | None
    at_ms: int
    info: str | None = None
    #: 2.0.1: the EVSE, whose ``connector_number``-th connector this is (1.6: None, the
    #: connector id counts EVSEs)
    evse_number: int | None = None


@dataclass(frozen=True, slots=True)
class BootInfo:
    charger: ChargerRef
    vendor: str | None
    model: str | None
    serial: str | None
    firmware: str | None
    reason: str | None  # 2.0.1 BootReason
    at_ms: int


class ChargingPort(Protocol):
    """What the OCPP gateway asks of the charging service. Every method is idempotent: a
    replayed frame (same transaction, same instant) returns the first answer and changes
    nothing. ``stop_transaction`` never raises because billing failed: the frame is stored and
    settled afterwards."""

    async def authorize(self, charger: ChargerRef, id_token: str) -> TokenStatus: ...

    async def start_transaction(self, cmd: StartTransaction) -> TransactionStarted: ...

    async def record_meter_values(self, cmd: RecordMeterValues) -> LiveCost | None: ...

    async def stop_transaction(self, cmd: StopTransaction) -> LiveCost | None: ...

    async def status_changed(self, cmd: ChargerStatus) -> None: ...

    async def booted(self, cmd: BootInfo) -> None: ...

    async def seen(self, charger: ChargerRef, at_ms: int) -> None: ...


class ChargerCommands(Protocol):
    """What the charging service (and the API) ask of the gateway. ``False`` = the charger is not
    connected to this process or refused."""

    async def stop_transaction(self, charger_identity: str, ocpp_transaction_id: str) -> bool: ...

    async def start_transaction(self, charger_identity: str, id_token: str,
                                connector_number: int | None) -> bool: ...

    async def show_cost(self, charger_identity: str, cost: LiveCost) -> bool: ...


class EventSink(Protocol):
    """Takes events in order; never blocks the caller (the sink queues its own slow work)."""

    def publish(self, event: Event) -> None: ...
