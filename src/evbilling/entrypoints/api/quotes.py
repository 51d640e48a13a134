"""POST /quotes: price a hypothetical session (drivers and staff preview prices)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from evbilling.domain.periods import MILLIWH_PER_KWH
from evbilling.domain.rating import RatedSession
from evbilling.domain.tariffs.model import Price
from evbilling.entrypoints.api.auth import EVERYONE, CurrentPrincipal, require_role
from evbilling.entrypoints.api.resources import Id, Strict
from evbilling.services.quotes import QuoteRequest, quote

router = APIRouter(tags=["quotes"])

MS_PER_MINUTE = 60_000


class QuoteIn(Strict):
    site_id: Id | None = Field(default=None, description="the site (or give connector_id)")
    connector_id: Id | None = None
    start_at: dt.datetime = Field(description="RFC 3339 with offset")
    energy_kwh: Decimal = Field(ge=0, le=1000, decimal_places=6)
    charging_minutes: Decimal = Field(ge=0, le=10_080, decimal_places=3)
    idle_minutes: Decimal = Field(default=Decimal(0), ge=0, le=10_080, decimal_places=3)
    plan_id: Id | None = None

    @model_validator(mode="after")
    def _location(self) -> QuoteIn:
        if self.site_id is None and self.connector_id is None:
            raise ValueError("give site_id or connector_id")
        return self


def _price(value: Price) -> dict[str, str | None]:
    return {"excl_vat": format(value.excl_vat, "f"),
            "incl_vat": None if value.incl_vat is None else format(value.incl_vat, "f")}


def rated_totals(rated: RatedSession) -> dict[str, Any]:
    """OCPI CDR totals at full precision, as exact decimal strings."""
    out: dict[str, Any] = {}
    for name in ("total_cost", "total_fixed_cost", "total_energy_cost", "total_time_cost",
                 "total_parking_cost", "total_reservation_cost"):
        out[name] = _price(getattr(rated, name))
    for name in ("total_energy", "total_time", "total_parking_time"):
        out[name] = format(getattr(rated, name), "f")
    out["price_bound"] = rated.price_bound
    return out


@router.post("/quotes", summary="Price a hypothetical session")
def create_quote(body: QuoteIn, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    req = QuoteRequest(
        operator_id=principal.operator_id, site_id=body.site_id, connector_id=body.connector_id,
        start_at=body.start_at, energy_milliwh=int(body.energy_kwh * MILLIWH_PER_KWH),
        charging_ms=int(body.charging_minutes * MS_PER_MINUTE),
        idle_ms=int(body.idle_minutes * MS_PER_MINUTE), plan_id=body.plan_id)
    with request.app.state.engine.connect() as conn:
        result = quote(conn, req)
    return {
        "site_id": result.site_id,
        "time_zone": result.time_zone,
        "currency": result.currency,
        "tariff": {"id": result.tariff.tariff_id, "version": result.tariff.version},
        "periods": len(result.session.periods),
        "total": _price(result.rated.total_cost),
        "rated": rated_totals(result.rated),
        "warnings": list(result.rated.warnings),
    }
