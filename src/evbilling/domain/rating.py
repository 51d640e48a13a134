"""OCPI 2.2.1 rating: price a session's charging periods under a tariff. Pure; no I/O.

The rules, from ``mod_tariffs`` and ``mod_cdrs`` (branch release-2.2.1-bugfixes), are written out
with examples in ``docs/rating.md``. In short:

* Per period and per dimension, the first element (in list order) that has a component for that
  dimension and whose restrictions all match is used. Restrictions are evaluated at the period's
  start, in the site's local time; kWh restrictions use the energy consumed before the period,
  duration restrictions the time since the session started.
* Quantities come from the period volumes (ENERGY, TIME, PARKING_TIME, RESERVATION_TIME).
* ``step_size`` is applied once per session: to the ENERGY total with the step of the last period
  that priced energy, and to the total of the *last* time dimension (TIME or PARKING_TIME, whichever
  was priced last) with that period's step; the extra is billed at that last period's price.
  Reservation time is rounded on its own.
* FLAT is charged once per session (first period where an element with FLAT matches), and once
  for a reservation.
* ``min_price`` / ``max_price`` bound the total excl. and incl. VAT independently.

Exactness: quantities are integers (``domain/periods.py``), prices are integer micro-units, so every
cost is an exact integer numerator over ``MONEY_DENOMINATOR``; they become ``Decimal`` only at the
end, at 12 decimal places (``money.quantize_full``). Rating never rounds to cents: that happens
where a price becomes an amount to charge.

``SessionRater`` takes periods one at a time (live cost) and ``rate`` is that rater fed in one go,
so both give the same answer by construction; ``rating_bulk`` is an independent vectorised
implementation that tests compare against this one.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import FrozenInstanceError, dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from evbilling.domain.errors import RatingError
from evbilling.domain.invariants import InvariantViolation
from evbilling.domain.money import (
    PRICE_DECIMALS,
    VAT_DECIMALS,
    Currency,
    quantize_full,
    round_rational,
    to_scaled_int,
)
from evbilling.domain.periods import (
    MAX_PERIODS_PER_SESSION,
    MAX_SESSION_DURATION_MS,
    MAX_SESSION_ENERGY_MILLIWH,
    MILLIWH_PER_KWH,
    MILLIWH_PER_WH,
    MS_PER_HOUR,
    MS_PER_S,
    ChargingPeriod,
    SessionFacts,
    from_epoch_ms,
)
from evbilling.domain.tariffs.model import (
    DimensionType,
    Price,
    PriceComponent,
    ReservationRestriction,
    Tariff,
    TariffElement,
)
from evbilling.domain.timezones import OffsetTable, day_number, offset_table

# -- exact money arithmetic ----------------------------------------------------------------------
#: Every cost is ``numerator / MONEY_DENOMINATOR`` major units. 1.8e13 is the least common
#: denominator of the three products we form:
#:   ENERGY: price [1e-6 / kWh] * energy [1e-6 kWh]   = 1e-12        -> * 18
#:   TIME:   price [1e-6 / h]   * time   [1/3.6e6 h]  = 1/3.6e12     -> * 5
#:   FLAT:   price [1e-6]                             = 1e-6         -> * 18 000 000
MONEY_DENOMINATOR = 18_000_000_000_000
ENERGY_FACTOR = 18
TIME_FACTOR = 5
FLAT_FACTOR = 18_000_000
#: VAT percent in basis points of a percent (21 % = 2100); incl = excl * (10 000 + bp) / 10 000.
VAT_SCALE = 10_000
NO_VAT_BP = 0  # a component without VAT: incl = excl (and the breakdown says "not applicable")

_ENERGY, _TIME, _PARKING, _RESERVATION = 0, 1, 2, 3
_CHARGING, _RESERVED, _EXPIRED = 0, 1, 2


class UnratableSessionError(RatingError):
    code = "unratable_session"


# -- the compiled tariff --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Component:
    price_micro: int
    vat_bp: int  # 0 when vat is None (see has_vat)
    has_vat: bool
    step: int  # in quantity units (milliwh or ms); >= 1

    @property
    def vat_factor(self) -> int:
        return VAT_SCALE + self.vat_bp


@dataclass(frozen=True, slots=True)
class _Element:
    index: int
    tod: tuple[int, int] | None  # (start_s, end_s) seconds of the local day; end 86400 = midnight
    days: tuple[int | None, int | None] | None  # local day numbers [from, to)
    dow_mask: int  # bit i set = weekday i allowed; 0 = every day
    kwh: tuple[int | None, int | None] | None  # milliwh consumed before the period [min, max)
    duration: tuple[int | None, int | None] | None  # ms since session start [min, max)
    current: tuple[int | None, int | None] | None  # mA [min, max)
    power: tuple[int | None, int | None] | None  # W [min, max)
    reservation: ReservationRestriction | None
    energy: _Component | None
    time: _Component | None
    parking: _Component | None
    flat: _Component | None
    #: ``matches`` specialised to this element's restrictions (see ``_build_matcher``).
    matcher: Callable[[int, int, int, int, int, ChargingPeriod], bool] = field(
        init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matcher", _build_matcher(self))

    def matches(self, sod: int, day: int, dow: int, cum: int, dur: int,
                p: ChargingPeriod) -> bool:
        tod = self.tod
        if tod is not None:
            start, end = tod
            if start < end:
                if sod < start or sod >= end:
                    return False
            elif sod < start and sod >= end:  # wraps midnight (or start == end: all day)
                return False
        if self.dow_mask and not (self.dow_mask >> dow) & 1:
            return False
        if self.days is not None:
            lo, hi = self.days
            if (lo is not None and day < lo) or (hi is not None and day >= hi):
                return False
        if self.kwh is not None:
            lo, hi = self.kwh
            if (lo is not None and cum < lo) or (hi is not None and cum >= hi):
                return False
        if self.duration is not None:
            lo, hi = self.duration
            if (lo is not None and dur < lo) or (hi is not None and dur >= hi):
                return False
        if self.current is not None:
            lo, hi = self.current
            low = p.current_ma_min if p.current_ma_min is not None else p.current_ma
            high = p.current_ma_max if p.current_ma_max is not None else p.current_ma
            if lo is not None and (low is None or low < lo):
                return False
            if hi is not None and (high is None or high >= hi):
                return False
        if self.power is not None:
            lo, hi = self.power
            low = p.power_w_min if p.power_w_min is not None else p.power_w
            high = p.power_w_max if p.power_w_max is not None else p.power_w
            if lo is not None and (low is None or low < lo):
                return False
            if hi is not None and (high is None or high >= hi):
                return False
        return True


def _bounds_ok(low: int | None, high: int | None, lo: int | None, hi: int | None) -> bool:
    """Current/power restriction: [lo, hi) against the period's minimum and maximum."""
    if lo is not None and (low is None or low < lo):
        return False
    return hi is None or (high is not None and high < hi)


def _current_ok(p: ChargingPeriod, lo: int | None, hi: int | None) -> bool:
    low = p.current_ma_min if p.current_ma_min is not None else p.current_ma
    high = p.current_ma_max if p.current_ma_max is not None else p.current_ma
    return _bounds_ok(low, high, lo, hi)


def _power_ok(p: ChargingPeriod, lo: int | None, hi: int | None) -> bool:
    low = p.power_w_min if p.power_w_min is not None else p.power_w
    high = p.power_w_max if p.power_w_max is not None else p.power_w
    return _bounds_ok(low, high, lo, hi)


