"""The gateway's dispatch and handlers on a fake ChargingPort and a recording transport: what
each CALL becomes, what the charger gets back, and what we send afterwards (and in which
order); our own CALLs one at a time; the registry's ChargerCommands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from evbilling.entrypoints.ocpp import v16, v201
from evbilling.entrypoints.ocpp.connection import Connection, ConnectionSettings, Outgoing
from evbilling.entrypoints.ocpp.registry import ConnectionRegistry
from evbilling.services.ports import (
    BootInfo,
    ChargerStatus,
    LiveCost,
    RecordMeterValues,
    StartTransaction,
    StopTransaction,
)
from ocpp_fakes import CHARGER_16, CHARGER_201, FakeChargingPort, RecordingTransport

NOW_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z
TOKEN = "04A1B2C3D4E5F6"  # noqa: S105 - an RFID uid of the demo data


class Station:
    """A connection under test with its fake port and recorded frames."""

    def __init__(self, version: str, *, timeout_s: float = 30.0) -> None:
        self.port = FakeChargingPort()
        self.transport = RecordingTransport()
        dialect = v16.DIALECT if version == "1.6" else v201.DIALECT
        charger = CHARGER_16 if version == "1.6" else CHARGER_201
        self.conn = Connection(charger, dialect, self.transport, self.port,
                               ConnectionSettings(call_timeout_s=timeout_s),
                               clock=lambda: NOW_MS)
        self._ids = 0

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Send a CALL as the charger; return our answer (CALLRESULT or CALLERROR)."""
        self._ids += 1
        uid = f"cp-{self._ids}"
        await self.conn.on_frame(orjson.dumps([2, uid, action, payload]).decode())
        answer = next(f for f in self.transport.frames if f[0] in (3, 4) and f[1] == uid)
        return answer

    async def answer_call(self, payload: dict[str, Any]) -> list[Any]:
        """Answer the CALL we sent last with a CALLRESULT; returns that CALL."""
        await settle()
        sent = self.transport.calls()[-1]
        await self.conn.on_frame(orjson.dumps([3, sent[1], payload]).decode())
        await settle()
        return sent


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def meter_value(register: str = "2500", at: str = "2024-05-01T10:05:00Z",
                **more: Any) -> dict[str, Any]:
    return {"timestamp": at, "sampledValue": [
        {"value": register, "measurand": "Energy.Active.Import.Register", "unit": "Wh", **more},
        {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"}]}


def mv201(register: float, at: str = "2024-05-01T10:05:00Z",
          context: str = "Sample.Periodic") -> dict[str, Any]:
    return {"timestamp": at, "sampledValue": [{"value": register, "context": context}]}


def cost_data(frame: list[Any]) -> dict[str, Any]:
    assert frame[2] == "DataTransfer" and frame[3]["vendorId"] == v16.COSTMSG_VENDOR
    data: dict[str, Any] = orjson.loads(frame[3]["data"])
    return data


# -- OCPP 1.6 -------------------------------------------------------------------------------------

def test_16_boot_is_accepted_with_the_heartbeat_interval_and_recorded() -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("BootNotification", {
            "chargePointVendor": "V", "chargePointModel": "M", "chargeBoxSerialNumber": "S1",
            "firmwareVersion": "1.2"})
        assert answer == [3, "cp-1", {"status": "Accepted", "interval": 300,
                                      "currentTime": "2024-05-01T10:00:00.000Z"}]
        (boot,) = st.port.of(BootInfo)
        assert (boot.vendor, boot.model, boot.serial, boot.firmware) == ("V", "M", "S1", "1.2")
    run(test)


def test_16_heartbeat_answers_the_current_time() -> None:
    async def test() -> None:
        st = Station("1.6")
        assert (await st.call("Heartbeat", {}))[2] == {"currentTime": "2024-05-01T10:00:00.000Z"}
        assert st.port.seen_count == 1
    run(test)


def test_16_a_faulted_status_carries_its_error_code_and_no_error_carries_none() -> None:
    async def test() -> None:
        st = Station("1.6")
        await st.call("StatusNotification", {"connectorId": 2, "errorCode": "GroundFailure",
                                              "status": "Faulted", "info": "RCD tripped"})
        await st.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                              "status": "Available",
                                              "timestamp": "2024-05-01T09:59:00Z"})
        faulted, available = st.port.of(ChargerStatus)
        assert (faulted.connector_number, faulted.status, faulted.error_code, faulted.info) == \
            (2, "Faulted", "GroundFailure", "RCD tripped")
        assert (available.error_code, available.at_ms) == (None, NOW_MS - 60_000)
    run(test)


def test_16_authorize_answers_the_ports_status() -> None:
    async def test() -> None:
        st = Station("1.6")
        assert (await st.call("Authorize", {"idTag": TOKEN}))[2] == \
            {"idTagInfo": {"status": "Accepted"}}
        assert (await st.call("Authorize", {"idTag": "NOPE"}))[2] == \
            {"idTagInfo": {"status": "Invalid"}}
    run(test)


def test_16_start_answers_an_integer_transaction_id_and_converts_the_meter_to_milliwatt_hours(
        ) -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("StartTransaction", {
            "connectorId": 2, "idTag": TOKEN, "meterStart": 1234,
            "timestamp": "2024-05-01T09:00:00Z", "reservationId": 7})
        assert answer[2] == {"transactionId": 1001, "idTagInfo": {"status": "Accepted"}}
        (cmd,) = st.port.of(StartTransaction)
        assert (cmd.connector_number, cmd.evse_number, cmd.id_token, cmd.energy_milliwh_start,
                cmd.started_at_ms, cmd.reservation_id, cmd.ocpp_transaction_id) == \
            (2, None, TOKEN, 1_234_000, NOW_MS - 3_600_000, 7, None)
        assert cmd.frame.unique_id == "cp-1" and '"meterStart":1234' in cmd.frame.text
    run(test)


def test_16_meter_values_are_answered_first_and_the_running_cost_follows() -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("MeterValues", {"connectorId": 1, "transactionId": 1001,
                                               "meterValue": [meter_value("2500.5")]})
        assert answer == [3, "cp-1", {}]
        sent = await st.answer_call({"status": "Accepted"})
        assert st.transport.frames.index(answer) < st.transport.frames.index(sent)
        assert sent[3]["messageId"] == "RunningCost"
        data = cost_data(sent)
        assert data == {"transactionId": 1001, "timestamp": "2024-05-01T10:05:00.000Z",
                        "meterValue": 2500, "cost": 1.0, "state": "Charging",
                        "chargingPrice": {}}
        assert '"cost":1.00' in sent[3]["data"]  # exact decimal, two places for EUR
        (cmd,) = st.port.of(RecordMeterValues)
        assert cmd.ocpp_transaction_id == "1001" and cmd.connector_number == 1
        assert cmd.samples[0].energy_milliwh == 2_500_500 and cmd.samples[0].power_w == 7400
    run(test)


def test_16_a_suspended_connector_makes_its_samples_not_charging_and_the_cost_idle() -> None:
    async def test() -> None:
        st = Station("1.6")
        await st.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                              "status": "SuspendedEV"})
        await st.call("MeterValues", {"connectorId": 1, "transactionId": 1001,
                                      "meterValue": [meter_value()]})
        sent = await st.answer_call({"status": "Accepted"})
        assert st.port.of(RecordMeterValues)[0].samples[0].charging is False
        assert cost_data(sent)["state"] == "Idle"
    run(test)


