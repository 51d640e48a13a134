"""The charger simulator against the stock central system (bench/_stock_csms.py, the ocpp
library on its defaults) over a real localhost socket, both OCPP versions, at high speedup."""
# ruff: noqa: S311 (seeded simulation randomness, not security)

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from evbilling.simulator.client import (
    ChargerSpec,
    OcppVersion,
    SimClock,
    SimulatedCharger,
    simulated_charger,
)
from evbilling.simulator.curves import AC_22KW, DC_150KW, ChargingCurve, plan_session
from evbilling.simulator.runner import (
    DEMO_CHARGER_PASSWORD,
    DEMO_CHARGERS,
    DEMO_TOKENS,
    SimulationConfig,
    run_simulation,
)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "sim-charger-secret-0001"  # noqa: S105 - test value


def _load_stock_csms() -> Any:
    spec = importlib.util.spec_from_file_location("_stock_csms", ROOT / "bench" / "_stock_csms.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_stock_csms"] = module
    spec.loader.exec_module(module)
    return module


stock = _load_stock_csms()


def with_csms(scenario: Callable[[Any, str], Awaitable[None]], **csms_options: Any) -> None:
    """Run ``scenario(csms, url)`` with a stock central system on a free localhost port."""

    async def main() -> None:
        async with stock.serve_stock_csms("127.0.0.1", 0, record=True) as (csms, port):
            for subprotocol, cls in csms_options.get("classes", {}).items():
                csms.classes[subprotocol] = cls
            await asyncio.wait_for(scenario(csms, f"ws://127.0.0.1:{port}/ocpp"), timeout=60)

    asyncio.run(main())


def received(csms: Any, identity: str, action: str) -> list[dict[str, Any]]:
    return [payload for who, what, payload in csms.received if who == identity and what == action]


def long_dc_curve(seed: int = 1) -> ChargingCurve:
    """A DC session of at least 20 simulated minutes."""
    for attempt in range(100):
        curve = ChargingCurve(plan_session(random.Random(seed * 1000 + attempt), DC_150KW))
        if curve.full_ms is not None and curve.full_ms > 20 * 60_000:
            return curve
    raise AssertionError("no long session found")


# -- a whole simulation ----------------------------------------------------------------------


def test_simulated_chargers_run_complete_sessions_on_both_ocpp_versions() -> None:
    async def scenario(csms: Any, url: str) -> None:
        config = SimulationConfig(chargers=5, minutes=180, ocpp="mixed", speedup=3000, url=url,
                                  password=PASSWORD, seed=11, arrival_gap_s_mean=10 * 60)
        result = await run_simulation(config)
        stats = result.stats
        assert stats.errors == 0, [e for c in result.chargers for e in c.log.errors]
        assert stats.booted == 5
        assert stats.sessions_started >= 5
        assert stats.sessions_stopped == stats.sessions_started
        identities = [c.spec.identity for c in result.chargers]
        assert identities == [*(i for i, _ in DEMO_CHARGERS), "SIM-00001", "SIM-00002"]
        versions = {c.spec.ocpp_version for c in result.chargers}
        assert versions == {"1.6", "2.0.1"}
        for charger in result.chargers:
            identity = charger.spec.identity
            assert csms.authorization[identity] is not None
            assert csms.authorization[identity].startswith("Basic ")
            assert charger.log.boot_status == "Accepted"
            assert charger.log.sessions_started >= 1
            assert all(t.finished for t in charger.log.transactions)
            if charger.spec.ocpp_version == "1.6":
                check_16_flow(csms, charger)
            else:
                check_201_flow(csms, charger)

    with_csms(scenario)


