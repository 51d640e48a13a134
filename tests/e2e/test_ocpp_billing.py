"""The whole charging flow over real sockets, as the README runs it: ``evbilling serve --demo`` in
its own process, simulated chargers (real OCPP 1.6J and 2.0.1 clients) and a driver's live
stream (server-sent events).

authorize -> start -> meter values across the 17:00 time-of-use boundary -> stop: the live costs
streamed grow, the charger shows the running cost and the final cost, the final cost equals the
session's CDR, and the CDR's price equals an independent rating of its periods. A spending cap
makes the remote stop arrive at the simulated charger.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from evbilling.adapters.db.documents import periods_from_document
from evbilling.domain.periods import SessionFacts
from evbilling.domain.rating import rate
from evbilling.domain.tariffs import parse_tariff
from evbilling.services.demo import DEMO_API_KEY, DEMO_CHARGER_PASSWORD
from evbilling.simulator.client import ChargerSpec, SimClock, SimulatedCharger, simulated_charger
from evbilling.simulator.curves import ChargingCurve, SessionPlan

CAROL = "04C4C4C4C4C4C4"  # list prices
BOB = "04B0B0B0B0B0B0"  # fleet plan, Gold loyalty tier
BERLIN_WINTER = dt.timezone(dt.timedelta(hours=1))
SPEEDUP = 300  # 40 simulated minutes in 8 s


@dataclass(frozen=True)
class Server:
    base: str
    ocpp: str

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base + "/api/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {DEMO_API_KEY}"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    db = tmp_path_factory.mktemp("serve") / "evbilling.sqlite3"
    exe = Path(sys.executable).with_name("evbilling")
    log = (db.parent / "serve.log").open("w")
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [str(exe), "serve", "--demo", "--port", str(port), "--database-url", f"sqlite:///{db}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "EVBILLING_ENV": "demo"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("evbilling serve did not start: "
                                   + (db.parent / "serve.log").read_text())
            time.sleep(0.2)
        yield Server(base, f"ws://127.0.0.1:{port}/ocpp")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def steady_plan(power_w: int) -> SessionPlan:
    """A car far from full: constant power after the ramp for the whole test."""
    return SessionPlan(car="test car", power_type="AC", phases=3, capacity_wh=100_000,
                       soc_permille_start=100, soc_permille_target=900,
                       soc_permille_taper=850, power_w_max=power_w, power_w_min=1_000,
                       efficiency_permille=1_000, idle_s=0, dwell_s_max=None, jitter_seed=1)


async def active_session(api: httpx.AsyncClient, charger: SimulatedCharger) -> dict[str, Any]:
    """The session the server opened for the charger's running transaction."""
    for _ in range(200):
        record = charger.active_transaction
        if record is not None and record.transaction_id is not None:
            page = (await api.get("/sessions", params={"status": "active", "limit": 100})).json()
            for session in page["data"]:
                if session["ocpp_transaction_id"] == record.transaction_id:
                    return dict(session)
        await asyncio.sleep(0.05)
    raise AssertionError("the server never opened the session")


async def read_stream(api: httpx.AsyncClient, session_id: str,
                      events: list[tuple[str, dict[str, Any]]]) -> None:
    """Collect the live stream's events until the session ends."""
    async with api.stream("GET", f"/sessions/{session_id}/live") as response:
        assert response.status_code == 200
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name is not None:
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "session.ended":
                    return