def test_16_a_reached_spending_cap_sends_a_remote_stop_after_the_cost() -> None:
    async def test() -> None:
        st = Station("1.6")
        st.port.stop_requested = True
        await st.call("MeterValues", {"connectorId": 1, "transactionId": 1001,
                                      "meterValue": [meter_value()]})
        cost = await st.answer_call({"status": "Accepted"})
        stop = await st.answer_call({"status": "Accepted"})
        assert cost[2] == "DataTransfer"
        assert stop[2:] == ["RemoteStopTransaction", {"transactionId": 1001}]
    run(test)


def test_16_meter_values_finer_than_a_milliwatt_hour_are_a_property_constraint_violation(
        ) -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("MeterValues", {"connectorId": 1, "transactionId": 1001,
                                               "meterValue": [meter_value("1.0001")]})
        assert answer[:3] == [4, "cp-1", "PropertyConstraintViolation"]
        assert st.port.of(RecordMeterValues) == []
    run(test)


def test_16_meter_values_outside_a_transaction_get_no_cost() -> None:
    async def test() -> None:
        st = Station("1.6")
        await st.call("MeterValues", {"connectorId": 0, "meterValue": [meter_value()]})
        await settle()
        assert st.transport.calls() == []
        assert st.port.of(RecordMeterValues)[0].ocpp_transaction_id is None
    run(test)


