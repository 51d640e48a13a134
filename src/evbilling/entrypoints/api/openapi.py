"""The OpenAPI document names every answer an operation gives (RELIABILITY S1).

FastAPI documents the success answer of each route and a 422 of its own shape. Our errors are
RFC 9457 problems (``errors.py``), so ``install`` post-processes the generated document once:

* ``components.schemas.Problem`` (and ``ProblemFieldError``) replace FastAPI's
  ``HTTPValidationError``;
* each operation gets one ``application/problem+json`` response per status it can answer, with
  the stable codes in the description. The codes come from the route itself:

  - authenticated (the ``CurrentPrincipal`` dependency, or ``raises(authenticated=True)``):
    ``unauthenticated`` (401) and ``forbidden`` (403), and the ``bearer`` security scheme;
  - a path parameter: ``not_found`` (404);
  - any parameter or body: ``validation_error`` (422); a body: ``bad_request`` (400, bytes
    that are not UTF-8);
  - whatever the route declares with ``openapi_extra=raises("in_use", ...)``: the business
    errors its service can answer (409, 422, 429 ...), each at its status in
    ``errors.STATUS_BY_CODE``;

* every ``POST`` on a collection (``/things``, answering 201) links to the operations on
  ``/things/{id}...`` with the new ``id``: schemathesis' stateful tests follow these links.

405 (a method the path does not serve) is answered for every path with an ``Allow`` header
(``errors.allowed_methods``); it is not an answer of an operation, so it is not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from evbilling.entrypoints.api.auth import get_principal
from evbilling.entrypoints.api.errors import HTTP_CODES, PROBLEM, STATUS_BY_CODE, TITLES

CODES_KEY = "x-problem-codes"
AUTH_KEY = "x-authenticated"
HEADERS_KEY = "x-required-headers"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SECURITY_SCHEME = "bearer"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `code` is stable: clients branch on it, not on "
                   "`title` or `detail`.",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string", "description": "`https://evbilling.dev/problems/<code>`"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "field": {"type": "string", "description": "the offending field, where one is known"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemFieldError"},
                   "description": "every field that failed validation (`validation_error`)"},
    },
    "additionalProperties": True,
}
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ProblemFieldError",
    "type": "object",
    "required": ["field", "message", "type"],
    "properties": {"field": {"type": "string"}, "message": {"type": "string"},
                   "type": {"type": "string"}},
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer` when the token is missing or unknown",
                               "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds until a new attempt is counted",
                          "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}
_STATUS_BY_HTTP_CODE = {code: status for status, code in HTTP_CODES.items()}


def raises(*codes: str, authenticated: bool = False,
           required_headers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a route: the problem codes it answers beyond the defaults (module
    doc); ``authenticated`` for a route that checks the bearer token itself;
    ``required_headers``: header -> JSON schema, for a header the route checks itself (and
    answers a problem of its own when it is missing), so its parameter is optional to FastAPI
    but required in the document."""
    unknown = [c for c in codes if status_of(c) is None]
    if unknown:
        raise ValueError(f"codes without a status in errors.STATUS_BY_CODE: {unknown}")
    extra: dict[str, Any] = {CODES_KEY: sorted(codes)}
    if authenticated:
        extra[AUTH_KEY] = True
    if required_headers:
        extra[HEADERS_KEY] = required_headers
    return extra


def _require_headers(operation: dict[str, Any], headers: dict[str, dict[str, Any]]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") in headers:
            parameter["required"] = True
            parameter["schema"] = headers[parameter["name"]]


def status_of(code: str) -> int | None:
    return STATUS_BY_CODE.get(code) or _STATUS_BY_HTTP_CODE.get(code)


def _authenticated(dependant: Dependant) -> bool:
    return any(d.call is get_principal or _authenticated(d) for d in dependant.dependencies)


def default_codes(dependant: Dependant) -> set[str]:
    """The codes every route of this shape can answer (module doc)."""
    codes: set[str] = set()
    if _authenticated(dependant):
        codes |= {"unauthenticated", "forbidden"}
    if _has(dependant, "path_params"):
        codes.add("not_found")
    if any(_has(dependant, kind) for kind in ("path_params", "query_params", "header_params",
                                              "cookie_params", "body_params")):
        codes.add("validation_error")
    if _has(dependant, "body_params"):
        codes.add("bad_request")  # FastAPI: a body that is not UTF-8 (JSON syntax is a 422)
    return codes


def _has(dependant: Dependant, kind: str) -> bool:
    return bool(getattr(dependant, kind)) or any(_has(d, kind) for d in dependant.dependencies)


def _problem_responses(codes: Iterable[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in sorted(set(codes)):
        status = status_of(code)
        if status is None:
            raise ValueError(f"problem code {code!r} has no status")
        by_status.setdefault(status, []).append(code)
    responses: dict[str, Any] = {}
    for status, names in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": f"{TITLES.get(status, 'Error')}: "
                           + ", ".join(f"`{name}`" for name in names),
            "content": {PROBLEM: {"schema": PROBLEM_REF}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[str(status)] = response
    return responses


def _link_collections(paths: dict[str, Any]) -> None:
    """``POST /things`` (201) -> every operation on ``/things/{param}...``, ``param`` = the
    new record's ``id``."""
    for path, operations in paths.items():
        created = operations.get("post", {}).get("responses", {}).get("201")
        if created is None or "{" in path:
            continue
        links: dict[str, Any] = {}
        for other, other_operations in sorted(paths.items()):
            if not other.startswith(path + "/{"):
                continue
            param = other[len(path) + 2:other.index("}", len(path))]
            for method, operation in sorted(other_operations.items()):
                links[f"{method.upper()} {other}"] = {
                    "operationId": operation["operationId"],
                    "parameters": {f"path.{param}": "$response.body#/id"},
                }
        if links:
            created["links"] = links


def document(schema: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """Post-process FastAPI's document in place (module doc); returns it."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemFieldError"] = FIELD_ERROR_SCHEMA
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`evbk_...`) or a session token (`evbs_...`)"}
    paths: dict[str, Any] = schema.get("paths", {})
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        path_ops = paths.get(route.path_format or "")
        if dependant is None or path_ops is None:
            continue
        for method in route.methods or ():
            operation = path_ops.get(method.lower())
            if operation is None:
                continue
            declared = operation.pop(CODES_KEY, [])
            _require_headers(operation, operation.pop(HEADERS_KEY, {}))
            authenticated = operation.pop(AUTH_KEY, False) or _authenticated(dependant)
            codes = default_codes(dependant) | set(declared)
            if authenticated:
                codes |= {"unauthenticated", "forbidden"}
                operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's HTTPValidationError: ours is a Problem
            responses.update(_problem_responses(codes))
    _link_collections(paths)
    return schema


def install(app: FastAPI) -> None:
    """Serve the post-processed document at ``/openapi.json`` (built once, on first use)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(generate(), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