def check_16_flow(csms: Any, charger: SimulatedCharger) -> None:
    identity = charger.spec.identity
    starts = received(csms, identity, "StartTransaction")
    stops = received(csms, identity, "StopTransaction")
    meter = received(csms, identity, "MeterValues")
    assert len(received(csms, identity, "BootNotification")) == 1
    assert len(starts) == len(stops) == charger.log.sessions_started
    assert len(received(csms, identity, "Authorize")) == len(starts)
    statuses = [p["status"] for p in received(csms, identity, "StatusNotification")]
    assert statuses[0] == "Available"
    assert statuses[1:3] == ["Preparing", "Charging"]
    assert statuses[-1] == "Available"
    for start, stop in zip(starts, stops, strict=True):
        assert stop["meter_stop"] >= start["meter_start"]
        assert stop["reason"] in ("EVDisconnected", "Local")
        assert stop["transaction_data"][0]["sampled_value"][0]["context"] == "Transaction.End"
    assert meter, "meter values were sent"
    registers = [int(m["meter_value"][0]["sampled_value"][0]["value"]) for m in meter]
    assert registers == sorted(registers), "the energy register never goes down"
    measurands = [v.get("measurand") for v in meter[0]["meter_value"][0]["sampled_value"]]
    assert measurands[:2] == ["Energy.Active.Import.Register", "Power.Active.Import"]
    assert "Current.Import" in measurands and measurands[-1] == "SoC"
    assert all(v["context"] == "Sample.Periodic" for v in meter[0]["meter_value"][0]
               ["sampled_value"])
    assert all("transaction_id" in m for m in meter)


def check_201_flow(csms: Any, charger: SimulatedCharger) -> None:
    identity = charger.spec.identity
    events = received(csms, identity, "TransactionEvent")
    by_transaction: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_transaction.setdefault(event["transaction_info"]["transaction_id"], []).append(event)
    assert len(by_transaction) == charger.log.sessions_started
    for transaction_events in by_transaction.values():
        kinds = [e["event_type"] for e in transaction_events]
        assert kinds[0] == "Started" and kinds[-1] == "Ended"
        assert set(kinds[1:-1]) <= {"Updated"}
        assert [e["seq_no"] for e in transaction_events] == list(range(len(transaction_events)))
        assert transaction_events[0]["id_token"]["type"] == "ISO14443"
        states = {e["transaction_info"].get("charging_state") for e in transaction_events}
        assert states <= {"Charging", "SuspendedEV", "EVConnected", "Idle"}
        ended = transaction_events[-1]["transaction_info"]
        assert ended["stopped_reason"] in ("EVDisconnected", "Local")
    statuses = [p["connector_status"] for p in received(csms, identity, "StatusNotification")]
    assert statuses[:2] == ["Available", "Occupied"]
    assert len(received(csms, identity, "Authorize")) == len(by_transaction)


def test_timestamps_sent_are_simulated_time() -> None:
    async def scenario(csms: Any, url: str) -> None:
        clock = SimClock(speedup=1200)
        spec = ChargerSpec("SIM-TIME", "1.6", PASSWORD, DC_150KW)
        async with simulated_charger(spec, url, clock, sample_interval_s=60) as charger:
            record = await charger.charge(long_dc_curve(), DEMO_TOKENS[0])
        assert record.started_at is not None and record.stopped_at is not None
        simulated_s = (record.stopped_at - record.started_at).total_seconds()
        assert simulated_s > 20 * 60  # took about a second of wall time
        stamps = [m["meter_value"][0]["timestamp"] for m in received(csms, "SIM-TIME",
                                                                     "MeterValues")]
        assert len(stamps) == record.samples_sent
        assert stamps[0].endswith("Z")

    with_csms(scenario)