def test_16_stop_is_accepted_and_the_final_cost_follows() -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("StopTransaction", {
            "transactionId": 1001, "meterStop": 20_000, "timestamp": "2024-05-01T11:00:00Z",
            "reason": "EVDisconnected", "idTag": TOKEN,
            "transactionData": [meter_value("15000", at="2024-05-01T10:30:00Z")]})
        assert answer[2] == {"idTagInfo": {"status": "Accepted"}}
        sent = await st.answer_call({"status": "Accepted"})
        assert sent[3]["messageId"] == "FinalCost"
        data = cost_data(sent)
        assert data["transactionId"] == 1001 and data["cost"] == 8.0
        assert data["priceText"] == "Total 8.00 EUR incl. VAT for 20.000 kWh"
        (cmd,) = st.port.of(StopTransaction)
        assert (cmd.ocpp_transaction_id, cmd.energy_milliwh_stop, cmd.reason, cmd.id_token,
                cmd.stopped_at_ms) == ("1001", 20_000_000, "EVDisconnected", TOKEN,
                                       NOW_MS + 3_600_000)
        assert [s.energy_milliwh for s in cmd.samples] == [15_000_000]
    run(test)


def test_16_a_stop_whose_port_call_fails_is_still_answered_with_a_call_result() -> None:
    async def test() -> None:
        st = Station("1.6")
        st.port.fail_stop = True
        answer = await st.call("StopTransaction", {
            "transactionId": 1001, "meterStop": 20_000, "timestamp": "2024-05-01T11:00:00Z"})
        assert answer == [3, "cp-1", {"idTagInfo": {"status": "Accepted"}}]
        await settle()
        assert st.transport.calls() == []  # no cost to show
    run(test)


def test_16_a_stop_with_unreadable_samples_is_still_accepted_and_floors_fine_registers(
        ) -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("StopTransaction", {
            "transactionId": 1001, "meterStop": 20_000, "timestamp": "not a time",
            "transactionData": [meter_value("abc"), meter_value("1.0009", at="bad"),
                                meter_value("12.3456", at="2024-05-01T10:30:00Z")]})
        assert answer[0] == 3
        (cmd,) = st.port.of(StopTransaction)
        assert cmd.stopped_at_ms == NOW_MS
        assert [s.energy_milliwh for s in cmd.samples] == [None, 12_345]
    run(test)


def test_16_data_transfer_knows_the_cost_vendor_and_nothing_else() -> None:
    async def test() -> None:
        st = Station("1.6")
        assert (await st.call("DataTransfer", {"vendorId": "acme"}))[2] == \
            {"status": "UnknownVendorId"}
        assert (await st.call("DataTransfer", {"vendorId": v16.COSTMSG_VENDOR,
                                               "messageId": "Nope"}))[2] == \
            {"status": "UnknownMessageId"}
        assert (await st.call("DataTransfer", {"vendorId": v16.COSTMSG_VENDOR,
                                               "messageId": "ConnectorUnplugged",
                                               "data": "{}"}))[2] == {"status": "Accepted"}
    run(test)


def test_an_unknown_action_is_not_implemented_and_a_csms_action_is_not_supported() -> None:
    async def test() -> None:
        st = Station("1.6")
        assert (await st.call("MakeCoffee", {}))[2] == "NotImplemented"
        assert (await st.call("RemoteStartTransaction", {"idTag": TOKEN}))[2] == "NotSupported"
        st201 = Station("2.0.1")
        assert (await st201.call("MakeCoffee", {}))[2] == "NotImplemented"
        assert (await st201.call("CostUpdated", {"totalCost": 1, "transactionId": "t"}))[2] \
            == "NotSupported"
    run(test)


def test_a_schema_failure_is_answered_before_the_port_is_called() -> None:
    async def test() -> None:
        st = Station("1.6")
        answer = await st.call("StartTransaction", {"connectorId": 1, "idTag": TOKEN})
        assert answer[2] == "OccurenceConstraintViolation"
        assert st.port.commands == []
    run(test)


def test_a_port_failure_outside_a_stop_is_an_internal_error() -> None:
    async def test() -> None:
        st = Station("1.6")

        async def broken(*args: Any) -> Any:
            raise RuntimeError("database down")
        st.port.authorize = broken  # type: ignore[method-assign]
        assert (await st.call("Authorize", {"idTag": TOKEN}))[2] == "InternalError"
    run(test)