def _build_matcher(el: _Element) -> Callable[[int, int, int, int, int, ChargingPeriod], bool]:
    """``el.matches`` as one boolean expression holding only the restrictions ``el`` has.

    Rating evaluates restrictions for every period, so this is the innermost hot path; a
    specialised expression is about three times faster than the generic method. The source is
    built only from integers computed here (never from input text), the way ``dataclasses``
    generates ``__init__``; a property test checks it agrees with ``matches`` everywhere.
    """
    terms: list[str] = []
    if el.tod is not None:
        start, end = el.tod
        if start < end:
            terms.append(f"{start} <= sod < {end}" if start else f"sod < {end}")
        elif start > end:
            terms.append(f"(sod >= {start} or sod < {end})")
    if el.dow_mask:
        terms.append(f"({el.dow_mask} >> dow) & 1")
    for bounds, name in ((el.days, "day"), (el.kwh, "cum"), (el.duration, "dur")):
        if bounds is not None:
            lo, hi = bounds
            if lo is not None:
                terms.append(f"{name} >= {int(lo)}")
            if hi is not None:
                terms.append(f"{name} < {int(hi)}")
    if el.current is not None:
        terms.append(f"_current_ok(p, {el.current[0]!r}, {el.current[1]!r})")
    if el.power is not None:
        terms.append(f"_power_ok(p, {el.power[0]!r}, {el.power[1]!r})")
    body = " and ".join(terms) if terms else "True"
    source = f"lambda sod, day, dow, cum, dur, p: {body}"
    namespace = {"_current_ok": _current_ok, "_power_ok": _power_ok, "__builtins__": {}}
    matcher: Callable[[int, int, int, int, int, ChargingPeriod], bool] = eval(  # noqa: S307
        compile(source, f"<tariff element {el.index}>", "eval"), namespace)
    return matcher


class CompiledTariff:
    """A tariff turned into integer lookups for fast, exact rating. Build once, reuse."""

    __slots__ = ("tariff", "currency", "elements", "candidates", "flat_candidates",
                 "min_price", "max_price", "_tables", "needs_current", "needs_power")

    def __init__(self, tariff: Tariff) -> None:
        self.tariff = tariff
        self.currency: Currency = tariff.currency
        self.elements: tuple[_Element, ...] = tuple(
            _compile_element(i, e) for i, e in enumerate(tariff.elements)
        )
        # candidates[mode][dimension] = elements to try, in order.
        self.candidates: tuple[tuple[tuple[_Element, ...], ...], ...] = tuple(
            tuple(self._ordered(mode, dim) for dim in (_ENERGY, _TIME, _PARKING, _RESERVATION))
            for mode in (_CHARGING, _RESERVED, _EXPIRED)
        )
        self.flat_candidates: tuple[tuple[_Element, ...], ...] = tuple(
            tuple(e for e in self._eligible(mode) if e.flat is not None)
            for mode in (_CHARGING, _RESERVED, _EXPIRED)
        )
        self.min_price = tariff.min_price
        self.max_price = tariff.max_price
        self.needs_current = any(e.current is not None for e in self.elements)
        self.needs_power = any(e.power is not None for e in self.elements)
        self._tables: dict[str, OffsetTable] = {}

    def _eligible(self, mode: int) -> list[_Element]:
        if mode == _CHARGING:
            return [e for e in self.elements if e.reservation is None]
        if mode == _RESERVED:
            return [e for e in self.elements
                    if e.reservation is ReservationRestriction.RESERVATION]
        # An expired reservation: RESERVATION_EXPIRES elements win over RESERVATION ones
        # (mod_tariffs, ReservationRestrictionType note).
        return ([e for e in self.elements
                 if e.reservation is ReservationRestriction.RESERVATION_EXPIRES]
                + [e for e in self.elements
                   if e.reservation is ReservationRestriction.RESERVATION])

    def _ordered(self, mode: int, dim: int) -> tuple[_Element, ...]:
        eligible = self._eligible(mode)
        if dim == _ENERGY:
            return tuple(e for e in eligible if e.energy is not None)
        if dim == _PARKING:
            return tuple(e for e in eligible if e.parking is not None)
        return tuple(e for e in eligible if e.time is not None)  # TIME and RESERVATION_TIME

    def offsets(self, time_zone: str, epoch_s: int) -> OffsetTable:
        table = self._tables.get(time_zone)
        if table is None or not table.covers(epoch_s):
            table = offset_table(time_zone, epoch_s, epoch_s)
            self._tables[time_zone] = table
        return table


_COMPILED_MAX = 256
_START = operator.attrgetter("start_epoch_ms")
_ENERGY_OF = operator.attrgetter("energy_milliwh")
_compiled: OrderedDict[int, tuple[Tariff, CompiledTariff]] = OrderedDict()
_compiled_lock = threading.Lock()


def compile_tariff(tariff: Tariff | CompiledTariff) -> CompiledTariff:
    """The compiled form of ``tariff``, reused for the same (immutable) object.

    The cache holds the tariff itself, so an id is never reused while its entry lives; it is
    bounded (least recently used out)."""
    if isinstance(tariff, CompiledTariff):
        return tariff
    with _compiled_lock:
        entry = _compiled.get(id(tariff))
        if entry is not None and entry[0] is tariff:
            _compiled.move_to_end(id(tariff))
            return entry[1]
    compiled = CompiledTariff(tariff)
    with _compiled_lock:
        _compiled[id(tariff)] = (tariff, compiled)
        while len(_compiled) > _COMPILED_MAX:
            _compiled.popitem(last=False)
    return compiled


def _component(c: PriceComponent | None, unit_per_step: int) -> _Component | None:
    if c is None:
        return None
    return _Component(
        price_micro=to_scaled_int(c.price, PRICE_DECIMALS),
        vat_bp=to_scaled_int(c.vat, VAT_DECIMALS) if c.vat is not None else NO_VAT_BP,
        has_vat=c.vat is not None,
        # step_size 0 is read as the smallest step (1 Wh / 1 s): blocks of nothing bill nothing.
        step=max(c.step_size, 1) * unit_per_step,
    )


def _pair(lo: int | None, hi: int | None) -> tuple[int | None, int | None] | None:
    return None if lo is None and hi is None else (lo, hi)


def _scaled(value: Decimal | None, places: int) -> int | None:
    return None if value is None else to_scaled_int(value, places)


def _seconds_of_day(t: dt.time) -> int:
    return t.hour * 3600 + t.minute * 60


