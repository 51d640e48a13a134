"""Small helpers to read OCPI JSON (already decoded with ``parse_float=Decimal``) with errors
that name the exact field, e.g. ``elements[2].price_components[0].price: must be a number``.

Shared by the tariff and CDR parsers; pure, no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import NoReturn, TypeVar

from evbilling.domain.errors import InvalidDocumentError

E = TypeVar("E", bound=Enum)
T = TypeVar("T")

_TIME_RE = re.compile(r"([0-1][0-9]|2[0-3]):[0-5][0-9]")
_DATE_RE = re.compile(r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")


class Reader:
    """Reads one JSON object, raising ``error_type(field_path, reason)`` on bad input."""

    def __init__(
        self,
        data: object,
        path: str,
        error_type: type[InvalidDocumentError] = InvalidDocumentError,
    ) -> None:
        self.path = path
        self.error_type = error_type
        if not isinstance(data, Mapping):
            self.fail("", f"must be a JSON object, got {_kind(data)}")
        self.data: Mapping[str, object] = data

    # -- plumbing ----------------------------------------------------------------------------
    def field_path(self, key: str) -> str:
        if not key:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str) -> NoReturn:
        raise self.error_type(self.field_path(key), reason)

    def child(self, key: str, data: object) -> Reader:
        return Reader(data, self.field_path(key), self.error_type)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> object:
        return self.data.get(key)

    def _get(self, key: str, required: bool) -> object:
        value = self.data.get(key)
        if value is None and required:
            self.fail(key, "is required")
        return value

    # -- typed getters -------------------------------------------------------------------------
    def string(self, key: str, *, required: bool = False, max_length: int | None = None
               ) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {_kind(value)}")
        if max_length is not None and len(value) > max_length:
            self.fail(key, f"must be at most {max_length} characters")
        return value

    def req_string(self, key: str, *, max_length: int | None = None) -> str:
        value = self.string(key, required=True, max_length=max_length)
        if value is None:  # pragma: no cover - required=True already raised
            self.fail(key, "is required")
        return value

    def number(self, key: str, *, required: bool = False, minimum: Decimal | None = None
               ) -> Decimal | None:
        value = self._get(key, required)
        if value is None:
            return None
        number = to_decimal(value, lambda reason: self.fail(key, reason))
        if minimum is not None and number < minimum:
            self.fail(key, f"must be at least {minimum}, got {number}")
        return number

    def req_number(self, key: str, *, minimum: Decimal | None = None) -> Decimal:
        value = self.number(key, required=True, minimum=minimum)
        if value is None:  # pragma: no cover
            self.fail(key, "is required")
        return value

    def integer(self, key: str, *, required: bool = False, minimum: int | None = None
                ) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        number = to_decimal(value, lambda reason: self.fail(key, reason))
        if number != number.to_integral_value():
            self.fail(key, f"must be a whole number, got {number}")
        if minimum is not None and number < minimum:
            self.fail(key, f"must be at least {minimum}, got {number}")
        return int(number)

    def enum(self, key: str, enum_type: type[E], *, required: bool = False) -> E | None:
        value = self._get(key, required)
        if value is None:
            return None
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in enum_type)
            self.fail(key, f"must be one of {allowed}; got {value!r}")

    def datetime(self, key: str, *, required: bool = False) -> dt.datetime | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        return parse_datetime(value, lambda reason: self.fail(key, reason))

    def time_of_day(self, key: str) -> dt.time | None:
        value = self.string(key)
        if value is None:
            return None
        if not _TIME_RE.fullmatch(value):
            self.fail(key, f"must be a time of day HH:MM (00:00-23:59), got {value!r}")
        return dt.time(int(value[:2]), int(value[3:]))

    def date(self, key: str) -> dt.date | None:
        value = self.string(key)
        if value is None:
            return None
        if not _DATE_RE.fullmatch(value):
            self.fail(key, f"must be a date YYYY-MM-DD, got {value!r}")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(key, f"is not a calendar date: {value!r}")

    def array(self, key: str, *, required: bool = False, non_empty: bool = False
              ) -> list[object]:
        value = self._get(key, required)
        if value is None:
            if non_empty:
                self.fail(key, "must be a non-empty list")
            return []
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_kind(value)}")
        if non_empty and not value:
            self.fail(key, "must be a non-empty list")
        return value

    def objects(self, key: str, parse: Callable[[Reader], T], *, required: bool = False,
                non_empty: bool = False) -> tuple[T, ...]:
        items = self.array(key, required=required, non_empty=non_empty)
        return tuple(parse(self.child(f"{key}[{i}]", item)) for i, item in enumerate(items))


def to_decimal(value: object, fail: Callable[[str], NoReturn]) -> Decimal:
    """A JSON number as an exact Decimal. Floats are refused: decode with parse_float=Decimal."""
    if isinstance(value, bool):
        fail(f"must be a number, got {_kind(value)}")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INTEGER_DIGITS:
            fail(f"is out of range (at most {MAX_INTEGER_DIGITS} integer digits)")
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            fail("must be a finite number")
        _check_size(value, fail)
        return value
    if isinstance(value, float):
        fail("is a binary float; decode JSON with parse_float=Decimal to keep it exact")
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            fail(f"must be a number, got {value!r}")
        if not number.is_finite():
            fail("must be a finite number")
        _check_size(number, fail)
        return number
    fail(f"must be a number, got {_kind(value)}")


#: No number in an OCPI document needs more: 12 integer digits, 40 significant digits.
MAX_INTEGER_DIGITS = 12
MAX_SIGNIFICANT_DIGITS = 40


def _check_size(number: Decimal, fail: Callable[[str], NoReturn]) -> None:
    _sign, digits, exponent = number.as_tuple()
    if len(digits) > MAX_SIGNIFICANT_DIGITS or (
            isinstance(exponent, int) and len(digits) + exponent > MAX_INTEGER_DIGITS):
        fail(f"is out of range (at most {MAX_INTEGER_DIGITS} integer digits)")


def parse_datetime(value: str, fail: Callable[[str], NoReturn]) -> dt.datetime:
    """RFC 3339 / OCPI DateTime. A value without offset is UTC, as OCPI requires."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"must be an ISO 8601 date-time such as 2015-06-29T20:39:09Z, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
