"""Schema checks with the ocpp library's schemas, and which CALLERROR each failure maps to."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.exceptions import OCPPError

from evbilling.entrypoints.ocpp import validation
from evbilling.entrypoints.ocpp.server import handled_messages

SAMPLED = {"timestamp": "2024-05-01T10:00:00Z", "sampledValue": [{"value": "1000"}]}


def error_code(version: str, action: str, payload: Any, kind: validation.Kind = "request"
               ) -> str | None:
    try:
        validation.validate(version, action, kind, payload)
    except OCPPError as exc:
        return str(exc.code)
    return None


def test_a_valid_payload_passes() -> None:
    assert error_code("1.6", "MeterValues", {"connectorId": 1, "meterValue": [SAMPLED]}) is None


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_missing_required_field_is_an_occurence_constraint_violation(version: str) -> None:
    # Spelled with one "r" in both 1.6 and 2.0.1 (OCPP-J 1.6 errata 5.1; fixed only in 2.1).
    assert error_code(version, "StatusNotification", {}) == "OccurenceConstraintViolation"


def test_an_empty_meter_value_list_is_an_occurence_constraint_violation() -> None:
    assert error_code("1.6", "MeterValues", {"connectorId": 1, "meterValue": []}) == \
        "OccurenceConstraintViolation"


def test_a_field_of_the_wrong_type_is_a_type_constraint_violation() -> None:
    assert error_code("1.6", "MeterValues", {"connectorId": "1", "meterValue": [SAMPLED]}) == \
        "TypeConstraintViolation"


def test_a_string_longer_than_its_type_is_a_type_constraint_violation() -> None:
    assert error_code("1.6", "Authorize", {"idTag": "X" * 21}) == "TypeConstraintViolation"


def test_a_value_outside_the_enumeration_is_a_property_constraint_violation() -> None:
    payload = {"connectorId": 1, "errorCode": "Boom", "status": "Available"}
    assert error_code("1.6", "StatusNotification", payload) == "PropertyConstraintViolation"


@pytest.mark.parametrize(("version", "code"), [("1.6", "FormationViolation"),
                                               ("2.0.1", "FormatViolation")])
def test_an_unknown_field_is_a_format_violation_in_the_versions_spelling(version: str, code: str
                                                                        ) -> None:
    assert error_code(version, "Heartbeat", {"surprise": 1}) == code


def test_a_payload_that_is_not_an_object_is_a_format_violation() -> None:
    assert error_code("2.0.1", "Heartbeat", []) == "FormatViolation"


def test_timestamps_are_not_checked_by_the_schema() -> None:
    # format checks are off (as for the library); conversions parse the timestamps they use
    bad_time = {"timestamp": "yesterday", "sampledValue": [{"value": "1"}]}
    assert error_code("1.6", "MeterValues", {"connectorId": 1, "meterValue": [bad_time]}) is None


def test_the_schema_default_values_are_not_written_into_the_payload() -> None:
    payload = {"evseId": 1, "meterValue": [{"timestamp": "2024-05-01T10:00:00Z",
                                             "sampledValue": [{"value": 1}]}]}
    validation.validate("2.0.1", "MeterValues", "request", payload)
    assert payload["meterValue"][0]["sampledValue"][0] == {"value": 1}


def test_a_message_without_a_schema_is_not_checked() -> None:
    assert validation.compiled("1.6", "NoSuchAction", "request") is None
    assert validation.compiled("1.6", "../../etc/passwd", "request") is None
    assert error_code("1.6", "NoSuchAction", {"anything": 1}) is None


def test_every_message_the_gateway_handles_or_sends_has_a_schema_in_both_directions() -> None:
    messages = handled_messages()
    assert validation.warm_up(messages) == len(messages)


def test_a_check_is_compiled_once() -> None:
    assert validation.compiled("2.0.1", "TransactionEvent", "request") is \
        validation.compiled("2.0.1", "TransactionEvent", "request")