def _compile_element(index: int, element: TariffElement) -> _Element:
    r = element.restrictions
    tod = days = kwh = duration = current = power = None
    dow_mask = 0
    reservation = None
    if r is not None:
        if r.start_time is not None or r.end_time is not None:
            start = 0 if r.start_time is None else _seconds_of_day(r.start_time)
            end = 86_400 if r.end_time is None else _seconds_of_day(r.end_time)
            if end == 0:
                end = 86_400  # "To stop at end of the day use: 00:00"
            tod = (start, end)
        days = _pair(None if r.start_date is None else day_number(r.start_date),
                     None if r.end_date is None else day_number(r.end_date))
        for day in r.day_of_week:
            dow_mask |= 1 << day.weekday
        kwh = _pair(_scaled(r.min_kwh, 6), _scaled(r.max_kwh, 6))  # kWh -> milliwh
        duration = _pair(None if r.min_duration is None else r.min_duration * MS_PER_S,
                         None if r.max_duration is None else r.max_duration * MS_PER_S)
        current = _pair(_scaled(r.min_current, 3), _scaled(r.max_current, 3))  # A -> mA
        power = _pair(_scaled(r.min_power, 3), _scaled(r.max_power, 3))  # kW -> W
        reservation = r.reservation
    return _Element(
        index=index, tod=tod, days=days, dow_mask=dow_mask, kwh=kwh, duration=duration,
        current=current, power=power, reservation=reservation,
        energy=_component(element.component(DimensionType.ENERGY), MILLIWH_PER_WH),
        time=_component(element.component(DimensionType.TIME), MS_PER_S),
        parking=_component(element.component(DimensionType.PARKING_TIME), MS_PER_S),
        flat=_component(element.component(DimensionType.FLAT), 1),
    )


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostPart:
    """An exact cost: numerators over MONEY_DENOMINATOR (excl) and MONEY_DENOMINATOR*VAT_SCALE."""

    excl: int = 0
    incl: int = 0  # over MONEY_DENOMINATOR * VAT_SCALE

    def __add__(self, other: CostPart) -> CostPart:
        return CostPart(self.excl + other.excl, self.incl + other.incl)

    def price(self) -> Price:
        return Price(excl_vat=money_value(self.excl),
                     incl_vat=money_value(self.incl, MONEY_DENOMINATOR * VAT_SCALE))


_ZERO = CostPart()


def money_value(numerator: int, denominator: int = MONEY_DENOMINATOR) -> Decimal:
    """An exact numerator as a Decimal amount at full (12-place) precision."""
    return quantize_full(numerator, denominator)


def _cost(comp: _Component, quantity: int, factor: int) -> CostPart:
    excl = comp.price_micro * quantity * factor
    return CostPart(excl, excl * comp.vat_factor)


@dataclass(frozen=True, slots=True)
class RatedDimension:
    """One priced dimension of one period."""

    type: str  # ENERGY | TIME | PARKING_TIME | RESERVATION_TIME | FLAT
    volume: Decimal  # in OCPI units (kWh, hours, 1 for FLAT)
    billed_volume: Decimal  # volume plus the step_size extra, if this period carries it
    element_index: int | None  # None = no element matched: not priced
    price: Decimal | None  # per unit excl. VAT
    vat: Decimal | None  # percent, None = no VAT applicable
    cost: Price


@dataclass(frozen=True, slots=True)
class RatedPeriod:
    index: int
    start_date_time: str
    dimensions: tuple[RatedDimension, ...]


class BilledQuantity(NamedTuple):
    """One priced dimension in exact integers, for callers that price from the rating (the
    pricing pipeline) rather than read its 12-decimal ``Decimal``s. (An immutable named tuple:
    a live preview makes a few per meter sample, at a third of a frozen dataclass's cost.)

    ``quantity`` is on the rating scale (milliwh for ENERGY, ms for TIME, PARKING_TIME and
    RESERVATION_TIME, 1 for a FLAT fee) and includes the step_size extra where the breakdown
    shows it; its exact cost is ``price_micro * quantity * money_factor(kind)`` over
    ``MONEY_DENOMINATOR`` excl. VAT, times ``VAT_SCALE + vat_bp`` over ``VAT_SCALE`` incl. VAT.
    """

    kind: str  # ENERGY | TIME | PARKING_TIME | RESERVATION_TIME | FLAT
    element_index: int
    quantity: int
    price_micro: int  # excl. VAT, millionths of the currency per kWh, per hour or per session
    vat_bp: int | None  # basis points of a percent (19 % = 1900); None = no VAT applicable
    reservation_fee: bool = False  # a FLAT fee of a reservation (reservation elements)

    @property
    def price(self) -> Decimal:
        """The unit price as the breakdown (``RatedDimension.price``) writes it."""
        return price_decimal(self.price_micro)

    @property
    def vat(self) -> Decimal | None:
        """The VAT percent as the breakdown (``RatedDimension.vat``) writes it."""
        return None if self.vat_bp is None else vat_decimal(self.vat_bp)


_FACTORS = {"ENERGY": ENERGY_FACTOR, "TIME": TIME_FACTOR, "PARKING_TIME": TIME_FACTOR,
            "RESERVATION_TIME": TIME_FACTOR, "FLAT": FLAT_FACTOR}


def money_factor(kind: str) -> int:
    """price_micro * quantity * money_factor(kind) is a cost over MONEY_DENOMINATOR."""
    return _FACTORS[kind]


@lru_cache(maxsize=4096)
def price_decimal(price_micro: int) -> Decimal:
    return Decimal(price_micro).scaleb(-PRICE_DECIMALS)


@lru_cache(maxsize=1024)
def vat_decimal(vat_bp: int) -> Decimal:
    return Decimal(vat_bp).scaleb(-VAT_DECIMALS)


@dataclass(frozen=True, slots=True)
class _Totals:
    """The OCPI totals as ``Decimal``s, computed from the exact numbers when first read."""

    total_cost: Price
    total_fixed_cost: Price
    total_energy: Decimal
    total_energy_cost: Price
    total_time: Decimal
    total_time_cost: Price
    total_parking_time: Decimal
    total_parking_cost: Price
    total_reservation_time: Decimal
    total_reservation_cost: Price
    price_bound_adjustment: Price


#: The public fields of a RatedSession, in the order equality, hashing and repr use them.
_RATED_FIELDS = ("currency", "total_cost", "total_fixed_cost", "total_energy",
                 "total_energy_cost", "total_time", "total_time_cost", "total_parking_time",
                 "total_parking_cost", "total_reservation_time", "total_reservation_cost",
                 "price_bound_adjustment", "price_bound", "total_cost_exact", "warnings", "final")