# -- OCPP 2.0.1 -----------------------------------------------------------------------------------

def tx_event(event: str, seq: int, *, state: str | None = None, meter: list[Any] | None = None,
             token: str | None = None, evse: dict[str, int] | None = None,
             **info: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event, "timestamp": "2024-05-01T10:00:00Z", "seqNo": seq,
        "triggerReason": "MeterValuePeriodic",
        "transactionInfo": {"transactionId": "tx-1", **info}}
    if state is not None:
        payload["transactionInfo"]["chargingState"] = state
    if meter is not None:
        payload["meterValue"] = meter
    if token is not None:
        payload["idToken"] = {"idToken": token, "type": "ISO14443"}
    if evse is not None:
        payload["evse"] = evse
    return payload


def test_201_boot_heartbeat_and_status() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        boot = await st.call("BootNotification", {
            "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}})
        assert boot[2] == {"currentTime": "2024-05-01T10:00:00.000Z", "interval": 300,
                           "status": "Accepted"}
        assert st.port.of(BootInfo)[0].reason == "PowerUp"
        assert (await st.call("Heartbeat", {}))[2] == {"currentTime": "2024-05-01T10:00:00.000Z"}
        await st.call("StatusNotification", {"timestamp": "2024-05-01T10:00:00Z",
                                              "connectorStatus": "Occupied", "evseId": 2,
                                              "connectorId": 1})
        await st.call("StatusNotification", {"timestamp": "2024-05-01T10:00:01Z",
                                              "connectorStatus": "Faulted", "evseId": 1,
                                              "connectorId": 2})
        first, second = st.port.of(ChargerStatus)
        # the EVSE and the connector on it (a 2.0.1 EVSE can have several connectors)
        assert (first.evse_number, first.connector_number, first.status) == (2, 1, "Occupied")
        assert (second.evse_number, second.connector_number) == (1, 2)
    run(test)


def test_201_authorize_answers_id_token_info() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        answer = await st.call("Authorize", {"idToken": {"idToken": TOKEN, "type": "ISO14443"}})
        assert answer[2] == {"idTokenInfo": {"status": "Accepted"}}
    run(test)


def test_201_started_opens_the_transaction_with_its_id_evse_and_start_register() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        answer = await st.call("TransactionEvent", tx_event(
            "Started", 0, state="Charging", token=TOKEN, evse={"id": 2, "connectorId": 1},
            meter=[mv201(1234.5, context="Transaction.Begin")]))
        assert answer[2] == {"idTokenInfo": {"status": "Accepted"}}
        (cmd,) = st.port.of(StartTransaction)
        assert (cmd.ocpp_transaction_id, cmd.evse_number, cmd.connector_number, cmd.id_token,
                cmd.energy_milliwh_start, cmd.seq_no) == ("tx-1", 2, 1, TOKEN, 1_234_500, 0)
    run(test)


def test_201_updated_carries_the_charging_state_and_answers_the_total_cost() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        await st.call("TransactionEvent", tx_event("Started", 0, state="Charging",
                                                   evse={"id": 1}, meter=[mv201(0)]))
        first = await st.call("TransactionEvent", tx_event("Updated", 1, state="SuspendedEV",
                                                           meter=[mv201(5000)]))
        second = await st.call("TransactionEvent", tx_event("Updated", 2, meter=[mv201(6000)]))
        assert first[2] == {"totalCost": 2.0}
        assert orjson.loads(orjson.dumps(second[2])) == {"totalCost": 2.4}
        updates = st.port.of(RecordMeterValues)
        assert [u.samples[0].charging for u in updates] == [False, False]
        assert [u.seq_no for u in updates] == [1, 2]
    run(test)


def test_201_updated_with_an_id_token_answers_its_status() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        answer = await st.call("TransactionEvent", tx_event("Updated", 1, token="NOPE"))  # noqa: S106
        assert answer[2] == {"idTokenInfo": {"status": "Invalid"}}
    run(test)


def test_201_a_reached_cap_sends_request_stop_after_the_answer() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        st.port.stop_requested = True
        answer = await st.call("TransactionEvent", tx_event("Updated", 1, meter=[mv201(9000)]))
        sent = await st.answer_call({"status": "Accepted"})
        assert answer[2] == {"totalCost": 3.6}
        assert sent[2:] == ["RequestStopTransaction", {"transactionId": "tx-1"}]
    run(test)


def test_201_ended_settles_with_the_last_register_and_answers_the_total() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        answer = await st.call("TransactionEvent", tx_event(
            "Ended", 5, token=TOKEN, stoppedReason="EVDisconnected",
            meter=[mv201(19000, at="2024-05-01T10:59:00Z"),
                   mv201(20000, at="2024-05-01T11:00:00Z", context="Transaction.End")]))
        assert answer[2] == {"totalCost": 8.0, "idTokenInfo": {"status": "Accepted"}}
        (cmd,) = st.port.of(StopTransaction)
        assert (cmd.energy_milliwh_stop, cmd.reason, cmd.seq_no, len(cmd.samples)) == \
            (20_000_000, "EVDisconnected", 5, 2)
    run(test)


def test_201_an_ended_whose_port_call_fails_is_still_answered_with_a_call_result() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        st.port.fail_stop = True
        answer = await st.call("TransactionEvent", tx_event("Ended", 3))
        assert answer == [3, "cp-1", {}]
    run(test)


def test_201_meter_values_find_the_transaction_by_evse_and_send_cost_updated() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        await st.call("TransactionEvent", tx_event("Started", 0, evse={"id": 1},
                                                   meter=[mv201(0)]))
        answer = await st.call("MeterValues", {"evseId": 1, "meterValue": [mv201(2500)]})
        sent = await st.answer_call({})
        assert answer[2] == {}
        assert sent[2] == "CostUpdated"
        assert sent[3] == {"totalCost": 1.0, "transactionId": "tx-1"}
        assert st.port.of(RecordMeterValues)[0].ocpp_transaction_id == "tx-1"
    run(test)


def test_201_meter_values_finer_than_a_milliwatt_hour_are_refused() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        answer = await st.call("MeterValues", {"evseId": 1, "meterValue": [mv201(0.0001)]})
        assert answer[2] == "PropertyConstraintViolation"
    run(test)


# -- our calls ------------------------------------------------------------------------------------

def test_our_calls_go_out_one_at_a_time() -> None:
    async def test() -> None:
        st = Station("1.6")
        first = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        second = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 2}))
        await settle()
        assert len(st.transport.calls()) == 1
        await st.answer_call({"status": "Accepted"})
        assert len(st.transport.calls()) == 2
        await st.answer_call({"status": "Rejected"})
        assert await first == {"status": "Accepted"} and await second == {"status": "Rejected"}
    run(test)


