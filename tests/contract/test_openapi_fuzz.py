"""Schemathesis over the whole OpenAPI document (RELIABILITY S1).

Every operation answers as documented: no 5xx (``not_a_server_error``), only documented statuses
(``status_code_conformance``) and content types, bodies and headers that match their schemas,
401 without credentials (``ignored_auth``), 405 with ``Allow`` for other methods ... all of
schemathesis' default checks, through ``case.call_and_validate()``.

* The app runs in process on a seeded SQLite file of its own (one per xdist worker).
* Each example calls as the demo admin (API key) or, one in three, as the demo driver Alice
  (session token), so the routes drivers see are fuzzed with their narrower view too.
* The stateful scenarios run on a second seeded app of their own (they change its data, e.g.
  revoke API keys along the links).
* ``EVBILLING_FUZZ_EXAMPLES`` examples per operation (default 200; nightly 2000),
  ``EVBILLING_FUZZ_STATEFUL`` scenarios through the OpenAPI links (create -> read / change /
  delete, plus the links schemathesis infers), at most ``EVBILLING_FUZZ_STEPS`` calls each.
  Stateless examples are derandomized: a failure is reproduced by rerunning the same test at
  the same commit; a stateful failure prints its steps.

``positive_data_acceptance`` accepts 422 besides 2xx / 401 / 403 / 404 / 409 / 429: the
schema cannot say every business rule (a tariff document the OCPI parser refuses, a reference to
another record, a time zone the tz database lacks); each such refusal is a documented problem
with a stable code.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from sqlalchemy import update

from evbilling.adapters import security
from evbilling.adapters.db import schema as s
from evbilling.adapters.security import token_hash
from evbilling.entrypoints.api import auth
from evbilling.entrypoints.api.app import create_app
from evbilling.entrypoints.api.limits import login_limiter, promo_limiter
from evbilling.services.demo import DEMO_API_KEY, DEMO_PASSWORD, seed_demo

EXAMPLES = int(os.environ.get("EVBILLING_FUZZ_EXAMPLES", "200"))
STATEFUL_SCENARIOS = int(os.environ.get("EVBILLING_FUZZ_STATEFUL", "100"))
STATEFUL_STEPS = int(os.environ.get("EVBILLING_FUZZ_STEPS", "10"))
DRIVER_EMAIL = "alice@demo.evbilling.dev"


# argon2id at its lowest cost, as in tests/integration/conftest.py: the same format and code
# paths, in microseconds rather than ~50 ms a hash (POST /users, log-ins with unknown e-mails).
security._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
auth._DUMMY_HASH = security.hash_password("no account has this password")


def _app() -> FastAPI:
    path = Path(tempfile.mkdtemp(prefix="evbilling-fuzz-")) / "fuzz.sqlite3"
    application = create_app(f"sqlite:///{path}")
    with application.state.engine.begin() as conn:
        seed_demo(conn)
    return application


def _driver_token(application: FastAPI) -> str:
    with application.state.engine.connect() as conn:
        operator_id = conn.exec_driver_sql(
            "SELECT operator_id FROM users WHERE email = ?", (DRIVER_EMAIL,)).scalar_one()
    response = TestClient(application).post("/api/v1/auth/login", json={
        "operator_id": operator_id, "email": DRIVER_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


APP = _app()
CALLERS = {"admin": f"Bearer {DEMO_API_KEY}", "driver": f"Bearer {_driver_token(APP)}"}
#: Operations that would end the caller's session for the rest of the run: admin key only.
ADMIN_ONLY = {("POST", "/api/v1/auth/logout")}

CONFIG = schemathesis.Config.from_dict({
    "headers": {"Authorization": CALLERS["admin"]},
    # the slowest answer, a plan advice for 1000 sessions a month, takes ~2-5 s of CPU: a
    # loaded CI machine must not turn it into a read timeout (10 s by default)
    "request-timeout": 60,
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}},
})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(autouse=True, scope="module")
def _leave_no_limits_behind() -> Iterator[None]:
    """The fuzzing fails log-ins and promo codes by the hundred from the one client address
    every TestClient has: later tests in this worker start with fresh limits and caches."""
    yield
    login_limiter.reset()
    promo_limiter.reset()
    auth.forget_all_tokens()


def caller_of(case: schemathesis.Case) -> str:
    """Every third example calls as the driver, chosen from the example's data (not a random
    draw), so a failing example replays as the same caller."""
    if (case.method.upper(), case.path) in ADMIN_ONLY:
        return "admin"
    data = repr((case.path_parameters, case.query, case.body)).encode()
    return "driver" if zlib.crc32(data) % 3 == 0 else "admin"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": CALLERS[caller_of(case)]})


def linked_scenarios(application: FastAPI) -> Any:
    """A state machine over ``application``'s document: create -> read / change / delete chains
    along the OpenAPI links, as the admin (module doc).

    Every failed check is recorded as it happens: the server's state outlives a scenario, so
    Hypothesis' replay of a scenario may draw differently (``Flaky``), and the failure must not
    get lost then (schemathesis' own runner does the same). After each scenario the demo admin
    key is active again (a scenario may follow the link GET /api-keys -> DELETE
    /api-keys/{key_id} to it), so later scenarios do not all end in 401."""
    machine = schemathesis.openapi.from_asgi("/openapi.json", application,
                                             config=CONFIG).as_state_machine()

    class LinkedScenarios(machine):  # type: ignore[misc, valid-type]
        failures: ClassVar[list[str]] = []
        scenarios: ClassVar[int] = 0

        def setup(self) -> None:
            LinkedScenarios.scenarios += 1

        def teardown(self) -> None:
            with application.state.engine.begin() as conn:
                conn.execute(update(s.api_keys).where(
                    s.api_keys.c.key_hash == token_hash(DEMO_API_KEY)).values(revoked_at=None))

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": {"Authorization": CALLERS["admin"]}}

        def validate_response(self, response: schemathesis.Response, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            try:
                super().validate_response(response, case,
                                          additional_checks=additional_checks, **kwargs)
            except Exception as exc:
                self.failures.append(f"{case.method} {case.formatted_path}: {exc}")
                raise

    return LinkedScenarios


@pytest.mark.slow
def test_linked_operations_answer_as_documented() -> None:
    scenarios = linked_scenarios(_app())  # a database of its own: the scenarios change it
    for _attempt in range(5):  # until the budget of scenarios ran (a Flaky replay ends a run)
        try:
            scenarios.run(settings=settings(
                max_examples=STATEFUL_SCENARIOS - scenarios.scenarios,
                stateful_step_count=STATEFUL_STEPS, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
        except Flaky:
            pass
        assert not scenarios.failures, "\n\n".join(scenarios.failures[:5])
        if scenarios.scenarios >= STATEFUL_SCENARIOS:
            break