async def drive(server: Server, identity: str, version: str, token: str, *,
                start_at: dt.datetime, minutes: int, cap_minor: int | None = None
                ) -> dict[str, Any]:
    clock = SimClock(speedup=SPEEDUP, start_at=start_at)
    spec = ChargerSpec(identity, version, password=DEMO_CHARGER_PASSWORD)  # type: ignore[arg-type]
    events: list[tuple[str, dict[str, Any]]] = []
    async with server.api() as api, simulated_charger(spec, server.ocpp, clock,
                                                      sample_interval_s=60) as charger:
        charging = asyncio.create_task(charger.charge(ChargingCurve(steady_plan(11_000)), token,
                                                      stop_at_s=minutes * 60))
        session = await active_session(api, charger)
        stream = asyncio.create_task(read_stream(api, session["id"], events))
        if cap_minor is not None:
            capped = await api.put(f"/sessions/{session['id']}/cap",
                                   json={"cap_minor": cap_minor})
            assert capped.status_code == 200, capped.text
        record = await asyncio.wait_for(charging, 120)
        await asyncio.wait_for(stream, 30)
        done = (await api.get(f"/sessions/{session['id']}")).json()
        tariff_id = done["cdr"]["tariff"]["tariff_id"]
        versions = (await api.get(f"/tariffs/{tariff_id}/versions")).json()
    return {"record": record, "log": charger.log, "events": events, "session": done,
            "versions": versions}


def independent_total(result: dict[str, Any]) -> Any:
    """Rate the CDR's stored periods again, from the tariff document the API serves."""
    cdr = result["session"]["cdr"]
    versions = result["versions"]
    rows = versions["data"] if isinstance(versions, dict) else versions
    document = next(v["document"] for v in rows if v["version"] == cdr["tariff"]["version"])
    periods = periods_from_document(cdr["periods"])
    start = int(dt.datetime.fromisoformat(result["session"]["started_at"]).timestamp() * 1000)
    end = int(dt.datetime.fromisoformat(result["session"]["ended_at"]).timestamp() * 1000)
    return rate(parse_tariff(document), SessionFacts(periods, cdr["time_zone"], start, end))


def check_flow(result: dict[str, Any], *, boundary: dt.datetime) -> None:
    session, events, log = result["session"], result["events"], result["log"]
    assert session["status"] == "completed", session
    total_incl = Decimal(session["total_incl_vat"])

    # the live stream: growing running costs, then the end with the price
    costs = [Decimal(data["total_incl"]) for name, data in events
             if name == "session.cost_updated"]
    assert len(costs) >= 10, events
    assert costs == sorted(costs) and costs[-1] > 0
    ended = [data for name, data in events if name == "session.ended"]
    assert len(ended) == 1 and ended[0]["amount_minor_incl"] == session["total_incl_vat_minor"]

    # the charger showed the running cost and, last, the final cost = the CDR's billed total
    shown = [c for c in log.display_costs if c.cost is not None]
    assert len(shown) >= 10
    assert shown[-1].cost == total_incl

    # the CDR's periods are cut at the time-of-use boundary and rate to the CDR's total
    cdr = session["cdr"]
    starts = [p["start_ms"] for p in cdr["periods"]]
    assert int(boundary.timestamp() * 1000) in starts
    rated = independent_total(result)
    assert rated.total_cost.excl_vat == Decimal(str(cdr["total_cost"]["excl_vat"]))
    assert rated.total_cost.incl_vat == Decimal(str(cdr["total_cost"]["incl_vat"]))


def test_an_ocpp_16_session_is_streamed_shown_and_billed_as_its_cdr_rates(server: Server):
    start = dt.datetime(2026, 11, 16, 16, 40, tzinfo=BERLIN_WINTER)
    result = asyncio.run(drive(server, "DEMO-CP16-001", "1.6", CAROL, start_at=start,
                               minutes=40))
    check_flow(result, boundary=start.replace(hour=17, minute=0))
    sources = {c.source for c in result["log"].display_costs}
    assert {"RunningCost", "FinalCost"} <= sources
    assert result["record"].stop_reason == "Local"


def test_an_ocpp_201_session_is_streamed_shown_and_billed_as_its_cdr_rates(server: Server):
    start = dt.datetime(2026, 11, 17, 16, 40, tzinfo=BERLIN_WINTER)
    result = asyncio.run(drive(server, "DEMO-CP201-001", "2.0.1", BOB, start_at=start,
                               minutes=40))
    check_flow(result, boundary=start.replace(hour=17, minute=0))
    record = result["record"]
    assert record.total_cost == Decimal(result["session"]["total_incl_vat"])
    # Bob is Gold: the CDR's billing names the loyalty discount
    lines = result["session"]["cdr"]["billing"]["lines"]
    assert any(line["kind"] == "loyalty" for line in lines), lines


