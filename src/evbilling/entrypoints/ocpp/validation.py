"""Schema checks of OCPP payloads with the JSON schemas the ``ocpp`` library ships
(``ocpp/v16/schemas/*.json``, ``ocpp/v201/schemas/*.json``), compiled once per (version,
action, request/response) by ``fastjsonschema`` on first use and cached.

A compiled check costs tens of microseconds where the library's ``jsonschema`` validation in a
thread pool costs most of a millisecond (docs/ocpp.md, "Performance design"). Two settings
differ from the library and are deliberate:

* ``use_default=False``: the schemas' ``default`` values are not written into the payload (the
  frame we store stays the frame we received; the conversions apply the defaults themselves);
* ``use_formats=False``: ``format: date-time`` is not checked here, as ``jsonschema`` (without a
  format checker) does not check it for the library either. Timestamps are parsed where they are
  used (``conversions.epoch_ms``), so a timestamp we cannot read is refused where it matters and
  tolerated where refusing would lose a transaction message.

Each check comes in two parts, built from the same schema file (``_fast_check``). The fast part
is a small tree of closures for the subset of keywords the OCPP schemas use on their common paths
(``type``, ``properties``, ``required``, ``additionalProperties: false``, ``items``,
``minItems``, ``maxItems``, string ``enum``, ``maxLength``, ``minLength``, local ``$ref``);
it answers only "verified valid" or "not verified", and is never looser than the compiled check
(e.g. ``integer`` means a Python ``int``, where draft 6 also takes ``1.0``; any other keyword
makes its node "not verified"). A payload it does not verify goes through the ``fastjsonschema``
check, so what is refused, with which error and message, is decided by that check alone. The
fast part costs a third of the compiled check for a 1.6 MeterValues with 9 sampled values,
because the generated code builds a set per object and compares enums one by one.

Failures map to the CALLERROR codes of the version (precedence: the first failure the compiled
check meets, in schema order):

=====================================================  =========================================
schema rule                                            CALLERROR
=====================================================  =========================================
``required``, ``minItems``, ``maxItems``               ``OccurenceConstraintViolation`` (a field
                                                       occurs too few / too many times)
``type`` (of a field), ``maxLength``, ``minLength``    ``TypeConstraintViolation`` (e.g. a
                                                       CiString20 longer than 20)
``enum``, ``minimum``, ``maximum``, ``multipleOf``,    ``PropertyConstraintViolation`` (the
``pattern``, ``const``, ``exclusive*``                 value is not allowed)
``additionalProperties``, a payload that is not an     ``FormationViolation`` (1.6) /
object, anything else                                  ``FormatViolation`` (2.0.1)
=====================================================  =========================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal

import fastjsonschema
import ocpp
from ocpp.exceptions import (
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    TypeConstraintViolationError,
)

from evbilling.entrypoints.ocpp.protocol import format_violation

Kind = Literal["request", "response"]
Check = Callable[[Any], Any]
#: True: the payload is valid for the schema; False: not verified (the compiled check decides).
FastCheck = Callable[[Any], bool]

_SCHEMAS: Final = Path(ocpp.__file__).parent
_DIRS: Final = {"1.6": _SCHEMAS / "v16" / "schemas", "2.0.1": _SCHEMAS / "v201" / "schemas"}
_ACTION_NAME: Final = re.compile(r"[A-Za-z0-9]{1,64}")
_cache: dict[tuple[str, str, str], Check | None] = {}
_fast_cache: dict[tuple[str, str, str], FastCheck | None] = {}

_OCCURRENCE: Final = frozenset({"required", "minItems", "maxItems"})
_TYPE: Final = frozenset({"type", "maxLength", "minLength"})
_PROPERTY: Final = frozenset({"enum", "minimum", "maximum", "exclusiveMinimum",
                              "exclusiveMaximum", "multipleOf", "pattern", "const"})
_MAX_CAUSE_CHARS: Final = 200
#: Keywords that never make a payload invalid for the compiled check (``use_formats=False``,
#: ``use_default=False``; ``definitions`` are reached through ``$ref``).
_ANNOTATIONS: Final = frozenset({"$schema", "$id", "id", "title", "description", "comment",
                                 "$comment", "javaType", "tsEnumNaming", "format", "default",
                                 "definitions"})
#: Nesting beyond this is not verified by the fast check (the OCPP schemas are not recursive).
_MAX_FAST_DEPTH: Final = 32


def schema_path(version: str, action: str, kind: Kind) -> Path | None:
    """The library's schema file for a message, or None (unknown version or action name)."""
    folder = _DIRS.get(version)
    if folder is None or not _ACTION_NAME.fullmatch(action):
        return None
    if kind == "response":
        name = action + "Response"
    else:
        name = action + ("Request" if version == "2.0.1" else "")
    return folder / f"{name}.json"


