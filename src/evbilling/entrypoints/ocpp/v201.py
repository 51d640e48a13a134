"""OCPP 2.0.1: handlers that turn a charging station's CALLs into ``ChargingPort`` commands, and
the CALLs we send (RequestStartTransaction, RequestStopTransaction, CostUpdated).

A transaction is reported by TransactionEvent (Started / Updated / Ended, numbered by
``seqNo``). ``transactionInfo.chargingState`` is sent only when it changes, so the connection
remembers it per transaction and stamps it on every sample (``MeterSample.charging``: Charging
-> True; SuspendedEV, SuspendedEVSE, EVConnected, Idle -> False). The running cost goes back in
the TransactionEventResponse (``totalCost``); after a MeterValues request, which carries no
transaction id, the transaction is found by its EVSE and the cost goes out as a CostUpdated
CALL (use case I02: either is allowed).

All TransactionEvents are read leniently (``conversions``, "lenient"): they are transaction
messages, and Ended is answered with a CALLRESULT even when the port fails (RELIABILITY.md R10).

Numbering: 2.0.1 addresses a connector as (EVSE id, connector id). ``StartTransaction`` carries
both. ``ChargerStatus.connector_number`` and ``RecordMeterValues.connector_number`` get the EVSE
id, which is the 1.6 numbering (one connector per EVSE) that ``ChargingService`` resolves them
with (EVSE 0 = the station itself -> None).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v201.enums import Action

from evbilling.entrypoints.ocpp.connection import Connection, Dialect, Handler, Outgoing, Reply
from evbilling.entrypoints.ocpp.conversions import (
    CHARGING_STATES,
    SampleError,
    display_amount,
    epoch_ms_or,
    first_register,
    iso_utc,
    register_at,
    samples_v201,
)
from evbilling.entrypoints.ocpp.protocol import Call
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

VERSION: Final = "2.0.1"
ACCEPTED_DATA_TRANSFERS: Final[dict[str, frozenset[str]]] = {}
#: IdTokenType used when we ask a station to start for a driver (a token the CSMS vouches for).
REMOTE_TOKEN_TYPE: Final = "Central"  # noqa: S105 - a token type, not a secret


def _frame(call: Call, text: str) -> RawFrame:
    return RawFrame(unique_id=call.unique_id, action=call.action, text=text)


def _id_token(payload: dict[str, Any]) -> str | None:
    token = payload.get("idToken")
    if not token or not token.get("idToken"):
        return None  # absent, or type NoAuthorization with an empty id
    value: str = token["idToken"]
    return value


# -- handlers -------------------------------------------------------------------------------------

async def boot_notification(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    station = p["chargingStation"]
    now = conn.now_ms()
    await conn.port.booted(BootInfo(
        charger=conn.charger, vendor=station.get("vendorName"), model=station.get("model"),
        serial=station.get("serialNumber"), firmware=station.get("firmwareVersion"),
        reason=p["reason"], at_ms=now))
    return Reply({"currentTime": iso_utc(now), "interval": conn.settings.heartbeat_interval_s,
                  "status": "Accepted"})


async def heartbeat(conn: Connection, call: Call, text: str) -> Reply:
    now = conn.now_ms()
    await conn.port.seen(conn.charger, now)
    return Reply({"currentTime": iso_utc(now)})


async def status_notification(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    evse: int = p["evseId"]
    await conn.port.status_changed(ChargerStatus(
        charger=conn.charger, connector_number=p["connectorId"] if evse else None,
        status=p["connectorStatus"], error_code=None,
        at_ms=epoch_ms_or(p["timestamp"], conn.now_ms()), evse_number=evse or None))
    return Reply({})


async def authorize(conn: Connection, call: Call, text: str) -> Reply:
    status = await conn.port.authorize(conn.charger, call.payload["idToken"]["idToken"])
    return Reply({"idTokenInfo": {"status": status}})


async def transaction_event(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    info = p["transactionInfo"]
    tx: str = info["transactionId"]
    state = info.get("chargingState")
    if state is not None:
        conn.remember(conn.charging, tx, CHARGING_STATES.get(state))
    evse = p.get("evse")
    if evse is not None and evse.get("id"):
        conn.remember(conn.tx_by_evse, evse["id"], tx)
    event = p["eventType"]
    if event == "Ended":
        return await _ended(conn, call, text, tx)
    samples = samples_v201(p.get("meterValue") or (), charging=conn.charging.get(tx),
                           strict=False)
    if event == "Started":
        return await _started(conn, call, text, tx, samples)
    return await _updated(conn, call, text, tx, samples)


async def _started(conn: Connection, call: Call, text: str, tx: str, samples: tuple[Any, ...]
                   ) -> Reply:
    p = call.payload
    evse = p.get("evse") or {}
    begin = first_register(samples)
    if begin is None:
        # the service takes the first sample's reading as the start
        logger.warning("%s: TransactionEvent Started %s without an energy register",
                       conn.charger.identity, tx)
    id_token = _id_token(p)
    started = await conn.port.start_transaction(StartTransaction(
        charger=conn.charger, connector_number=evse.get("connectorId", 1),
        evse_number=evse.get("id"), id_token=id_token,
        energy_milliwh_start=None if begin is None else begin.energy_milliwh,
        started_at_ms=epoch_ms_or(p["timestamp"], conn.now_ms()), frame=_frame(call, text),
        ocpp_transaction_id=tx, seq_no=p["seqNo"], reservation_id=p.get("reservationId")))
    answer: dict[str, Any] = {}
    if id_token is not None:
        answer["idTokenInfo"] = {"status": started.token_status}
    return Reply(answer)


async def _updated(conn: Connection, call: Call, text: str, tx: str, samples: tuple[Any, ...]
                   ) -> Reply:
    p = call.payload
    evse = p.get("evse") or {}
    cost = await conn.port.record_meter_values(RecordMeterValues(
        charger=conn.charger, ocpp_transaction_id=tx, connector_number=evse.get("id"),
        samples=samples, frame=_frame(call, text), seq_no=p["seqNo"]))
    answer: dict[str, Any] = {}
    after: tuple[Outgoing, ...] = ()
    if cost is not None:
        answer["totalCost"] = display_amount(cost)
        if cost.stop_requested:
            after = (request_stop(tx),)
    id_token = _id_token(p)
    if id_token is not None:
        answer["idTokenInfo"] = {"status": await conn.port.authorize(conn.charger, id_token)}
    return Reply(answer, after)


async def _ended(conn: Connection, call: Call, text: str, tx: str) -> Reply:
    p = call.payload
    cost: LiveCost | None = None
    try:
        samples = samples_v201(p.get("meterValue") or (), charging=conn.charging.get(tx),
                               strict=False)
        last = register_at(samples)
        cost = await conn.port.stop_transaction(StopTransaction(
            charger=conn.charger, ocpp_transaction_id=tx,
            stopped_at_ms=epoch_ms_or(p["timestamp"], conn.now_ms()),
            energy_milliwh_stop=None if last is None else last.energy_milliwh,
            reason=p["transactionInfo"].get("stoppedReason"), id_token=_id_token(p),
            samples=samples, frame=_frame(call, text), seq_no=p["seqNo"]))
    except Exception:  # noqa: BLE001 - R10: a well-formed Ended is never refused
        logger.exception("%s: TransactionEvent Ended could not be recorded; frame kept here: %s",
                         conn.charger.identity, text)
    finally:
        conn.charging.pop(tx, None)
        for evse_id in [e for e, t in conn.tx_by_evse.items() if t == tx]:
            del conn.tx_by_evse[evse_id]
    answer: dict[str, Any] = {}
    if cost is not None:
        answer["totalCost"] = display_amount(cost)
    if _id_token(p) is not None:
        answer["idTokenInfo"] = {"status": "Accepted"}
    return Reply(answer)


async def meter_values(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    evse: int = p["evseId"]
    tx = conn.tx_by_evse.get(evse) if evse else None
    try:
        samples = samples_v201(p["meterValue"], charging=None if tx is None
                               else conn.charging.get(tx), strict=True)
    except SampleError as exc:
        raise PropertyConstraintViolationError(details={"cause": str(exc)}) from None
    cost = await conn.port.record_meter_values(RecordMeterValues(
        charger=conn.charger, ocpp_transaction_id=tx, connector_number=evse or None,
        samples=samples, frame=_frame(call, text)))
    if cost is None:
        return Reply({})
    after: list[Outgoing] = []
    if not cost.final:
        after.append(cost_updated(cost))
    if cost.stop_requested:
        after.append(request_stop(cost.ocpp_transaction_id))
    return Reply({}, tuple(after))


async def data_transfer(conn: Connection, call: Call, text: str) -> Reply:
    p = call.payload
    messages = ACCEPTED_DATA_TRANSFERS.get(p["vendorId"])
    if messages is None:
        return Reply({"status": "UnknownVendorId"})
    if p.get("messageId") not in messages:
        return Reply({"status": "UnknownMessageId"})
    return Reply({"status": "Accepted"})


async def acknowledge(conn: Connection, call: Call, text: str) -> Reply:
    """Notifications with an empty answer that billing does not use (events, reports,
    firmware, security events): logged and acknowledged, so the station does not retry."""
    logger.info("%s: %s %s", conn.charger.identity, call.action, text[:500])
    return Reply({})


HANDLERS: Final[dict[str, Handler]] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "Authorize": authorize,
    "TransactionEvent": transaction_event,
    "MeterValues": meter_values,
    "DataTransfer": data_transfer,
    "SecurityEventNotification": acknowledge,
    "NotifyEvent": acknowledge,
    "NotifyReport": acknowledge,
    "FirmwareStatusNotification": acknowledge,
    "LogStatusNotification": acknowledge,
}


# -- our calls ------------------------------------------------------------------------------------

def request_stop(ocpp_transaction_id: str) -> Outgoing:
    return Outgoing("RequestStopTransaction", {"transactionId": ocpp_transaction_id},
                    coalesce=("stop", ocpp_transaction_id))


def request_start(id_token: str, evse_number: int | None, remote_start_id: int) -> Outgoing:
    payload: dict[str, Any] = {"idToken": {"idToken": id_token, "type": REMOTE_TOKEN_TYPE},
                               "remoteStartId": remote_start_id}
    if evse_number is not None:
        payload["evseId"] = evse_number
    return Outgoing("RequestStartTransaction", payload)


def cost_updated(cost: LiveCost) -> Outgoing:
    return Outgoing("CostUpdated", {"totalCost": display_amount(cost),
                                    "transactionId": cost.ocpp_transaction_id},
                    coalesce=("cost", cost.ocpp_transaction_id))


def show_cost(cost: LiveCost, now_ms: int) -> Outgoing:
    return cost_updated(cost)


DIALECT: Final = Dialect(version=VERSION, handlers=HANDLERS,
                         known_actions=frozenset(a.value for a in Action),
                         stop_request=request_stop, start_request=request_start,
                         cost_request=show_cost)