def test_an_answer_with_another_id_does_not_resolve_our_call() -> None:
    async def test() -> None:
        st = Station("1.6", timeout_s=0.2)
        pending = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        await settle()
        await st.conn.on_frame('[3,"someone-else",{"status":"Accepted"}]')
        assert await pending is None  # timed out
    run(test)


def test_each_call_times_out_at_its_own_deadline_with_one_timer_per_connection() -> None:
    """The connection's one timer was armed by an earlier, answered call: when it fires before
    the outstanding call's deadline, that call is still answered; an unanswered one expires."""
    async def test() -> None:
        st = Station("1.6", timeout_s=0.3)
        first = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        await settle()
        await st.answer_call({"status": "Accepted"})
        assert await first == {"status": "Accepted"}
        await asyncio.sleep(0.2)
        second = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 2}))
        await settle()
        await asyncio.sleep(0.2)  # the timer armed for the first call fired meanwhile
        assert not second.done()
        await st.answer_call({"status": "Rejected"})
        assert await second == {"status": "Rejected"}
        third = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 3}))
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(third, 2) is None  # expired
        assert asyncio.get_running_loop().time() - started >= 0.29
    run(test)


def test_a_call_error_or_an_invalid_answer_counts_as_no_answer() -> None:
    async def test() -> None:
        st = Station("1.6")
        refused = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        await settle()
        sent = st.transport.calls()[-1]
        await st.conn.on_frame(f'[4,"{sent[1]}","NotSupported","no",{{}}]')
        assert await refused is None
        garbled = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        await st.answer_call({"status": "Maybe"})
        assert await garbled is None
    run(test)


