"""Fakes for the OCPP gateway tests (unit and e2e): an in-memory ``ChargingPort`` that records
every command, and a transport that records every frame. Fakes over mocks (STYLE.md)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from evbilling.services.ports import (
    BootInfo,
    ChargerRef,
    ChargerStatus,
    LiveCost,
    RecordMeterValues,
    StartTransaction,
    StopTransaction,
    TokenStatus,
    TransactionStarted,
)

KNOWN_TOKENS = {"04A1B2C3D4E5F6", "04B0B0B0B0B0B0", "APP-BOB-1", "04C4C4C4C4C4C4"}


@dataclass
class FakeChargingPort:
    """Records commands; answers like a small charging service. ``costs`` is what
    ``record_meter_values`` returns (None: no cost); ``fail_stop`` makes ``stop_transaction``
    raise, ``stop_requested`` asks for a remote stop with the next cost."""

    commands: list[Any] = field(default_factory=list)
    costs: bool = True
    fail_stop: bool = False
    stop_requested: bool = False
    seen_count: int = 0
    _next_tx: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, kind: type) -> list[Any]:
        with self._lock:
            return [c for c in self.commands if isinstance(c, kind)]

    def _record(self, command: Any) -> None:
        with self._lock:
            self.commands.append(command)

    async def authorize(self, charger: ChargerRef, id_token: str) -> TokenStatus:
        self._record(("authorize", charger.identity, id_token))
        return "Accepted" if id_token in KNOWN_TOKENS else "Invalid"

    async def start_transaction(self, cmd: StartTransaction) -> TransactionStarted:
        self._record(cmd)
        status: TokenStatus = "Accepted" if cmd.id_token in KNOWN_TOKENS \
            or cmd.id_token is None else "Invalid"
        if cmd.ocpp_transaction_id is not None:
            return TransactionStarted("ses-" + cmd.ocpp_transaction_id, cmd.ocpp_transaction_id,
                                      status)
        self._next_tx += 1
        return TransactionStarted(f"ses-{self._next_tx}", str(self._next_tx), status)

    async def record_meter_values(self, cmd: RecordMeterValues) -> LiveCost | None:
        self._record(cmd)
        if not self.costs or cmd.ocpp_transaction_id is None or not cmd.samples:
            return None
        energy = max((s.energy_milliwh or 0) for s in cmd.samples)
        return self._cost(cmd.ocpp_transaction_id, energy, final=False,
                          stop=self.stop_requested)

    async def stop_transaction(self, cmd: StopTransaction) -> LiveCost | None:
        self._record(cmd)
        if self.fail_stop:
            raise RuntimeError("rating engine forced to fail")
        return self._cost(cmd.ocpp_transaction_id, cmd.energy_milliwh_stop or 0, final=True,
                          stop=False)

    async def status_changed(self, cmd: ChargerStatus) -> None:
        self._record(cmd)

    async def booted(self, cmd: BootInfo) -> None:
        self._record(cmd)

    async def seen(self, charger: ChargerRef, at_ms: int) -> None:
        self.seen_count += 1

    @staticmethod
    def _cost(tx: str, energy_milliwh: int, *, final: bool, stop: bool) -> LiveCost:
        # 0.40 EUR/kWh incl. VAT on the register, for a recognisable number.
        minor = energy_milliwh * 40 // 1_000_000
        return LiveCost(session_id="ses-" + tx, ocpp_transaction_id=tx, currency="EUR",
                        energy_milliwh=energy_milliwh,
                        total_excl=Decimal(minor) / Decimal("119"),
                        total_incl=Decimal(minor) / Decimal(100), amount_minor_incl=minor,
                        final=final, stop_requested=stop)


class RecordingTransport:
    """Frames the gateway sends, decoded; ``closed`` once closed."""

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []
        self.closed: int | None = None
        self.sent = asyncio.Event()

    async def send(self, text: str) -> None:
        self.frames.append(orjson.loads(text))
        self.sent.set()

    async def close(self, code: int = 1000) -> None:
        self.closed = code

    def calls(self) -> list[list[Any]]:
        return [f for f in self.frames if f[0] == 2]

    def last(self) -> list[Any]:
        return self.frames[-1]


CHARGER_16 = ChargerRef(charger_id="chg-1", operator_id="op-1", identity="CP16",
                        site_id="site-1", ocpp_version="1.6")
CHARGER_201 = ChargerRef(charger_id="chg-2", operator_id="op-1", identity="CP201",
                         site_id="site-1", ocpp_version="2.0.1")
