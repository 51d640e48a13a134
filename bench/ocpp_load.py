"""Benchmark: an OCPP central system under many chargers sending meter values.

Targets: ``stock`` (bench/_stock_csms.py: the mobilityhouse ``ocpp`` library on its defaults,
acknowledge-only handlers) and ``evbilling`` (``evbilling serve``, the real gateway and charging
service on a fresh SQLite file, with the chargers provisioned in its database). Each target runs
in its own server process, fresh for every charger count.

Load: lightweight raw WebSocket clients in separate processes (asyncio + uvloop, hand-made
frames, one call in flight per charger as OCPP requires). N chargers connect (Basic auth), boot,
start a transaction, then send MeterValues with 9 sampled values (energy register, power,
current L1-L3, voltage L1-L3, SoC) in two phases:

1. saturation: closed loop, each charger sends its next sample as soon as the previous one is
   answered: messages/s handled (responses received) and p50/p99 round trip;
2. fixed rate: ``--fixed-rate`` samples/s offered in total (default 1 000), spread evenly over
   the chargers: p99 round trip, and how late sends were against their schedule.

Also: server RSS before and after the chargers connected (memory per connection), server and
client CPU per phase (a client near 100 % would mean the client is the bottleneck), connection
success, and for ``evbilling`` the live cost: the delay from a meter sample being sent to (a)
the running cost arriving back at the charger (1.6 DataTransfer RunningCost) and (b) the
``/api/v1/sessions/{id}/live`` server-sent event carrying that sample's time (``sample_at_ms``),
for a sample of sessions. A separate run against a minimal responder shows how many messages/s
the client side itself can drive (``client_capacity``).

    .venv/bin/python bench/ocpp_load.py                    # both targets, 1 000 and 5 000 chargers
    .venv/bin/python bench/ocpp_load.py --quick            # smoke run, small N, a few seconds
    .venv/bin/python bench/ocpp_load.py --target stock --chargers 1000 --seconds 10

Prints ONE JSON object on stdout; progress goes to stderr. A target that cannot be reached
gives ``null`` figures with an ``error``; the benchmark itself does not crash.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import copy
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

from evbilling.simulator.curves import AC_22KW, random_session

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
EVBILLING = str(Path(sys.executable).with_name("evbilling"))
API_KEY = "evbk_demo_admin_key_do_not_use_in_production"
BENCH_PASSWORD = "bench-charger-secret-0001"  # noqa: S105 - benchmark chargers only
SAMPLED_VALUES = 9
#: The load's cars charge along the simulator's curves (evbilling.simulator.curves), one
#: simulated minute per wall second: a session ramps up, charges at up to 22 kW, tapers and
#: idles when full within the run's minutes, as `evbilling simulate` cars do.
SIM_SPEEDUP = 60
CURVE_SEED = 20_261_124
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def log(message: str) -> None:
    print(f"[ocpp-load] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- process figures (Linux /proc) -----------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def percentile_ms(values_us: array.array[int] | list[int], q: float) -> float | None:
    if not values_us:
        return None
    ordered = sorted(values_us)
    index = min(int(q * len(ordered)), len(ordered) - 1)
    return round(ordered[index] / 1000, 3)


# -- WebSocket framing (client side: masked with a zero key, so the payload goes as is) -------


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65_536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65_536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big") + payload


def parse_frames(buffer: bytearray, masked: bool) -> list[tuple[int, bytes]]:
    """Complete frames at the front of ``buffer`` (removed from it): (opcode, payload)."""
    frames = []
    while len(buffer) >= 2:
        opcode, length, pos = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                break
            length, pos = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length, pos = int.from_bytes(buffer[2:10], "big"), 10
        key = b""
        if masked:
            key, pos = bytes(buffer[pos:pos + 4]), pos + 4
        if len(buffer) < pos + length:
            break
        payload = bytes(buffer[pos:pos + length])
        del buffer[:pos + length]
        if masked and key != b"\x00\x00\x00\x00":
            mask = (key * (length // 4 + 1))[:length]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
                length, "big")
        frames.append((opcode, payload))
    return frames


def _timestamp(now: float) -> bytes:
    seconds = int(now)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((now - seconds) * 1000):03d}Z").encode()


def _iso_ms(text: str) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


# -- pre-built OCPP frames ---------------------------------------------------------------------

_SV16 = (
    b'{"value":"%d","context":"Sample.Periodic","measurand":"Energy.Active.Import.Register",'
    b'"location":"Outlet","unit":"Wh"},'
    b'{"value":"%d","context":"Sample.Periodic","measurand":"Power.Active.Import",'
    b'"location":"Outlet","unit":"W"},'
    b'{"value":"%s","context":"Sample.Periodic","measurand":"Current.Import","phase":"L1",'
    b'"location":"Outlet","unit":"A"},'
    b'{"value":"%s","context":"Sample.Periodic","measurand":"Current.Import","phase":"L2",'
    b'"location":"Outlet","unit":"A"},'
    b'{"value":"%s","context":"Sample.Periodic","measurand":"Current.Import","phase":"L3",'
    b'"location":"Outlet","unit":"A"},'
    b'{"value":"230.1","context":"Sample.Periodic","measurand":"Voltage","phase":"L1-N",'
    b'"location":"Outlet","unit":"V"},'
    b'{"value":"229.8","context":"Sample.Periodic","measurand":"Voltage","phase":"L2-N",'
    b'"location":"Outlet","unit":"V"},'
    b'{"value":"230.4","context":"Sample.Periodic","measurand":"Voltage","phase":"L3-N",'
    b'"location":"Outlet","unit":"V"},'
    b'{"value":"%d","context":"Sample.Periodic","measurand":"SoC","location":"EV",'
    b'"unit":"Percent"}'
)
METER_16 = (b'[2,"%d","MeterValues",{"connectorId":1,"transactionId":%d,"meterValue":'
            b'[{"timestamp":"%s","sampledValue":[' + _SV16 + b']}]}]')

_SV201 = (
    b'{"value":%d,"context":"Sample.Periodic","measurand":"Energy.Active.Import.Register",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"Wh"}},'
    b'{"value":%d,"context":"Sample.Periodic","measurand":"Power.Active.Import",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"W"}},'
    b'{"value":%s,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L1",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"A"}},'
    b'{"value":%s,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L2",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"A"}},'
    b'{"value":%s,"context":"Sample.Periodic","measurand":"Current.Import","phase":"L3",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"A"}},'
    b'{"value":230.1,"context":"Sample.Periodic","measurand":"Voltage","phase":"L1-N",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"V"}},'
    b'{"value":229.8,"context":"Sample.Periodic","measurand":"Voltage","phase":"L2-N",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"V"}},'
    b'{"value":230.4,"context":"Sample.Periodic","measurand":"Voltage","phase":"L3-N",'
    b'"location":"Outlet","unitOfMeasure":{"unit":"V"}},'
    b'{"value":%d,"context":"Sample.Periodic","measurand":"SoC","location":"EV",'
    b'"unitOfMeasure":{"unit":"Percent"}}'
)
METER_201 = (b'[2,"%d","TransactionEvent",{"eventType":"Updated","timestamp":"%s",'
             b'"triggerReason":"MeterValuePeriodic","seqNo":%d,"transactionInfo":'
             b'{"transactionId":"%s","chargingState":"%s"},"evse":{"id":1,"connectorId":1},'
             b'"meterValue":[{"timestamp":"%s","sampledValue":[' + _SV201 + b']}]}]')


def _setup_calls(version: str, identity: str, token: str, tx_uid: str, register_wh: int,
                 now: float) -> list[tuple[str, dict[str, Any]]]:
    stamp = _timestamp(now).decode()
    if version == "1.6":
        return [
            ("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "raw-load",
                                  "chargePointSerialNumber": identity[-20:]}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                    "status": "Available", "timestamp": stamp}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                    "status": "Preparing", "timestamp": stamp}),
            ("StartTransaction", {"connectorId": 1, "idTag": token, "meterStart": register_wh,
                                  "timestamp": stamp}),
            ("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                    "status": "Charging", "timestamp": stamp}),
        ]
    return [
        ("BootNotification", {"chargingStation": {"vendorName": "bench", "model": "raw-load"},
                              "reason": "PowerUp"}),
        ("StatusNotification", {"timestamp": stamp, "connectorStatus": "Occupied", "evseId": 1,
                                "connectorId": 1}),
        ("TransactionEvent", {
            "eventType": "Started", "timestamp": stamp, "triggerReason": "Authorized",
            "seqNo": 0, "transactionInfo": {"transactionId": tx_uid, "chargingState": "Charging"},
            "idToken": {"idToken": token, "type": "ISO14443"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": stamp, "sampledValue": [
                {"value": register_wh, "context": "Transaction.Begin",
                 "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}]}],
        }),
    ]


def _answer_to(action: str) -> dict[str, Any]:
    """What the bench charger answers to a CALL from the central system."""
    if action in ("CostUpdated", "ClearDisplayMessage", "SetDisplayMessage"):
        return {} if action == "CostUpdated" else {"status": "Accepted"}
    if action == "GetConfiguration":
        return {"configurationKey": []}
    if action in ("TriggerMessage", "ReserveNow", "Reset", "UnlockConnector"):
        return {"status": "Rejected"}
    return {"status": "Accepted"}


# -- the raw charger ---------------------------------------------------------------------------


@dataclass(slots=True)
class PhaseStats:
    """One client process's figures for one phase."""

    sent: int = 0
    handled: int = 0  # responses received inside the measuring window
    call_errors: int = 0  # CALLERRORs received
    latencies_us: array.array[int] = field(default_factory=lambda: array.array("I"))
    lags_us: array.array[int] = field(default_factory=lambda: array.array("I"))
    late_sends: int = 0
    scheduled: int = 0
    #: 1.6: meter sample sent -> the DataTransfer RunningCost for it received by the charger
    display_delays_us: array.array[int] = field(default_factory=lambda: array.array("I"))


