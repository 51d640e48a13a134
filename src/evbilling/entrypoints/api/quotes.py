"""POST /quotes: price a hypothetical session (drivers and staff preview prices).

The whole pricing pipeline (``services/quotes.py``): the plan (given, else the driver's, else
list prices), its tariff, plan coverage, promotions (automatic ones and an entered code) and
loyalty, with a line-by-line breakdown that names every discount. Drivers quote for themselves.
Wrong promo codes are guesses: 5 in 15 minutes per driver (or API caller) and per client address
answer 429 (``limits.promo_limiter``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field, ValidationError, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evbilling.domain.periods import MILLIWH_PER_KWH
from evbilling.domain.rating import RatedSession
from evbilling.domain.tariffs.model import Price
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    CurrentPrincipal,
    Principal,
    cached_principal,
    require_role,
)
from evbilling.entrypoints.api.catalog import (
    amounts,
    render_applied,
    render_line,
    render_refused,
    render_usage,
    render_vat,
)
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.limits import promo_limiter
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Id, Strict
from evbilling.services.catalog import UnknownPromoCodeError, kwh_text
from evbilling.services.catalog_cache import ReadConnection
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
    plan_id: Id | None = Field(default=None, description="default: the driver's plan at "
                               "start_at, else list prices")
    driver_id: Id | None = Field(default=None, description="staff: quote for this driver "
                                 "(their plan, usage, history, tier); drivers: themselves")
    promo_code: str | None = Field(default=None, min_length=1, max_length=32)

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


def _encode(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json(content: dict[str, Any]) -> Response:
    """Encode once, in C (orjson: datetimes as RFC 3339 like ``isoformat``, decimals as exact
    positional strings); FastAPI's encoder would walk the tree in Python first."""
    return Response(orjson.dumps(content, default=_encode), media_type="application/json")


@router.post("/quotes", summary="Price a hypothetical session",
             openapi_extra=raises("not_found", "unknown_promo_code", "no_tariff_in_force",
                                  "rate_limited"))
async def create_quote(body: QuoteIn, request: Request, principal: CurrentPrincipal
                       ) -> Response:
    """Runs inline on the event loop: the work is CPU-bound and short, and skipping the
    thread-pool hop is most of the latency under load. ``QuotesFastPath`` calls it too."""
    require_role(principal, EVERYONE)
    driver_id = body.driver_id
    if principal.is_driver:
        if driver_id is not None and driver_id != principal.driver_id:
            raise ApiError("forbidden", "drivers quote only for themselves",
                           extra={"field": "driver_id"})
        driver_id = principal.driver_id
    guesser = f"{principal.operator_id}:{driver_id or principal.actor}"
    source = request.client.host if request.client else None
    if body.promo_code is not None:
        promo_limiter.check(guesser, source)
    req = QuoteRequest(
        operator_id=principal.operator_id, site_id=body.site_id, connector_id=body.connector_id,
        start_at=body.start_at, energy_milliwh=int(body.energy_kwh * MILLIWH_PER_KWH),
        charging_ms=int(body.charging_minutes * MS_PER_MINUTE),
        idle_ms=int(body.idle_minutes * MS_PER_MINUTE), plan_id=body.plan_id,
        driver_id=driver_id, promo_code=body.promo_code)
    with ReadConnection(request.app.state.engine) as connect:
        try:
            result = quote(connect, req, request.app.state.catalog_cache)
        except UnknownPromoCodeError:
            promo_limiter.failed(guesser, source)
            raise
    priced, plan, loyalty = result.priced, result.plan, result.loyalty
    return _json({
        "site_id": result.site_id,
        "time_zone": result.time_zone,
        "currency": result.currency,
        "driver_id": result.driver_id,
        "plan": None if plan is None else {"id": plan.id, "name": plan.name,
                                           "kind": plan.kind.value, "version": plan.version},
        "tariff": {"id": result.tariff.tariff_id, "version": result.tariff.version,
                   "role": result.tariff.role},
        "periods": len(result.session.periods),
        "total": amounts(priced.total_excl_vat, priced.total_incl_vat),
        "lines": [render_line(line) for line in priced.lines],
        "vat_summary": [render_vat(v) for v in priced.vat_summary],
        "applied_promotions": [render_applied(a) for a in priced.applied_promotions],
        "refused_promotions": [render_refused(r) for r in priced.refused_promotions],
        "loyalty": None if loyalty is None else {
            "tier": None if loyalty.tier is None else loyalty.tier.name,
            "energy_kwh": kwh_text(loyalty.energy_milliwh), "window_days": loyalty.window_days},
        "plan_usage": None if result.usage is None else {
            "before": render_usage(result.usage), "after": render_usage(priced.usage_after),
            "energy_covered_kwh": kwh_text(priced.energy_covered_milliwh)},
        "energy_kwh": kwh_text(priced.energy_milliwh),
        "rated": rated_totals(result.rated),
        "warnings": list(priced.warnings),
    })


# -- the fast path --------------------------------------------------------------------------------
QUOTES_PATH = "/api/v1/quotes"
#: Bodies above this go through FastAPI (a quote body is a few hundred bytes).
MAX_FAST_BODY_BYTES = 16_384


class QuotesFastPath:
    """Pure ASGI: ``POST /api/v1/quotes`` without FastAPI's route matching and dependency
    resolution, which cost about as much as the quote itself (bench/README.md).

    It answers only what FastAPI would answer the same way, and through the same function
    (``create_quote``): a caller already in the principal cache (``auth.cached_principal``), a
    JSON body (``Content-Type`` absent or JSON, at most ``MAX_FAST_BODY_BYTES``) that
    ``QuoteIn`` accepts. Anything else - a first request with a token (authentication reads the
    database, then caches), a body that does not validate (FastAPI renders the 422 problem) -
    is handed to FastAPI with the body replayed, so every answer and problem stays FastAPI's.
    Errors raised while quoting go to the app's own exception handlers, looked up as Starlette's
    ``ExceptionMiddleware`` does; anything unhandled propagates (``SecurityHeaders`` answers
    500). The route stays in FastAPI for the OpenAPI document.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != QUOTES_PATH \
                or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        consumed: list[Message] = []
        size = 0
        while True:
            message = await receive()
            consumed.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > MAX_FAST_BODY_BYTES or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return consumed.pop(0) if consumed else await receive()

        principal = self._principal(scope)
        body = None
        if principal is not None and consumed[-1]["type"] == "http.request" \
                and size <= MAX_FAST_BODY_BYTES and not consumed[-1].get("more_body", False):
            try:
                body = QuoteIn.model_validate_json(b"".join(m.get("body", b"")
                                                            for m in consumed))
            except ValidationError:
                body = None
        if principal is None or body is None:
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)
        try:
            response = await create_quote(body, request, principal)
        except Exception as exc:
            handler = _exception_handler(scope, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, replay, send)

    @staticmethod
    def _principal(scope: Scope) -> Principal | None:
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        if content_type is not None and \
                content_type.split(";", 1)[0].strip().lower() != "application/json":
            return None  # FastAPI decides what other media types mean
        return cached_principal(authorization, scope["app"].state.engine)


def _exception_handler(scope: Scope, exc: Exception) -> Any:
    """The app's handler for ``exc`` (nearest class in its MRO), as ``ExceptionMiddleware``
    finds it; the catch-all ``Exception`` handler is left to the outer layers, as there."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
