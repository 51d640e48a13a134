"""The OCPP gateway over a real socket: the FastAPI app served by uvicorn on a free port (SQLite
file with the demo data), a fake ChargingPort behind it, and real clients: the ``ocpp``
library's ChargePoint over ``websockets.connect`` (1.6J and 2.0.1), plus a raw WebSocket for
frames a well-behaved client would never send."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from sqlalchemy import Engine, select, update
from websockets.exceptions import InvalidStatus

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.engine import make_engine
from evbilling.adapters.db.uow import write_transaction
from evbilling.entrypoints.api.app import create_app
from evbilling.entrypoints.ocpp import GatewaySettings, OcppGateway
from evbilling.services.demo import DEMO_CHARGER_PASSWORD, seed_demo
from evbilling.services.ports import RecordMeterValues, StartTransaction, StopTransaction
from ocpp_fakes import FakeChargingPort

CP16 = "DEMO-CP16-001"
CP201 = "DEMO-CP201-001"
CP_PROFILE2 = "DEMO-CP16-AMS"  # switched to security profile 2 by the fixture
TOKEN = "04A1B2C3D4E5F6"  # noqa: S105 - a demo RFID uid
WAIT_S = 10.0


@dataclass
class Gateway:
    url: str
    port: FakeChargingPort
    engine: Engine
    app: Any
    loop: asyncio.AbstractEventLoop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    db = Path(tmp_path_factory.mktemp("ocpp")) / "gateway.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    fake = FakeChargingPort()
    app = create_app(engine=engine, charging=fake)
    with write_transaction(engine) as conn:
        seed_demo(conn)
        conn.execute(update(s.chargers).where(s.chargers.c.ocpp_identity == CP_PROFILE2)
                     .values(security_profile=2))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws_per_message_deflate=False))
    thread = threading.Thread(target=server.run, name="uvicorn-ocpp", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    loop = _server_loop(f"http://127.0.0.1:{port}", fake)
    try:
        yield Gateway(f"ws://127.0.0.1:{port}/ocpp/", fake, engine, app, loop)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        engine.dispose()


def _server_loop(base: str, fake: FakeChargingPort) -> asyncio.AbstractEventLoop:
    """The event loop uvicorn runs on (to call the registry from the test thread)."""
    found: list[asyncio.AbstractEventLoop] = []
    original = fake.seen

    async def seen(*args: Any) -> None:
        found.append(asyncio.get_running_loop())
        await original(*args)
    fake.seen = seen  # type: ignore[method-assign]

    async def heartbeat() -> None:
        async with connect16(base.replace("http", "ws") + "/ocpp/", CP16) as cp:
            await cp.call(call16.Heartbeat())
    asyncio.run(heartbeat())
    fake.seen = original  # type: ignore[method-assign]
    return found[0]


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    """The shared gateway with a fresh fake port state."""
    port = gateway.port
    with port._lock:
        port.commands.clear()
    port.costs, port.fail_stop, port.stop_requested = True, False, False
    return gateway


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# -- clients --------------------------------------------------------------------------------------

class Client16(ChargePoint16):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    @on("DataTransfer")  # type: ignore[untyped-decorator]
    async def on_data_transfer(self, vendor_id: str, message_id: str | None = None,
                               data: str | None = None) -> Any:
        self.inbox.put_nowait(("DataTransfer", {"vendor_id": vendor_id, "message_id": message_id,
                                                "data": orjson.loads(data or "null")}))
        return result16.DataTransfer(status="Accepted")

    @on("RemoteStopTransaction")  # type: ignore[untyped-decorator]
    async def on_remote_stop(self, transaction_id: int) -> Any:
        self.inbox.put_nowait(("RemoteStopTransaction", {"transaction_id": transaction_id}))
        return result16.RemoteStopTransaction(status="Accepted")

    async def next(self, action: str) -> dict[str, Any]:
        while True:
            got, payload = await asyncio.wait_for(self.inbox.get(), WAIT_S)
            if got == action:
                return payload


class Client201(ChargePoint201):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    @on("CostUpdated")  # type: ignore[untyped-decorator]
    async def on_cost_updated(self, total_cost: float, transaction_id: str,
                              **_: Any) -> Any:
        self.inbox.put_nowait(("CostUpdated", {"total_cost": total_cost,
                                               "transaction_id": transaction_id}))
        return result201.CostUpdated()

    @on("RequestStopTransaction")  # type: ignore[untyped-decorator]
    async def on_request_stop(self, transaction_id: str, **_: Any) -> Any:
        self.inbox.put_nowait(("RequestStopTransaction", {"transaction_id": transaction_id}))
        return result201.RequestStopTransaction(status="Accepted")

    async def next(self, action: str) -> dict[str, Any]:
        while True:
            got, payload = await asyncio.wait_for(self.inbox.get(), WAIT_S)
            if got == action:
                return payload


@asynccontextmanager
async def connect16(url: str, identity: str = CP16, password: str = DEMO_CHARGER_PASSWORD
                    ) -> AsyncIterator[Client16]:
    async with websockets.connect(url + identity, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                  additional_headers=basic(identity, password)) as ws:
        cp = Client16(identity, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()


@asynccontextmanager
async def connect201(url: str, identity: str = CP201) -> AsyncIterator[Client201]:
    async with websockets.connect(url + identity, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                  additional_headers=basic(identity, DEMO_CHARGER_PASSWORD)) as ws:
        cp = Client201(identity, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()


@asynccontextmanager
async def raw(url: str, identity: str, subprotocol: str) -> AsyncIterator[Any]:
    async with websockets.connect(url + identity, subprotocols=[subprotocol],  # type: ignore[list-item]
                                  additional_headers=basic(identity, DEMO_CHARGER_PASSWORD)) as ws:
        yield ws


async def exchange(ws: Any, frame: str) -> list[Any]:
    await ws.send(frame)
    answer: list[Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    return answer


def mv16(register: str, at: str | None = None) -> dict[str, Any]:
    return {"timestamp": at or now_iso(), "sampled_value": [
        {"value": register, "measurand": "Energy.Active.Import.Register", "unit": "Wh",
         "context": "Sample.Periodic"},
        {"value": "11.0", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "16.0", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "16.0", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
        {"value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
        {"value": "230.2", "measurand": "Voltage", "phase": "L2-N", "unit": "V"},
        {"value": "230.3", "measurand": "Voltage", "phase": "L3-N", "unit": "V"},
        {"value": "42", "measurand": "SoC", "unit": "Percent"}]}


def mv201(register: float, context: str = "Sample.Periodic") -> dict[str, Any]:
    return {"timestamp": now_iso(), "sampled_value": [
        {"value": register, "context": context, "unit_of_measure": {"unit": "Wh"}},
        {"value": 11.0, "measurand": "Power.Active.Import",
         "unit_of_measure": {"unit": "kW"}}]}


def audit_rows(engine: Engine, identity: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(s.audit_log).where(s.audit_log.c.actor == identity)
                                 .order_by(s.audit_log.c.seq)))


# -- OCPP 1.6J ------------------------------------------------------------------------------------

def test_a_16_charger_boots_authorizes_starts_meters_and_stops(gw: Gateway) -> None:
    async def session() -> None:
        async with connect16(gw.url) as cp:
            boot = await cp.call(call16.BootNotification(charge_point_model="DV-22",
                                                         charge_point_vendor="DemoVendor"))
            assert boot.status == "Accepted" and boot.interval == 300
            auth = await cp.call(call16.Authorize(id_tag=TOKEN))
            assert auth.id_tag_info["status"] == "Accepted"
            start = await cp.call(call16.StartTransaction(
                connector_id=1, id_tag=TOKEN, meter_start=10_000, timestamp=now_iso()))
            assert start.id_tag_info["status"] == "Accepted"
            tx = start.transaction_id
            assert isinstance(tx, int)
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=tx,
                                             meter_value=[mv16("12500.5")]))
            running = await cp.next("DataTransfer")
            assert running["vendor_id"] == "org.openchargealliance.costmsg"
            assert running["message_id"] == "RunningCost"
            assert running["data"]["transactionId"] == tx and running["data"]["cost"] == 5.0
            assert running["data"]["meterValue"] == 12500
            stop = await cp.call(call16.StopTransaction(
                transaction_id=tx, meter_stop=20_000, timestamp=now_iso(), reason="Local"))
            assert stop.id_tag_info["status"] == "Accepted"
            final = await cp.next("DataTransfer")
            assert final["message_id"] == "FinalCost" and final["data"]["cost"] == 8.0
    asyncio.run(session())
    (start,) = gw.port.of(StartTransaction)
    assert start.charger.identity == CP16 and start.charger.ocpp_version == "1.6"
    assert start.energy_milliwh_start == 10_000_000
    (meter,) = gw.port.of(RecordMeterValues)
    assert meter.samples[0].energy_milliwh == 12_500_500
    assert (meter.samples[0].power_w, meter.samples[0].current_ma) == (11_000, 48_000)
    (stop,) = gw.port.of(StopTransaction)
    assert stop.energy_milliwh_stop == 20_000_000 and stop.reason == "Local"


def test_a_16_stop_whose_port_call_fails_is_still_answered_with_a_call_result(gw: Gateway
                                                                              ) -> None:
    gw.port.fail_stop = True

    async def session() -> None:
        async with raw(gw.url, CP16, "ocpp1.6") as ws:
            answer = await exchange(ws, orjson.dumps([2, "s1", "StopTransaction", {
                "transactionId": 4711, "meterStop": 5000, "timestamp": now_iso()}]).decode())
            assert answer == [3, "s1", {"idTagInfo": {"status": "Accepted"}}]
    asyncio.run(session())
    assert len(gw.port.of(StopTransaction)) == 1


def test_a_reached_cap_makes_the_16_charger_receive_a_remote_stop(gw: Gateway) -> None:
    gw.port.stop_requested = True

    async def session() -> None:
        async with connect16(gw.url) as cp:
            await cp.call(call16.MeterValues(connector_id=1, transaction_id=77,
                                             meter_value=[mv16("3000")]))
            assert (await cp.next("DataTransfer"))["message_id"] == "RunningCost"
            assert await cp.next("RemoteStopTransaction") == {"transaction_id": 77}
    asyncio.run(session())


def test_a_meter_values_answer_and_its_running_cost_leave_in_one_socket_write(gw: Gateway
                                                                           ) -> None:
    """Under uvicorn the gateway writes into uvicorn's WebSocket protocol itself: the
    CALLRESULT and the running-cost CALL it causes are framed as usual, arrive in order, and
    cost one ``transport.write`` (one system call) instead of one per frame."""
    writes: list[int] = []

    async def session() -> None:
        async with raw(gw.url, CP16, "ocpp1.6") as ws:
            await exchange(ws, orjson.dumps([2, "h1", "Heartbeat", {}]).decode())
            protocol = gw.app.state.ocpp_registry.get(CP16).transport._protocol
            socket_transport = protocol.transport

            class Counted:  # uvloop's transport methods cannot be replaced: wrap it
                def write(self, data: bytes) -> None:
                    writes.append(len(data))
                    socket_transport.write(data)

                def __getattr__(self, name: str) -> Any:
                    return getattr(socket_transport, name)
            protocol.transport = Counted()
            try:
                await ws.send(orjson.dumps([2, "m1", "MeterValues", {
                    "connectorId": 1, "transactionId": 77,
                    "meterValue": [orjson.loads(orjson.dumps(mv16("3000")).replace(
                        b"sampled_value", b"sampledValue"))]}]).decode())
                first = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                second = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            finally:
                protocol.transport = socket_transport
            assert first == [3, "m1", {}]
            assert second[0] == 2 and second[2] == "DataTransfer"
            assert second[3]["messageId"] == "RunningCost"
            await ws.send(orjson.dumps([3, second[1], {"status": "Accepted"}]).decode())
    asyncio.run(session())
    assert len(writes) == 1


def test_the_registry_stops_a_connected_16_charger(gw: Gateway) -> None:
    async def session() -> None:
        async with connect16(gw.url) as cp:
            await cp.call(call16.Heartbeat())
            registry = gw.app.state.ocpp_registry
            done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                registry.stop_transaction(CP16, "1234"), gw.loop))
            assert await cp.next("RemoteStopTransaction") == {"transaction_id": 1234}
            assert await asyncio.wait_for(done, WAIT_S) is True
    asyncio.run(session())


# -- OCPP 2.0.1 -----------------------------------------------------------------------------------

def test_a_201_station_boots_authorizes_and_runs_a_transaction(gw: Gateway) -> None:
    def event(kind: str, seq: int, meter: list[Any], state: str | None = None,
              reason: str | None = None, **more: Any) -> Any:
        info = {"transaction_id": "tx-201-a", **({"charging_state": state} if state else {}),
                **({"stopped_reason": reason} if reason else {})}
        return call201.TransactionEvent(event_type=kind, timestamp=now_iso(),
                                        trigger_reason="MeterValuePeriodic", seq_no=seq,
                                        transaction_info=info, meter_value=meter, **more)

    async def session() -> None:
        async with connect201(gw.url) as cp:
            boot = await cp.call(call201.BootNotification(
                charging_station={"model": "DV-22", "vendor_name": "DemoVendor"},
                reason="PowerUp"))
            assert boot.status == "Accepted"
            auth = await cp.call(call201.Authorize(id_token={"id_token": TOKEN,
                                                             "type": "ISO14443"}))
            assert auth.id_token_info["status"] == "Accepted"
            started = await cp.call(event(
                "Started", 0, [mv201(1000, "Transaction.Begin")], "Charging",
                evse={"id": 1, "connector_id": 1},
                id_token={"id_token": TOKEN, "type": "ISO14443"}))
            assert started.id_token_info["status"] == "Accepted"
            updated = await cp.call(event("Updated", 1, [mv201(3500)], "SuspendedEV"))
            assert updated.total_cost == 1.4
            await cp.call(call201.MeterValues(evse_id=1, meter_value=[mv201(4000)]))
            cost = await cp.next("CostUpdated")
            assert cost == {"total_cost": 1.6, "transaction_id": "tx-201-a"}
            ended = await cp.call(event("Ended", 2, [mv201(6000, "Transaction.End")],
                                        reason="EVDisconnected"))
            assert ended.total_cost == 2.4
    asyncio.run(session())
    (start,) = gw.port.of(StartTransaction)
    assert (start.ocpp_transaction_id, start.evse_number, start.connector_number,
            start.energy_milliwh_start, start.seq_no) == ("tx-201-a", 1, 1, 1_000_000, 0)
    updated, metered = gw.port.of(RecordMeterValues)
    assert updated.samples[0].charging is False and metered.samples[0].charging is False
    assert metered.ocpp_transaction_id == "tx-201-a"
    (stop,) = gw.port.of(StopTransaction)
    assert (stop.energy_milliwh_stop, stop.reason, stop.seq_no) == (6_000_000,
                                                                    "EVDisconnected", 2)


def test_a_reached_cap_makes_the_201_station_receive_request_stop(gw: Gateway) -> None:
    gw.port.stop_requested = True

    async def session() -> None:
        async with connect201(gw.url) as cp:
            await cp.call(call201.TransactionEvent(
                event_type="Updated", timestamp=now_iso(), trigger_reason="MeterValuePeriodic",
                seq_no=3, transaction_info={"transaction_id": "tx-cap"},
                meter_value=[mv201(9000)]))
            assert await cp.next("RequestStopTransaction") == {"transaction_id": "tx-cap"}
    asyncio.run(session())


def test_a_201_ended_whose_port_call_fails_is_still_answered(gw: Gateway) -> None:
    gw.port.fail_stop = True

    async def session() -> None:
        async with connect201(gw.url) as cp:
            ended = await cp.call(call201.TransactionEvent(
                event_type="Ended", timestamp=now_iso(), trigger_reason="EVCommunicationLost",
                seq_no=9, transaction_info={"transaction_id": "tx-lost"}))
            assert ended.total_cost is None
    asyncio.run(session())


# -- malformed frames -----------------------------------------------------------------------------

@pytest.mark.parametrize(("identity", "subprotocol", "frame", "expected"), [
    (CP16, "ocpp1.6", '[2,"m1","MeterValues",{"connectorId":"one","meterValue":[]}]',
     [4, "m1", "TypeConstraintViolation"]),
    (CP16, "ocpp1.6", '[2,"m2","StatusNotification",{"connectorId":1,"status":"Available"}]',
     [4, "m2", "OccurenceConstraintViolation"]),
    (CP16, "ocpp1.6", '[2,"m3","Heartbeat",{"extra":true}]', [4, "m3", "FormationViolation"]),
    (CP201, "ocpp2.0.1", '[2,"m4","Heartbeat",{"extra":true}]', [4, "m4", "FormatViolation"]),
    (CP16, "ocpp1.6", '[2,"m5","OpenTheDoors",{}]', [4, "m5", "NotImplemented"]),
    (CP201, "ocpp2.0.1", '[2,"m6","RequestStartTransaction",{}]', [4, "m6", "NotSupported"]),
    (CP201, "ocpp2.0.1", "this is not json", [4, "-1", "RpcFrameworkError"]),
    (CP16, "ocpp1.6", '[2,"m7","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":'
     '"2024-05-01T10:00:00Z","sampledValue":[{"value":"0.0001","unit":"Wh"}]}]}]',
     [4, "m7", "PropertyConstraintViolation"]),
])
def test_a_malformed_call_gets_the_right_call_error(gw: Gateway, identity: str, subprotocol: str,
                                                    frame: str, expected: list[Any]) -> None:
    async def session() -> None:
        async with raw(gw.url, identity, subprotocol) as ws:
            answer = await exchange(ws, frame)
            assert answer[:3] == expected and isinstance(answer[3], str)
            assert isinstance(answer[4], dict)
            # the connection survives a bad frame
            assert (await exchange(ws, '[2,"ok","Heartbeat",{}]'))[:2] == [3, "ok"]
    asyncio.run(session())


# -- admission ------------------------------------------------------------------------------------

def refused(url: str, identity: str, *, subprotocol: str = "ocpp1.6",
            headers: dict[str, str] | None = None) -> int:
    async def attempt() -> int:
        try:
            async with websockets.connect(url + identity,
                                          subprotocols=[subprotocol],  # type: ignore[list-item]
                                          additional_headers=headers or {}):
                return 101
        except InvalidStatus as exc:
            return int(exc.response.status_code)
    return asyncio.run(attempt())


@pytest.mark.parametrize(("case", "identity", "subprotocol", "password", "status", "reason"), [
    ("no credentials", CP16, "ocpp1.6", None, 401, "no HTTP Basic credentials"),
    ("wrong password", CP16, "ocpp1.6", "not-the-right-password", 401, "wrong password"),
    ("short password", CP16, "ocpp1.6", "short", 401, "password length"),
    ("unknown charger", "NO-SUCH-CP", "ocpp1.6", DEMO_CHARGER_PASSWORD, 401, "unknown charger"),
    ("wrong subprotocol", CP16, "ocpp2.0.1", DEMO_CHARGER_PASSWORD, 400, "subprotocol"),
    ("profile 2 over plain ws", CP_PROFILE2, "ocpp1.6", DEMO_CHARGER_PASSWORD, 403, "TLS"),
])
def test_a_refused_connection_is_answered_before_accept_and_audited(
        gw: Gateway, case: str, identity: str, subprotocol: str, password: str | None,
        status: int, reason: str) -> None:
    before = len(audit_rows(gw.engine, identity))
    headers = None if password is None else basic(identity, password)
    assert refused(gw.url, identity, subprotocol=subprotocol, headers=headers) == status
    rows = audit_rows(gw.engine, identity)[before:]
    assert len(rows) == 1, case
    row = rows[0]
    assert (row.action, row.outcome, row.source_ip) == ("ocpp.connect", "failure", "127.0.0.1")
    assert reason in row.detail
    if identity != "NO-SUCH-CP":
        assert row.operator_id is not None and row.target.startswith("charger:")


def test_a_basic_user_other_than_the_identity_is_refused(gw: Gateway) -> None:
    assert refused(gw.url, CP16, headers=basic(CP201, DEMO_CHARGER_PASSWORD)) == 401


def test_an_identity_outside_the_ocpp_character_set_is_refused(gw: Gateway) -> None:
    assert refused(gw.url, "bad%20id", headers=basic("bad id", DEMO_CHARGER_PASSWORD)) == 400


def test_an_accepted_connection_is_audited_and_reconnects_cost_one_password_hash(
        gw: Gateway) -> None:
    gateway: OcppGateway = gw.app.state.ocpp_gateway

    async def connect_thrice() -> None:
        for _ in range(3):
            async with connect201(gw.url, CP201) as cp:
                await cp.call(call201.Heartbeat())
    def successes() -> int:
        return len([r for r in audit_rows(gw.engine, CP201) if r.outcome == "success"])
    before, rows_before = gateway.credentials.hashes_computed, successes()
    asyncio.run(connect_thrice())
    assert gateway.credentials.hashes_computed - before <= 1
    deadline = time.monotonic() + WAIT_S  # success rows are written in the background
    while successes() < rows_before + 3:
        assert time.monotonic() < deadline, "no success rows"
        time.sleep(0.05)
    rows = audit_rows(gw.engine, CP201)
    assert rows[-1].outcome == "success" and rows[-1].detail == "OCPP 2.0.1"
    assert rows[-1].target.startswith("charger:") and rows[-1].source_ip == "127.0.0.1"


def test_production_refuses_security_profile_1(gw: Gateway) -> None:
    gateway = OcppGateway(gw.port, gw.app.state.ocpp_registry, gw.engine,
                          GatewaySettings(production=True, warm_up=False))
    scope = {"type": "websocket", "scheme": "ws", "subprotocols": ["ocpp1.6"],
             "headers": [(b"authorization",
                          basic(CP16, DEMO_CHARGER_PASSWORD)["Authorization"].encode())]}

    async def admit() -> int:
        try:
            await gateway._admit(scope, CP16)
        except Exception as exc:  # noqa: BLE001 - the refusal is what we look at
            return int(getattr(exc, "status", 0))
        return 101
    assert asyncio.run(admit()) == 403
    assert GatewaySettings.from_env({"EVBILLING_ENV": "production"}).production is True
    assert GatewaySettings.from_env({}).production is False
