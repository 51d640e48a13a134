"""Wire values to our units, at the edge (STYLE.md "Adapters and entry points translate"):
OCPP sampled values (1.6 strings with ``unit``; 2.0.1 numbers with ``unitOfMeasure {unit,
multiplier}``) become ``MeterSample`` in integer milliwatt-hours, watts and milliamperes through
``Decimal``; timestamps become epoch milliseconds of an aware UTC instant.

Two modes, because refusing a frame has different costs:

* **strict** (MeterValues): an energy register that is not a number, negative, in an unknown
  unit or finer than 1 mWh raises ``SampleError`` (answered ``PropertyConstraintViolation``); so
  does a timestamp we cannot read. The charger sees the problem and the frame is not half-used.
* **lenient** (StopTransaction, TransactionEvent): never raises. A register finer than 1 mWh is
  floored, an unreadable value or timestamp drops that one sample (logged), because a
  CALLERROR to a transaction message would make the charger retry it until it gives up, and the
  session would not be settled (RELIABILITY.md R10).

Choices where the specifications leave room:

* Energy is ``Energy.Active.Import.Register`` (the default measurand) at location ``Outlet`` (the
  default) without a phase; when a charger reports only per-phase registers, L1+L2+L3. Other
  locations are used only when no outlet reading exists.
* ``Power.Active.Import`` and ``Current.Import``: the value without a phase, else the sum over
  L1, L2, L3 (current: the sum over phases is what a tariff's current limit compares with).
  They are rounded half-even to whole W / mA (informational, not billed directly), and a value
  we cannot read is ignored in both modes: it never costs the frame.
* ``SoC`` and the other measurands are not carried: ``MeterSample`` has no field for them.
* Signed values (1.6 ``format: SignedData``, 2.0.1 ``signedMeterValue``) are not decoded here;
  the raw frame is stored by the charging service.
* A timestamp without an offset is read as UTC (both versions require UTC; chargers that omit
  the ``Z`` mean it).

Speed: each meter value is first tried by ``_fast_sample``, which does the same with integer
arithmetic for the common shape (unsigned plain decimals of at most 15 characters, known units,
no rounding of energy) and declines anything else; a declined one (or one it cannot read) goes
through the ``Decimal`` path above, which is the reference and does all the refusing and
logging. The fast path never raises and never logs, so declining costs only time.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final, NamedTuple

from evbilling.domain.metering import MeterSample
from evbilling.domain.money import Currency
from evbilling.services.ports import LiveCost

logger = logging.getLogger("evbilling.ocpp")

ENERGY_REGISTER: Final = "Energy.Active.Import.Register"
POWER: Final = "Power.Active.Import"
CURRENT: Final = "Current.Import"

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS: Final = dt.timedelta(milliseconds=1)
_NUMBER: Final = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?\s*")
_PHASES: Final = ("L1", "L2", "L3")
#: Unit -> factor to our unit (mWh for energy, W for power, mA for current).
_ENERGY_UNITS: Final = {"Wh": Decimal(1000), "kWh": Decimal(1_000_000)}
_POWER_UNITS: Final = {"W": Decimal(1), "kW": Decimal(1000)}
_CURRENT_UNITS: Final = {"A": Decimal(1000)}
#: Multipliers (2.0.1 ``unitOfMeasure.multiplier``, a power of ten) we accept.
_MAX_MULTIPLIER: Final = 9
#: Samples taken from one frame (a day of 1-minute samples is 1 440).
MAX_SAMPLES_PER_FRAME: Final = 10_000


class SampleError(ValueError):
    """A sampled value or timestamp we refuse (strict mode only)."""


# -- time -----------------------------------------------------------------------------------------

def epoch_ms(text: Any) -> int:
    """An OCPP dateTime as epoch milliseconds (sub-millisecond digits floored). Raises
    ``ValueError`` when it is not an ISO 8601 date-time."""
    if not isinstance(text, str) or len(text) > 40 or len(text) < 16:
        raise ValueError(f"not an OCPP dateTime: {text!r:.60}")
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _ONE_MS


def epoch_ms_or(text: Any, fallback_ms: int) -> int:
    try:
        return epoch_ms(text)
    except ValueError:
        logger.warning("unreadable timestamp %r; using the time of receipt", text)
        return fallback_ms


def iso_utc(at_ms: int) -> str:
    """Epoch ms as an OCPP dateTime, UTC, millisecond precision: ``2024-05-01T12:00:00.000Z``."""
    seconds, ms = divmod(at_ms, 1000)
    at = dt.datetime.fromtimestamp(seconds, dt.UTC)
    if at.year < 1000:  # strftime does not pad the year; kept as it was
        return at.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"
    # isoformat: "YYYY-MM-DDTHH:MM:SS+00:00" (no microseconds), a third of strftime's cost
    return f"{at.isoformat()[:19]}.{ms:03d}Z"


# -- numbers --------------------------------------------------------------------------------------

def decimal_of(value: Any) -> Decimal:
    """A sampled value as an exact Decimal: 1.6 sends strings, 2.0.1 numbers (orjson gives a
    float; its shortest repr is the text the charger sent). Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return Decimal(repr(value))
    if isinstance(value, str) and len(value) <= 40 and _NUMBER.fullmatch(value):
        try:
            return Decimal(value.strip())
        except InvalidOperation as exc:  # pragma: no cover - the pattern excludes it
            raise ValueError(str(exc)) from exc
    raise ValueError(f"not a number: {value!r:.40}")


