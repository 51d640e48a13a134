"""OCPP-J framing: what a frame decodes to, and which CALLERROR a broken frame gets per version."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from evbilling.entrypoints.ocpp.protocol import (
    Call,
    CallError,
    CallResult,
    FrameError,
    decode,
    dumps,
    encode_call,
    encode_error,
    encode_result,
    format_violation,
)


def refusal(text: str | bytes, version: str) -> list[object] | None:
    with pytest.raises(FrameError) as info:
        decode(text, version)
    return None if info.value.reply is None else orjson.loads(info.value.reply)


def test_a_call_decodes_to_its_id_action_and_payload() -> None:
    assert decode('[2,"a1","Heartbeat",{}]', "1.6") == Call("a1", "Heartbeat", {})


def test_a_call_result_and_a_call_error_decode() -> None:
    assert decode('[3,"a1",{"status":"Accepted"}]', "2.0.1") == \
        CallResult("a1", {"status": "Accepted"})
    assert decode('[4,"a1","NotSupported","no",{}]', "1.6") == \
        CallError("a1", "NotSupported", "no", {})


def test_a_call_error_without_details_is_still_read() -> None:
    assert decode('[4,"a1","GenericError","x"]', "1.6") == CallError("a1", "GenericError", "x", {})


def test_bytes_frames_decode_like_text() -> None:
    assert decode(b'[2,"a1","Heartbeat",{}]', "2.0.1") == Call("a1", "Heartbeat", {})


@pytest.mark.parametrize("text", ["not json", "{}", "[]", '"x"', "[2]",
                                  '[2, 17, "Heartbeat", {}]'])
def test_201_answers_an_unreadable_message_id_with_rpc_framework_error_and_id_minus_one(
        text: str) -> None:
    reply = refusal(text, "2.0.1")
    assert reply is not None and reply[:3] == [4, "-1", "RpcFrameworkError"]


@pytest.mark.parametrize("text", ["not json", "{}", "[]", "[2]"])
def test_16_drops_a_frame_without_a_readable_message_id(text: str) -> None:
    assert refusal(text, "1.6") is None


@pytest.mark.parametrize(("version", "code"), [("1.6", "FormationViolation"),
                                               ("2.0.1", "FormatViolation")])
def test_broken_json_with_a_readable_id_is_answered_with_that_id(version: str, code: str
                                                                 ) -> None:
    reply = refusal('[2, "m-7", "MeterValues", {"connectorId": 1, ', version)
    assert reply is not None and reply[:3] == [4, "m-7", code]


@pytest.mark.parametrize(("version", "code"), [("1.6", "FormationViolation"),
                                               ("2.0.1", "FormatViolation")])
def test_a_payload_that_is_not_an_object_is_a_format_violation(version: str, code: str) -> None:
    reply = refusal('[2,"m1","Heartbeat",[]]', version)
    assert reply is not None and reply[:3] == [4, "m1", code]


@pytest.mark.parametrize(("version", "code"), [("1.6", "ProtocolError"),
                                               ("2.0.1", "RpcFrameworkError")])
def test_a_call_with_missing_elements_is_refused_with_its_id(version: str, code: str) -> None:
    reply = refusal('[2,"m1","Heartbeat"]', version)
    assert reply is not None and reply[:3] == [4, "m1", code]


def test_a_message_id_longer_than_36_characters_is_refused() -> None:
    reply = refusal(f'[2,"{"x" * 37}","Heartbeat",{{}}]', "2.0.1")
    assert reply is not None and reply[2] == "RpcFrameworkError"


def test_an_unknown_message_type_is_not_supported_in_201_and_dropped_in_16() -> None:
    reply = refusal('[5,"m1","Heartbeat",{}]', "2.0.1")
    assert reply is not None and reply[:3] == [4, "m1", "MessageTypeNotSupported"]
    assert refusal('[5,"m1","Heartbeat",{}]', "1.6") is None


@pytest.mark.parametrize("text", ['[3,"m1"]', '[3,"m1",[]]', '[4,"m1"]', '[4,"m1",7,"x",{}]'])
def test_a_malformed_answer_is_never_answered(text: str) -> None:
    for version in ("1.6", "2.0.1"):
        assert refusal(text, version) is None


def test_frames_are_compact_json_arrays() -> None:
    assert encode_call("1", "Heartbeat", {}) == '[2,"1","Heartbeat",{}]'
    assert encode_result("1", {"currentTime": "x"}) == '[3,"1",{"currentTime":"x"}]'


def test_decimals_are_written_as_exact_json_numbers() -> None:
    assert dumps({"totalCost": Decimal("3.10")}) == '{"totalCost":3.10}'
    assert dumps({"totalCost": Decimal("1E+2")}) == '{"totalCost":100}'


def test_an_error_code_is_the_versions_wire_spelling() -> None:
    assert format_violation("1.6")().code == "FormationViolation"
    assert format_violation("2.0.1")().code == "FormatViolation"
    frame = orjson.loads(encode_error("9", format_violation("1.6")(details={"cause": "x"})))
    assert frame[0] == 4 and frame[1] == "9" and frame[2] == "FormationViolation"
    assert frame[4] == {"cause": "x"}