def compiled(version: str, action: str, kind: Kind) -> Check | None:
    """The compiled check of a message's payload (None: no schema for it). Compiled once."""
    key = (version, action, kind)
    try:
        return _cache[key]
    except KeyError:
        pass
    path = schema_path(version, action, kind)
    check: Check | None = None
    fast: FastCheck | None = None
    if path is not None and path.is_file():
        # The 2.0.1 schemas start with a byte order mark.
        definition = json.loads(path.read_text(encoding="utf-8-sig"))
        check = fastjsonschema.compile(definition, use_default=False, use_formats=False)
        fast = _fast_check(definition, definition.get("definitions") or {}, 0)
    _fast_cache[key] = fast
    _cache[key] = check
    return check


def fast_check(version: str, action: str, kind: Kind) -> FastCheck | None:
    """The fast part of a message's check (None: no schema for it). Built with ``compiled``."""
    key = (version, action, kind)
    if key not in _fast_cache:
        compiled(version, action, kind)
    return _fast_cache[key]


def validate(version: str, action: str, kind: Kind, payload: Any) -> None:
    """Raise the CALLERROR-mapped ``OCPPError`` when ``payload`` breaks the schema. A message
    without a schema is not checked here (the dispatcher refuses unknown actions first)."""
    key = (version, action, kind)
    fast = _fast_cache.get(key)
    if fast is not None and fast(payload):
        return
    check = compiled(version, action, kind)
    if check is None:
        return
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise schema_error(version, exc) from None


def schema_error(version: str, exc: fastjsonschema.JsonSchemaValueException) -> OCPPError:
    """The CALLERROR class for one schema failure (table in the module docstring)."""
    rule = exc.rule or ""
    details = {"cause": str(exc.message)[:_MAX_CAUSE_CHARS], "path": str(exc.name or "")}
    if rule in _OCCURRENCE:
        return OccurenceConstraintViolationError(details=details)
    if rule in _TYPE and exc.name != "data":
        return TypeConstraintViolationError(details=details)
    if rule in _PROPERTY:
        return PropertyConstraintViolationError(details=details)
    return format_violation(version)(details=details)


# -- the fast part ---------------------------------------------------------------------------------
# Each builder returns a closure that is True only when the value meets every rule of its node
# (so the compiled check accepts it too); a node with a keyword it does not know gets ``_never``.

def _never(value: Any) -> bool:
    return False


def _fast_check(node: Any, definitions: dict[str, Any], depth: int) -> FastCheck:
    if not isinstance(node, dict) or depth > _MAX_FAST_DEPTH:
        return _never
    if "$ref" in node:  # fastjsonschema, like draft 4/6, ignores the siblings of a $ref
        ref = node["$ref"]
        prefix = "#/definitions/"
        if not isinstance(ref, str) or not ref.startswith(prefix) or \
                ref[len(prefix):] not in definitions:
            return _never
        return _fast_check(definitions[ref[len(prefix):]], definitions, depth + 1)
    rules = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
    kind = rules.pop("type", None)
    if kind == "object":
        return _fast_object(rules, definitions, depth)
    if kind == "array":
        return _fast_array(rules, definitions, depth)
    if kind == "string":
        return _fast_string(rules)
    rules.pop("additionalProperties", None)  # only applies to objects
    if rules:
        return _never
    if kind == "integer":
        return lambda value: type(value) is int
    if kind == "number":
        return lambda value: type(value) is int or type(value) is float
    if kind == "boolean":
        return lambda value: type(value) is bool
    return _never