def scaled(value: Decimal, unit: str, units: Mapping[str, Decimal], multiplier: int) -> Decimal:
    """``value`` in ``unit`` times 10**multiplier, in our unit. Raises ``ValueError``."""
    factor = units.get(unit)
    if factor is None:
        raise ValueError(f"unit {unit!r} is not one of {sorted(units)}")
    if not -_MAX_MULTIPLIER <= multiplier <= _MAX_MULTIPLIER:
        raise ValueError(f"multiplier {multiplier} is out of range")
    return (value * factor).scaleb(multiplier)


def display_amount(cost: LiveCost) -> Decimal:
    """The cost a charger shows: incl. VAT, rounded once to the currency's minor unit by the
    service (``LiveCost.amount_minor_incl``), in major units: 331 EUR cents -> 3.31."""
    return Decimal(cost.amount_minor_incl).scaleb(-Currency.of(cost.currency).exponent)


def _rounded(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_HALF_EVEN))


# -- sampled values -------------------------------------------------------------------------------

class _Reading(NamedTuple):
    """One sampled value of a measurand we use, version-neutral."""

    measurand: str
    phase: str | None
    location: str | None
    unit: str
    multiplier: int
    value: Any


#: The measurands a sample carries, with their default unit.
_USED: Final = {ENERGY_REGISTER: "Wh", POWER: "W", CURRENT: "A"}


def _readings_v16(sampled: Iterable[Mapping[str, Any]]) -> list[_Reading]:
    out = []
    for sv in sampled:
        measurand = sv.get("measurand", ENERGY_REGISTER)
        default_unit = _USED.get(measurand)
        if default_unit is None or sv.get("format") == "SignedData":
            continue
        out.append(_Reading(measurand, sv.get("phase"), sv.get("location"),
                            sv.get("unit", default_unit), 0, sv.get("value")))
    return out


def _readings_v201(sampled: Iterable[Mapping[str, Any]]) -> list[_Reading]:
    out = []
    for sv in sampled:
        measurand = sv.get("measurand", ENERGY_REGISTER)
        default_unit = _USED.get(measurand)
        if default_unit is None:
            continue
        uom = sv.get("unitOfMeasure")
        if uom is None:
            out.append(_Reading(measurand, sv.get("phase"), sv.get("location"), default_unit,
                                0, sv.get("value")))
        else:
            out.append(_Reading(measurand, sv.get("phase"), sv.get("location"),
                                uom.get("unit", default_unit), uom.get("multiplier", 0),
                                sv.get("value")))
    return out


