"""Benchmark: the OCPP gateway's per-message cost in process, no socket, no billing.

One OCPP 1.6 MeterValues CALL with 9 sampled values (energy register, power, current x3,
voltage x3, SoC) and one OCPP 2.0.1 TransactionEvent Updated with the same values go through
``Connection.on_frame`` (orjson parse -> compiled schema check -> conversion to ``MeterSample``
-> an instant ``ChargingPort`` -> schema check of the answer -> orjson encode) into a transport
that drops the frames. For comparison, the same 1.6 payload through the pieces the stock ``ocpp``
library runs per message: ``jsonschema`` validation and the camelCase renaming (without its
thread-pool hop, so its real cost is higher).

    .venv/bin/python bench/ocpp_dispatch.py [--messages 20000]

Prints ONE JSON object: microseconds per message (best of 3 runs) for each path and the
breakdown of ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call as StockCall
from ocpp.messages import _validate_payload

from evbilling.entrypoints.ocpp import conversions, v16, v201, validation
from evbilling.entrypoints.ocpp.connection import Connection
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

SAMPLED_16 = [
    {"value": "12500.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
     "context": "Sample.Periodic", "location": "Outlet"},
    {"value": "11.04", "measurand": "Power.Active.Import", "unit": "kW"},
    {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
    {"value": "16.1", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
    {"value": "15.9", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
    {"value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
    {"value": "230.2", "measurand": "Voltage", "phase": "L2-N", "unit": "V"},
    {"value": "230.3", "measurand": "Voltage", "phase": "L3-N", "unit": "V"},
    {"value": "42", "measurand": "SoC", "unit": "Percent"},
]
METER_VALUES_16 = {"connectorId": 1, "transactionId": 1001, "meterValue": [
    {"timestamp": "2024-05-01T10:05:00Z", "sampledValue": SAMPLED_16}]}
SAMPLED_201 = [
    {"value": float(sv["value"]), **{k: v for k, v in sv.items() if k not in ("value", "unit")},
     "unitOfMeasure": {"unit": sv["unit"]}} for sv in SAMPLED_16]
TX_EVENT_201 = {"eventType": "Updated", "timestamp": "2024-05-01T10:05:00Z", "seqNo": 7,
                "triggerReason": "MeterValuePeriodic",
                "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
                "meterValue": [{"timestamp": "2024-05-01T10:05:00Z",
                                "sampledValue": SAMPLED_201}]}


class InstantPort:
    """A ChargingPort that answers at once (the gateway's own cost is what is measured)."""

    async def authorize(self, charger: ChargerRef, id_token: str) -> TokenStatus:
        return "Accepted"

    async def start_transaction(self, cmd: StartTransaction) -> TransactionStarted:
        return TransactionStarted("s", "1", "Accepted")

    async def record_meter_values(self, cmd: RecordMeterValues) -> LiveCost | None:
        return None

    async def stop_transaction(self, cmd: StopTransaction) -> LiveCost | None:
        return None

    async def status_changed(self, cmd: ChargerStatus) -> None:
        return None

    async def booted(self, cmd: BootInfo) -> None:
        return None

    async def seen(self, charger: ChargerRef, at_ms: int) -> None:
        return None


class NullTransport:
    def __init__(self) -> None:
        self.frames = 0

    async def send(self, text: str) -> None:
        self.frames += 1

    async def close(self, code: int = 1000) -> None:
        return None


def best_us(run: Callable[[], float], repeats: int = 3) -> float:
    return round(min(run() for _ in range(repeats)), 2)


def per_call_us(fn: Callable[[], Any], n: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6
    return run


def dispatch_us(version: str, action: str, payload: dict[str, Any], n: int) -> float:
    dialect = v16.DIALECT if version == "1.6" else v201.DIALECT
    charger = ChargerRef("chg", "op", "CP", "site", "1.6" if version == "1.6" else "2.0.1")
    frame = orjson.dumps([2, "b1", action, payload]).decode()

    async def run() -> float:
        transport = NullTransport()
        connection = Connection(charger, dialect, transport, InstantPort())
        await connection.on_frame(frame)  # compile the schema outside the timing
        start = time.perf_counter()
        for _ in range(n):
            await connection.on_frame(frame)
        elapsed = time.perf_counter() - start
        if transport.frames != n + 1:
            raise SystemExit(f"{action}: expected {n + 1} answers, got {transport.frames}")
        return elapsed / n * 1e6
    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    n = args.messages
    frame = orjson.dumps([2, "b1", "MeterValues", METER_VALUES_16]).decode()
    validation.validate("1.6", "MeterValues", "request", METER_VALUES_16)
    stock = StockCall("b1", "MeterValues", METER_VALUES_16)
    _validate_payload(stock, "1.6")

    def stock_path() -> None:
        msg = StockCall("b1", "MeterValues", json.loads(frame)[3])
        _validate_payload(msg, "1.6")
        snake_to_camel_case(camel_to_snake_case(msg.payload))

    print("measuring ...", file=sys.stderr)
    result = {
        "messages": n,
        "ours_meter_values_16_us": best_us(lambda: dispatch_us("1.6", "MeterValues",
                                                               METER_VALUES_16, n)),
        "ours_transaction_event_201_us": best_us(lambda: dispatch_us(
            "2.0.1", "TransactionEvent", TX_EVENT_201, n)),
        "ours_breakdown_16_us": {
            "orjson_parse": best_us(per_call_us(lambda: orjson.loads(frame), n)),
            "schema_check": best_us(per_call_us(lambda: validation.validate(
                "1.6", "MeterValues", "request", METER_VALUES_16), n)),
            "to_meter_samples": best_us(per_call_us(lambda: conversions.samples_v16(
                METER_VALUES_16["meterValue"], strict=True), n)),  # type: ignore[arg-type]
        },
        "stock_library_validation_and_renaming_16_us": best_us(per_call_us(stock_path,
                                                                           n // 4)),
    }
    result["ours_meter_values_16_per_s_one_core"] = round(1e6 / result[  # type: ignore[operator]
        "ours_meter_values_16_us"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
