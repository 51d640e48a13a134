"""Explicit wiring of the long-lived parts (constructor arguments, no magic): the group-commit
writer, the charging service, the event sink it publishes to, the OCPP gateway that feeds it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from evbilling.adapters.db.group_commit import GroupCommitWriter
from evbilling.domain.events import Event
from evbilling.services.charging import ChargingService


class DiscardEvents:
    """An event sink that keeps nothing (until notifications are wired in)."""

    def publish(self, event: Event) -> None:
        return None


def wire_charging(app: Any, engine: Engine) -> ChargingService:
    """Create the charging service for ``app`` (``app.state.charging``), publishing to the
    notification service (``app.state.notifications``: live stream, rules, deliveries) when
    there is one, and register it to start and stop with the server."""
    sink = getattr(app.state, "notifications", None) or DiscardEvents()
    charging = ChargingService(engine, sink, writer=GroupCommitWriter(engine))
    app.state.charging = charging
    app.state.background.append(charging)
    return charging
