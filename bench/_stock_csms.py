"""A bare "stock" OCPP central system: the mobilityhouse ``ocpp`` library with its default settings.

``ocpp.v16.ChargePoint`` / ``ocpp.v201.ChargePoint`` subclasses whose ``@on`` handlers only
acknowledge (BootNotification Accepted, every id tag Accepted, 1.6 transaction ids from a
counter), served by ``websockets.serve`` on ``ws://HOST:PORT/<anything>/{charge_point_id}`` with
the subprotocols ``ocpp1.6`` and ``ocpp2.0.1``; no authentication, schema validation on (the
library default). It is the reference the OCPP benchmark compares our gateway with, and the
central system the simulator's e2e tests run against (in-process, with ``record=True`` so a test
can read what arrived and push calls to a charger through ``charge_points``).

    .venv/bin/python bench/_stock_csms.py [--host 127.0.0.1] [--port 9000]

prints ``READY <port>`` on stdout once it listens, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

SUBPROTOCOLS = [Subprotocol("ocpp1.6"), Subprotocol("ocpp2.0.1")]
HEARTBEAT_INTERVAL_S = 300


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class StockCentralSystem:
    """Connected charge points by identity, and (with ``record``) every call they sent."""

    def __init__(self, *, record: bool = False) -> None:
        self.record = record
        self.charge_points: dict[str, ChargePoint16 | ChargePoint201] = {}
        self.authorization: dict[str, str | None] = {}  # the Authorization header, as sent
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # identity, action, payload
        self._transaction_ids = itertools.count(1)
        #: ChargePoint class per subprotocol (a test may put a subclass here)
        self.classes: dict[str, Any] = {"ocpp1.6": StockChargePoint16,
                                        "ocpp2.0.1": StockChargePoint201}

    def next_transaction_id(self) -> int:
        return next(self._transaction_ids)

    def note(self, identity: str, action: str, payload: dict[str, Any]) -> None:
        if self.record:
            self.received.append((identity, action, payload))

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        path = request.path if request is not None else "/"
        identity = path.rstrip("/").rsplit("/", 1)[-1]
        cls = self.classes.get(connection.subprotocol or "")
        if cls is None:
            await connection.close(1002, "no supported OCPP subprotocol")
            return
        charge_point = cls(identity, connection, self)
        if self.record and request is not None:
            self.authorization[identity] = request.headers.get("Authorization")
        self.charge_points[identity] = charge_point
        try:
            await charge_point.start()
        except ConnectionClosed:
            pass
        finally:
            if self.charge_points.get(identity) is charge_point:
                del self.charge_points[identity]


class StockChargePoint16(ChargePoint16):
    def __init__(self, identity: str, connection: ServerConnection,
                 csms: StockCentralSystem) -> None:
        super().__init__(identity, connection)
        self.csms = csms

    @on(Action16.boot_notification)
    def on_boot_notification(self, **payload: Any) -> result16.BootNotification:
        self.csms.note(self.id, "BootNotification", payload)
        return result16.BootNotification(current_time=_now(), interval=HEARTBEAT_INTERVAL_S,
                                         status="Accepted")

    @on(Action16.heartbeat)
    def on_heartbeat(self, **payload: Any) -> result16.Heartbeat:
        self.csms.note(self.id, "Heartbeat", payload)
        return result16.Heartbeat(current_time=_now())

    @on(Action16.status_notification)
    def on_status_notification(self, **payload: Any) -> result16.StatusNotification:
        self.csms.note(self.id, "StatusNotification", payload)
        return result16.StatusNotification()

    @on(Action16.authorize)
    def on_authorize(self, **payload: Any) -> result16.Authorize:
        self.csms.note(self.id, "Authorize", payload)
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action16.start_transaction)
    def on_start_transaction(self, **payload: Any) -> result16.StartTransaction:
        self.csms.note(self.id, "StartTransaction", payload)
        return result16.StartTransaction(transaction_id=self.csms.next_transaction_id(),
                                         id_tag_info={"status": "Accepted"})

    @on(Action16.meter_values)
    def on_meter_values(self, **payload: Any) -> result16.MeterValues:
        self.csms.note(self.id, "MeterValues", payload)
        return result16.MeterValues()

    @on(Action16.stop_transaction)
    def on_stop_transaction(self, **payload: Any) -> result16.StopTransaction:
        self.csms.note(self.id, "StopTransaction", payload)
        return result16.StopTransaction(id_tag_info={"status": "Accepted"})

    @on(Action16.data_transfer)
    def on_data_transfer(self, **payload: Any) -> result16.DataTransfer:
        self.csms.note(self.id, "DataTransfer", payload)
        return result16.DataTransfer(status="Accepted")


class StockChargePoint201(ChargePoint201):
    def __init__(self, identity: str, connection: ServerConnection,
                 csms: StockCentralSystem) -> None:
        super().__init__(identity, connection)
        self.csms = csms

    @on(Action201.boot_notification)
    def on_boot_notification(self, **payload: Any) -> result201.BootNotification:
        self.csms.note(self.id, "BootNotification", payload)
        return result201.BootNotification(current_time=_now(), interval=HEARTBEAT_INTERVAL_S,
                                          status="Accepted")

    @on(Action201.heartbeat)
    def on_heartbeat(self, **payload: Any) -> result201.Heartbeat:
        self.csms.note(self.id, "Heartbeat", payload)
        return result201.Heartbeat(current_time=_now())

    @on(Action201.status_notification)
    def on_status_notification(self, **payload: Any) -> result201.StatusNotification:
        self.csms.note(self.id, "StatusNotification", payload)
        return result201.StatusNotification()

    @on(Action201.authorize)
    def on_authorize(self, **payload: Any) -> result201.Authorize:
        self.csms.note(self.id, "Authorize", payload)
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.transaction_event)
    def on_transaction_event(self, **payload: Any) -> result201.TransactionEvent:
        self.csms.note(self.id, "TransactionEvent", payload)
        return result201.TransactionEvent()

    @on(Action201.meter_values)
    def on_meter_values(self, **payload: Any) -> result201.MeterValues:
        self.csms.note(self.id, "MeterValues", payload)
        return result201.MeterValues()


@asynccontextmanager
async def serve_stock_csms(host: str = "127.0.0.1", port: int = 0, *, record: bool = False
                           ) -> AsyncIterator[tuple[StockCentralSystem, int]]:
    """Serve until the block ends; yields the central system and the port it listens on."""
    csms = StockCentralSystem(record=record)
    async with websockets.serve(csms.handle, host, port, subprotocols=SUBPROTOCOLS) as server:
        bound_port = next(iter(server.sockets)).getsockname()[1]
        yield csms, int(bound_port)


async def _main(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve_stock_csms(host, port) as (_csms, bound_port):
        print(f"READY {bound_port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port))
    sys.exit(0)