class RatedSession:
    """The OCPI CDR totals of a rated session, plus an exact breakdown. Immutable.

    The rater hands over exact numerators; the 12-decimal ``Decimal`` totals (``total_cost``
    ...) are computed from them when one is first read, so a live preview that prices from
    the exact numbers (``total_cost_exact``, ``billed``) does not pay for them. Equality,
    hashing and repr are over the public fields, as for the frozen dataclass this was.
    """

    __slots__ = ("currency", "price_bound", "total_cost_exact", "warnings", "final", "_parts",
                 "_volumes", "_totals", "_breakdown")

    currency: Currency
    #: "min_price" | "max_price" | None
    price_bound: str | None
    #: Exact numerators, for aggregation without rounding (over MONEY_DENOMINATOR).
    total_cost_exact: CostPart
    warnings: tuple[str, ...]
    final: bool  # False while the session is ongoing (a live estimate)
    # (fixed, energy, time, parking, reservation, bound adjustment)
    _parts: tuple[CostPart, CostPart, CostPart, CostPart, CostPart, CostPart]
    # (energy milliwh, total time ms, parking ms, reservation ms)
    _volumes: tuple[int, int, int, int]
    _totals: _Totals | None
    _breakdown: _Breakdown

    def __init__(self, *, currency: Currency, price_bound: str | None,
                 total_cost_exact: CostPart, warnings: tuple[str, ...], final: bool,
                 parts: tuple[CostPart, CostPart, CostPart, CostPart, CostPart, CostPart],
                 volumes: tuple[int, int, int, int], breakdown: _Breakdown) -> None:
        # one per meter sample (a live preview): the slots are set directly, not in a loop
        set_ = object.__setattr__
        set_(self, "currency", currency)
        set_(self, "price_bound", price_bound)
        set_(self, "total_cost_exact", total_cost_exact)
        set_(self, "warnings", warnings)
        set_(self, "final", final)
        set_(self, "_parts", parts)
        set_(self, "_volumes", volumes)
        set_(self, "_totals", None)
        set_(self, "_breakdown", breakdown)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            object.__setattr__(self, name, value)

    # -- the totals (Decimal, 12 places) -----------------------------------------------------
    def _decimals(self) -> _Totals:
        totals = self._totals
        if totals is None:
            fixed, energy, time_cost, parking, reservation, adjustment = self._parts
            energy_milliwh, time_ms, parking_ms, reservation_ms = self._volumes
            totals = _Totals(
                total_cost=self.total_cost_exact.price(),
                total_fixed_cost=fixed.price(),
                total_energy=Decimal(energy_milliwh) / MILLIWH_PER_KWH,
                total_energy_cost=energy.price(),
                total_time=quantize_full(time_ms, MS_PER_HOUR),
                total_time_cost=time_cost.price(),
                total_parking_time=quantize_full(parking_ms, MS_PER_HOUR),
                total_parking_cost=parking.price(),
                total_reservation_time=quantize_full(reservation_ms, MS_PER_HOUR),
                total_reservation_cost=reservation.price(),
                price_bound_adjustment=adjustment.price(),
            )
            object.__setattr__(self, "_totals", totals)
        return totals

    @property
    def total_cost(self) -> Price:
        return self._decimals().total_cost

    @property
    def total_fixed_cost(self) -> Price:
        return self._decimals().total_fixed_cost

    @property
    def total_energy(self) -> Decimal:
        """kWh."""
        return self._decimals().total_energy

    @property
    def total_energy_cost(self) -> Price:
        return self._decimals().total_energy_cost

    @property
    def total_time(self) -> Decimal:
        """Hours, session start to end (or to now while ongoing)."""
        return self._decimals().total_time

    @property
    def total_time_cost(self) -> Price:
        return self._decimals().total_time_cost

    @property
    def total_parking_time(self) -> Decimal:
        """Hours."""
        return self._decimals().total_parking_time

    @property
    def total_parking_cost(self) -> Price:
        return self._decimals().total_parking_cost

    @property
    def total_reservation_time(self) -> Decimal:
        """Hours."""
        return self._decimals().total_reservation_time

    @property
    def total_reservation_cost(self) -> Price:
        return self._decimals().total_reservation_cost

    @property
    def price_bound_adjustment(self) -> Price:
        """What min_price / max_price added (negative for max); zero when neither applied."""
        return self._decimals().price_bound_adjustment

    # -- value semantics (as a frozen dataclass) ----------------------------------------------
    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _RATED_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _RATED_FIELDS)
        return f"{type(self).__name__}({fields})"

    @property
    def energy_milliwh(self) -> int:
        """``total_energy`` in milliwh, exactly: the ENERGY of the charging (non-reservation)
        periods, exported energy netted."""
        return self._volumes[0]

    # -- the breakdown -------------------------------------------------------------------------
    def periods(self) -> tuple[RatedPeriod, ...]:
        """Per-period breakdown naming the element used for each dimension."""
        return self._breakdown.build()

    @property
    def period_count(self) -> int:
        return self._breakdown.n + len(self._breakdown.tail_periods)

    def billed(self) -> tuple[BilledQuantity, ...]:
        """The priced quantities summed per dimension and element, O(tariff elements): ENERGY,
        TIME, PARKING_TIME, RESERVATION_TIME, then the FLAT fee and a reservation's FLAT fee;
        within a dimension, elements in the order the periods first used them. Step extras
        are included. Together they cost exactly ``total_cost_exact`` before min/max price."""
        return self._breakdown.billed()

    def billed_by_period(self) -> Iterator[tuple[BilledQuantity, ...]]:
        """The priced dimensions of each period in exact integers (``periods()`` without the
        ``Decimal``s and without unpriced dimensions), lazily, period by period."""
        return self._breakdown.billed_by_period()


# -- the rater ------------------------------------------------------------------------------------


