"""The chargers connected to this process, and ``ChargerCommands`` on top of them: what the
charging service and the API ask a charger to do (stop, start, show a cost), in the charger's
own OCPP version.

A charger has at most one live connection: a new one (a reconnect after a network change)
replaces the old, which is closed. Commands return False when the charger is not connected to
this process, did not answer within the call timeout, answered a CALLERROR, or refused
(status other than ``Accepted``). Routing a command to the node a charger is connected to is
the caller's concern (ARCHITECTURE.md: Redis in a scale-out deployment).
"""

from __future__ import annotations

import logging
import secrets

from evbilling.entrypoints.ocpp.connection import Connection
from evbilling.services.ports import LiveCost

logger = logging.getLogger("evbilling.ocpp")


class ConnectionRegistry:
    """identity -> live connection; implements ``services.ports.ChargerCommands``."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}
        # 2.0.1 remoteStartId: an integer the station echoes in its TransactionEvent.
        self._remote_start_id = secrets.randbelow(1 << 30)

    # -- bookkeeping --------------------------------------------------------------------------
    def add(self, connection: Connection) -> Connection | None:
        """Register a new connection; returns the one it replaces (to be closed)."""
        identity = connection.charger.identity
        previous = self._connections.get(identity)
        self._connections[identity] = connection
        return previous if previous is not connection else None

    def remove(self, connection: Connection) -> None:
        """Forget a connection that ended (unless a newer one already took its place)."""
        identity = connection.charger.identity
        if self._connections.get(identity) is connection:
            del self._connections[identity]

    def get(self, identity: str) -> Connection | None:
        return self._connections.get(identity)

    def identities(self) -> list[str]:
        return list(self._connections)

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, identity: object) -> bool:
        return identity in self._connections

    async def close_all(self, code: int = 1001) -> None:
        """Going away (shutdown): close every connection."""
        for connection in list(self._connections.values()):
            await connection.close(code)
        self._connections.clear()

    # -- ChargerCommands ----------------------------------------------------------------------
    async def stop_transaction(self, charger_identity: str, ocpp_transaction_id: str) -> bool:
        connection = self._connections.get(charger_identity)
        if connection is None:
            return False
        out = connection.dialect.stop_request(ocpp_transaction_id)
        return out is not None and _accepted(await connection.call(out))

    async def start_transaction(self, charger_identity: str, id_token: str,
                                connector_number: int | None) -> bool:
        connection = self._connections.get(charger_identity)
        if connection is None:
            return False
        self._remote_start_id = self._remote_start_id % ((1 << 31) - 1) + 1
        out = connection.dialect.start_request(id_token, connector_number,
                                               self._remote_start_id)
        return out is not None and _accepted(await connection.call(out))

    async def show_cost(self, charger_identity: str, cost: LiveCost) -> bool:
        connection = self._connections.get(charger_identity)
        if connection is None:
            return False
        out = connection.dialect.cost_request(cost, connection.now_ms())
        if out is None:
            return False
        answer = await connection.call(out)
        if answer is None:
            return False
        # CostUpdated (2.0.1) answers an empty object; DataTransfer (1.6) a status.
        return "status" not in answer or answer["status"] == "Accepted"


def _accepted(answer: dict[str, object] | None) -> bool:
    return answer is not None and answer.get("status") == "Accepted"
