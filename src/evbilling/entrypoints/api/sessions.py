"""Charging sessions: list and read them (with the running cost while active and the CDR once
settled), set a spending cap, ask the charger to stop.

* Drivers see and act on their own sessions only (another driver's is a missing one); staff and
  finance read every session of their operator; staff may cap and stop any of them.
* ``PUT /sessions/{id}/cap``: a cap in money (incl. VAT, minor units) and/or energy (kWh).
  When the running cost or energy reaches it, the charger is told to stop (OCPP
  RemoteStopTransaction / RequestStopTransaction) and ``session.cap_reached`` is published.
  Setting a cap below what is already spent stops the session at once.
* ``POST /sessions/{id}/stop``: remote stop; 202 when the charger accepted, 409
  ``charger_unavailable`` when it is not connected or refused.
* Energies are kWh as decimal strings; money is integer minor units plus decimal strings.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field
from sqlalchemy import select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.money import Currency, Money
from evbilling.domain.periods import MILLIWH_PER_KWH
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    CurrentPrincipal,
    Principal,
    Role,
    audit,
    require_role,
)
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Strict
from evbilling.services.catalog import kwh_text

router = APIRouter(tags=["sessions"])

MAX_PAGE = 100
MAX_CAP_MINOR = 100_000_000  # 1 000 000.00 in a two-decimal currency: no session costs more
SessionStatus = Literal["active", "settling", "completed", "billing_failed"]


class CapIn(Strict):
    cap_minor: int | None = Field(default=None, ge=1, le=MAX_CAP_MINOR,
                                  description="Money cap incl. VAT, in minor units")
    cap_kwh: Decimal | None = Field(default=None, gt=0, le=10_000, decimal_places=3,
                                    description="Energy cap in kWh")


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _amount(minor: int | None, currency: str) -> str | None:
    if minor is None:
        return None
    return format(Money(minor, Currency.of(currency)).amount, "f")


def running_state(app: Any, row: Any) -> dict[str, Any]:
    """A session's running cost: from the charging service when the session is live in this
    process (the row's ``live`` column is a checkpoint that trails it by up to 30 s of
    samples), else from the row."""
    charging = getattr(app.state, "charging", None)
    if row.status == "active" and charging is not None:
        fresh: dict[str, Any] | None = charging.running_state(row.id)
        if fresh is not None:
            return fresh
    stored: dict[str, Any] = row.live or {}
    return stored


def render_session(row: Any, app: Any, *, with_cdr: bool = False) -> dict[str, Any]:
    live = running_state(app, row)
    energy = row.energy_milliwh if row.status != "active" else \
        int(live.get("energy_milliwh", row.energy_milliwh))
    out: dict[str, Any] = {
        "id": row.id, "status": row.status, "driver_id": row.driver_id, "site_id": row.site_id,
        "charger_id": row.charger_id, "connector_id": row.connector_id,
        "ocpp_transaction_id": row.ocpp_transaction_id, "token_uid": row.token_uid,
        "plan_id": row.plan_id, "started_at": _aware(row.started_at),
        "ended_at": _aware(row.ended_at), "energy_kwh": kwh_text(energy),
        "currency": row.currency,
        "running_cost": None if not live else {
            "amount_minor_incl_vat": live.get("amount_minor_incl"),
            "amount_incl_vat": _amount(live.get("amount_minor_incl"), row.currency),
            "total_excl_vat": live.get("total_excl"), "total_incl_vat": live.get("total_incl"),
            "energy_kwh": kwh_text(int(live.get("energy_milliwh", 0))),
            "at": None if "at_ms" not in live else dt.datetime.fromtimestamp(
                live["at_ms"] / 1000, dt.UTC), "final": bool(live.get("final", False))},
        "total_excl_vat_minor": row.total_excl_minor,
        "total_incl_vat_minor": row.total_incl_minor,
        "total_excl_vat": _amount(row.total_excl_minor, row.currency),
        "total_incl_vat": _amount(row.total_incl_minor, row.currency),
        "cap": {"cap_minor": row.cap_minor,
                "cap_kwh": None if row.cap_milliwh is None else kwh_text(row.cap_milliwh)},
        "stop_reason": row.stop_reason,
        "flags": row.flags or {},
    }
    if with_cdr:
        out["cdr"] = row.cdr
    return out


def _load(request: Request, principal: Principal, session_id: str) -> Any:
    c = s.charging_sessions.c
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            c.id == session_id, c.operator_id == principal.operator_id)).first()
    if row is None or (principal.is_driver and row.driver_id != principal.driver_id):
        raise ApiError("not_found", f"no session {session_id!r}")
    return row


@router.get("/sessions", summary="Charging sessions (drivers: their own)")
def list_sessions(request: Request, principal: CurrentPrincipal,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                  starting_after: Annotated[str | None, Query(max_length=64)] = None,
                  status: Annotated[SessionStatus | None, Query()] = None,
                  driver_id: Annotated[str | None, Query(max_length=64)] = None,
                  charger_id: Annotated[str | None, Query(max_length=64)] = None
                  ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    c = s.charging_sessions.c
    conditions = [c.operator_id == principal.operator_id]
    if principal.is_driver:
        conditions.append(c.driver_id == principal.driver_id)
    if driver_id is not None:
        conditions.append(c.driver_id == driver_id)
    if status is not None:
        conditions.append(c.status == status)
    if charger_id is not None:
        conditions.append(c.charger_id == charger_id)
    if starting_after:
        conditions.append(c.id > starting_after)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(s.charging_sessions).where(*conditions).order_by(c.id)
                            .limit(limit + 1)).fetchall()
    page = rows[:limit]
    return {"data": [render_session(r, request.app) for r in page],
            "has_more": len(rows) > limit,
            "next_cursor": page[-1].id if len(rows) > limit else None}


@router.get("/sessions/{session_id}", summary="A session, its running cost and its CDR")
def get_session(session_id: str, request: Request, principal: CurrentPrincipal
                ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    row = _load(request, principal, session_id)
    return render_session(row, request.app, with_cdr=True)


@router.put("/sessions/{session_id}/cap", summary="Set (or clear) the session's spending cap",
            openapi_extra=raises("session_not_active"))
async def set_cap(session_id: str, body: CapIn, request: Request,
                  principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF | {Role.DRIVER}, write=True)
    row = _load(request, principal, session_id)
    if row.status != "active":
        raise ApiError("session_not_active", f"session {session_id!r} is {row.status}")
    cap_milliwh = None if body.cap_kwh is None else int(body.cap_kwh * MILLIWH_PER_KWH)
    charging = getattr(request.app.state, "charging", None)
    if charging is not None:
        await charging.set_cap(session_id, cap_minor=body.cap_minor, cap_milliwh=cap_milliwh)
    with write_transaction(request.app.state.engine) as conn:
        if charging is None:
            conn.execute(s.charging_sessions.update().where(
                s.charging_sessions.c.id == session_id).values(
                cap_minor=body.cap_minor, cap_milliwh=cap_milliwh))
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="sessions.cap", target=session_id, outcome="success",
              detail=f"cap_minor={body.cap_minor} cap_kwh={body.cap_kwh}")
    row = _load(request, principal, session_id)
    return render_session(row, request.app)


@router.post("/sessions/{session_id}/stop", status_code=202,
             summary="Ask the charger to stop the session (remote stop)",
             openapi_extra=raises("session_not_active", "charger_unavailable"))
async def stop_session(session_id: str, request: Request, principal: CurrentPrincipal,
                       response: Response) -> dict[str, Any]:
    require_role(principal, STAFF | {Role.DRIVER}, write=True)
    row = _load(request, principal, session_id)
    if row.status != "active":
        raise ApiError("session_not_active", f"session {session_id!r} is {row.status}")
    charging = getattr(request.app.state, "charging", None)
    accepted = False if charging is None else await charging.request_stop(session_id)
    with write_transaction(request.app.state.engine) as conn:
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="sessions.remote_stop", target=session_id,
              outcome="success" if accepted else "failure")
    if not accepted:
        raise ApiError("charger_unavailable",
                       "the charger is not connected or refused the remote stop")
    return {"id": session_id, "stop_requested": True}