class SessionRater:
    """Rates a session one period at a time; ``snapshot`` prices what has been seen so far.

    ``add`` does the per-period work once (element look-up, quantity accumulation), so a live
    cost update is O(1) in the number of earlier periods; ``snapshot`` applies step sizes, FLAT,
    VAT and price bounds to the accumulated totals without changing them.
    """

    __slots__ = ("tariff", "time_zone", "start_epoch_ms", "_origin_ms", "_table", "_win",
                 "_off", "_periods", "_choices", "_qty", "_res_qty", "_cum_milliwh",
                 "_energy_all", "_parking_all", "_reservation_all", "_last_energy", "_last_time",
                 "_last_res", "_flat", "_flat_at", "_res_flat", "_res_flat_at", "_warnings",
                 "_last_start", "_n_elements",
                 "_all_reservation", "_first_use")

    def __init__(self, tariff: Tariff | CompiledTariff, time_zone: str = "UTC",
                 start_epoch_ms: int | None = None) -> None:
        self.tariff = compile_tariff(tariff)
        self.time_zone = time_zone
        self.start_epoch_ms = start_epoch_ms
        n = len(self.tariff.elements)
        self._n_elements = n
        self._origin_ms: int | None = None  # start of the first charging (non-reservation) period
        self._table: OffsetTable | None = None
        self._win = (1, 0)  # [lo, hi) epoch seconds where self._off holds
        self._off = 0
        self._periods: list[ChargingPeriod] = []
        # per period: (energy, time, parking, reserved, expired) element index or -1
        self._choices: list[tuple[int, int, int, int, int]] = []
        self._first_use = _FirstUse(self._choices)  # for RatedSession.billed (lazily)
        self._qty = [[0] * n, [0] * n, [0] * n]  # energy, time, parking per element
        self._res_qty = [[0] * n, [0] * n]  # reservation time per element: reserved, expired
        self._cum_milliwh = 0
        self._energy_all = 0
        self._parking_all = 0
        self._reservation_all = 0
        self._last_energy = -1
        self._last_time: tuple[int, int] = (-1, -1)  # (dimension, element)
        self._last_res = [-1, -1]
        self._flat = -1
        self._flat_at = -1  # index of the period that carries the FLAT fee
        self._res_flat = [-1, -1]
        self._res_flat_at = [-1, -1]
        self._warnings: dict[str, None] = {}
        self._last_start: int | None = None
        self._all_reservation = True

    # -- feeding ---------------------------------------------------------------------------
    def add(self, period: ChargingPeriod) -> None:
        """Add the next period (live cost: one sample at a time)."""
        self.add_all((period,))

    def add_all(self, periods: Iterable[ChargingPeriod]) -> None:
        """Add periods in time order. The loop is written flat, with locals, because it is the
        hot path of rating (one iteration per period)."""
        ct = self.tariff
        n_el = self._n_elements
        cand_energy, cand_time, cand_parking, _ = ct.candidates[_CHARGING]
        cand_res = ct.candidates[_RESERVED][_RESERVATION]
        cand_exp = ct.candidates[_EXPIRED][_RESERVATION]
        flat_cands = ct.flat_candidates
        qty_energy, qty_time, qty_parking = self._qty
        res_qty = self._res_qty
        needs_current, needs_power = ct.needs_current, ct.needs_power
        choices = self._choices
        stored = self._periods
        win_lo, win_hi = self._win
        off = self._off
        cum = self._cum_milliwh
        batch = tuple(periods)
        self._check_batch(batch)  # all checks first: a refused batch changes nothing
        last_start = self._last_start if self._last_start is not None else -(2**62)
        energy_all, parking_all = self._energy_all, self._parking_all
        last_energy, last_time, flat = self._last_energy, self._last_time, self._flat
        for p in batch:
            t = p.start_epoch_ms
            last_start = t
            reserved = p.reservation_ms != 0
            if not reserved and self._origin_ms is None:
                self._all_reservation = False
                self._origin_ms = t
                if self.start_epoch_ms is not None and t < self.start_epoch_ms:
                    self._warnings["periods_before_session_start"] = None
            origin = self._origin_ms if self._origin_ms is not None else t

            # Local time of the period start (DST-safe: the offset window is per instant).
            epoch_s = t // 1000
            if not win_lo <= epoch_s < win_hi:
                self._locate(epoch_s)
                win_lo, win_hi = self._win
                off = self._off
            day, sod = divmod(epoch_s + off, 86_400)
            dow = (day + 3) % 7
            dur = t - origin
            seen: list[bool | None] = [None] * n_el

            e_en = e_ti = e_pa = e_re = e_ex = -1
            if not reserved:
                energy = p.energy_milliwh
                if energy:
                    for el in cand_energy:
                        ok = seen[el.index]
                        if ok is None:
                            ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                        if ok:
                            e_en = el.index
                            break
                    energy_all += energy
                    if e_en >= 0:
                        qty_energy[e_en] += energy
                        last_energy = e_en
                    else:
                        self._warnings["energy_not_priced"] = None
                if p.time_ms:
                    for el in cand_time:
                        ok = seen[el.index]
                        if ok is None:
                            ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                        if ok:
                            e_ti = el.index
                            break
                    if e_ti >= 0:
                        qty_time[e_ti] += p.time_ms
                        last_time = (_TIME, e_ti)
                if p.parking_ms:
                    for el in cand_parking:
                        ok = seen[el.index]
                        if ok is None:
                            ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                        if ok:
                            e_pa = el.index
                            break
                    parking_all += p.parking_ms
                    if e_pa >= 0:
                        qty_parking[e_pa] += p.parking_ms
                        last_time = (_PARKING, e_pa)
                if flat < 0:
                    for el in flat_cands[_CHARGING]:
                        ok = seen[el.index]
                        if ok is None:
                            ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                        if ok:
                            flat = el.index
                            self._flat_at = len(stored)
                            break
                cum += energy
                if needs_current and p.current_ma_min is None and p.current_ma_max is None \
                        and p.current_ma is None:
                    self._warnings["current_unknown_for_current_restriction"] = None
                if needs_power and p.power_w_min is None and p.power_w_max is None \
                        and p.power_w is None:
                    self._warnings["power_unknown_for_power_restriction"] = None
            else:
                self._reservation_all += p.reservation_ms
                if p.energy_milliwh or p.time_ms or p.parking_ms:
                    self._warnings["charging_in_reservation_period_ignored"] = None
                for slot, cands, mode in ((0, cand_res, _RESERVED), (1, cand_exp, _EXPIRED)):
                    e = -1
                    for el in cands:
                        ok = seen[el.index]
                        if ok is None:
                            ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                        if ok:
                            e = el.index
                            break
                    if e >= 0:
                        res_qty[slot][e] += p.reservation_ms
                        self._last_res[slot] = e
                    if self._res_flat[slot] < 0:
                        for el in flat_cands[mode]:
                            ok = seen[el.index]
                            if ok is None:
                                ok = seen[el.index] = el.matcher(sod, day, dow, cum, dur, p)
                            if ok:
                                self._res_flat[slot] = el.index
                                self._res_flat_at[slot] = len(stored)
                                break
                    if slot == 0:
                        e_re = e
                    else:
                        e_ex = e
            stored.append(p)
            choices.append((e_en, e_ti, e_pa, e_re, e_ex))
        self._cum_milliwh = cum
        if batch:
            self._last_start = last_start
        self._energy_all, self._parking_all = energy_all, parking_all
        self._last_energy, self._last_time, self._flat = last_energy, last_time, flat

    def _check_batch(self, batch: tuple[ChargingPeriod, ...]) -> None:
        """Refuse a batch that breaks time order or a session limit, before any change."""
        n = len(self._periods)
        if n + len(batch) > MAX_PERIODS_PER_SESSION:
            raise UnratableSessionError(
                f"a session may have at most {MAX_PERIODS_PER_SESSION} charging periods")
        if not batch:
            return
        starts = list(map(_START, batch))
        if self._last_start is not None:
            starts.insert(0, self._last_start)
        if starts != sorted(starts):
            first_bad = next(i for i in range(1, len(starts)) if starts[i] < starts[i - 1])
            index = n + first_bad - (1 if self._last_start is not None else 0)
            raise UnratableSessionError(
                f"charging periods must be in time order: period {index} starts "
                "before the one before it")
        origin = self._origin_ms
        if origin is None:
            origin = next((p.start_epoch_ms for p in batch if p.reservation_ms == 0), None)
        if origin is not None and starts[-1] - origin > MAX_SESSION_DURATION_MS:
            raise UnratableSessionError("a session may last at most 31 days")
        # Reservation periods carry no priced energy; counting theirs too only errs on the
        # safe side of the limit.
        if abs(self._energy_all + sum(map(_ENERGY_OF, batch))) \
                > MAX_SESSION_ENERGY_MILLIWH:
            raise UnratableSessionError("a session may deliver at most 100 MWh")

    def _locate(self, epoch_s: int) -> None:
        table = self._table
        if table is None or not table.covers(epoch_s):
            table = self.tariff.offsets(self.time_zone, epoch_s)
            self._table = table
        i = bisect.bisect_right(table.instants_s, epoch_s) - 1
        i = max(i, 0)
        self._off = table.offsets_s[i]
        lo = table.instants_s[i]
        hi = table.instants_s[i + 1] if i + 1 < len(table.instants_s) else table.hi_s
        self._win = (max(lo, table.lo_s), hi)

    def _warn(self, code: str) -> None:
        self._warnings[code] = None

    # -- pricing -------------------------------------------------------------------------
    def snapshot_with(self, pending: ChargingPeriod | None, end_epoch_ms: int | None = None,
                      *, reservation_expired: bool | None = None) -> RatedSession:
        """``snapshot`` of the added periods plus ``pending`` (a period still growing, e.g.
        ``SessionMeter.pending()``), leaving the rater as it was: the few mutable scalars and
        the per-element quantity lists are saved, the period added, priced and taken back.
        O(number of tariff elements) on top of ``snapshot``, whatever the session length."""
        if pending is None:
            return self.snapshot(end_epoch_ms, reservation_expired=reservation_expired)
        n = len(self._periods)
        # _table, _win and _off are not saved: they only remember the UTC offset around the
        # last instant located (add_all checks the window before using it), and keeping the
        # pending period's spares locating it again at the next sample.
        scalars = (self._origin_ms, self._cum_milliwh,
                   self._energy_all, self._parking_all, self._reservation_all,
                   self._last_energy, self._last_time, self._flat, self._flat_at,
                   self._last_start, self._all_reservation)
        qty = [q[:] for q in self._qty]
        res_qty = [q[:] for q in self._res_qty]
        last_res, res_flat, res_flat_at = (self._last_res[:], self._res_flat[:],
                                           self._res_flat_at[:])
        warnings = dict(self._warnings)
        try:
            self.add_all((pending,))
            # The lists add_all just changed are replaced by the saved copies below, so the
            # snapshot may keep them as they are.
            return self._snapshot(end_epoch_ms, reservation_expired, False, permanent=n,
                                  own_lists=True)
        finally:
            del self._periods[n:]
            del self._choices[n:]
            (self._origin_ms, self._cum_milliwh,
             self._energy_all, self._parking_all, self._reservation_all,
             self._last_energy, self._last_time, self._flat, self._flat_at,
             self._last_start, self._all_reservation) = scalars
            self._qty, self._res_qty = qty, res_qty
            self._last_res, self._res_flat, self._res_flat_at = last_res, res_flat, res_flat_at
            self._warnings = warnings

    def snapshot(self, end_epoch_ms: int | None = None, *,
                 reservation_expired: bool | None = None, final: bool = False) -> RatedSession:
        """Price what has been added so far, as if the session ended at ``end_epoch_ms``."""
        return self._snapshot(end_epoch_ms, reservation_expired, final,
                              permanent=len(self._periods), own_lists=False)

    def _snapshot(self, end_epoch_ms: int | None, reservation_expired: bool | None,
                  final: bool, *, permanent: int, own_lists: bool) -> RatedSession:
        """``snapshot``; the periods from ``permanent`` on are taken back afterwards (the
        breakdown copies those), and ``own_lists``: the per-element lists will not change.

        Costs are summed as integer numerators (the same numbers ``_cost`` gives), and the
        result keeps them: its ``Decimal`` totals are made only when read, and its breakdown
        refers to the rater's period lists instead of copying them, so a snapshot is
        O(number of tariff elements) whatever the session length."""
        ct = self.tariff
        els = ct.elements
        qty_energy, qty_time, qty_parking = self._qty
        warnings = dict(self._warnings)
        if not self._periods:
            warnings["no_charging_periods"] = None

        # step_size, once per session: ENERGY on its own.
        energy_excl = energy_incl = 0
        energy_extra = (-1, 0)
        for i, q in enumerate(qty_energy):
            if q:
                comp = _req(els[i].energy)
                excl = comp.price_micro * q * ENERGY_FACTOR
                energy_excl += excl
                energy_incl += excl * (VAT_SCALE + comp.vat_bp)
        if self._last_energy >= 0:
            comp = _req(els[self._last_energy].energy)
            extra = _step_extra(sum(qty_energy), comp.step)
            if extra:
                excl = comp.price_micro * extra * ENERGY_FACTOR
                energy_excl += excl
                energy_incl += excl * (VAT_SCALE + comp.vat_bp)
                energy_extra = (self._last_energy, extra)

        # TIME and PARKING_TIME together: only the dimension priced last is rounded.
        time_excl = time_incl = parking_excl = parking_incl = 0
        for i, q in enumerate(qty_time):
            if q:
                comp = _req(els[i].time)
                excl = comp.price_micro * q * TIME_FACTOR
                time_excl += excl
                time_incl += excl * (VAT_SCALE + comp.vat_bp)
        for i, q in enumerate(qty_parking):
            if q:
                comp = _req(els[i].parking)
                excl = comp.price_micro * q * TIME_FACTOR
                parking_excl += excl
                parking_incl += excl * (VAT_SCALE + comp.vat_bp)
        time_extra = (-1, -1, 0)
        dim, last = self._last_time
        if last >= 0:
            comp = _req(els[last].time if dim == _TIME else els[last].parking)
            extra = _step_extra(sum(self._qty[dim]), comp.step)
            if extra:
                excl = comp.price_micro * extra * TIME_FACTOR
                if dim == _TIME:
                    time_excl += excl
                    time_incl += excl * (VAT_SCALE + comp.vat_bp)
                else:
                    parking_excl += excl
                    parking_incl += excl * (VAT_SCALE + comp.vat_bp)
                time_extra = (dim, last, extra)

        # Reservation: time and fee, under RESERVATION or RESERVATION_EXPIRES elements.
        expired = reservation_expired
        if expired is None:
            expired = self._all_reservation and bool(self._periods)
        slot = 1 if expired else 0
        res_excl = res_incl = 0
        res_qty = self._res_qty[slot]
        for i, q in enumerate(res_qty):
            if q:
                comp = _req(els[i].time)
                excl = comp.price_micro * q * TIME_FACTOR
                res_excl += excl
                res_incl += excl * (VAT_SCALE + comp.vat_bp)
        res_extra = (-1, 0)
        if self._last_res[slot] >= 0:
            comp = _req(els[self._last_res[slot]].time)
            extra = _step_extra(sum(res_qty), comp.step)
            if extra:
                excl = comp.price_micro * extra * TIME_FACTOR
                res_excl += excl
                res_incl += excl * (VAT_SCALE + comp.vat_bp)
                res_extra = (self._last_res[slot], extra)
        if self._res_flat[slot] >= 0:
            comp = _req(els[self._res_flat[slot]].flat)
            excl = comp.price_micro * FLAT_FACTOR
            res_excl += excl
            res_incl += excl * (VAT_SCALE + comp.vat_bp)

        fixed = _ZERO
        if self._flat >= 0 and not expired:
            fixed = _cost(_req(els[self._flat].flat), 1, FLAT_FACTOR)

        total = CostPart(energy_excl + time_excl + parking_excl + res_excl + fixed.excl,
                         energy_incl + time_incl + parking_incl + res_incl + fixed.incl)
        bounded, bound = _apply_bounds(total, ct.min_price, ct.max_price)
        adjustment = (_ZERO if bound is None
                      else CostPart(bounded.excl - total.excl, bounded.incl - total.incl))

        # Durations.
        if end_epoch_ms is None:
            end_epoch_ms = self._periods[-1].start_epoch_ms if self._periods else 0
        origin = self._origin_ms  # None: only reservation periods, no charging session
        total_time_ms = max(0, end_epoch_ms - origin) if origin is not None else 0
        if total_time_ms > MAX_SESSION_DURATION_MS:
            raise UnratableSessionError("a session may last at most 31 days")

        breakdown = _Breakdown(
            self.tariff, self._periods, self._choices, permanent,
            tuple(self._periods[permanent:]), tuple(self._choices[permanent:]),
            energy_extra, time_extra, res_extra, slot,
            (self._flat, self._flat_at) if not expired else (-1, -1),
            (self._res_flat[slot], self._res_flat_at[slot]),
            (qty_energy, qty_time, qty_parking) if own_lists
            else (qty_energy[:], qty_time[:], qty_parking[:]),
            res_qty if own_lists else res_qty[:],
            self._first_use)
        return RatedSession(
            currency=ct.currency,
            price_bound=bound,
            total_cost_exact=bounded,
            warnings=tuple(warnings),
            final=final,
            parts=(fixed, CostPart(energy_excl, energy_incl), CostPart(time_excl, time_incl),
                   CostPart(parking_excl, parking_incl), CostPart(res_excl, res_incl),
                   adjustment),
            volumes=(self._energy_all, total_time_ms, self._parking_all,
                     self._reservation_all),
            breakdown=breakdown,
        )