def _pick(readings: list[_Reading], measurand: str) -> list[_Reading]:
    """The readings of a measurand to use: outlet (or unspecified location) first; the one
    without a phase, else the L1..L3 ones."""
    matching = [r for r in readings if r.measurand == measurand]
    if not matching:
        return []
    outlet = [r for r in matching if r.location in (None, "Outlet")]
    chosen = outlet or matching
    total = [r for r in chosen if r.phase is None]
    if total:
        return total[:1]
    return [r for r in chosen if r.phase in _PHASES]


def _energy_milliwh(readings: list[_Reading], strict: bool) -> int | None:
    picked = _pick(readings, ENERGY_REGISTER)
    if not picked:
        return None
    total = 0
    for reading in picked:
        try:
            milliwh = scaled(decimal_of(reading.value), reading.unit, _ENERGY_UNITS,
                             reading.multiplier)
        except ValueError as exc:
            if strict:
                raise SampleError(f"energy register: {exc}") from exc
            logger.warning("energy register dropped: %s", exc)
            return None
        if milliwh < 0:
            if strict:
                raise SampleError("energy register: a register reading is never negative")
            logger.warning("negative energy register %s dropped", milliwh)
            return None
        whole = milliwh.to_integral_value(ROUND_FLOOR)
        if whole != milliwh:
            if strict:
                raise SampleError(
                    f"energy register: {reading.value} {reading.unit} is finer than 1 mWh")
            logger.warning("energy register %s mWh floored", milliwh)
        total += int(whole)
    return total


def _summed(readings: list[_Reading], measurand: str, units: Mapping[str, Decimal]
            ) -> int | None:
    picked = _pick(readings, measurand)
    if not picked:
        return None
    try:
        return _rounded(sum((scaled(decimal_of(r.value), r.unit, units, r.multiplier)
                             for r in picked), Decimal(0)))
    except ValueError:
        return None  # informational: a value we cannot read is ignored


def _sample(at: Any, readings: list[_Reading], charging: bool | None, strict: bool,
            fallback_ms: int | None) -> MeterSample | None:
    try:
        at_ms = epoch_ms(at)
    except ValueError as exc:
        if strict:
            raise SampleError(f"meter value timestamp: {exc}") from exc
        if fallback_ms is None:
            logger.warning("sample with unreadable timestamp %r dropped", at)
            return None
        at_ms = fallback_ms
    return MeterSample(at_ms=at_ms, energy_milliwh=_energy_milliwh(readings, strict),
                       power_w=_summed(readings, POWER, _POWER_UNITS),
                       current_ma=_summed(readings, CURRENT, _CURRENT_UNITS),
                       charging=charging)


def samples_v16(meter_values: Iterable[Mapping[str, Any]], *, charging: bool | None = None,
                strict: bool) -> tuple[MeterSample, ...]:
    """OCPP 1.6 ``meterValue`` / ``transactionData`` elements -> one sample each."""
    out: list[MeterSample] = []
    for mv in meter_values:
        if len(out) >= MAX_SAMPLES_PER_FRAME:
            if strict:
                raise SampleError(f"at most {MAX_SAMPLES_PER_FRAME} meter values per frame")
            logger.warning("meter values beyond %d in one frame dropped", MAX_SAMPLES_PER_FRAME)
            break
        sample = _fast_sample(mv, False, charging)
        if sample is None:
            sample = _sample(mv.get("timestamp"), _readings_v16(mv.get("sampledValue") or ()),
                             charging, strict, None)
        if sample is not None:
            out.append(sample)
    return tuple(out)