def test_a_spending_cap_makes_the_remote_stop_arrive_at_the_charger(server: Server):
    start = dt.datetime(2026, 11, 18, 10, 0, tzinfo=BERLIN_WINTER)
    result = asyncio.run(drive(server, "DEMO-CP16-001", "1.6", CAROL, start_at=start,
                               minutes=120, cap_minor=300))
    log, record, session = result["log"], result["record"], result["session"]
    assert [r.action for r in log.remote_stops] == ["RemoteStopTransaction"]
    assert record.stop_reason == "Remote" and record.remote_stopped
    assert session["stop_reason"] == "Remote"
    names = [name for name, _ in result["events"]]
    assert names.count("session.cap_reached") == 1
    # stopped soon after the cap, long before the two hours planned
    assert 300 <= session["total_incl_vat_minor"] < 600


async def replay_session(server: Server) -> tuple[list[Any], dict[str, Any]]:
    """A 1.6 charger that delivers every transaction message three times (an offline queue
    flushed more than once): start, meter values, stop."""
    auth = base64.b64encode(f"DEMO-CP16-AMS:{DEMO_CHARGER_PASSWORD}".encode()).decode()
    answers: list[Any] = []
    counter = iter(range(1, 1000))

    async with websockets.connect(f"{server.ocpp}/DEMO-CP16-AMS", subprotocols=["ocpp1.6"],
                                  additional_headers={"Authorization": f"Basic {auth}"}) as ws:
        async def call(action: str, payload: dict[str, Any]) -> Any:
            await ws.send(json.dumps([2, f"m{next(counter)}", action, payload]))
            while True:
                message = json.loads(await ws.recv())
                if message[0] in (3, 4):
                    answers.append(message)
                    return message
                # a call from the central system (cost display): acknowledge it
                await ws.send(json.dumps([3, message[1], {"status": "Accepted"}]))

        await call("BootNotification", {"chargePointVendor": "T", "chargePointModel": "R"})
        start = {"connectorId": 1, "idTag": CAROL, "meterStart": 5000,
                 "timestamp": "2026-11-19T09:00:00Z"}
        starts = [await call("StartTransaction", start) for _ in range(3)]
        tx = starts[0][2]["transactionId"]
        for minute in (10, 20, 30):
            values = {"connectorId": 1, "transactionId": tx, "meterValue": [{
                "timestamp": f"2026-11-19T09:{minute}:00Z", "sampledValue": [{
                    "value": str(5000 + minute * 100), "measurand":
                        "Energy.Active.Import.Register", "unit": "Wh"}]}]}
            for _ in range(3):
                await call("MeterValues", values)
        stop = {"transactionId": tx, "meterStop": 8500, "timestamp": "2026-11-19T09:35:00Z",
                "reason": "Local"}
        stops = [await call("StopTransaction", stop) for _ in range(3)]
    async with server.api() as api:
        sessions = (await api.get("/sessions", params={"limit": 100})).json()["data"]
    mine = [s for s in sessions if s["ocpp_transaction_id"] == str(tx)]
    return [starts, stops, answers], {"sessions": mine}


def test_transaction_messages_delivered_three_times_give_one_session_and_one_settlement(
        server: Server):
    (starts, stops, answers), found = asyncio.run(replay_session(server))
    assert all(a[0] == 3 for a in answers), answers  # never a CALLERROR
    assert len({s[2]["transactionId"] for s in starts}) == 1
    assert len(found["sessions"]) == 1
    session = found["sessions"][0]
    assert session["status"] == "completed" and session["energy_kwh"] == "3.5"
    assert session["total_incl_vat_minor"] > 0