def _req(component: _Component | None) -> _Component:
    if component is None:
        raise InvariantViolation("a chosen element has a component for its dimension")
    return component


def _step_extra(total: int, step: int) -> int:
    """How much to add to ``total`` to reach the next multiple of ``step`` (0 for total <= 0)."""
    if total <= 0 or step <= 1:
        return 0
    return (-total) % step


def bound_total(excl: Fraction, incl: Fraction, min_price: Price | None,
                max_price: Price | None) -> tuple[str | None, Fraction, Fraction]:
    """min_price / max_price on an exact total (major units): the one place of this rule.

    Excl. and incl. VAT are bounded independently (mod_tariffs notes on min_price /
    max_price). A bound without ``incl_vat`` bounds incl. VAT by the same factor as excl. VAT,
    keeping the session's own VAT mix; with nothing to scale from, incl = excl. Returns
    ("min_price" | "max_price" | None, excl, incl).
    """
    which: str | None = None
    for name, bound, is_min in (("min_price", min_price, True), ("max_price", max_price, False)):
        if bound is None:
            continue
        b_excl = Fraction(bound.excl_vat)
        hit_excl = excl < b_excl if is_min else excl > b_excl
        if bound.incl_vat is None:
            if hit_excl:
                incl = incl * b_excl / excl if excl else b_excl
                excl, which = b_excl, name
            continue
        b_incl = Fraction(bound.incl_vat)
        if hit_excl:
            excl, which = b_excl, name
        if incl < b_incl if is_min else incl > b_incl:
            incl, which = b_incl, name
    return which, excl, incl