def _leaf(node: Any, definitions: dict[str, Any]) -> type | frozenset[str] | None:
    """A property checked inline by its object: a plain ``string`` / ``integer`` / ``boolean``
    (its Python type) or a string ``enum`` without length rules (its values); else None."""
    for _ in range(_MAX_FAST_DEPTH):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str) and
                node["$ref"].startswith("#/definitions/")):
            break
        node = definitions.get(node["$ref"][len("#/definitions/"):])
    if not isinstance(node, dict):
        return None
    rules = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
    kind = rules.pop("type", None)
    rules.pop("additionalProperties", None)  # only applies to objects
    enum = rules.pop("enum", None)
    if rules:
        return None
    if kind == "string" and enum is None:
        return str
    if kind == "string" and isinstance(enum, list) and all(type(x) is str for x in enum):
        return frozenset(enum)
    if enum is None and kind in ("integer", "boolean"):
        return int if kind == "integer" else bool
    return None


def _fast_object(rules: dict[str, Any], definitions: dict[str, Any], depth: int) -> FastCheck:
    properties = rules.pop("properties", {})
    required = rules.pop("required", [])
    additional = rules.pop("additionalProperties", True)
    if rules or not isinstance(properties, dict) or not isinstance(required, list) or \
            type(additional) is not bool or not all(isinstance(k, str) for k in required):
        return _never
    types: dict[str, type] = {}
    enums: dict[str, frozenset[str]] = {}
    checks: dict[str, FastCheck] = {}
    for name, sub in properties.items():
        leaf = _leaf(sub, definitions)
        if isinstance(leaf, type):
            types[name] = leaf
        elif isinstance(leaf, frozenset):
            enums[name] = leaf
        else:
            checks[name] = _fast_check(sub, definitions, depth + 1)
    needed = tuple(required)
    closed = additional is False

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for name in needed:
            if name not in value:
                return False
        for name, item in value.items():
            allowed = enums.get(name)
            if allowed is not None:
                if type(item) is not str or item not in allowed:
                    return False
                continue
            kind = types.get(name)
            if kind is not None:
                if type(item) is not kind:
                    return False
                continue
            sub = checks.get(name)
            if sub is None:
                if closed:
                    return False
            elif not sub(item):
                return False
        return True
    return check


def _fast_array(rules: dict[str, Any], definitions: dict[str, Any], depth: int) -> FastCheck:
    items = rules.pop("items", {})
    rules.pop("additionalItems", None)  # ignored unless ``items`` is a list (refused below)
    rules.pop("additionalProperties", None)  # only applies to objects
    low = rules.pop("minItems", 0)
    high = rules.pop("maxItems", None)
    if rules or not isinstance(items, dict) or type(low) is not int or \
            not (high is None or type(high) is int):
        return _never
    sub = _fast_check(items, definitions, depth + 1) if items else None
    most = high

    def check(value: Any) -> bool:
        if type(value) is not list or len(value) < low or (most is not None and len(value) > most):
            return False
        if sub is not None:
            for item in value:
                if not sub(item):
                    return False
        return True
    return check


def _fast_string(rules: dict[str, Any]) -> FastCheck:
    rules.pop("additionalProperties", None)  # only applies to objects
    enum = rules.pop("enum", None)
    longest = rules.pop("maxLength", None)
    shortest = rules.pop("minLength", 0)
    if rules or not (longest is None or type(longest) is int) or type(shortest) is not int:
        return _never
    if enum is not None:
        if not isinstance(enum, list) or not all(type(x) is str for x in enum):
            return _never
        allowed = frozenset(x for x in enum if shortest <= len(x) and
                            (longest is None or len(x) <= longest))
        return lambda value: type(value) is str and value in allowed
    if longest is None and shortest == 0:
        return lambda value: type(value) is str
    most = longest if longest is not None else 1 << 62
    return lambda value: type(value) is str and shortest <= len(value) <= most


def warm_up(messages: Iterable[tuple[str, str, Kind]]) -> int:
    """Compile these checks now (at start-up, off the request path). Returns how many exist."""
    return sum(compiled(version, action, kind) is not None for version, action, kind in messages)