# -- what the central system sends -----------------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_remote_stop_ends_the_session_with_reason_remote(version: OcppVersion) -> None:
    identity = f"SIM-RSTOP-{version}"

    async def scenario(csms: Any, url: str) -> None:
        spec = ChargerSpec(identity, version, PASSWORD, DC_150KW)
        async with simulated_charger(spec, url, SimClock(speedup=300)) as charger:
            session = asyncio.create_task(charger.charge(long_dc_curve(), DEMO_TOKENS[1]))
            await charger.wait_for(lambda log: bool(log.transactions)
                                   and log.transactions[0].samples_sent >= 2)
            transaction_id = charger.log.transactions[0].transaction_id
            assert transaction_id is not None
            central = csms.charge_points[identity]
            if version == "1.6":
                wrong = await central.call(call16.RemoteStopTransaction(transaction_id=999_999))
                answer = await central.call(call16.RemoteStopTransaction(
                    transaction_id=int(transaction_id)))
            else:
                wrong = await central.call(call201.RequestStopTransaction(transaction_id="nope"))
                answer = await central.call(call201.RequestStopTransaction(
                    transaction_id=transaction_id))
            assert (wrong.status, answer.status) == ("Rejected", "Accepted")
            record = await session
        assert record.stop_reason == "Remote" and record.remote_stopped
        assert [r.status for r in charger.log.remote_stops] == ["Rejected", "Accepted"]
        assert record.meter_stop_wh is not None and record.meter_start_wh is not None
        assert record.meter_stop_wh > record.meter_start_wh
        if version == "1.6":
            stop = received(csms, identity, "StopTransaction")[-1]
            assert (stop["reason"], stop["transaction_id"]) == ("Remote", int(transaction_id))
            statuses = [p["status"] for p in received(csms, identity, "StatusNotification")]
            assert statuses[-2:] == ["Finishing", "Available"]
        else:
            ended = received(csms, identity, "TransactionEvent")[-1]
            assert ended["event_type"] == "Ended"
            assert ended["trigger_reason"] == "RemoteStop"
            assert ended["transaction_info"]["stopped_reason"] == "Remote"
            assert ended["transaction_info"]["charging_state"] == "EVConnected"

    with_csms(scenario)


def test_running_and_final_cost_data_transfers_are_shown_on_the_display_16() -> None:
    async def scenario(csms: Any, url: str) -> None:
        spec = ChargerSpec("SIM-COST16", "1.6", PASSWORD, AC_22KW)
        async with simulated_charger(spec, url, SimClock(speedup=300)) as charger:
            session = asyncio.create_task(charger.charge(long_dc_curve(), DEMO_TOKENS[0]))
            await charger.wait_for(lambda log: bool(log.transactions)
                                   and log.transactions[0].transaction_id is not None)
            transaction_id = charger.log.transactions[0].transaction_id
            central = csms.charge_points["SIM-COST16"]
            running = await central.call(call16.DataTransfer(
                vendor_id="org.openchargealliance.costmsg", message_id="RunningCost",
                data=f'{{"transactionId": {transaction_id}, "cost": 1.2345, '
                     f'"state": "Charging"}}'))
            other = await central.call(call16.DataTransfer(vendor_id="com.example",
                                                           data="hello"))
            charger.stop_local()
            record = await session
            final = await central.call(call16.DataTransfer(
                vendor_id="org.openchargealliance.costmsg", message_id="FinalCost",
                data=f'{{"transactionId": {transaction_id}, "cost": 3.10}}'))
        assert (running.status, other.status, final.status) == (
            "Accepted", "UnknownVendorId", "Accepted")
        assert record.stop_reason == "Local"
        costs = charger.log.costs_for(str(transaction_id))
        assert [(c.source, c.cost) for c in costs] == [
            ("RunningCost", Decimal("1.2345")), ("FinalCost", Decimal("3.10"))]
        assert len(charger.log.data_transfers) == 3

    with_csms(scenario)


class CostingChargePoint201(stock.StockChargePoint201):  # type: ignore[misc, name-defined]
    """The stock 2.0.1 central system, answering every TransactionEvent with a running cost."""

    @on("TransactionEvent")
    def on_transaction_event(self, seq_no: int, **payload: Any) -> result201.TransactionEvent:
        self.csms.note(self.id, "TransactionEvent", {"seq_no": seq_no, **payload})
        return result201.TransactionEvent(total_cost=round(0.5 + 0.25 * seq_no, 2))