_INCL_DENOMINATOR = MONEY_DENOMINATOR * VAT_SCALE


def _apply_bounds(total: CostPart, min_price: Price | None, max_price: Price | None
                  ) -> tuple[CostPart, str | None]:
    """``bound_total`` on exact numerators. A bound scaled by the VAT factor can fall between
    two numerators (1 / 1.8e17 apart); it is rounded to the nearest, far below 12 decimals."""
    if not _bound_reached(total, min_price, max_price):
        return total, None
    which, excl, incl = bound_total(Fraction(total.excl, MONEY_DENOMINATOR),
                                    Fraction(total.incl, _INCL_DENOMINATOR),
                                    min_price, max_price)
    if which is None:
        return total, None
    return CostPart(round_rational(excl * MONEY_DENOMINATOR),
                    round_rational(incl * _INCL_DENOMINATOR)), which


def _bound_reached(total: CostPart, min_price: Price | None, max_price: Price | None) -> bool:
    """Whether ``bound_total`` would change anything: one of its comparisons holds on the
    unbounded total. The same comparisons in integers (cross-multiplied), so a total inside
    its bounds, the usual case, costs no ``Fraction``."""
    for bound, sign in ((min_price, 1), (max_price, -1)):
        if bound is None:
            continue
        num, den = bound.excl_vat.as_integer_ratio()
        if sign * (total.excl * den - num * MONEY_DENOMINATOR) < 0:
            return True
        if bound.incl_vat is not None:
            num, den = bound.incl_vat.as_integer_ratio()
            if sign * (total.incl * den - num * _INCL_DENOMINATOR) < 0:
                return True
    return False


# -- per-period breakdown --------------------------------------------------------------------------


class _FirstUse:
    """Where each element was first used, per dimension (energy, time, parking, reserved,
    expired), over a rater's stored periods. Scanned on demand, each period once: the rater
    only appends to its lists (``snapshot_with`` takes back only what it added), so a prefix
    never changes, and a breakdown only asks about its own prefix."""

    __slots__ = ("_choices", "_upto", "_first", "_last", "_lock")

    def __init__(self, choices: list[tuple[int, int, int, int, int]]) -> None:
        self._choices = choices
        self._upto = 0
        self._first: tuple[dict[int, int], ...] = ({}, {}, {}, {}, {})
        self._last: tuple[int, tuple[tuple[int, ...], ...]] | None = None  # (n, answer)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, object]) -> _FirstUse:
        copied = _FirstUse(copy.deepcopy(self._choices, memo))
        with self._lock:
            copied._upto, copied._first = self._upto, copy.deepcopy(self._first, memo)
        return copied

    def before(self, n: int) -> tuple[tuple[int, ...], ...]:
        """Per dimension, the elements used in periods [0, n), in the order first used."""
        last = self._last  # (n, answer): replaced whole, never changed, so read without the lock
        if last is not None and last[0] == n:
            return last[1]
        with self._lock:
            last = self._last
            if last is not None and last[0] == n:
                return last[1]
            if self._upto < n:
                first = self._first
                choices = self._choices
                for i in range(self._upto, n):
                    for k, e in enumerate(choices[i]):
                        if e >= 0 and e not in first[k]:
                            first[k][e] = i
                self._upto = n
            answer = tuple(tuple(e for e, i in d.items() if i < n) for d in self._first)
            self._last = (n, answer)
            return answer


