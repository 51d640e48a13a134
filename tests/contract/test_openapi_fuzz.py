"""Schemathesis over the whole OpenAPI document (RELIABILITY S1): no 5xx, responses as documented.

Runs against the ASGI app on a seeded SQLite database, authenticated with the demo admin key.
Examples per operation: EVBILLING_FUZZ_EXAMPLES (default 25 in the regular suite; nightly runs
raise it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from evbilling.entrypoints.api.app import create_app
from evbilling.services.demo import DEMO_API_KEY, seed_demo

EXAMPLES = int(os.environ.get("EVBILLING_FUZZ_EXAMPLES", "25"))


def _app():  # type: ignore[no-untyped-def]
    path = Path(tempfile.mkdtemp(prefix="evbilling-fuzz-")) / "fuzz.sqlite3"
    application = create_app(f"sqlite:///{path}")
    with application.state.engine.begin() as conn:
        seed_demo(conn)
    return application


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {DEMO_API_KEY}"}
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
