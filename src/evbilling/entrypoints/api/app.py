"""The FastAPI application: /api/v1 (REST), /docs (OpenAPI UI), /openapi.json."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evbilling import __version__
from evbilling.adapters.db.engine import make_engine, migrate
from evbilling.bootstrap import wire_charging
from evbilling.entrypoints.api import (
    access,
    catalog,
    errors,
    fleet,
    limits,
    notifications,
    openapi,
    quotes,
    sessions,
    tariffs,
    wallets,
)
from evbilling.entrypoints.api.crud import build_router
from evbilling.entrypoints.api.resources import resources
from evbilling.entrypoints.heap import HeapFreezer
from evbilling.entrypoints.ocpp import ConnectionRegistry, mount_ocpp
from evbilling.services.catalog_cache import CatalogCache
from evbilling.services.catalog_generation import GenerationReader
from evbilling.services.ports import ChargingPort

logger = logging.getLogger("evbilling.api")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_DOCS_HEADERS = [(k, v) for k, v in _HEADERS if k != b"cache-control"]  # the UI may cache


class SecurityHeaders:
    """Pure ASGI middleware: security headers on every HTTP response, 500s included.

    (Starlette's ``BaseHTTPMiddleware`` would do the same at a third of the throughput.) An
    unhandled error is answered here as a problem, so the 500 carries the headers too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = _DOCS_HEADERS if path.startswith("/docs") else _HEADERS
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in present]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            logger.exception("unhandled error on %s %s", scope.get("method"), path)
            response = errors.problem(500, "internal_error",
                                      "an unexpected error occurred; it was logged",
                                      instance=path)
            await response(scope, receive, send_with_headers)


def create_app(database_url: str | None = None, *, engine: Engine | None = None,
               charging: ChargingPort | None = None, freeze_heap: bool = False,
               freeze_every_s: float | None = None) -> FastAPI:
    """Build the app. The database is migrated to the newest schema before serving.
    ``charging`` replaces the charging service behind the OCPP gateway (tests);
    ``freeze_heap``: keep garbage-collector pauses short (``entrypoints/heap.py``; servers)."""
    engine = engine or make_engine(database_url)
    migrate(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # background services (group commit, session sweeper, notification delivery ...)
        # start with the server and stop, in reverse order, after it has drained
        started = []
        try:
            for service in app.state.background:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await service.stop()
            app.state.catalog_cache.close()
            engine.dispose()

    app = FastAPI(
        title="evbilling API",
        version=__version__,
        description="Billing and payments for EV charging operators. Errors are RFC 9457 "
                    "problem details with a stable `code`. Decimal amounts are strings.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    # quotes read the catalog from per-operator snapshots checked by generation
    app.state.catalog_cache = CatalogCache(GenerationReader(engine))
    app.state.background = []  # objects with async start() / stop(), in start order
    errors.install(app)
    openapi.install(app)  # every problem each operation can answer, links (S1)
    # log-in and promo-code limits: shared by every worker and node through Redis when set
    limits.configure(os.environ.get("EVBILLING_REDIS_URL"))
    notifications.setup(app, engine)  # app.state.notifications: the charging service's sink
    service = wire_charging(app, engine)
    service.commands = registry = ConnectionRegistry()  # the service stops / shows cost via OCPP
    mount_ocpp(app, charging if charging is not None else service, registry, engine)
    if freeze_heap:
        app.state.background.append(HeapFreezer() if freeze_every_s is None
                                    else HeapFreezer(every_s=freeze_every_s))

    app.add_middleware(quotes.QuotesFastPath)  # inside SecurityHeaders: same headers
    app.add_middleware(SecurityHeaders)

    api = APIRouter(prefix="/api/v1")
    # FastAPI matches routes one by one in this order: the hottest route goes first
    api.include_router(quotes.router)
    api.include_router(access.router)
    api.include_router(tariffs.router)
    api.include_router(catalog.router)
    api.include_router(sessions.router)
    api.include_router(notifications.router)
    api.include_router(wallets.router)
    api.include_router(fleet.router)
    for resource in resources():
        api.include_router(build_router(resource))
    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
