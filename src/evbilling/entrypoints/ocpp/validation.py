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

_SCHEMAS: Final = Path(ocpp.__file__).parent
_DIRS: Final = {"1.6": _SCHEMAS / "v16" / "schemas", "2.0.1": _SCHEMAS / "v201" / "schemas"}
_ACTION_NAME: Final = re.compile(r"[A-Za-z0-9]{1,64}")
_cache: dict[tuple[str, str, str], Check | None] = {}

_OCCURRENCE: Final = frozenset({"required", "minItems", "maxItems"})
_TYPE: Final = frozenset({"type", "maxLength", "minLength"})
_PROPERTY: Final = frozenset({"enum", "minimum", "maximum", "exclusiveMinimum",
                              "exclusiveMaximum", "multipleOf", "pattern", "const"})
_MAX_CAUSE_CHARS: Final = 200


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
    if path is not None and path.is_file():
        # The 2.0.1 schemas start with a byte order mark.
        definition = json.loads(path.read_text(encoding="utf-8-sig"))
        check = fastjsonschema.compile(definition, use_default=False, use_formats=False)
    _cache[key] = check
    return check


def validate(version: str, action: str, kind: Kind, payload: Any) -> None:
    """Raise the CALLERROR-mapped ``OCPPError`` when ``payload`` breaks the schema. A message
    without a schema is not checked here (the dispatcher refuses unknown actions first)."""
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


def warm_up(messages: Iterable[tuple[str, str, Kind]]) -> int:
    """Compile these checks now (at start-up, off the request path). Returns how many exist."""
    return sum(compiled(version, action, kind) is not None for version, action, kind in messages)