class RawCharger(asyncio.Protocol):
    """One charger: a hand-made WebSocket client with one OCPP call in flight at most."""

    def __init__(self, job: ClientJob, identity: str, token: str, index: int,
                 shared: SharedCounters) -> None:
        self.job, self.identity, self.token, self.index = job, identity, token, index
        self.shared = shared
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = False
        self.message_id = 0
        self.transaction_id = 0  # 1.6, from StartTransaction
        self.tx_uid = f"bench-{identity}"[:36]  # 2.0.1, ours
        self.seq_no = 1
        self.register_wh_start = 1_000_000 + index
        self.register_mwh = self.register_wh_start * 1000
        #: the car on this connector: the simulator's charging curve (ramp, constant current,
        #: taper near full, idle when full), run at SIM_SPEEDUP x wall time from the start
        self.curve = random_session(random.Random(CURVE_SEED + index), AC_22KW)  # noqa: S311
        self.plugged_at = time.time()
        self.in_flight = False
        self.sent_at = 0.0
        self.on_answer: Callable[[RawCharger, float, bool], None] | None = None
        self.due: asyncio.TimerHandle | None = None
        self.owed_since = 0.0  # fixed rate: a send that came due while a call was in flight

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        credentials = base64.b64encode(f"{self.identity}:{self.job.password}".encode()).decode()
        self.transport.write((
            f"GET {self.job.path}/{self.identity} HTTP/1.1\r\n"
            f"Host: {self.job.host}:{self.job.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp{self.job.version}\r\n"
            f"Authorization: Basic {credentials}\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))
        if self.due is not None:
            self.due.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "101":
                if not self.handshake.done():
                    self.handshake.set_exception(ConnectionError(f"HTTP {status}"))
                self.close()
                return
            if f"ocpp{self.job.version}" not in head.lower():
                if not self.handshake.done():
                    self.handshake.set_exception(ConnectionError("subprotocol not accepted"))
                self.close()
                return
            self.upgraded = True
            if not self.handshake.done():
                self.handshake.set_result(None)
        for opcode, payload in parse_frames(self.buffer, masked=False):
            if opcode in (0x1, 0x0):
                self.on_message(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(client_frame(payload, opcode=0xA))
            elif opcode == 0x8:
                self.close()

    # OCPP --------------------------------------------------------------------------------

    def on_message(self, payload: bytes) -> None:
        head = payload[:8].lstrip(b" \t\r\n[")
        if not head:
            return
        kind = head[0]
        if kind == 0x32:  # "2": a CALL from the central system
            self.answer_call(payload)
            return
        now = time.perf_counter()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(payload)
            return
        if self.in_flight:
            self.in_flight = False
            if self.on_answer is not None:
                self.on_answer(self, now, kind == 0x34)

    def answer_call(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            unique_id, action, body = str(message[1]), str(message[2]), message[3]
        except (orjson.JSONDecodeError, IndexError, TypeError):
            return
        self.shared.server_calls[action] += 1
        if action == "DataTransfer" and isinstance(body, dict) \
                and body.get("messageId") == "RunningCost":
            self.note_running_cost(body.get("data"))
        self.send(orjson.dumps([3, unique_id, _answer_to(action)]))

    def note_running_cost(self, data: Any) -> None:
        try:
            content = orjson.loads(data) if isinstance(data, str) else data
        except orjson.JSONDecodeError:
            return
        if isinstance(content, dict) and isinstance(content.get("timestamp"), str):
            sample_ms = _iso_ms(content["timestamp"])
            phase = self.shared.phase
            if sample_ms is not None and phase is not None:
                delay_ms = time.time() * 1000 - sample_ms
                phase.display_delays_us.append(max(int(delay_ms * 1000), 0))

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(client_frame(payload))

    async def call(self, action: str, body: dict[str, Any], timeout_s: float) -> Any:
        self.message_id += 1
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.send(orjson.dumps([2, str(self.message_id), action, body]))
        try:
            answer = await asyncio.wait_for(self.waiter, timeout_s)
        finally:
            self.waiter = None
        message = orjson.loads(answer)
        if message[0] != 3:
            raise ConnectionError(f"{action}: CALLERROR {message[2]}")
        return message[2]

    def send_sample(self) -> None:
        """One MeterValues (1.6) / TransactionEvent Updated (2.0.1) with 9 sampled values,
        read off the simulator's charging curve of this charger's car."""
        now = time.time()
        sample = self.curve.sample(int((now - self.plugged_at) * 1000 * SIM_SPEEDUP))
        register = self.register_wh_start + sample.energy_wh
        self.register_mwh = register * 1000
        l1, l2, l3 = (b"%d.%d" % divmod(da, 10) for da in sample.current_da)
        soc = sample.soc_permille // 10
        stamp = _timestamp(now)
        self.message_id += 1
        if self.job.version == "1.6":
            payload = METER_16 % (self.message_id, self.transaction_id, stamp, register,
                                  sample.power_w, l1, l2, l3, soc)
        else:
            state = b"Charging" if sample.power_w > 0 else b"SuspendedEV"
            payload = METER_201 % (self.message_id, stamp, self.seq_no, self.tx_uid.encode(),
                                   state, stamp, register, sample.power_w, l1, l2, l3, soc)
            self.seq_no += 1
        self.in_flight = True
        self.sent_at = time.perf_counter()
        self.send(payload)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class SharedCounters:
    server_calls: Counter[str] = field(default_factory=Counter)
    phase: PhaseStats | None = None  # the phase being measured, if any


@dataclass(frozen=True, slots=True)
class ClientJob:
    host: str
    port: int
    path: str  # "/ocpp"
    version: str
    password: str
    identities: tuple[str, ...]
    tokens: tuple[str, ...]
    seconds: float
    warmup_s: float
    fixed_rate: float  # this process's share of the offered samples/s
    connect_concurrency: int
    setup_timeout_s: float
    barrier_timeout_s: float
    phases: tuple[str, ...] = ("saturation", "fixed_rate")


async def _connect_one(job: ClientJob, identity: str, token: str, index: int,
                       shared: SharedCounters, slots: asyncio.Semaphore) -> RawCharger:
    loop = asyncio.get_running_loop()
    async with slots:
        _transport, charger = await asyncio.wait_for(loop.create_connection(
            lambda: RawCharger(job, identity, token, index, shared), job.host, job.port),
            job.setup_timeout_s)
        try:
            await asyncio.wait_for(charger.handshake, job.setup_timeout_s)
        except BaseException:
            charger.close()
            raise
    for action, body in _setup_calls(job.version, identity, token, charger.tx_uid,
                                     charger.register_mwh // 1000, time.time()):
        answer = await charger.call(action, body, job.setup_timeout_s)
        if action == "BootNotification" and answer.get("status") != "Accepted":
            charger.close()
            raise ConnectionError(f"BootNotification {answer.get('status')}")
        if action == "StartTransaction":
            charger.transaction_id = int(answer["transactionId"])
            shared.server_calls["_start_" + str(answer.get("idTagInfo", {}).get("status"))] += 1
        if action == "TransactionEvent":
            status = (answer.get("idTokenInfo") or {}).get("status", "none")
            shared.server_calls["_start_" + str(status)] += 1
    return charger


async def _barrier(barrier: Any, timeout_s: float) -> None:
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait, timeout_s)


async def _saturation(chargers: list[RawCharger], job: ClientJob, stats: PhaseStats) -> float:
    """Closed loop: every answer triggers the next sample. Returns client CPU share."""
    start = time.perf_counter()
    window_start, window_end = start + job.warmup_s, start + job.warmup_s + job.seconds
    running = True

    def on_answer(charger: RawCharger, now: float, error: bool) -> None:
        if window_start <= now <= window_end:
            stats.handled += 1
            stats.call_errors += error
        if charger.sent_at >= window_start:
            stats.latencies_us.append(int((now - charger.sent_at) * 1_000_000))
        if running and not charger.closed:
            if window_start <= now <= window_end:
                stats.sent += 1
            charger.send_sample()

    live = [c for c in chargers if not c.closed]
    for charger in live:
        charger.on_answer = on_answer
        charger.send_sample()
    await asyncio.sleep(max(window_start - time.perf_counter(), 0))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(max(window_end - time.perf_counter(), 0))
    cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    running = False
    await _drain(live)
    return cpu_share


async def _fixed_rate(chargers: list[RawCharger], job: ClientJob, stats: PhaseStats) -> float:
    """Open loop: each charger sends on its own schedule (rate / chargers per second)."""
    loop = asyncio.get_running_loop()
    live = [c for c in chargers if not c.closed]
    if not live or job.fixed_rate <= 0:
        await asyncio.sleep(job.warmup_s + job.seconds)
        return 0.0
    interval = len(live) / job.fixed_rate
    await asyncio.sleep(0)  # a fresh loop iteration: uvloop's loop.time() is cached per iteration
    start_loop, start = loop.time(), time.perf_counter()
    window_start, window_end = start + job.warmup_s, start + job.warmup_s + job.seconds
    running = True
    rng = secrets.SystemRandom()

    def fire(charger: RawCharger, due_perf: float, due_loop: float) -> None:
        if not running or charger.closed:
            return
        now = time.perf_counter()
        in_window = window_start <= due_perf <= window_end
        if in_window:
            stats.scheduled += 1
        if charger.in_flight:
            charger.owed_since = due_perf  # sent when the answer comes
            if in_window:
                stats.late_sends += 1
        else:
            if in_window:
                stats.sent += 1
                stats.lags_us.append(max(int((now - due_perf) * 1_000_000), 0))
            charger.send_sample()
        next_perf, next_loop = due_perf + interval, due_loop + interval
        charger.due = loop.call_at(next_loop, fire, charger, next_perf, next_loop)

    def on_answer(charger: RawCharger, now: float, error: bool) -> None:
        if window_start <= now <= window_end:
            stats.handled += 1
            stats.call_errors += error
        if window_start <= charger.sent_at <= window_end:
            stats.latencies_us.append(int((now - charger.sent_at) * 1_000_000))
        if charger.owed_since and running:
            owed, charger.owed_since = charger.owed_since, 0.0
            if window_start <= owed <= window_end:
                stats.sent += 1
                stats.lags_us.append(max(int((now - owed) * 1_000_000), 0))
            charger.send_sample()

    for charger in live:
        charger.on_answer = on_answer
        offset = rng.random() * interval
        charger.due = loop.call_at(start_loop + offset, fire, charger, start + offset,
                                   start_loop + offset)
    await asyncio.sleep(max(window_start - time.perf_counter(), 0))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(max(window_end - time.perf_counter(), 0))
    cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    running = False
    for charger in live:
        if charger.due is not None:
            charger.due.cancel()
    await _drain(live)
    return cpu_share


async def _drain(chargers: list[RawCharger], timeout_s: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while any(c.in_flight and not c.closed for c in chargers):
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.05)
    for charger in chargers:
        charger.in_flight = False
        charger.on_answer = None
    await asyncio.sleep(2.0)  # let the server settle (its queues, GC) before the next phase


async def _client(job: ClientJob, barrier: Any, results: Any) -> None:
    shared = SharedCounters()
    slots = asyncio.Semaphore(job.connect_concurrency)
    setup_start = time.perf_counter()
    outcomes = await asyncio.gather(*(
        _connect_one(job, identity, token, index, shared, slots)
        for index, (identity, token) in enumerate(zip(job.identities, job.tokens, strict=True))),
        return_exceptions=True)
    setup_s = time.perf_counter() - setup_start
    chargers = [o for o in outcomes if isinstance(o, RawCharger)]
    errors = Counter(f"{type(o).__name__}: {o}"[:120] for o in outcomes
                     if isinstance(o, BaseException))
    report: dict[str, Any] = {"connected": len(chargers), "setup_s": setup_s,
                              "connect_errors": dict(errors)}
    await _barrier(barrier, job.barrier_timeout_s)  # 1: everybody connected
    for phase in job.phases:
        stats = PhaseStats()
        await _barrier(barrier, job.barrier_timeout_s)  # start together
        runner = _saturation if phase == "saturation" else _fixed_rate
        shared.phase = stats
        cpu_share = await runner(chargers, job, stats)
        shared.phase = None
        report[phase] = {"sent": stats.sent, "handled": stats.handled,
                         "call_errors": stats.call_errors, "client_cpu": round(cpu_share, 3),
                         "latencies_us": stats.latencies_us.tobytes(),
                         "lags_us": stats.lags_us.tobytes(), "late_sends": stats.late_sends,
                         "display_delays_us": stats.display_delays_us.tobytes(),
                         "scheduled": stats.scheduled,
                         "still_connected": sum(1 for c in chargers if not c.closed)}
        await _barrier(barrier, job.barrier_timeout_s)  # phase over
    report["server_calls"] = dict(shared.server_calls)
    results.put(report)
    for charger in chargers:
        charger.close()
    await asyncio.sleep(0.2)


def client_process(job: ClientJob, barrier: Any, results: Any) -> None:
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(_client(job, barrier, results))
    except BaseException as exc:
        barrier.abort()
        results.put({"error": f"client process: {exc!r}"})
        raise


# -- the minimal responder (client capacity) --------------------------------------------------


class _NullResponder(asyncio.Protocol):
    """Answers every CALL at once with a canned CALLRESULT: as cheap as a server can be."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[:end + 4]
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in head.split("\r\n")[1:])}
            accept = base64.b64encode(hashlib.sha1(  # noqa: S324 - RFC 6455 handshake
                headers["sec-websocket-key"].encode() + WS_GUID).digest()).decode()
            self.transport.write((
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                f"Sec-WebSocket-Protocol: {headers.get('sec-websocket-protocol', '')}\r\n\r\n"
            ).encode())
            self.upgraded = True
        out = []
        for opcode, payload in parse_frames(self.buffer, masked=True):
            if opcode != 0x1 or not payload.startswith(b"[2,"):
                continue
            unique_id = payload.split(b'"', 2)[1]
            if b'"StartTransaction"' in payload[:60]:
                body = b'{"transactionId":1,"idTagInfo":{"status":"Accepted"}}'
            elif b'"BootNotification"' in payload[:60]:
                body = b'{"status":"Accepted","currentTime":"2026-01-01T00:00:00Z","interval":300}'
            else:
                body = b"{}"
            out.append(server_frame(b'[3,"' + unique_id + b'",' + body + b"]"))
        if out:
            self.transport.write(b"".join(out))


def null_responder_process(port: int, ready: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_NullResponder, "127.0.0.1", port, backlog=4096)
        ready.set()
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


# -- servers -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes] | None
    pid: int
    host: str
    port: int
    path: str
    version: str
    identities: tuple[str, ...]
    tokens: tuple[str, ...]
    password: str
    database_url: str | None = None
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.tmpdir is not None:
            self.tmpdir.cleanup()


def start_stock(chargers: int, version: str) -> Server:
    proc = subprocess.Popen([PYTHON, str(BENCH / "_stock_csms.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip() if proc.stdout is not None else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"stock central system did not start: {line!r}")
    identities = tuple(f"STOCK-{n:05d}" for n in range(1, chargers + 1))
    tokens = tuple(f"BENCH{n:09d}" for n in range(1, chargers + 1))
    return Server("stock", proc, proc.pid, "127.0.0.1", int(line.split()[1]), "/ocpp", version,
                  identities, tokens, BENCH_PASSWORD)


def provision_chargers(database_url: str, count: int, password: str, version: str, *,
                       cheap_hash: bool = True) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Insert ``count`` chargers (one EVSE, one AC 22 kW connector each) at the demo operator's
    Berlin site, and one RFID token per charger for the demo driver without a plan (Carol).
    All share ONE argon2id hash of ``password``: hashing thousands of passwords measures
    nothing. ``cheap_hash``: that hash uses argon2id's smallest sensible cost (1 MiB, 1 pass)
    instead of the production parameters (64 MiB, 3 passes, ~0.7 s per verification here), so
    the gateway's one verification per charger on first connect takes milliseconds and 5 000
    chargers connect in seconds rather than half an hour; the gateway's code path is the same.
    Needs ``evbilling demo seed`` first. Returns (identities, token uids)."""
    from sqlalchemy import insert, select

    from evbilling.adapters.db import schema as s
    from evbilling.adapters.db.engine import make_engine
    from evbilling.adapters.db.uow import write_transaction
    from evbilling.adapters.ids import new_id
    from evbilling.adapters.security import hash_password
    from evbilling.services.catalog_generation import bump_catalog_generation

    engine = make_engine(database_url)
    at = dt.datetime.now(dt.UTC)
    if cheap_hash:
        from argon2 import PasswordHasher

        password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)
    else:
        password_hash = hash_password(password)
    identities = tuple(f"BENCH-{n:05d}" for n in range(1, count + 1))
    tokens = tuple(f"BENCH{n:09d}" for n in range(1, count + 1))
    try:
        with write_transaction(engine) as conn:
            operator = conn.execute(select(s.operators.c.id).where(
                s.operators.c.country_code == "DE", s.operators.c.party_id == "EVB")).first()
            if operator is None:
                raise RuntimeError("no demo operator: run `evbilling demo seed` first")
            oid = str(operator.id)
            site = conn.execute(select(s.sites.c.id).where(
                s.sites.c.operator_id == oid, s.sites.c.name == "Berlin Mitte Hub")).first()
            driver = conn.execute(select(s.drivers.c.id).where(
                s.drivers.c.operator_id == oid, s.drivers.c.name == "Carol Casual")).first()
            if site is None or driver is None:
                raise RuntimeError("demo site or driver missing")
            chargers, evses, connectors, token_rows = [], [], [], []
            for n, (identity, uid) in enumerate(zip(identities, tokens, strict=True), start=1):
                charger_id, evse_id = new_id("chg"), new_id("evse")
                chargers.append({"id": charger_id, "operator_id": oid, "site_id": site.id,
                                 "ocpp_identity": identity, "password_hash": password_hash,
                                 "security_profile": 1, "ocpp_version": version,
                                 "vendor": "bench", "model": "raw-load", "created_at": at})
                evses.append({"id": evse_id, "operator_id": oid, "charger_id": charger_id,
                              "evse_uid": f"DE*EVB*EBENCH{n:05d}*1", "ocpp_evse_id": 1,
                              "created_at": at})
                connectors.append({"id": new_id("con"), "operator_id": oid, "evse_id": evse_id,
                                   "connector_number": 1, "standard": "IEC_62196_T2",
                                   "power_type": "AC_3_PHASE", "max_power_w": 22_000,
                                   "created_at": at})
                token_rows.append({"id": new_id("tok"), "operator_id": oid,
                                   "driver_id": driver.id, "kind": "RFID", "uid": uid,
                                   "status": "ACTIVE", "created_at": at})
            conn.execute(insert(s.chargers), chargers)
            conn.execute(insert(s.evses), evses)
            conn.execute(insert(s.connectors), connectors)
            conn.execute(insert(s.tokens), token_rows)
            bump_catalog_generation(conn, oid)  # catalog snapshots see the new chargers
    finally:
        engine.dispose()
    return identities, tokens


def start_evbilling(chargers: int, version: str, cheap_hash: bool = True) -> Server:
    tmpdir = tempfile.TemporaryDirectory(prefix="evb-ocpp-load-")
    database_url = f"sqlite:///{tmpdir.name}/bench.sqlite3"
    server: Server | None = None
    try:
        seed = subprocess.run([EVBILLING, "demo", "seed", "--database-url", database_url],
                              capture_output=True, timeout=300, check=False)
        if seed.returncode != 0:
            raise RuntimeError(f"evbilling demo seed failed: {seed.stderr.decode()[-300:]}")
        identities, tokens = provision_chargers(database_url, chargers, BENCH_PASSWORD, version,
                                                cheap_hash=cheap_hash)
        port = free_port()
        errors = Path(tmpdir.name) / "serve.stderr"
        with errors.open("wb") as sink:  # a file, not a pipe nobody reads (it would fill up)
            proc = subprocess.Popen([EVBILLING, "serve", "--port", str(port), "--database-url",
                                     database_url], stdout=subprocess.DEVNULL, stderr=sink)
        server = Server("evbilling", proc, proc.pid, "127.0.0.1", port, "/ocpp", version,
                        identities, tokens, BENCH_PASSWORD, database_url, tmpdir)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                error = errors.read_text(errors="replace")[-400:]
                raise RuntimeError(f"evbilling serve exited ({proc.returncode}): {error}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return server
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("evbilling serve did not answer /healthz within 120 s")
    except BaseException:
        if server is not None:
            server.stop()
        else:
            tmpdir.cleanup()
        raise


# -- live cost over server-sent events (evbilling) ---------------------------------------------


def _find_key(document: Any, key: str) -> Any:
    if isinstance(document, dict):
        if key in document:
            return document[key]
        for value in document.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    elif isinstance(document, list):
        for value in document:
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def active_session_ids(database_url: str, identities: tuple[str, ...]) -> list[str]:
    from sqlalchemy import select

    from evbilling.adapters.db import schema as s
    from evbilling.adapters.db.engine import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(s.charging_sessions.c.id)
                .join(s.chargers, s.chargers.c.id == s.charging_sessions.c.charger_id)
                .where(s.chargers.c.ocpp_identity.in_(identities),
                       s.charging_sessions.c.status == "active")).all()
    finally:
        engine.dispose()
    return [str(row.id) for row in rows]


class LiveCostWatcher:
    """Subscribes to ``/api/v1/sessions/{id}/live`` for some sessions in a background thread and
    measures sample time (``sample_at_ms`` in the event) -> event received."""

    def __init__(self, base_url: str, session_ids: list[str]) -> None:
        self.base_url, self.session_ids = base_url, session_ids
        self.delays_us: list[int] = []
        self.events = 0
        self.events_without_sample_time = 0
        self.snapshot_events = 0  # the state at subscription time, from an older sample
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                     timeout=httpx.Timeout(10, read=None)) as client:
            tasks = [asyncio.create_task(self._follow(client, sid)) for sid in self.session_ids]
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, client: Any, session_id: str) -> None:
        try:
            async with client.stream("GET", f"/api/v1/sessions/{session_id}/live") as response:
                self.statuses[str(response.status_code)] += 1
                if response.status_code != 200:
                    return
                opened_ms = time.time() * 1000
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    received_ms = time.time() * 1000
                    self.events += 1
                    try:
                        sample_at_ms = _find_key(json.loads(line[5:]), "sample_at_ms")
                    except ValueError:
                        sample_at_ms = None
                    if not isinstance(sample_at_ms, int | float):
                        self.events_without_sample_time += 1
                        continue
                    if sample_at_ms < opened_ms:
                        self.snapshot_events += 1
                        continue
                    self.delays_us.append(max(int((received_ms - sample_at_ms) * 1000), 0))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1


# -- one run: a target with N chargers ---------------------------------------------------------


def _merge(reports: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    latencies: array.array[int] = array.array("I")
    lags: array.array[int] = array.array("I")
    display: array.array[int] = array.array("I")
    for report in reports:
        latencies.frombytes(report[phase]["latencies_us"])
        lags.frombytes(report[phase]["lags_us"])
        display.frombytes(report[phase]["display_delays_us"])
    return {
        "sent": sum(r[phase]["sent"] for r in reports),
        "handled": sum(r[phase]["handled"] for r in reports),
        "call_errors": sum(r[phase]["call_errors"] for r in reports),
        "late_sends": sum(r[phase]["late_sends"] for r in reports),
        "scheduled": sum(r[phase]["scheduled"] for r in reports),
        "still_connected": sum(r[phase]["still_connected"] for r in reports),
        "client_cpu": [r[phase]["client_cpu"] for r in reports],
        "p50_ms": percentile_ms(latencies, 0.50), "p99_ms": percentile_ms(latencies, 0.99),
        "lag_p99_ms": percentile_ms(lags, 0.99),
        "display": None if not display else {
            "p50_ms": percentile_ms(display, 0.5), "p99_ms": percentile_ms(display, 0.99),
            "samples": len(display)},
    }


def drive(server: Server, args: argparse.Namespace, *, live_sample: int = 0,
          phases: tuple[str, ...] = ("saturation", "fixed_rate")) -> dict[str, Any]:
    """Run the client processes against ``server``; the figures for one (target, N)."""
    n = len(server.identities)
    processes = max(1, min(args.client_processes, n))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    jobs = []
    for k in range(processes):
        share = server.identities[k::processes]
        jobs.append(ClientJob(
            host=server.host, port=server.port, path=server.path, version=server.version,
            password=server.password, identities=share, tokens=server.tokens[k::processes],
            seconds=args.seconds, warmup_s=args.warmup, fixed_rate=args.fixed_rate * len(share) / n,
            connect_concurrency=max(1, args.connect_concurrency // processes),
            setup_timeout_s=args.setup_timeout, barrier_timeout_s=args.setup_timeout * 2 + 120,
            phases=phases))
    procs = [ctx.Process(target=client_process, args=(job, barrier, results), daemon=True)
             for job in jobs]
    rss_idle = rss_kb(server.pid)
    for proc in procs:
        proc.start()
    timeout = args.setup_timeout * 2 + 120
    out: dict[str, Any] = {"chargers": n, "client_processes": processes,
                           "loadavg_before": loadavg()}
    watcher: LiveCostWatcher | None = None
    try:
        barrier.wait(timeout)  # connected
        time.sleep(1.0)
        rss_connected = rss_kb(server.pid)
        phase_cpu: dict[str, float | None] = {}
        for phase in phases:
            if phase == "fixed_rate" and live_sample and server.database_url:
                watcher = _start_watcher(server, live_sample, out)
            barrier.wait(timeout)  # start
            time.sleep(args.warmup)
            cpu0, wall0 = cpu_s(server.pid), time.perf_counter()
            time.sleep(args.seconds)
            cpu1, wall1 = cpu_s(server.pid), time.perf_counter()
            phase_cpu[phase] = None if cpu0 is None or cpu1 is None else round(
                (cpu1 - cpu0) / (wall1 - wall0), 3)
            barrier.wait(timeout)  # over
            if watcher is not None:
                watcher.stop()
        reports = [results.get(timeout=60) for _ in procs]
    except Exception as exc:
        barrier.abort()
        for proc in procs:
            proc.terminate()
        raise RuntimeError(f"load run failed: {exc!r}") from exc
    finally:
        for proc in procs:
            proc.join(timeout=30)
    failed = [r["error"] for r in reports if "error" in r]
    if failed:
        raise RuntimeError("; ".join(failed))
    connected = sum(r["connected"] for r in reports)
    connect_errors: Counter[str] = Counter()
    server_calls: Counter[str] = Counter()
    for report in reports:
        connect_errors.update(report["connect_errors"])
        server_calls.update(report["server_calls"])
    out.update({
        "connected": connected, "connection_success": round(connected / n, 4),
        "connect_errors": dict(connect_errors.most_common(5)),
        "setup_s": round(max(r["setup_s"] for r in reports), 2),
        "connects_per_s": round(connected / max(max(r["setup_s"] for r in reports), 1e-9), 1),
        "transactions_started": sum(v for k, v in server_calls.items() if k.startswith("_start_")),
        "transaction_start_status": {k[7:]: v for k, v in server_calls.items()
                                     if k.startswith("_start_")},
        "calls_from_server": {k: v for k, v in server_calls.items() if not k.startswith("_")},
        "server_rss_mb_idle": None if rss_idle is None else round(rss_idle / 1024, 1),
        "server_rss_mb_connected": None if rss_connected is None else round(
            rss_connected / 1024, 1),
        "memory_per_connection_kb": None if not connected or rss_idle is None
        or rss_connected is None else round((rss_connected - rss_idle) / connected, 1),
    })
    for phase in phases:
        merged = _merge(reports, phase)
        seconds = args.seconds
        figures = {
            "seconds": seconds, "handled_msgs_per_s": round(merged["handled"] / seconds, 1),
            "sent_msgs_per_s": round(merged["sent"] / seconds, 1),
            "p50_ms": merged["p50_ms"], "p99_ms": merged["p99_ms"],
            "call_errors": merged["call_errors"], "server_cpu": phase_cpu.get(phase),
            "client_cpu": merged["client_cpu"],
            "chargers_still_connected": merged["still_connected"],
            "display_cost_delay": merged["display"],
        }
        if phase == "saturation":
            figures["offered"] = "closed loop: the next sample as soon as the last is answered"
        else:
            figures["offered_msgs_per_s"] = args.fixed_rate
            figures["late_sends"] = merged["late_sends"]
            figures["late_send_share"] = round(merged["late_sends"] / merged["scheduled"], 4) \
                if merged["scheduled"] else None
            figures["schedule_lag_p99_ms"] = merged["lag_p99_ms"]
        if connected == 0:
            figures.update({"handled_msgs_per_s": None, "p50_ms": None, "p99_ms": None})
        out[phase] = figures
    client_cpu = max([*out["saturation"]["client_cpu"], 0.0])
    out["client_bound"] = client_cpu > 0.9
    if watcher is not None:
        out["live_cost"] = {
            "sessions_subscribed": len(watcher.session_ids), "events": watcher.events,
            "events_without_sample_time": watcher.events_without_sample_time,
            "snapshot_events_skipped": watcher.snapshot_events,
            "http_statuses": dict(watcher.statuses), "errors": dict(watcher.errors),
            "delay_p50_ms": percentile_ms(watcher.delays_us, 0.5),
            "delay_p99_ms": percentile_ms(watcher.delays_us, 0.99)}
        out["live_cost_delay_p99_ms"] = out["live_cost"]["delay_p99_ms"]
    if connected == 0:
        out["error"] = ("no charger could connect: "
                        + (", ".join(connect_errors) if connect_errors else "unknown"))
    return out


def _start_watcher(server: Server, sample: int, out: dict[str, Any]) -> LiveCostWatcher | None:
    try:
        session_ids = active_session_ids(server.database_url or "", server.identities)
    except Exception as exc:
        out["live_cost"] = {"error": f"cannot read sessions: {exc!r}"[:200]}
        return None
    if not session_ids:
        out["live_cost"] = {"error": "no active session found for the bench chargers"}
        return None
    watcher = LiveCostWatcher(f"http://{server.host}:{server.port}", session_ids[:sample])
    watcher.start()
    time.sleep(0.5)
    return watcher


NULL_FIGURES = {"connected": None, "connection_success": None, "memory_per_connection_kb": None,
                "saturation": {"handled_msgs_per_s": None, "p50_ms": None, "p99_ms": None},
                "fixed_rate": {"handled_msgs_per_s": None, "p50_ms": None, "p99_ms": None}}


def run_target(target: str, sizes: list[int], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in sizes:
        log(f"{target}: {n} chargers")
        server: Server | None = None
        try:
            server = start_stock(n, args.ocpp) if target == "stock" else start_evbilling(
                n, args.ocpp, cheap_hash=args.charger_hash == "cheap")
            time.sleep(0.5)
            result = drive(server, args, live_sample=args.live_sample
                           if target == "evbilling" else 0)
            if target == "evbilling":
                result.setdefault("live_cost_delay_p99_ms", None)
        except Exception as exc:
            result = {"chargers": n, **copy.deepcopy(NULL_FIGURES),
                      "error": f"{type(exc).__name__}: {exc}"[:500]}
            if target == "evbilling":
                result["live_cost_delay_p99_ms"] = None
        finally:
            if server is not None:
                server.stop()
        log(f"{target} {n}: " + json.dumps({k: result.get(k) for k in (
            "connected", "memory_per_connection_kb", "error")}) + " saturation "
            + json.dumps({k: result.get("saturation", {}).get(k) for k in (
                "handled_msgs_per_s", "p50_ms", "p99_ms")}) + " fixed "
            + json.dumps({k: result.get("fixed_rate", {}).get(k) for k in (
                "handled_msgs_per_s", "p99_ms")}))
        results[str(n)] = result
    return results


def client_capacity(args: argparse.Namespace, chargers: int) -> dict[str, Any]:
    """The load generator against a minimal responder: what the client side can drive."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    port = free_port()
    responder = ctx.Process(target=null_responder_process, args=(port, ready), daemon=True)
    responder.start()
    try:
        if not ready.wait(30):
            return {"error": "the minimal responder did not start"}
        server = Server("null", None, responder.pid or 0, "127.0.0.1", port, "/ocpp", args.ocpp,
                        tuple(f"NULL-{i:05d}" for i in range(chargers)),
                        tuple(f"BENCH{i:09d}" for i in range(chargers)), BENCH_PASSWORD)
        result = drive(server, args, phases=("saturation",))
        return {"chargers": chargers, "responder": "raw asyncio (uvloop) canned CALLRESULTs",
                "handled_msgs_per_s": result["saturation"]["handled_msgs_per_s"],
                "p50_ms": result["saturation"]["p50_ms"], "p99_ms": result["saturation"]["p99_ms"],
                "client_cpu": result["saturation"]["client_cpu"],
                "responder_cpu": result["saturation"]["server_cpu"]}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        responder.terminate()
        responder.join(timeout=10)


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, 3)


def ratios(evbilling: dict[str, Any], stock: dict[str, Any]) -> dict[str, Any]:
    """evbilling / stock per charger count (throughput: higher is better; p99 and memory:
    lower is better)."""
    out = {}
    for size, ours in evbilling.items():
        theirs = stock.get(size)
        if theirs is None:
            continue
        out[size] = {
            "handled_msgs_per_s": _ratio(ours.get("saturation", {}).get("handled_msgs_per_s"),
                                         theirs.get("saturation", {}).get("handled_msgs_per_s")),
            "p99_ms_at_fixed_rate": _ratio(ours.get("fixed_rate", {}).get("p99_ms"),
                                           theirs.get("fixed_rate", {}).get("p99_ms")),
            "memory_per_connection": _ratio(ours.get("memory_per_connection_kb"),
                                            theirs.get("memory_per_connection_kb")),
        }
    return out


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: anything else running skews every figure."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("ocpp", "websockets", "uvicorn", "uvloop", "orjson"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu_model": model,
            "platform": platform.platform(), "packages": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("stock", "evbilling", "both"), default="both")
    parser.add_argument("--chargers", default=None,
                        help="comma-separated counts (default 1000,5000; --quick: 20,100)")
    parser.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--fixed-rate", type=float, default=1000.0,
                        help="samples/s offered in the fixed-rate phase (all chargers)")
    parser.add_argument("--client-processes", type=int,
                        default=1 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or
                                                                             2) - 1))
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--setup-timeout", type=float, default=300.0)
    parser.add_argument("--charger-hash", choices=("cheap", "production"), default="cheap",
                        help="argon2id cost of the bench chargers' password hash (evbilling)")
    parser.add_argument("--live-sample", type=int, default=20,
                        help="sessions whose live-cost stream is followed (evbilling)")
    parser.add_argument("--capacity-chargers", type=int, default=1000)
    parser.add_argument("--no-capacity", action="store_true", help="skip the client check")
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, short phases")
    args = parser.parse_args()
    if args.chargers is None:
        args.chargers = "20,100" if args.quick else "1000,5000"
    if args.quick:
        args.seconds, args.warmup = 1.5, 0.5
        args.fixed_rate, args.capacity_chargers, args.live_sample = 100.0, 50, 5
        args.setup_timeout = 120.0
    sizes = [int(size) for size in args.chargers.split(",") if size.strip()]
    targets = ["stock", "evbilling"] if args.target == "both" else [args.target]
    started = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "ocpp_load", "quick": args.quick, "ocpp_version": args.ocpp,
        "sampled_values_per_message": SAMPLED_VALUES, "seconds_per_phase": args.seconds,
        "warmup_s": args.warmup, "fixed_rate_offered_msgs_per_s": args.fixed_rate,
        "client_processes": args.client_processes,
        "evbilling_charger_hash": "argon2id m=1024,t=1,p=1 (cheap)" if args.charger_hash ==
        "cheap" else "argon2id production parameters",
    }
    if not args.no_capacity:
        log(f"client capacity: {args.capacity_chargers} chargers against a minimal responder")
        document["client_capacity"] = client_capacity(args, args.capacity_chargers)
        log(f"client capacity: {document['client_capacity']}")
    for target in targets:
        document[target] = run_target(target, sizes, args)
    if "stock" in document and "evbilling" in document:
        document["ratio_vs_stock_library"] = ratios(document["evbilling"], document["stock"])
    document["machine"] = {**machine(), "loadavg_at_end": loadavg()}
    document["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(document, indent=2, sort_keys=False))


if __name__ == "__main__":
    main()