def test_a_newer_cost_replaces_a_queued_one_for_the_same_transaction() -> None:
    async def test() -> None:
        st = Station("2.0.1")
        blocker = st.conn.call_soon(Outgoing("RequestStopTransaction", {"transactionId": "x"}))
        old = st.conn.call_soon(Outgoing("CostUpdated", {"totalCost": 1, "transactionId": "t"},
                                         coalesce=("cost", "t")))
        new = st.conn.call_soon(Outgoing("CostUpdated", {"totalCost": 2, "transactionId": "t"},
                                         coalesce=("cost", "t")))
        assert old is new
        await st.answer_call({"status": "Accepted"})
        cost = await st.answer_call({})
        assert cost[3] == {"totalCost": 2, "transactionId": "t"}
        assert await blocker == {"status": "Accepted"} and await new == {}
    run(test)


def test_a_call_breaking_its_schema_is_not_sent() -> None:
    async def test() -> None:
        st = Station("1.6")
        assert await st.conn.call(Outgoing("RemoteStopTransaction",
                                           {"transactionId": "x"})) is None
        assert st.transport.calls() == []
    run(test)


def test_closing_resolves_pending_and_queued_calls_to_none() -> None:
    async def test() -> None:
        st = Station("1.6")
        sent = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 1}))
        queued = st.conn.call_soon(Outgoing("RemoteStopTransaction", {"transactionId": 2}))
        await settle()
        st.conn.shutdown()
        assert await sent is None and await queued is None
        assert await st.conn.call(Outgoing("RemoteStopTransaction",
                                           {"transactionId": 3})) is None
    run(test)


# -- registry -------------------------------------------------------------------------------------

def live_cost(tx: str, *, final: bool = False) -> LiveCost:
    return FakeChargingPort._cost(tx, 5_000_000, final=final, stop=False)


def test_the_registry_speaks_each_chargers_version() -> None:
    async def test() -> None:
        registry = ConnectionRegistry()
        st16, st201 = Station("1.6"), Station("2.0.1")
        registry.add(st16.conn)
        registry.add(st201.conn)
        assert await registry.stop_transaction("unknown", "1") is False

        stop = asyncio.create_task(registry.stop_transaction("CP16", "1001"))
        assert (await st16.answer_call({"status": "Accepted"}))[2:] == \
            ["RemoteStopTransaction", {"transactionId": 1001}]
        assert await stop is True

        start = asyncio.create_task(registry.start_transaction("CP201", TOKEN, 2))
        sent = await st201.answer_call({"status": "Rejected"})
        assert sent[2] == "RequestStartTransaction" and sent[3]["evseId"] == 2
        assert sent[3]["idToken"] == {"idToken": TOKEN, "type": "Central"}
        assert isinstance(sent[3]["remoteStartId"], int)
        assert await start is False

        show = asyncio.create_task(registry.show_cost("CP201", live_cost("tx-9")))
        assert (await st201.answer_call({}))[3] == {"totalCost": 2.0, "transactionId": "tx-9"}
        assert await show is True

        final = asyncio.create_task(registry.show_cost("CP16", live_cost("1001", final=True)))
        assert (await st16.answer_call({"status": "Accepted"}))[3]["messageId"] == "FinalCost"
        assert await final is True
    run(test)


def test_a_16_transaction_id_that_is_not_an_integer_cannot_be_stopped() -> None:
    async def test() -> None:
        registry = ConnectionRegistry()
        registry.add(Station("1.6").conn)
        assert await registry.stop_transaction("CP16", "tx-abc") is False
    run(test)


def test_a_reconnect_replaces_the_connection_and_the_old_one_cannot_remove_it() -> None:
    registry = ConnectionRegistry()
    old, new = Station("1.6").conn, Station("1.6").conn
    assert registry.add(old) is None
    assert registry.add(new) is old
    registry.remove(old)
    assert registry.get("CP16") is new
    registry.remove(new)
    assert "CP16" not in registry and len(registry) == 0


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_every_call_we_build_passes_its_schema(version: str) -> None:
    from evbilling.entrypoints.ocpp import validation
    dialect = v16.DIALECT if version == "1.6" else v201.DIALECT
    tx = "1001" if version == "1.6" else "tx-1"
    outs = [dialect.stop_request(tx), dialect.start_request(TOKEN, 1, 7),
            dialect.start_request(TOKEN, None, 8), dialect.cost_request(live_cost(tx), NOW_MS),
            dialect.cost_request(live_cost(tx, final=True), NOW_MS)]
    for out in outs:
        assert out is not None
        validation.validate(version, out.action, "request", out.payload)