def samples_v201(meter_values: Iterable[Mapping[str, Any]], *, charging: bool | None = None,
                 strict: bool) -> tuple[MeterSample, ...]:
    """OCPP 2.0.1 ``meterValue`` elements -> one sample each."""
    out: list[MeterSample] = []
    for mv in meter_values:
        if len(out) >= MAX_SAMPLES_PER_FRAME:
            if strict:
                raise SampleError(f"at most {MAX_SAMPLES_PER_FRAME} meter values per frame")
            logger.warning("meter values beyond %d in one frame dropped", MAX_SAMPLES_PER_FRAME)
            break
        sample = _fast_sample(mv, True, charging)
        if sample is None:
            sample = _sample(mv.get("timestamp"), _readings_v201(mv.get("sampledValue") or ()),
                             charging, strict, None)
        if sample is not None:
            out.append(sample)
    return tuple(out)


# -- the fast path --------------------------------------------------------------------------------
# Integer arithmetic for the common shape; None means "declined", never "no sample".

#: Unit -> power of ten to our unit (mirrors ``_ENERGY_UNITS`` etc.).
_ENERGY_EXPONENTS: Final = {"Wh": 3, "kWh": 6}
_POWER_EXPONENTS: Final = {"W": 0, "kW": 3}
_CURRENT_EXPONENTS: Final = {"A": 3}
#: Longer values take the Decimal path (so its 28-digit context never rounds what we compare).
_MAX_FAST_CHARS: Final = 15
_MAX_FAST_INT: Final = 10**14
_OUTLET: Final = (None, "Outlet")


def _fixed(value: Any) -> tuple[int, int] | None:
    """``value`` as (digits, decimals), exactly ``digits / 10**decimals``, when it is an
    unsigned plain decimal (``"1234.5"``, ``1234.5``, ``1234``); None otherwise."""
    kind = type(value)
    if kind is str:
        text = value
    elif kind is int:
        return (value, 0) if 0 <= value < _MAX_FAST_INT else None
    elif kind is float:
        text = repr(value)  # what ``decimal_of`` reads: the shortest repr, exactly
    else:
        return None
    if len(text) > _MAX_FAST_CHARS or not text.isascii():
        return None
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        return None
    return int(whole + fraction), len(fraction)


def _fast_total(picked: list[tuple[Any, Any, Any, Any, Any]], exponents: Mapping[str, int]
                ) -> tuple[int, int] | None:
    """The sum of the picked readings in our unit, exactly ``numerator / 10**decimals``, as
    (numerator, decimals); None: declined."""
    numerator = 0
    scale = 0
    for _, _, unit, multiplier, value in picked:
        exponent = exponents.get(unit) if type(unit) is str else None
        if exponent is None or type(multiplier) is not int or \
                not -_MAX_MULTIPLIER <= multiplier <= _MAX_MULTIPLIER:
            return None
        fixed = _fixed(value)
        if fixed is None:
            return None
        digits, decimals = fixed
        shift = decimals - exponent - multiplier
        if shift > scale:
            numerator *= 10 ** (shift - scale)
            scale = shift
        numerator += digits * 10 ** (scale - shift)
    return numerator, scale


def _fast_pick(readings: list[tuple[Any, Any, Any, Any, Any]]
               ) -> list[tuple[Any, Any, Any, Any, Any]]:
    """``_pick`` on (phase, location, unit, multiplier, value) of one measurand."""
    if len(readings) == 1:  # chosen whatever its location
        phase = readings[0][0]
        return readings if phase is None or phase in _PHASES else []
    outlet = [r for r in readings if r[1] in _OUTLET]
    chosen = outlet or readings
    for r in chosen:
        if r[0] is None:
            return [r]
    return [r for r in chosen if r[0] in _PHASES]


