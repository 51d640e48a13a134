"""The fast part of the schema checks (``validation._fast_check``) against the compiled
``fastjsonschema`` check of the same schema: whatever it verifies, the compiled check accepts;
whatever it does not, ``validate`` answers exactly as the compiled check alone would.

Payloads are drawn from each schema itself (``payloads``): valid ones, and ones with a mutation
at any depth (a missing required field, an unknown field, a near-miss enum value, a string one
character too long, ``1.0`` or ``True`` for an integer, an array one item short, any JSON value).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.exceptions import OCPPError

from evbilling.entrypoints.ocpp import validation

SCHEMAS = [(version, path) for version, folder in validation._DIRS.items()
           for path in sorted(folder.glob("*.json"))]
HOT = {("1.6", "MeterValues"), ("2.0.1", "TransactionEventRequest"),
       ("2.0.1", "MeterValuesRequest"), ("1.6", "MeterValuesResponse")}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)


def _resolve(node: Any, definitions: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = definitions[node["$ref"].rsplit("/", 1)[-1]]
    return node


def payloads(node: Any, definitions: dict[str, Any], mutate: bool, depth: int = 0
             ) -> st.SearchStrategy[Any]:
    """Values for ``node``: valid ones, and (``mutate``) ones broken anywhere below."""
    node = _resolve(node, definitions)
    valid = _valid(node, definitions, mutate, depth)
    if not mutate:
        return valid
    return st.one_of(valid, valid, valid, _broken(node, definitions, depth), json_values)


def _valid(node: dict[str, Any], definitions: dict[str, Any], mutate: bool, depth: int
           ) -> st.SearchStrategy[Any]:
    kind = node.get("type")
    if depth > 8:
        return st.nothing()
    if kind == "object":
        properties = node.get("properties", {})
        required = node.get("required", [])
        optional = [name for name in properties if name not in required]
        return st.fixed_dictionaries(
            {name: payloads(properties[name], definitions, mutate, depth + 1)
             for name in required},
            optional={name: payloads(properties[name], definitions, mutate, depth + 1)
                      for name in optional})
    if kind == "array":
        low = node.get("minItems", 0)
        high = node.get("maxItems", low + 3)
        return st.lists(payloads(node.get("items", {}), definitions, mutate, depth + 1),
                        min_size=low, max_size=min(high, low + 3))
    if kind == "string":
        if "enum" in node:
            return st.sampled_from(node["enum"])
        return st.text(min_size=node.get("minLength", 0),
                       max_size=min(node.get("maxLength", 30), 30))
    if kind == "integer":
        return st.integers(node.get("minimum", -10**9), node.get("maximum", 10**9))
    if kind == "number":
        return st.integers(-10**6, 10**6) | st.floats(
            min_value=node.get("minimum"), max_value=node.get("maximum"),
            allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return json_values


def _broken(node: dict[str, Any], definitions: dict[str, Any], depth: int
            ) -> st.SearchStrategy[Any]:
    kind = node.get("type")
    exact = _valid(node, definitions, False, depth)
    if kind == "object":
        required = node.get("required", [])
        dropped = exact.map(lambda d: {k: v for k, v in d.items() if k != required[0]}) \
            if required else exact
        extra = st.tuples(exact, st.text(max_size=12), json_values).map(
            lambda t: {**t[0], t[1]: t[2]})
        return dropped | extra
    if kind == "array":
        low = node.get("minItems", 0)
        short = st.lists(payloads(node.get("items", {}), definitions, False, depth + 1),
                         max_size=max(low - 1, 0))
        return short | exact.map(tuple) | exact.map(lambda xs: [*xs, *xs, *xs])
    if kind == "string":
        if "enum" in node:
            return st.sampled_from(node["enum"]).map(lambda s: s.lower() if s != s.lower()
                                                     else s.upper() + "x")
        longest = node.get("maxLength")
        return st.just("x" * (longest + 1)) if longest is not None else st.integers()
    if kind == "integer":
        return st.sampled_from([1.0, True, 1.5, "1"])
    return json_values


@functools.cache
def _checks(path: Path) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    """(schema, definitions, fast check, compiled check), built once per schema file."""
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    definitions = schema.get("definitions", {})
    return (schema, definitions, validation._fast_check(schema, definitions, 0),
            fastjsonschema.compile(schema, use_default=False, use_formats=False))


@functools.cache
def _drawn(path: Path, mutate: bool) -> st.SearchStrategy[Any]:
    schema, definitions, _, _ = _checks(path)
    return payloads(schema, definitions, mutate)


def _ids(item: tuple[str, Path]) -> str:
    return f"{item[0]}/{item[1].stem}"


def _compiled_error(check: Any, version: str, payload: Any) -> tuple[str, Any] | None:
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        error = validation.schema_error(version, exc)
        return (error.code, error.details)
    return None


def _validate_error(version: str, action: str, payload: Any) -> tuple[str, Any] | None:
    try:
        validation.validate(version, action, "request", payload)
    except OCPPError as exc:
        return (exc.code, exc.details)
    return None


@pytest.mark.parametrize("item", SCHEMAS, ids=_ids)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_what_the_fast_check_verifies_the_compiled_check_accepts(item: tuple[str, Path],
                                                                 data: st.DataObject) -> None:
    version, path = item
    _, _, fast, compiled = _checks(path)
    payload = data.draw(_drawn(path, True))
    if fast(payload):
        compiled(payload)  # raises if the fast check was too lenient


@pytest.mark.parametrize("item", [i for i in SCHEMAS if (i[0], i[1].stem) in HOT], ids=_ids)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_hot_messages_are_verified_fast_and_refused_exactly_as_before(
        item: tuple[str, Path], data: st.DataObject) -> None:
    version, path = item
    _, _, fast, compiled = _checks(path)
    payload = data.draw(_drawn(path, data.draw(st.booleans())))
    expected = _compiled_error(compiled, version, payload)
    if fast(payload):
        assert expected is None
    action = path.stem.removesuffix("Request")
    if not action.endswith("Response"):
        assert _validate_error(version, action, payload) == expected


@pytest.mark.parametrize("item", [i for i in SCHEMAS if (i[0], i[1].stem) in HOT
                                  and i[1].stem != "TransactionEventRequest"], ids=_ids)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_valid_meter_values_payload_takes_the_fast_path(item: tuple[str, Path],
                                                              data: st.DataObject) -> None:
    # Every keyword of these schemas is one the fast check knows: nothing valid falls back.
    version, path = item
    fast = _checks(path)[2]
    payload = data.draw(_drawn(path, False))
    assert fast(payload)


def test_a_typical_transaction_event_takes_the_fast_path() -> None:
    payload = {"eventType": "Updated", "timestamp": "2024-05-01T10:05:00Z", "seqNo": 7,
               "triggerReason": "MeterValuePeriodic",
               "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
               "evse": {"id": 1, "connectorId": 1},
               "idToken": {"idToken": "04A2B3C4", "type": "ISO14443"},
               "meterValue": [{"timestamp": "2024-05-01T10:05:00Z", "sampledValue": [
                   {"value": 12500.5, "measurand": "Energy.Active.Import.Register",
                    "unitOfMeasure": {"unit": "Wh", "multiplier": 0}},
                   {"value": 16.0, "measurand": "Current.Import", "phase": "L1"}]}]}
    check = validation.fast_check("2.0.1", "TransactionEvent", "request")
    assert check is not None and check(payload)


@pytest.mark.parametrize(("payload", "code"), [
    ({"connectorId": 1, "meterValue": []}, "OccurenceConstraintViolation"),
    ({"connectorId": True, "meterValue": [{"timestamp": "t", "sampledValue": [{"value": "1"}]}]},
     "TypeConstraintViolation"),
    ({"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
        {"value": "1", "unit": "wh"}]}]}, "PropertyConstraintViolation"),
    ({"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [
        {"value": "1", "extra": 1}]}]}, "FormationViolation"),
])
def test_payloads_the_fast_check_does_not_verify_get_the_compiled_checks_error(
        payload: dict[str, Any], code: str) -> None:
    check = validation.fast_check("1.6", "MeterValues", "request")
    assert check is not None and not check(payload)
    assert _validate_error("1.6", "MeterValues", payload)[0] == code  # type: ignore[index]


def test_an_unknown_keyword_is_never_verified_by_the_fast_check() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    check = validation._fast_check(schema, {}, 0)
    assert check({}) and not check({"n": 5}) and not check({"n": 0})
