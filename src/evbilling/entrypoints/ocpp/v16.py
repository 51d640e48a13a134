"""OCPP 1.6J: handlers that turn a charger's CALLs into ``ChargingPort`` commands, and the CALLs
we send (RemoteStartTransaction, RemoteStopTransaction, the cost display of the OCA "OCPP &
California Pricing Requirements" application note as DataTransfer ``org.openchargealliance
.costmsg``).

Handlers get the camelCase payload exactly as received (schema-checked) and return the
camelCase answer: no renaming, no dataclasses per message (docs/ocpp.md, "Performance design").

Transaction messages follow RELIABILITY.md R10: StopTransaction is always answered with a
CALLRESULT once it is well-formed (the port stores the frame and settles later; if even the port
fails, the frame is logged in full and the charger still gets ``Accepted``, because a CALLERROR
would make it retry a stop we cannot take now until it gives up).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Final

from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v16.enums import Action

from evbilling.entrypoints.ocpp.connection import Connection, Dialect, Handler, Outgoing, Reply
from evbilling.entrypoints.ocpp.conversions import (
    CONNECTOR_CHARGING_V16,
    SampleError,
    display_amount,
    epoch_ms_or,
    iso_utc,
    register_at,
    samples_v16,
)
from evbilling.entrypoints.ocpp.protocol import Call, dumps
from evbilling.services.ports import (
    BootInfo,
    ChargerStatus,
    LiveCost,
    RawFrame,
    RecordMeterValues,
    StartTransaction,
    StopTransaction,
)

logger = logging.getLogger("evbilling.ocpp")

VERSION: Final = "1.6"
#: The OCA cost display extension (OCPP & California Pricing Requirements, §3.1).
COSTMSG_VENDOR: Final = "org.openchargealliance.costmsg"
#: DataTransfer messages we accept from chargers, by vendor.
ACCEPTED_DATA_TRANSFERS: Final[dict[str, frozenset[str]]] = {
    # The charger's reliable "unplugged" notice (idle fees after stop); acknowledged, not used.
    COSTMSG_VENDOR: frozenset({"ConnectorUnplugged"}),
}


def _frame(call: Call, text: str) -> RawFrame:
    return RawFrame(unique_id=call.unique_id, action=call.action, text=text)


# -- handlers -------------------------------------------------------------------------------------

async def boot_notification(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    now = conn.now_ms()
    await conn.port.booted(BootInfo(
        charger=conn.charger, vendor=p.get("chargePointVendor"), model=p.get("chargePointModel"),
        serial=p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
        firmware=p.get("firmwareVersion"), reason=None, at_ms=now))
    return Reply({"status": "Accepted", "currentTime": iso_utc(now),
                  "interval": conn.settings.heartbeat_interval_s})


async def heartbeat(conn: Connection, call: Call, text: str) -> Reply:
    now = conn.now_ms()
    await conn.port.seen(conn.charger, now)
    return Reply({"currentTime": iso_utc(now)})


async def status_notification(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    connector: int = p["connectorId"]
    status: str = p["status"]
    conn.remember(conn.charging, connector, CONNECTOR_CHARGING_V16.get(status))
    error_code = p.get("errorCode")
    await conn.port.status_changed(ChargerStatus(
        charger=conn.charger, connector_number=connector, status=status,
        error_code=None if error_code in (None, "NoError") else error_code,
        at_ms=epoch_ms_or(p["timestamp"], conn.now_ms()) if "timestamp" in p else conn.now_ms(),
        info=p.get("info") or p.get("vendorErrorCode")))
    return Reply({})


async def authorize(conn: Connection, call: Call, text: str) -> Reply:
    status = await conn.port.authorize(conn.charger, call.payload["idTag"])
    return Reply({"idTagInfo": {"status": status}})


async def start_transaction(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    connector: int = p["connectorId"]
    started = await conn.port.start_transaction(StartTransaction(
        charger=conn.charger, connector_number=connector, evse_number=None,
        id_token=p["idTag"], energy_milliwh_start=p["meterStart"] * 1000,
        started_at_ms=epoch_ms_or(p["timestamp"], conn.now_ms()), frame=_frame(call, text),
        reservation_id=p.get("reservationId")))
    conn.remember(conn.charging, connector, None)
    return Reply({"transactionId": int(started.ocpp_transaction_id),
                  "idTagInfo": {"status": started.token_status}})


async def meter_values(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    connector: int = p["connectorId"]
    try:
        samples = samples_v16(p["meterValue"], charging=conn.charging.get(connector),
                              strict=True)
    except SampleError as exc:
        raise PropertyConstraintViolationError(details={"cause": str(exc)}) from None
    tx = p.get("transactionId")
    cost = await conn.port.record_meter_values(RecordMeterValues(
        charger=conn.charger, ocpp_transaction_id=None if tx is None else str(tx),
        connector_number=connector, samples=samples, frame=_frame(call, text)))
    if cost is None:
        return Reply({})
    after: list[Outgoing] = []
    reading = register_at(samples)
    charging = None if reading is None else reading.charging
    display = running_cost(cost, conn.now_ms() if reading is None else reading.at_ms,
                           None if reading is None else reading.energy_milliwh, charging)
    if display is not None and not cost.final:
        after.append(display)
    if cost.stop_requested:
        stop = remote_stop(cost.ocpp_transaction_id)
        if stop is not None:
            after.append(stop)
    return Reply({}, tuple(after))


async def stop_transaction(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    answer = {"idTagInfo": {"status": "Accepted"}}
    cost: LiveCost | None = None
    try:
        now = conn.now_ms()
        cmd = StopTransaction(
            charger=conn.charger, ocpp_transaction_id=str(p["transactionId"]),
            stopped_at_ms=epoch_ms_or(p["timestamp"], now),
            energy_milliwh_stop=p["meterStop"] * 1000, reason=p.get("reason"),
            id_token=p.get("idTag"),
            samples=samples_v16(p.get("transactionData") or (), strict=False),
            frame=_frame(call, text))
        cost = await conn.port.stop_transaction(cmd)
    except Exception:  # noqa: BLE001 - R10: a well-formed stop is never refused
        logger.exception("%s: StopTransaction could not be recorded; frame kept here: %s",
                         conn.charger.identity, text)
    after = () if cost is None else tuple(x for x in (final_cost(cost),) if x is not None)
    return Reply(answer, after)


async def data_transfer(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    messages = ACCEPTED_DATA_TRANSFERS.get(p["vendorId"])
    if messages is None:
        return Reply({"status": "UnknownVendorId"})
    if p.get("messageId") not in messages:
        return Reply({"status": "UnknownMessageId"})
    logger.info("%s: DataTransfer %s/%s acknowledged", conn.charger.identity, p["vendorId"],
                p.get("messageId"))
    return Reply({"status": "Accepted"})


async def acknowledge(conn: Connection, call: Call, text: str) -> Reply:
    """Notifications with an empty answer that billing does not use (firmware, diagnostics,
    security events): logged and acknowledged, so the charger does not retry them."""
    logger.info("%s: %s %s", conn.charger.identity, call.action, text[:500])
    return Reply({})


HANDLERS: Final[dict[str, Handler]] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "StartTransaction": start_transaction,
    "MeterValues": meter_values,
    "StopTransaction": stop_transaction,
    "DataTransfer": data_transfer,
    "FirmwareStatusNotification": acknowledge,
    "DiagnosticsStatusNotification": acknowledge,
    "SecurityEventNotification": acknowledge,  # 1.6 security whitepaper
    "SignedFirmwareStatusNotification": acknowledge,
    "LogStatusNotification": acknowledge,
}


# -- our calls ------------------------------------------------------------------------------------

def _transaction_number(ocpp_transaction_id: str) -> int | None:
    """1.6 transaction ids are integers (we hand them out); anything else cannot be sent."""
    try:
        return int(ocpp_transaction_id)
    except ValueError:
        logger.error("1.6 transaction id %r is not an integer", ocpp_transaction_id)
        return None


def remote_stop(ocpp_transaction_id: str) -> Outgoing | None:
    number = _transaction_number(ocpp_transaction_id)
    if number is None:
        return None
    return Outgoing("RemoteStopTransaction", {"transactionId": number},
                    coalesce=("stop", number))


def remote_start(id_token: str, connector_number: int | None, remote_start_id: int
                 ) -> Outgoing | None:
    payload: dict[str, Any] = {"idTag": id_token}
    if connector_number is not None:
        payload["connectorId"] = connector_number
    return Outgoing("RemoteStartTransaction", payload)


def _costmsg(message_id: str, data: dict[str, Any], transaction: int) -> Outgoing:
    return Outgoing("DataTransfer", {"vendorId": COSTMSG_VENDOR, "messageId": message_id,
                                     "data": dumps(data)},
                    coalesce=("cost", transaction))


def running_cost(cost: LiveCost, at_ms: int, register_milliwh: int | None,
                 charging: bool | None) -> Outgoing | None:
    """DataTransfer RunningCost: the cost up to the meter value just received.

    ``meterValue`` is the register (Wh) the cost is based on; without one (a cost pushed from
    elsewhere) the session's energy is sent. ``chargingPrice`` is required by the note but every
    field in it is optional: we send it empty, because the cost comes from our rating engine and
    the charger is not meant to extrapolate it between meter values."""
    number = _transaction_number(cost.ocpp_transaction_id)
    if number is None:
        return None
    register = cost.energy_milliwh if register_milliwh is None else register_milliwh
    return _costmsg("RunningCost", {
        "transactionId": number, "timestamp": iso_utc(at_ms), "meterValue": register // 1000,
        "cost": display_amount(cost), "state": "Idle" if charging is False else "Charging",
        "chargingPrice": {}}, number)


def final_cost(cost: LiveCost) -> Outgoing | None:
    """DataTransfer FinalCost after the stop: the total and a line of text for the display."""
    number = _transaction_number(cost.ocpp_transaction_id)
    if number is None:
        return None
    kwh = Decimal(cost.energy_milliwh).scaleb(-6)
    amount = display_amount(cost)
    return _costmsg("FinalCost", {
        "transactionId": number, "cost": amount,
        "priceText": f"Total {amount} {cost.currency} incl. VAT for {kwh:.3f} kWh"}, number)


def show_cost(cost: LiveCost, now_ms: int) -> Outgoing | None:
    if cost.final:
        return final_cost(cost)
    return running_cost(cost, now_ms, None, None)


def _known_actions() -> frozenset[str]:
    return frozenset(a.value for a in Action)


DIALECT: Final = Dialect(version=VERSION, handlers=HANDLERS, known_actions=_known_actions(),
                         stop_request=remote_stop, start_request=remote_start,
                         cost_request=show_cost)
