"""The integer fast path of the sample conversion (``conversions._fast_sample``) against the
``Decimal`` reference path (``_sample`` on ``_readings_v16`` / ``_readings_v201``): whatever it
converts, it converts to the same ``MeterSample`` the reference gives, in both modes, where the
reference neither raises nor logs; whatever it declines, ``samples_v16`` / ``samples_v201``
answer exactly as the reference does (same samples, same exception and message).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evbilling.domain.metering import MeterSample
from evbilling.entrypoints.ocpp import conversions
from evbilling.entrypoints.ocpp.conversions import (
    SampleError,
    _fast_sample,
    _fixed,
    _readings_v16,
    _readings_v201,
    _sample,
    decimal_of,
    iso_utc,
    samples_v16,
    samples_v201,
)

MEASURANDS = ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
              "Voltage", "SoC", "Energy.Active.Export.Register"]
UNITS = ["Wh", "kWh", "W", "kW", "A", "V", "varh", "Percent", "wh"]

digits = st.text("0123456789", min_size=1, max_size=18)
decimal_texts = st.one_of(
    digits,
    st.tuples(digits, digits).map(lambda t: f"{t[0]}.{t[1]}"),
    st.tuples(st.integers(0, 10**6), st.integers(0, 6)).map(
        lambda t: f"{t[0] // 10**t[1]}.{t[0] % 10**t[1]:0{t[1]}d}" if t[1] else str(t[0])),
    st.sampled_from(["0", "0.0", "-0", "-1.5", "1.", ".5", " 12", "12 ", "1e3", "1E-3", "+4",
                     "1_000", "\u0661\u0662", "NaN", "inf", "", "abc", "1.2.3", "0.0005",
                     "0.0015", "0.0025", "2.5", "3.5", "12500.5", "11.04", "16.0"]),
)
numbers = st.one_of(
    decimal_texts,
    st.integers(-10, 10**16),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=10**6).map(lambda f: round(f, 3)),
    st.sampled_from([True, False, None, [], {}]),
)
timestamps = st.one_of(
    st.sampled_from(["2024-05-01T10:05:00Z", "2024-05-01T10:05:00.123Z",
                     "2024-05-01T12:05:00+02:00", "2024-05-01T10:05:00", "soon", "", 5, None,
                     "2024-02-30T10:00:00Z", "2024-05-01T10:05:00.1234567Z"]),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
)


def _maybe(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), values.map(lambda v: {key: v}))


def _sampled_value(v201: bool) -> st.SearchStrategy[Any]:
    common = st.tuples(
        _maybe("measurand", st.sampled_from(MEASURANDS) | st.sampled_from([5, None])),
        _maybe("phase", st.sampled_from(["L1", "L2", "L3", "N", "L1-N", None, 1])),
        _maybe("location", st.sampled_from(["Outlet", "Inlet", "EV", "Cable", None])),
        _maybe("value", numbers),
    )
    if v201:
        uom = st.fixed_dictionaries({}, optional={
            "unit": st.sampled_from(UNITS) | st.just(3),
            "multiplier": st.integers(-12, 12) | st.sampled_from([True, 1.0, "1"])})
        extra = _maybe("unitOfMeasure", uom | st.sampled_from([None, [], "Wh"]))
    else:
        extra = st.tuples(_maybe("unit", st.sampled_from(UNITS) | st.just(None)),
                          _maybe("format", st.sampled_from(["Raw", "SignedData"]))).map(
            lambda t: {**t[0], **t[1]})
    dicts = st.tuples(common, extra).map(
        lambda t: {k: v for part in (*t[0], t[1]) for k, v in part.items()})
    return st.one_of(dicts, dicts, dicts, dicts, st.sampled_from([None, "sv", 3]))


def meter_values(v201: bool) -> st.SearchStrategy[Any]:
    mv = st.fixed_dictionaries({}, optional={
        "timestamp": timestamps,
        "sampledValue": st.lists(_sampled_value(v201), max_size=10) |
        st.sampled_from(["abc", None, 5])})
    return st.one_of(mv, mv, mv, mv, st.sampled_from([None, [], "mv"]))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _reference(mv: Any, v201: bool, strict: bool) -> tuple[str, Any, list[str]]:
    """What the Decimal path does with one meter value: (outcome, value, log lines)."""
    handler = _Records()
    logger = logging.getLogger("evbilling.ocpp")
    logger.addHandler(handler)
    try:
        readings = (_readings_v201 if v201 else _readings_v16)(mv.get("sampledValue") or ())
        return "sample", _sample(mv.get("timestamp"), readings, True, strict, None), \
            handler.records
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return "raised", (type(exc), str(exc)), handler.records
    finally:
        logger.removeHandler(handler)


def _public(mv: Any, v201: bool, strict: bool) -> tuple[str, Any]:
    try:
        samples = (samples_v201 if v201 else samples_v16)([mv], charging=True, strict=strict)
    except Exception as exc:  # noqa: BLE001
        return "raised", (type(exc), str(exc))
    return "sample", samples[0] if samples else None


@pytest.mark.parametrize("v201", [False, True], ids=["1.6", "2.0.1"])
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_fast_path_converts_as_the_decimal_path_or_declines(v201: bool,
                                                                data: st.DataObject) -> None:
    mv = data.draw(meter_values(v201))
    fast = _fast_sample(mv, v201, True)
    for strict in (True, False):
        outcome, value, logged = _reference(mv, v201, strict)
        if fast is not None:
            assert (outcome, value, logged) == ("sample", fast, [])
        assert _public(mv, v201, strict) == (outcome, value)


def common_meter_value(v201: bool) -> st.SearchStrategy[dict[str, Any]]:
    """The shape chargers send: plain decimals in known units."""
    def sv(measurand: str, units: list[str], phase: str | None, decimals: int
           ) -> st.SearchStrategy[dict[str, Any]]:
        def build(t: tuple[int, int, str]) -> dict[str, Any]:
            amount, places, unit = t
            text = f"{amount / 10**places:.{places}f}"
            out: dict[str, Any] = {"measurand": measurand}
            if phase is not None:
                out["phase"] = phase
            if v201:
                out["value"] = float(text) if places else amount
                out["unitOfMeasure"] = {"unit": unit}
            else:
                out["value"], out["unit"] = text, unit
            return out
        # at least 1 (a float below 1e-4 is written with an exponent: the reference's job)
        return st.tuples(st.integers(10**decimals, 10**9), st.integers(0, decimals),
                         st.sampled_from(units)).map(build)

    return st.tuples(
        sv("Energy.Active.Import.Register", ["Wh"], None, 3),
        sv("Power.Active.Import", ["W", "kW"], None, 4),
        sv("Current.Import", ["A"], "L1", 5), sv("Current.Import", ["A"], "L2", 5),
        sv("Voltage", ["V"], "L1-N", 2),
        st.datetimes(timezones=st.none()).map(lambda d: d.isoformat() + "Z"),
    ).map(lambda t: {"timestamp": t[-1], "sampledValue": list(t[:-1])})


@pytest.mark.parametrize("v201", [False, True], ids=["1.6", "2.0.1"])
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_common_meter_values_take_the_fast_path_with_the_same_result(
        v201: bool, data: st.DataObject) -> None:
    mv = data.draw(common_meter_value(v201))
    fast = _fast_sample(mv, v201, True)
    assert fast is not None
    assert _reference(mv, v201, True) == ("sample", fast, [])


@given(st.one_of(decimal_texts, numbers))
@settings(max_examples=1000)
def test_a_fixed_decimal_is_exactly_what_decimal_of_reads(value: Any) -> None:
    fixed = _fixed(value)
    if fixed is not None:
        assert Decimal(fixed[0]).scaleb(-fixed[1]) == decimal_of(value)


@pytest.mark.parametrize(("kw", "watts"), [("0.0005", 0), ("0.0015", 2), ("0.0025", 2),
                                           ("0.0035", 4), ("11.0404", 11040)])
def test_fast_power_rounds_half_even_to_whole_watts(kw: str, watts: int) -> None:
    mv = {"timestamp": "2024-05-01T10:00:00Z", "sampledValue": [
        {"value": kw, "measurand": "Power.Active.Import", "unit": "kW"}]}
    assert _fast_sample(mv, False, None) == MeterSample(1_714_557_600_000, None, watts)


def test_fast_current_sums_phases_before_rounding() -> None:
    # 0.0004 + 0.0004 + 0.0004 A = 1.2 mA -> 1 (rounding each phase first would give 0)
    mv = {"timestamp": "2024-05-01T10:00:00Z", "sampledValue": [
        {"value": "0.0004", "measurand": "Current.Import", "phase": p, "unit": "A"}
        for p in ("L1", "L2", "L3")]}
    sample = _fast_sample(mv, False, None)
    assert sample is not None and sample.current_ma == 1


def test_an_energy_register_finer_than_a_milliwatt_hour_is_left_to_the_reference() -> None:
    mv = {"timestamp": "2024-05-01T10:00:00Z", "sampledValue": [{"value": "1.0009"}]}
    assert _fast_sample(mv, False, None) is None
    with pytest.raises(SampleError, match="finer than 1 mWh"):
        samples_v16([mv], strict=True)
    assert conversions.samples_v16([mv], strict=False)[0].energy_milliwh == 1000


_UNITS_OF = {"Energy.Active.Import.Register": ["Wh", "kWh"], "Power.Active.Import": ["W", "kW"],
             "Current.Import": ["A"], "Voltage": ["V"], "SoC": ["Percent"]}
_EXPONENT_OF = {"Wh": 3, "kWh": 6, "W": 0, "kW": 3, "A": 3, "V": 0, "Percent": 0}


@st.composite
def varied_sampled_value(draw: st.DrawFn, v201: bool) -> dict[str, Any]:
    """Readable values in a unit of their measurand, at any location and phase; energy never
    finer than 1 mWh when the multiplier is not negative."""
    measurand = draw(st.sampled_from(sorted(_UNITS_OF)))
    unit = draw(st.sampled_from(_UNITS_OF[measurand]))
    multiplier = draw(st.integers(-3, 3)) if v201 else 0
    places = draw(st.integers(0, min(_EXPONENT_OF[unit], 3) if measurand.startswith("Energy")
                              else 4))
    amount = draw(st.integers(10**places, 10**9))
    text = f"{amount / 10**places:.{places}f}"
    out: dict[str, Any] = {"measurand": measurand}
    for key, choices in (("phase", ["L1", "L2", "L3", "N", "L1-N"]),
                         ("location", ["Outlet", "Inlet", "EV", "Cable"])):
        choice = draw(st.none() | st.sampled_from(choices))
        if choice is not None:
            out[key] = choice
    if v201:
        out["value"] = float(text) if places else amount
        out["unitOfMeasure"] = {"unit": unit, "multiplier": multiplier}
    else:
        out["value"], out["unit"] = text, unit
    return out


@pytest.mark.parametrize("v201", [False, True], ids=["1.6", "2.0.1"])
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_locations_phases_and_multipliers_pick_and_scale_as_the_reference(
        v201: bool, data: st.DataObject) -> None:
    sampled = data.draw(st.lists(varied_sampled_value(v201), min_size=1, max_size=8))
    mv = {"timestamp": "2024-05-01T10:00:00Z", "sampledValue": sampled}
    fast = _fast_sample(mv, v201, None)
    if all(sv.get("unitOfMeasure", {}).get("multiplier", 0) >= 0 for sv in sampled):
        assert fast is not None
    if fast is not None:
        assert _reference(mv, v201, True) == ("sample", dataclasses.replace(fast, charging=True),
                                              [])


def _iso_utc_reference(at_ms: int) -> str:
    seconds, ms = divmod(at_ms, 1000)
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


@given(st.integers(-62_135_596_800_000, 253_402_300_799_999) |
       st.integers(-10**15, 10**15) | st.sampled_from([0, -1, 999, 1000, -62_104_060_800_001]))
@settings(max_examples=2000)
def test_iso_utc_writes_what_strftime_wrote(at_ms: int) -> None:
    try:
        expected = _iso_utc_reference(at_ms)
    except (ValueError, OverflowError, OSError) as exc:
        with pytest.raises(type(exc)):
            iso_utc(at_ms)
        return
    assert iso_utc(at_ms) == expected
