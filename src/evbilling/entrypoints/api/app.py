"""The FastAPI application: /api/v1 (REST), /docs (OpenAPI UI), /openapi.json."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from evbilling import __version__
from evbilling.adapters.db.engine import make_engine, migrate
from evbilling.entrypoints.api import access, catalog, errors, quotes, tariffs
from evbilling.entrypoints.api.crud import build_router
from evbilling.entrypoints.api.resources import resources

logger = logging.getLogger("evbilling.api")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(database_url: str | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app. The database is migrated to the newest schema before serving."""
    engine = engine or make_engine(database_url)
    migrate(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="evbilling API",
        version=__version__,
        description="Billing and payments for EV charging operators. Errors are RFC 9457 "
                    "problem details with a stable `code`. Decimal amounts are strings.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    errors.install(app)

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # an unhandled error: answer here so the 500 carries the headers too
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            response = errors.problem(500, "internal_error",
                                      "an unexpected error occurred; it was logged",
                                      instance=request.url.path)
        for name, value in SECURITY_HEADERS.items():
            if request.url.path.startswith("/docs") and name == "Cache-Control":
                continue
            response.headers.setdefault(name, value)
        return response

    api = APIRouter(prefix="/api/v1")
    api.include_router(access.router)
    api.include_router(tariffs.router)
    api.include_router(quotes.router)
    api.include_router(catalog.router)
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
