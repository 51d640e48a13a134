"""RFC 9457 problem details with a stable ``code``. Every API error goes through here.

``STATUS_BY_CODE`` maps each domain error code to an HTTP status once; codes not listed are 422
(a well-formed request the rules refuse).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from evbilling.domain.errors import DomainError

PROBLEM = "application/problem+json"
TYPE_BASE = "https://evbilling.dev/problems/"

STATUS_BY_CODE: dict[str, int] = {
    "not_found": 404,
    "unauthenticated": 401,
    "forbidden": 403,
    "conflict": 409,
    "in_use": 409,
    "tariff_version_in_use": 409,
    "already_exists": 409,
    "rate_limited": 429,
    "validation_error": 422,
    "invalid_tariff": 422,
    "invalid_cdr": 422,
    "invalid_document": 422,
    "unknown_time_zone": 422,
    "unknown_currency": 422,
    "no_tariff_in_force": 422,
    "unknown_reference": 422,
    # plans, promotions, loyalty, pricing (docs/plans.md)
    "plan_unchanged": 409,
    "plan_inactive": 409,
    "plan_not_offered": 409,
    "session_not_active": 409,
    "charger_unavailable": 409,
    "insufficient_funds": 409,
    "credit_limit_exceeded": 409,
    "invalid_plan": 422,
    "invalid_promotion": 422,
    "invalid_loyalty_tier": 422,
    "invalid_usage_profile": 422,
    "currency_mismatch": 422,
    "plan_tariff_missing": 422,
    "plan_tariff_mismatch": 422,
    "plan_usage_required": 422,
    "plan_usage_mismatch": 422,
    "promotion_not_applicable": 422,
    "unknown_promo_code": 422,
    "too_many_promotions": 422,
    "session_outside_window": 422,
    # ledger, wallets, fleet accounts (docs/ledger.md)
    "idempotency_key_missing": 400,
    "invalid_idempotency_key": 400,
    "idempotency_key_reused": 422,
    "wallet_limit_exceeded": 409,
    "already_reversed": 409,
    "invalid_amount": 422,
    "invalid_month": 422,
    "statement_too_large": 422,
    # notifications (docs/notifications.md)
    "invalid_notification_rule": 422,
    "rule_limit_reached": 422,
    "endpoint_limit_reached": 422,
    "internal_error": 500,
}

TITLES: dict[int, str] = {
    400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Content too large",
    415: "Unsupported media type", 422: "Unprocessable request", 429: "Too many requests",
    500: "Internal server error",
}
#: Codes of the errors that Starlette / FastAPI raise themselves (routing, body decoding).
HTTP_CODES: dict[int, str] = {400: "bad_request", 401: "unauthenticated", 403: "forbidden",
                              404: "not_found", 405: "method_not_allowed",
                              413: "content_too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    """An error raised by an entry point, rendered as problem+json."""

    def __init__(self, code: str, detail: str, *, status: int | None = None,
                 extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or STATUS_BY_CODE.get(code, 422)
        self.extra = extra or {}
        self.headers = headers


def problem(status: int, code: str, detail: str, *, instance: str | None = None,
            extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route serves at this path (RFC 9110 ``Allow``). Starlette names only
    the first route whose path matched, and FastAPI has one route per method (and serves no
    HEAD for a GET)."""
    methods: set[str] = set()
    path = scope.get("path", "")
    for route in iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, instance=request.url.path,
                       extra=exc.extra, headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        status = STATUS_BY_CODE.get(exc.code, 422)
        extra: dict[str, Any] = {}
        field = getattr(exc, "field", None)
        if field:
            extra["field"] = field
        return problem(status, exc.code, exc.message, instance=request.url.path, extra=extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
             "message": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return problem(422, "validation_error", detail, instance=request.url.path,
                       extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app, request.scope)
        return problem(exc.status_code, code, str(exc.detail), instance=request.url.path,
                       headers=headers or None)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal_error", "an unexpected error occurred; it was logged",
                       instance=request.url.path)