class _Breakdown:
    """What a snapshot needs for its per-period breakdown, without copying the periods: the
    rater's own lists (of which the first ``n`` entries are this snapshot's and never change)
    plus the ``tail`` that ``snapshot_with`` adds and takes back. Never changed once made
    (a plain slotted class: a snapshot per meter sample makes one)."""

    __slots__ = ("tariff", "stored", "stored_choices", "n", "tail_periods", "tail_choices",
                 "energy_extra", "time_extra", "res_extra", "res_slot", "flat", "res_flat",
                 "qty", "res_qty", "first_use")

    def __init__(self, tariff: CompiledTariff, stored: list[ChargingPeriod],
                 stored_choices: list[tuple[int, int, int, int, int]], n: int,
                 tail_periods: tuple[ChargingPeriod, ...],
                 tail_choices: tuple[tuple[int, int, int, int, int], ...],
                 energy_extra: tuple[int, int], time_extra: tuple[int, int, int],
                 res_extra: tuple[int, int], res_slot: int, flat: tuple[int, int],
                 res_flat: tuple[int, int], qty: tuple[list[int], list[int], list[int]],
                 res_qty: list[int], first_use: _FirstUse) -> None:
        self.tariff = tariff
        self.stored = stored  # the rater's list; entries [0, n) are this snapshot's
        self.stored_choices = stored_choices
        self.n = n
        self.tail_periods = tail_periods
        self.tail_choices = tail_choices
        self.energy_extra = energy_extra  # (element, extra milliwh) of the last energy period
        self.time_extra = time_extra  # (dimension, element, extra ms)
        self.res_extra = res_extra
        self.res_slot = res_slot
        self.flat = flat  # (element, period index) of the FLAT fee, or (-1, -1)
        self.res_flat = res_flat  # the same for the reservation fee
        self.qty = qty  # energy, time, parking per element
        self.res_qty = res_qty  # reservation time per element (this snapshot's slot)
        self.first_use = first_use

    @property
    def periods(self) -> list[ChargingPeriod]:
        return self.stored[:self.n] + list(self.tail_periods)

    @property
    def choices(self) -> list[tuple[int, int, int, int, int]]:
        return self.stored_choices[:self.n] + list(self.tail_choices)

    def build(self) -> tuple[RatedPeriod, ...]:
        els = self.tariff.elements
        choices = self.choices
        last_energy = _last_index(choices, 0)
        time_dim = self.time_extra[0]
        last_time = _last_index(choices, time_dim) if time_dim >= 0 else -1
        last_res = _last_index(choices, 3 + self.res_slot)
        out: list[RatedPeriod] = []
        for n, (p, ch) in enumerate(zip(self.periods, choices, strict=True)):
            dims: list[RatedDimension] = []
            if p.reservation_ms:
                e = ch[3 + self.res_slot]
                extra = self.res_extra[1] if n == last_res else 0
                dims.append(_dimension("RESERVATION_TIME", p.reservation_ms, extra, MS_PER_HOUR,
                                       e, els[e].time if e >= 0 else None, TIME_FACTOR))
                if n == self.res_flat[1]:
                    e = self.res_flat[0]
                    dims.append(_dimension("FLAT", 1, 0, 1, e, els[e].flat, FLAT_FACTOR))
                out.append(RatedPeriod(n, _iso(p.start_epoch_ms), tuple(dims)))
                continue
            if n == self.flat[1]:
                e = self.flat[0]
                dims.append(_dimension("FLAT", 1, 0, 1, e, els[e].flat, FLAT_FACTOR))
            if p.energy_milliwh:
                e = ch[0]
                extra = self.energy_extra[1] if n == last_energy else 0
                dims.append(_dimension("ENERGY", p.energy_milliwh, extra, MILLIWH_PER_KWH, e,
                                       els[e].energy if e >= 0 else None, ENERGY_FACTOR))
            if p.time_ms:
                e = ch[1]
                extra = self.time_extra[2] if (n == last_time and time_dim == _TIME) else 0
                dims.append(_dimension("TIME", p.time_ms, extra, MS_PER_HOUR, e,
                                       els[e].time if e >= 0 else None, TIME_FACTOR))
            if p.parking_ms:
                e = ch[2]
                extra = self.time_extra[2] if (n == last_time and time_dim == _PARKING) else 0
                dims.append(_dimension("PARKING_TIME", p.parking_ms, extra, MS_PER_HOUR, e,
                                       els[e].parking if e >= 0 else None, TIME_FACTOR))
            out.append(RatedPeriod(n, _iso(p.start_epoch_ms), tuple(dims)))
        return tuple(out)

    def billed(self) -> tuple[BilledQuantity, ...]:
        """Per dimension and element, from the rater's per-element sums (RatedSession.billed).
        The order of first use comes from ``first_use`` (the stored prefix, scanned once per
        period over the rater's life) and this snapshot's tail."""
        els = self.tariff.elements
        first = self.first_use.before(self.n)
        slot = 3 + self.res_slot
        time_dim, time_el, time_extra = self.time_extra
        sums: tuple[tuple[int, str, list[int], int, int], ...] = (
            (0, "ENERGY", self.qty[0], *self.energy_extra),
            (1, "TIME", self.qty[1], time_el if time_dim == _TIME else -1, time_extra),
            (2, "PARKING_TIME", self.qty[2], time_el if time_dim == _PARKING else -1,
             time_extra),
            (slot, "RESERVATION_TIME", self.res_qty, *self.res_extra),
        )
        out: list[BilledQuantity] = []
        for k, kind, qty, extra_el, extra in sums:
            order = first[k]
            for ch in self.tail_choices:
                if ch[k] >= 0 and ch[k] not in order:
                    order = (*order, ch[k])
            for e in order:
                comp = _req(_component_of(els[e], kind))
                out.append(BilledQuantity(
                    kind, e, qty[e] + (extra if e == extra_el else 0), comp.price_micro,
                    comp.vat_bp if comp.has_vat else None))
        for (e, _), reservation_fee in ((self.flat, False), (self.res_flat, True)):
            if e >= 0:
                comp = _req(els[e].flat)
                out.append(BilledQuantity("FLAT", e, 1, comp.price_micro,
                                          comp.vat_bp if comp.has_vat else None,
                                          reservation_fee))
        return tuple(out)

    def billed_by_period(self) -> Iterator[tuple[BilledQuantity, ...]]:
        """``build`` in integers, priced dimensions only (RatedSession.billed_by_period)."""
        els = self.tariff.elements
        choices = self.choices
        last_energy = _last_index(choices, 0)
        time_dim = self.time_extra[0]
        last_time = _last_index(choices, time_dim) if time_dim >= 0 else -1
        last_res = _last_index(choices, 3 + self.res_slot)
        for n, (p, ch) in enumerate(zip(self.periods, choices, strict=True)):
            dims: list[BilledQuantity] = []
            if p.reservation_ms:
                e = ch[3 + self.res_slot]
                if e >= 0:
                    extra = self.res_extra[1] if n == last_res else 0
                    dims.append(_billed("RESERVATION_TIME", e, p.reservation_ms + extra,
                                        els[e].time))
                if n == self.res_flat[1]:
                    dims.append(_billed("FLAT", self.res_flat[0], 1, els[self.res_flat[0]].flat,
                                        reservation_fee=True))
                yield tuple(dims)
                continue
            if n == self.flat[1]:
                dims.append(_billed("FLAT", self.flat[0], 1, els[self.flat[0]].flat))
            if p.energy_milliwh and ch[0] >= 0:
                extra = self.energy_extra[1] if n == last_energy else 0
                dims.append(_billed("ENERGY", ch[0], p.energy_milliwh + extra,
                                    els[ch[0]].energy))
            if p.time_ms and ch[1] >= 0:
                extra = self.time_extra[2] if (n == last_time and time_dim == _TIME) else 0
                dims.append(_billed("TIME", ch[1], p.time_ms + extra, els[ch[1]].time))
            if p.parking_ms and ch[2] >= 0:
                extra = self.time_extra[2] if (n == last_time and time_dim == _PARKING) else 0
                dims.append(_billed("PARKING_TIME", ch[2], p.parking_ms + extra,
                                    els[ch[2]].parking))
            yield tuple(dims)


def _component_of(el: _Element, kind: str) -> _Component | None:
    if kind == "ENERGY":
        return el.energy
    if kind == "PARKING_TIME":
        return el.parking
    return el.time  # TIME and RESERVATION_TIME


def _billed(kind: str, element: int, quantity: int, comp: _Component | None,
            reservation_fee: bool = False) -> BilledQuantity:
    c = _req(comp)
    return BilledQuantity(kind, element, quantity, c.price_micro,
                          c.vat_bp if c.has_vat else None, reservation_fee)


def _last_index(choices: Sequence[tuple[int, ...]], k: int) -> int:
    for n in range(len(choices) - 1, -1, -1):
        if choices[n][k] >= 0:
            return n
    return -1


def _dimension(kind: str, quantity: int, extra: int, per_unit: int, element: int,
               comp: _Component | None, factor: int) -> RatedDimension:
    volume = quantize_full(quantity, per_unit)
    billed_volume = quantize_full(quantity + extra, per_unit)
    if comp is None:
        zero = Price(Decimal(0), Decimal(0))
        return RatedDimension(kind, volume, volume, None, None, None, zero)
    billed = quantity + extra
    cost = _cost(comp, billed, factor)
    return RatedDimension(
        type=kind, volume=volume, billed_volume=billed_volume, element_index=element,
        price=Decimal(comp.price_micro).scaleb(-PRICE_DECIMALS),
        vat=Decimal(comp.vat_bp).scaleb(-VAT_DECIMALS) if comp.has_vat else None,
        cost=cost.price(),
    )


def _iso(epoch_ms_value: int) -> str:
    return from_epoch_ms(epoch_ms_value).isoformat().replace("+00:00", "Z")


# -- the one-call API ------------------------------------------------------------------------------


def rate(tariff: Tariff | CompiledTariff, session: SessionFacts) -> RatedSession:
    """Price a finished session (or an ongoing one up to its last period)."""
    rater = SessionRater(tariff, session.time_zone, session.start_epoch_ms)
    rater.add_all(session.periods)
    return rater.snapshot(session.end_epoch_ms,
                          reservation_expired=session.reservation_expired,
                          final=session.end_epoch_ms is not None)
