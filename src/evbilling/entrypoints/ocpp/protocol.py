"""OCPP-J framing (RPC layer): decode a WebSocket text frame into a CALL, CALLRESULT or
CALLERROR, encode our answers and calls, and pick the wire error code of each protocol version.

The message model is the ``ocpp`` library's (``ocpp.messages.MessageType``: CALL 2, CALLRESULT 3,
CALLERROR 4) and so are the error classes (``ocpp.exceptions``: an error's ``code`` is its wire
code). What we do not take from the library is its per-message machinery (stdlib ``json``,
``jsonschema`` in a thread pool, snake_case renaming): frames are parsed and written with
``orjson`` here and validated by ``validation.py``; see docs/ocpp.md, "Performance design".

Spelling differs between versions and is kept as the specifications keep it (OCPP-J 1.6 errata
§5, "known issues that will not be fixed"): 1.6 says ``FormationViolation``, 2.0.1
``FormatViolation``; both say ``OccurenceConstraintViolation`` (``OccurrenceConstraintViolation``
only arrives with 2.1). OCPP 2.0.1 adds ``RpcFrameworkError`` and ``MessageTypeNotSupported``,
which the library lacks; they are defined below in the library's style.

What a broken frame gets (precedence top-down; docs/ocpp.md, "Error mapping"):

* not JSON, not an array, no readable message id: 2.0.1 answers a CALLERROR
  ``RpcFrameworkError`` with message id ``"-1"`` (OCPP-J 2.0.1 §4.2.3); 1.6 defines no answer, so
  the frame is logged and dropped. When the id *can* be read from a frame that is not valid JSON,
  both versions answer ``FormationViolation`` / ``FormatViolation`` with that id.
* an unknown MessageTypeId: 2.0.1 ``MessageTypeNotSupported``; 1.6 drops it.
* a CALL with the wrong number of elements or a non-string action: 2.0.1 ``RpcFrameworkError``,
  1.6 ``ProtocolError``; a payload that is not an object: ``FormationViolation`` /
  ``FormatViolation``.
* a malformed CALLRESULT or CALLERROR is never answered (a CALLERROR may only answer a CALL): it
  is logged and dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import orjson
from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    OCPPError,
    ProtocolError,
)
from ocpp.messages import MessageType

Version = Literal["1.6", "2.0.1"]
VERSIONS: Final = ("1.6", "2.0.1")
#: WebSocket subprotocol per version (OCPP-J 1.6 §3.1.2, OCPP-J 2.0.1 §3.1.2).
SUBPROTOCOLS: Final[dict[str, str]] = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}

#: OCPP-J: a message id is a string of at most 36 characters.
MAX_UNIQUE_ID_CHARS: Final = 36
#: Frames larger than this are not parsed (a StopTransaction with a day of 1-minute samples is
#: about 0.5 MB; uvicorn's own limit, ``--ws-max-size``, should be set a little above this).
MAX_FRAME_CHARS: Final = 1 << 20
#: errorDescription is at most 255 characters in 2.0.1; we keep both versions within it.
MAX_ERROR_DESCRIPTION_CHARS: Final = 255
UNKNOWN_MESSAGE_ID: Final = "-1"


class RpcFrameworkError(OCPPError):  # type: ignore[misc]  # untyped library
    """OCPP 2.0.1: the content of the frame is not a valid RPC request, e.g. the MessageId
    could not be read."""

    code = "RpcFrameworkError"
    default_description = "Content of the call is not a valid RPC Request"


class MessageTypeNotSupportedError(OCPPError):  # type: ignore[misc]
    """OCPP 2.0.1: a MessageTypeId this implementation does not support."""

    code = "MessageTypeNotSupported"
    default_description = "A message with a MessageTypeId that is not supported was received"


def format_violation(version: str) -> type[OCPPError]:
    """``FormationViolation`` (1.6, errata 5.2: not fixed) or ``FormatViolation`` (2.0.1)."""
    error: type[OCPPError] = FormationViolationError if version == "1.6" \
        else FormatViolationError
    return error


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


Message = Call | CallResult | CallError


class FrameError(Exception):
    """A frame that is not a usable OCPP message. ``reply`` is the CALLERROR to send back
    (already encoded), or None when the specification gives no answer."""

    def __init__(self, reason: str, reply: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


_ID_SNIFF = re.compile(r'^\s*\[\s*2\s*,\s*"([^"\\]{1,36})"')


def decode(text: str | bytes, version: str) -> Message:
    """Parse one frame. Raises ``FrameError`` for anything that is not a well-formed OCPP-J
    message (see the module docstring for what is answered)."""
    if len(text) > MAX_FRAME_CHARS:
        return _unreadable_or_sniffed(text[:200], version, "frame too large")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _unreadable_or_sniffed(text[:200], version, "frame is not valid JSON")
    if type(msg) is not list or not msg:
        raise _unreadable(version, "frame is not a JSON array")
    type_id = msg[0]
    uid = msg[1] if len(msg) > 1 and type(msg[1]) is str else None
    if type_id == MessageType.Call and type(type_id) is int:
        if uid is None:
            raise _unreadable(version, "CALL without a string message id")
        if len(msg) != 4 or type(msg[2]) is not str or len(uid) > MAX_UNIQUE_ID_CHARS:
            error = RpcFrameworkError if version == "2.0.1" else ProtocolError
            raise FrameError("CALL is not [2, id, action, payload]", encode_error(
                uid, error(details={"cause": "a CALL is [2, messageId, action, {payload}] with "
                                    "a message id of at most 36 characters"})))
        if type(msg[3]) is not dict:
            raise FrameError("CALL payload is not an object", encode_error(
                uid, format_violation(version)(details={"cause": "payload is not an object"})))
        return Call(uid, msg[2], msg[3])
    if type_id == MessageType.CallResult and type(type_id) is int:
        if uid is None or len(msg) != 3 or type(msg[2]) is not dict:
            raise FrameError("malformed CALLRESULT (dropped)", None)
        return CallResult(uid, msg[2])
    if type_id == MessageType.CallError and type(type_id) is int:
        # Some chargers omit errorDetails; a CALLERROR is never answered, so be lenient.
        if uid is None or len(msg) not in (4, 5) or type(msg[2]) is not str:
            raise FrameError("malformed CALLERROR (dropped)", None)
        details = msg[4] if len(msg) == 5 and type(msg[4]) is dict else {}
        return CallError(uid, msg[2], str(msg[3]), details)
    if version == "2.0.1":
        raise FrameError("unsupported MessageTypeId", encode_error(
            uid if uid is not None and len(uid) <= MAX_UNIQUE_ID_CHARS else UNKNOWN_MESSAGE_ID,
            MessageTypeNotSupportedError(details={"cause": f"MessageTypeId {type_id!r}"})))
    raise FrameError("unsupported MessageTypeId (dropped: OCPP 1.6 defines no answer)", None)


def _unreadable(version: str, reason: str) -> FrameError:
    if version == "2.0.1":
        return FrameError(reason, encode_error(UNKNOWN_MESSAGE_ID,
                                               RpcFrameworkError(details={"cause": reason})))
    return FrameError(reason + " (dropped: OCPP 1.6 defines no answer without a message id)",
                      None)


def _unreadable_or_sniffed(head: str | bytes, version: str, reason: str) -> Message:
    if isinstance(head, bytes):
        head = head.decode("utf-8", "replace")
    match = _ID_SNIFF.match(head)
    if match is None:
        raise _unreadable(version, reason)
    raise FrameError(reason, encode_error(
        match.group(1), format_violation(version)(details={"cause": reason})))


# -- encoding -----------------------------------------------------------------------------------

def _default(value: Any) -> Any:
    """Decimals are written as JSON numbers, exactly (never through float)."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"cannot encode {type(value).__name__} in an OCPP frame")


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=_default).decode()


def encode_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return dumps([MessageType.Call, unique_id, action, payload])


def encode_result(unique_id: str, payload: dict[str, Any]) -> str:
    return dumps([MessageType.CallResult, unique_id, payload])


def encode_error(unique_id: str, error: OCPPError) -> str:
    description = str(error.description or "")[:MAX_ERROR_DESCRIPTION_CHARS]
    details = error.details if isinstance(error.details, dict) else {}
    try:
        return dumps([MessageType.CallError, unique_id, error.code, description, details])
    except TypeError:  # details we cannot write: the code and description still go out
        return dumps([MessageType.CallError, unique_id, error.code, description, {}])
