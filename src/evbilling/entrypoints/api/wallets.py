"""Prepaid wallets: a driver's balance and movements; staff top-ups (docs/ledger.md).

* ``GET /drivers/{id}/wallet``: balance, currency, the plan's auto top-up settings, recent
  movements (newest first, with the balance after each) and pending auto top-up requests.
  The driver themself and their operator's staff and finance; another driver's is missing (404).
* ``POST /drivers/{id}/wallet/top-ups``: staff only. ``Idempotency-Key`` header required (400
  ``idempotency_key_missing``): the same key and body answer the first top-up again (same
  status, header ``Idempotent-Replayed: true``), the same key with another body is 422
  ``idempotency_key_reused``. A top-up is 1..``MAX_TOP_UP_MINOR`` minor units; a wallet holds
  at most ``MAX_WALLET_BALANCE_MINOR`` (409 ``wallet_limit_exceeded``). The money is recorded
  as received on ``wallet_funding`` until the payments issue wires a gateway. A refused top-up
  is remembered: its retry with the same key is refused the same way (R5).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field

from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.errors import DomainError
from evbilling.domain.ledger import MAX_TOP_UP_MINOR
from evbilling.domain.money import Currency, Money
from evbilling.domain.plans import PlanKind
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    CurrentPrincipal,
    Principal,
    audit,
    require_role,
)
from evbilling.entrypoints.api.catalog import clock
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Strict
from evbilling.services import wallets

router = APIRouter(tags=["wallets"])

MAX_IDEMPOTENCY_KEY_LENGTH = 128
IDEMPOTENCY_KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))  # visible ASCII


class TopUpIn(Strict):
    amount_minor: int = Field(ge=1, le=MAX_TOP_UP_MINOR,
                              description="Amount to add, in minor units of the wallet currency")
    reference: str | None = Field(default=None, min_length=1, max_length=200,
                                  description="Receipt or payment reference shown to the driver")


def idempotency_key(value: str | None) -> str:
    """The ``Idempotency-Key`` header: required, 1..128 visible ASCII characters."""
    if value is None or value == "":
        raise ApiError("idempotency_key_missing",
                       "this request moves money: send an Idempotency-Key header", status=400)
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH or not set(value) <= IDEMPOTENCY_KEY_CHARACTERS:
        raise ApiError("invalid_idempotency_key",
                       f"an Idempotency-Key is 1..{MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
                       f"characters", status=400)
    return value


def _own_driver(principal: Principal, driver_id: str) -> None:
    if principal.is_driver and driver_id != principal.driver_id:
        raise ApiError("not_found", f"no driver {driver_id!r}")


def _amount(minor: int, currency: str) -> str:
    return format(Money(minor, Currency.of(currency)).amount, "f")


def _at(value: dt.datetime) -> str:
    return value.isoformat()


@router.get("/drivers/{row_id}/wallet",
            summary="A driver's wallet: balance, auto top-up settings, recent movements",
            openapi_extra=raises("unknown_currency"))
def get_wallet(row_id: str, request: Request, principal: CurrentPrincipal,
               movements: Annotated[int, Query(ge=1, le=wallets.MAX_MOVEMENTS)] = 20
               ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    _own_driver(principal, row_id)
    with request.app.state.engine.connect() as conn:
        view = wallets.wallet_view(conn, principal.operator_id, row_id, clock(request),
                                   movements)
    plan = view.plan
    auto = None
    if plan is not None and plan.kind is PlanKind.PREPAID_WALLET \
            and plan.wallet_top_up_threshold_minor is not None:
        auto = {"threshold_minor": plan.wallet_top_up_threshold_minor,
                "amount_minor": plan.wallet_top_up_amount_minor}
    cur = view.currency
    return {
        "driver_id": view.driver_id, "currency": cur, "balance_minor": view.balance_minor,
        "balance": _amount(view.balance_minor, cur),
        "plan_id": None if plan is None else plan.id,
        "plan_kind": None if plan is None else plan.kind.value,
        "auto_top_up": auto,
        "movements": [{"transaction_id": m.transaction_id, "kind": m.kind.value,
                       "amount_minor": m.amount_minor, "balance_minor": m.balance_minor,
                       "created_at": _at(m.created_at), "session_id": m.session_id,
                       "reference": m.reference} for m in view.movements],
        "pending_top_ups": [{"id": r.id, "amount_minor": r.amount_minor,
                             "balance_minor": r.balance_minor, "session_id": r.session_id,
                             "status": r.status, "created_at": _at(r.created_at)}
                            for r in view.pending_top_ups],
    }


@router.post("/drivers/{row_id}/wallet/top-ups", status_code=201,
             summary="Top up a driver's wallet (staff; Idempotency-Key required)",
             openapi_extra=raises(
                 "idempotency_key_missing", "invalid_idempotency_key", "idempotency_key_reused",
                 "wallet_limit_exceeded", "invalid_amount", "unknown_currency",
                 required_headers={"Idempotency-Key": {
                     "type": "string", "pattern": f"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$",
                     "description": "1..128 visible ASCII characters; the same key replays "
                                    "the first answer"}}))
def create_top_up(row_id: str, body: TopUpIn, request: Request, response: Response,
                  principal: CurrentPrincipal,
                  key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
                  ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    checked_key = idempotency_key(key)
    engine, at = request.app.state.engine, clock(request)
    try:
        with write_transaction(engine) as conn:
            result = wallets.top_up(conn, principal.operator_id, row_id,
                                    amount_minor=body.amount_minor, reference=body.reference,
                                    idempotency_key=checked_key, at=at)
            if not result.replayed:
                audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                      action="wallets.top_up", target=row_id, outcome="success",
                      detail=f"{result.amount_minor} {result.currency} "
                             f"{result.transaction_id}")
    except DomainError as exc:  # remembered: a retry with this key is refused the same way
        with write_transaction(engine) as conn:
            wallets.record_refused_top_up(
                conn, principal.operator_id, row_id, amount_minor=body.amount_minor,
                reference=body.reference, idempotency_key=checked_key, error=exc, at=at)
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="wallets.top_up", target=row_id, outcome="failure",
                  detail=exc.code)
        raise
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return {"transaction_id": result.transaction_id, "driver_id": result.driver_id,
            "amount_minor": result.amount_minor, "currency": result.currency,
            "amount": _amount(result.amount_minor, result.currency),
            "reference": result.reference, "balance_minor": result.balance_minor,
            "created_at": _at(result.created_at)}
