"""Events of a charging session for notification tests, and the session row they belong to."""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert

from evbilling.adapters.db import schema
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain import events as ev


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class SessionEvents:
    """Events of one session, with fresh ids per instance (``at`` is now unless given)."""

    def __init__(self, operator_id: str, driver_id: str | None, session_id: str | None = None,
                 charger_id: str | None = None, currency: str = "EUR") -> None:
        self.session_id = session_id or f"cs_{secrets.token_hex(8)}"
        self.common: dict[str, Any] = {
            "operator_id": operator_id, "session_id": self.session_id, "driver_id": driver_id,
            "charger_id": charger_id, "currency": currency}

    def _id(self, what: object) -> str:
        return f"evt_{self.session_id}_{what}"

    def started(self, at: dt.datetime | None = None) -> ev.SessionStarted:
        return ev.SessionStarted(event_id=self._id("started"), at=at or _now(),
                                 token_uid=None, **self.common)

    def cost(self, amount_minor: int, *, n: int | None = None, charging: bool = True,
             cap_minor: int | None = None, at: dt.datetime | None = None) -> ev.CostUpdated:
        at = at or _now()
        sample_at_ms = (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(
            milliseconds=1)
        return ev.CostUpdated(
            event_id=self._id(f"cost_{amount_minor if n is None else n}"), at=at,
            sample_at_ms=sample_at_ms, energy_milliwh=amount_minor * 2_500,
            charging_ms=60_000, parking_ms=0, total_excl=Decimal(amount_minor) / 119,
            total_incl=Decimal(amount_minor) / 100, amount_minor_incl=amount_minor,
            cap_minor=cap_minor, charging=charging, **self.common)

    def completed(self, idle_fee_starts_at: dt.datetime | None,
                  at: dt.datetime | None = None) -> ev.ChargingCompleted:
        return ev.ChargingCompleted(event_id=self._id("completed"), at=at or _now(),
                                    idle_fee_starts_at=idle_fee_starts_at, **self.common)

    def ended(self, amount_minor: int = 800, at: dt.datetime | None = None) -> ev.SessionEnded:
        return ev.SessionEnded(
            event_id=self._id("ended"), at=at or _now(), energy_milliwh=20_000_000,
            total_excl=Decimal(amount_minor) / 119, total_incl=Decimal(amount_minor) / 100,
            amount_minor_excl=round(amount_minor / Decimal("1.19")),
            amount_minor_incl=amount_minor, stop_reason="Local", billed=True, **self.common)


def charger_faulted(operator_id: str, charger_id: str = "chg_x",
                    identity: str = "CP-1") -> ev.ChargerFaulted:
    return ev.ChargerFaulted(event_id=f"evt_fault_{secrets.token_hex(6)}",
                             operator_id=operator_id, at=_now(), charger_id=charger_id,
                             charger_identity=identity, connector_number=1,
                             error_code="GroundFailure")


def insert_session(engine: Engine, operator_id: str, site_id: str, driver_id: str | None,
                   *, session_id: str | None = None, status: str = "active",
                   live: dict[str, Any] | None = None) -> str:
    """A charging session row (sessions come from chargers, not from the API)."""
    session_id = session_id or f"cs_{secrets.token_hex(8)}"
    with write_transaction(engine) as conn:
        conn.execute(insert(schema.charging_sessions).values(
            id=session_id, operator_id=operator_id, driver_id=driver_id, site_id=site_id,
            started_at=_now(), energy_milliwh=0, periods=[], currency="EUR", status=status,
            live=live, created_at=_now()))
    return session_id
