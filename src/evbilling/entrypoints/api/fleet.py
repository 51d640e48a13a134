"""Fleet (post-paid) accounts and their monthly statements, read from the ledger (docs/ledger.md).

* ``GET /fleet-accounts``: every fleet account of the operator (the ``fleet_account`` names its
  drivers carry, and any with ledger history), sorted by name, with the amount outstanding, the
  credit limit and the credit available. Staff and finance.
* ``GET /fleet-accounts/{account}/statements/{YYYY-MM}``: the month's sessions (driver, site,
  start, kWh, price excl./incl. VAT) and other movements, totals, opening and closing balance,
  credit limit and available credit. A session belongs to the month in which it ended, in its
  site's time zone. JSON; the PDF comes with invoices.

Money is integer minor units of ``currency``; energy is kWh as a decimal string.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from evbilling.entrypoints.api.auth import STAFF_AND_FINANCE, CurrentPrincipal, require_role
from evbilling.entrypoints.api.catalog import clock
from evbilling.entrypoints.api.openapi import raises
from evbilling.services import fleet
from evbilling.services.catalog import kwh_text

router = APIRouter(tags=["fleet"])

Account = Annotated[str, Path(min_length=1, max_length=200,
                              description="The fleet account name (URL-encoded)")]
Month = Annotated[str, Path(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]


def render_account(view: fleet.FleetAccountView) -> dict[str, Any]:
    return {"id": view.name, "name": view.name, "currency": view.currency,
            "drivers": view.drivers, "outstanding_minor": view.outstanding_minor,
            "credit_limit_minor": view.credit_limit_minor,
            "available_credit_minor": view.available_minor}


@router.get("/fleet-accounts", summary="Fleet accounts: outstanding, credit limit, available")
def list_fleet_accounts(request: Request, principal: CurrentPrincipal,
                        limit: Annotated[int, Query(ge=1, le=fleet.MAX_PAGE)] = 20,
                        starting_after: Annotated[str | None, Query(max_length=200)] = None
                        ) -> dict[str, Any]:
    require_role(principal, STAFF_AND_FINANCE)
    with request.app.state.engine.connect() as conn:
        views, more = fleet.list_accounts(conn, principal.operator_id, clock(request),
                                          limit=limit, starting_after=starting_after)
    return {"data": [render_account(v) for v in views], "has_more": more,
            "next_cursor": views[-1].name if more and views else None}


@router.get("/fleet-accounts/{account}/statements/{month}",
            summary="A fleet account's monthly statement (from the ledger)",
            openapi_extra=raises("invalid_month", "statement_too_large"))
def get_statement(account: Account, month: Month, request: Request,
                  principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF_AND_FINANCE)
    with request.app.state.engine.connect() as conn:
        st = fleet.statement(conn, principal.operator_id, account, month, clock(request))
    sessions = [{
        "session_id": x.session_id, "transaction_id": x.transaction_id,
        "driver_id": x.driver_id, "site_id": x.site_id,
        "started_at": None if x.started_at is None else x.started_at.isoformat(),
        "ended_at": None if x.ended_at is None else x.ended_at.isoformat(),
        "energy_kwh": None if x.energy_milliwh is None else kwh_text(x.energy_milliwh),
        "price_excl_vat_minor": x.excl_vat_minor, "vat_minor": x.vat_minor,
        "price_incl_vat_minor": x.amount_minor, "posted_at": x.posted_at.isoformat(),
    } for x in st.sessions]
    adjustments = [{"transaction_id": x.transaction_id, "kind": x.kind.value,
                    "amount_minor": x.amount_minor, "posted_at": x.posted_at.isoformat()}
                   for x in st.adjustments]
    energy = sum(x.energy_milliwh or 0 for x in st.sessions)
    return {
        "account": render_account(st.account), "month": st.month, "currency": st.currency,
        "month_time_zone": "site",
        "opening_balance_minor": st.opening_minor, "closing_balance_minor": st.closing_minor,
        "credit_limit_minor": st.account.credit_limit_minor,
        "available_credit_minor": st.account.available_minor,
        "sessions": sessions, "adjustments": adjustments,
        "totals": {
            "sessions": len(sessions), "energy_kwh": kwh_text(energy),
            "price_excl_vat_minor": sum(x.excl_vat_minor or 0 for x in st.sessions),
            "vat_minor": sum(x.vat_minor or 0 for x in st.sessions),
            "price_incl_vat_minor": sum(x.amount_minor for x in st.sessions),
            "adjustments_minor": sum(x.amount_minor for x in st.adjustments),
        },
    }