def test_cost_updated_and_transaction_event_total_cost_are_recorded_201() -> None:
    async def scenario(csms: Any, url: str) -> None:
        spec = ChargerSpec("SIM-COST201", "2.0.1", PASSWORD, DC_150KW)
        async with simulated_charger(spec, url, SimClock(speedup=300)) as charger:
            session = asyncio.create_task(charger.charge(long_dc_curve(), DEMO_TOKENS[2]))
            await charger.wait_for(lambda log: bool(log.transactions)
                                   and log.transactions[0].samples_sent >= 2)
            transaction_id = charger.log.transactions[0].transaction_id
            central = csms.charge_points["SIM-COST201"]
            await central.call(call201.CostUpdated(total_cost=4.56,
                                                   transaction_id=transaction_id))
            charger.stop_local()
            record = await session
        updated = [c for c in charger.log.display_costs if c.source == "CostUpdated"]
        assert [(c.transaction_id, c.cost) for c in updated] == [(transaction_id,
                                                                  Decimal("4.56"))]
        from_responses = [c.cost for c in charger.log.display_costs
                          if c.source == "TransactionEventResponse"]
        assert from_responses[:3] == [Decimal("0.5"), Decimal("0.75"), Decimal("1.0")]
        last_seq_no = record.seq_nos[-1]
        assert record.total_cost == Decimal(str(round(0.5 + 0.25 * last_seq_no, 2)))
        assert record.stop_reason == "Local"

    with_csms(scenario, classes={"ocpp2.0.1": CostingChargePoint201})


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_remote_start_begins_a_session_without_authorize(version: OcppVersion) -> None:
    async def scenario(csms: Any, url: str) -> None:
        config = SimulationConfig(chargers=1, minutes=60, ocpp=version, speedup=2000, url=url,
                                  password=PASSWORD, identities=(f"SIM-RSTART@{version}",),
                                  arrival_gap_s_mean=100 * 3600)  # no car arrives on its own
        simulation = asyncio.create_task(run_simulation(config))
        while not received(csms, "SIM-RSTART", "StatusNotification"):
            await asyncio.sleep(0.01)
        central = csms.charge_points["SIM-RSTART"]
        if version == "1.6":
            answer = await central.call(call16.RemoteStartTransaction(id_tag="04C4C4C4C4C4C4",
                                                                      connector_id=1))
        else:
            answer = await central.call(call201.RequestStartTransaction(
                id_token={"id_token": "04C4C4C4C4C4C4", "type": "ISO14443"},
                remote_start_id=77, evse_id=1))
        assert answer.status == "Accepted"
        result = await simulation
        charger = result.charger("SIM-RSTART")
        started = [t for t in charger.log.transactions if t.started_at is not None]
        assert started and started[0].id_tag == "04C4C4C4C4C4C4"
        assert started[0].authorize_status is None  # a remote start needs no Authorize
        assert charger.log.remote_starts[0].status == "Accepted"
        assert not received(csms, "SIM-RSTART", "Authorize")
        if version == "2.0.1":
            first = received(csms, "SIM-RSTART", "TransactionEvent")[0]
            assert first["trigger_reason"] == "RemoteStart"
            assert first["transaction_info"]["remote_start_id"] == 77

    with_csms(scenario)


def test_the_runner_defaults_are_the_demo_chargers_and_tokens() -> None:
    from evbilling.services import demo

    assert tuple((i, v) for i, v, _site in demo.DEMO_CHARGERS) == DEMO_CHARGERS
    assert DEMO_CHARGER_PASSWORD == demo.DEMO_CHARGER_PASSWORD
    demo_rfids = {uid for *_, uids in demo.DEMO_DRIVERS for uid in uids if uid.startswith("04")}
    assert set(DEMO_TOKENS) == demo_rfids