def _fast_rounded(picked: list[tuple[Any, Any, Any, Any, Any]], exponents: Mapping[str, int]
                  ) -> int | None:
    """Like ``_summed`` (half-even to a whole unit); raises ``LookupError`` to decline."""
    if not picked:
        return None
    total = _fast_total(picked, exponents)
    if total is None:
        raise LookupError
    numerator, scale = total
    whole: int = 10**scale
    quotient, remainder = divmod(numerator, whole)
    if 2 * remainder > whole or (2 * remainder == whole and quotient % 2 == 1):
        quotient += 1
    return quotient


def _fast_sample(mv: Any, v201: bool, charging: bool | None) -> MeterSample | None:
    """One meter value like ``_sample`` in either mode, or None: declined (take that path)."""
    if type(mv) is not dict:
        return None
    sampled = mv.get("sampledValue")
    if type(sampled) is not list or not sampled:
        return None
    try:
        at_ms = epoch_ms(mv.get("timestamp"))
    except ValueError:
        return None
    by_measurand: dict[str, list[tuple[Any, Any, Any, Any, Any]]] = {
        ENERGY_REGISTER: [], POWER: [], CURRENT: []}
    for sv in sampled:
        if type(sv) is not dict:
            return None
        measurand = sv.get("measurand", ENERGY_REGISTER)
        if type(measurand) is not str:
            return None
        default_unit = _USED.get(measurand)
        if default_unit is None:
            continue
        if v201:
            uom = sv.get("unitOfMeasure")
            if uom is None:
                unit, multiplier = default_unit, 0
            elif type(uom) is dict:
                unit, multiplier = uom.get("unit", default_unit), uom.get("multiplier", 0)
            else:
                return None
        else:
            if sv.get("format") == "SignedData":
                continue
            unit, multiplier = sv.get("unit", default_unit), 0
        by_measurand[measurand].append(
            (sv.get("phase"), sv.get("location"), unit, multiplier, sv.get("value")))
    energy_milliwh = None
    energy = by_measurand[ENERGY_REGISTER]
    if energy:
        picked = _fast_pick(energy)
        if picked:
            energy_milliwh = 0
            for reading in picked:
                total = _fast_total([reading], _ENERGY_EXPONENTS)
                if total is None:
                    return None
                whole, remainder = divmod(total[0], 10 ** total[1])
                if remainder:
                    return None  # finer than 1 mWh: refused or floored with a log line
                energy_milliwh += whole
    try:
        power_w = _fast_rounded(_fast_pick(by_measurand[POWER]) if by_measurand[POWER]
                                else [], _POWER_EXPONENTS)
        current_ma = _fast_rounded(_fast_pick(by_measurand[CURRENT]) if by_measurand[CURRENT]
                                   else [], _CURRENT_EXPONENTS)
    except LookupError:
        return None
    return MeterSample(at_ms=at_ms, energy_milliwh=energy_milliwh, power_w=power_w,
                       current_ma=current_ma, charging=charging)


def register_at(samples: Iterable[MeterSample]) -> MeterSample | None:
    """The last sample that carries an energy register (the latest reading of a frame)."""
    last = None
    for sample in samples:
        if sample.energy_milliwh is not None and (last is None or sample.at_ms >= last.at_ms):
            last = sample
    return last


def first_register(samples: Iterable[MeterSample]) -> MeterSample | None:
    first = None
    for sample in samples:
        if sample.energy_milliwh is not None and (first is None or sample.at_ms < first.at_ms):
            first = sample
    return first


#: 2.0.1 ``transactionInfo.chargingState`` -> ``MeterSample.charging``.
CHARGING_STATES: Final[dict[str, bool]] = {
    "Charging": True, "SuspendedEV": False, "SuspendedEVSE": False, "EVConnected": False,
    "Idle": False,
}
#: 1.6 connector status -> ``MeterSample.charging`` (None: no statement about charging).
CONNECTOR_CHARGING_V16: Final[dict[str, bool]] = {
    "Charging": True, "SuspendedEV": False, "SuspendedEVSE": False, "Finishing": False,
}
