"""Vectorised OCPI rating of many sessions at once (the pricing simulator's workload).

An independent implementation of the rules in ``domain/rating.py`` over numpy arrays, in exact
integer arithmetic (no float anywhere): the same integer numerators come out, so every total is
identical to the one-call path. Tests compare the two on generated sessions.

Layout (CSR): ``offsets[s]:offsets[s+1]`` are the periods of session ``s``; every per-period
array has ``offsets[-1]`` entries. Unknown current/power values are ``-1``.

Overflow: per-period costs are int64 when the batch's largest price times its largest quantity
leaves headroom for a session's sum (checked up front); otherwise the batch is computed with
Python integers (numpy ``object`` arrays) — slower, still exact. Incl. VAT sums always use
Python integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from evbilling.domain.errors import RatingError
from evbilling.domain.money import Currency, quantize_full
from evbilling.domain.periods import MILLIWH_PER_KWH, MS_PER_HOUR, SessionFacts
from evbilling.domain.rating import (
    _CHARGING,
    _ENERGY,
    _EXPIRED,
    _PARKING,
    _RESERVATION,
    _RESERVED,
    _TIME,
    ENERGY_FACTOR,
    FLAT_FACTOR,
    TIME_FACTOR,
    VAT_SCALE,
    CompiledTariff,
    CostPart,
    _apply_bounds,
    _Component,
    _Element,
    compile_tariff,
)
from evbilling.domain.tariffs.model import Price, Tariff
from evbilling.domain.timezones import offset_table

IntArray = npt.NDArray[Any]  # int64 (or int16 element choices)
BoolArray = npt.NDArray[Any]
_I64_SAFE = 2**62


@dataclass(frozen=True, slots=True)
class SessionBatch:
    """Many sessions' charging periods as columns (one time zone per batch)."""

    offsets: IntArray
    start_epoch_ms: IntArray
    energy_milliwh: IntArray
    time_ms: IntArray
    parking_ms: IntArray
    session_end_epoch_ms: IntArray
    time_zone: str = "UTC"
    session_start_epoch_ms: IntArray | None = None
    reservation_ms: IntArray | None = None
    current_ma_min: IntArray | None = None
    current_ma_max: IntArray | None = None
    current_ma: IntArray | None = None
    power_w_min: IntArray | None = None
    power_w_max: IntArray | None = None
    power_w: IntArray | None = None
    #: per session: 1 expired, 0 not, -1 infer (expired when every period is a reservation)
    reservation_expired: IntArray | None = None

    def __post_init__(self) -> None:
        n_periods = int(self.offsets[-1])
        if len(self.offsets) < 2 or int(self.offsets[0]) != 0:
            raise RatingError("offsets must start at 0 and describe at least one session")
        if np.any(np.diff(self.offsets) < 1):
            raise RatingError("every session in a batch needs at least one charging period")
        for name in ("start_epoch_ms", "energy_milliwh", "time_ms", "parking_ms",
                     "reservation_ms", "current_ma_min", "current_ma_max", "current_ma",
                     "power_w_min", "power_w_max", "power_w"):
            column = getattr(self, name)
            if column is not None and len(column) != n_periods:
                raise RatingError(f"{name} has {len(column)} entries, expected {n_periods}")
        if len(self.session_end_epoch_ms) != self.size:
            raise RatingError("session_end_epoch_ms needs one entry per session")

    @property
    def size(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def from_sessions(sessions: Sequence[SessionFacts]) -> SessionBatch:
        """Columns from domain objects (convenient for tests and samples; not fast)."""
        if not sessions:
            raise RatingError("a batch needs at least one session")
        zones = {s.time_zone for s in sessions}
        if len(zones) != 1:
            raise RatingError("a batch holds sessions of one time zone")
        offsets = np.zeros(len(sessions) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s.periods) for s in sessions])
        periods = [p for s in sessions for p in s.periods]

        def col(name: str, missing: int = 0) -> IntArray:
            values = [getattr(p, name) for p in periods]
            return np.array([missing if v is None else v for v in values], dtype=np.int64)

        ends = [s.end_epoch_ms if s.end_epoch_ms is not None else s.periods[-1].start_epoch_ms
                for s in sessions]
        starts = [s.start_epoch_ms if s.start_epoch_ms is not None else -1 for s in sessions]
        expired = [-1 if s.reservation_expired is None else int(s.reservation_expired)
                   for s in sessions]
        return SessionBatch(
            offsets=offsets,
            start_epoch_ms=col("start_epoch_ms"),
            energy_milliwh=col("energy_milliwh"),
            time_ms=col("time_ms"),
            parking_ms=col("parking_ms"),
            session_end_epoch_ms=np.array(ends, dtype=np.int64),
            time_zone=zones.pop(),
            session_start_epoch_ms=np.array(starts, dtype=np.int64),
            reservation_ms=col("reservation_ms"),
            current_ma_min=col("current_ma_min", -1),
            current_ma_max=col("current_ma_max", -1),
            current_ma=col("current_ma", -1),
            power_w_min=col("power_w_min", -1),
            power_w_max=col("power_w_max", -1),
            power_w=col("power_w", -1),
            reservation_expired=np.array(expired, dtype=np.int64),
        )


@dataclass(frozen=True, slots=True)
class RatedTotals:
    """The OCPI CDR totals of one session from the bulk path (same fields as RatedSession)."""

    currency: Currency
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
    price_bound: str | None
    total_cost_exact: CostPart


_BOUND_NAMES = {0: None, 1: "min_price", 2: "max_price"}


#: A cost column: excl. VAT numerators per session, and the same split by VAT factor
#: (incl = sum of factor * excl over the groups; computed only when asked for).
Part = tuple[Any, list[tuple[int, Any]]]


class BulkRated:
    """Exact results of ``rate_bulk``: integer numerators per session and total field."""

    def __init__(self, currency: Currency, parts: dict[str, Part],
                 quantities: dict[str, IntArray], bound: IntArray) -> None:
        self.currency = currency
        self._parts = parts  # name -> (excl numerators, [(vat factor, excl numerators)])
        self._quantities = quantities
        self._bound = bound

    @property
    def size(self) -> int:
        return len(self._bound)

    def total_cost_excl(self) -> Any:
        """Exact total_cost excl. VAT numerators over rating.MONEY_DENOMINATOR."""
        return self._parts["total"][0]

    def total_cost_incl(self) -> Any:
        """Exact total_cost incl. VAT numerators over MONEY_DENOMINATOR * VAT_SCALE."""
        return _incl(self._parts["total"][1])

    def _part(self, name: str, i: int) -> CostPart:
        excl, groups = self._parts[name]
        return CostPart(int(excl[i]), sum(factor * int(col[i]) for factor, col in groups))

    def totals(self, i: int) -> RatedTotals:
        q = self._quantities
        total = self._part("total", i)
        return RatedTotals(
            currency=self.currency,
            total_cost=total.price(),
            total_fixed_cost=self._part("fixed", i).price(),
            total_energy=Decimal(int(q["energy"][i])) / MILLIWH_PER_KWH,
            total_energy_cost=self._part("energy", i).price(),
            total_time=quantize_full(int(q["time"][i]), MS_PER_HOUR),
            total_time_cost=self._part("time", i).price(),
            total_parking_time=quantize_full(int(q["parking"][i]), MS_PER_HOUR),
            total_parking_cost=self._part("parking", i).price(),
            total_reservation_time=quantize_full(int(q["reservation"][i]), MS_PER_HOUR),
            total_reservation_cost=self._part("reservation", i).price(),
            price_bound_adjustment=self._part("adjustment", i).price(),
            price_bound=_BOUND_NAMES[int(self._bound[i])],
            total_cost_exact=total,
        )


def _incl(groups: list[tuple[int, Any]]) -> Any:
    total: Any = 0
    for factor, col in groups:
        total = total + np.asarray(col).astype(object) * factor
    return total


# -- the vectorised engine -------------------------------------------------------------------------


class _Ctx:
    """Per-period columns shared by the element matchers; each is computed only if needed."""

    def __init__(self, batch: SessionBatch) -> None:
        self.batch = batch
        self.starts = batch.offsets[:-1]
        self.counts = np.diff(batch.offsets)
        self.t = batch.start_epoch_ms
        self.n_periods = len(self.t)
        self.res = (batch.reservation_ms != 0) if batch.reservation_ms is not None \
            else np.zeros(self.n_periods, dtype=bool)
        self.any_res = bool(self.res.any())
        self.charging = ~self.res
        big = np.iinfo(np.int64).max
        origin = np.minimum.reduceat(np.where(self.charging, self.t, big) if self.any_res
                                     else self.t, self.starts)
        self.has_charging = origin != big
        self.origin = np.where(self.has_charging, origin, 0)
        self._cache: dict[str, IntArray] = {}
        self.positions = np.arange(self.n_periods, dtype=np.int64)

    def per_period(self, per_session: IntArray) -> IntArray:
        return np.repeat(per_session, self.counts)

    def get(self, name: str) -> IntArray:
        value = self._cache.get(name)
        if value is None:
            value = getattr(self, f"_{name}")()
            self._cache[name] = value
        return value

    def _local(self) -> IntArray:
        """Local wall-clock milliseconds since 1970-01-01 (floor to the second is implied by
        comparing against whole-second bounds times 1000)."""
        lo, hi = int(self.t.min()) // 1000, int(self.t.max()) // 1000
        table = offset_table(self.batch.time_zone, lo, hi)
        offset = table.offset_s(lo)
        local = self.t + offset * 1000
        for instant, after in zip(table.instants_s, table.offsets_s, strict=True):
            if lo < instant <= hi and after != offset:
                local += (self.t >= instant * 1000) * ((after - offset) * 1000)
                offset = after
        return local

    def _day(self) -> IntArray:
        day: IntArray = self.get("local") // 86_400_000
        return day

    def _sod(self) -> IntArray:
        """Milliseconds since local midnight."""
        sod: IntArray
        if "day" in self._cache:
            sod = self.get("local") - self.get("day") * 86_400_000
        else:
            sod = self.get("local") % 86_400_000
        return sod

    def _dow(self) -> IntArray:
        return (self.get("day") + 3) % 7

    def _dur(self) -> IntArray:
        return self.t - self.per_period(self.origin)

    def _cum(self) -> IntArray:
        energy = self.batch.energy_milliwh
        if self.any_res:
            energy = np.where(self.charging, energy, 0)
        csum = np.cumsum(energy)
        csum -= energy
        return csum - self.per_period(csum[self.starts])

    def column(self, name: str) -> IntArray:
        value = getattr(self.batch, name)
        return value if value is not None else np.full(self.n_periods, -1, dtype=np.int64)


def _match(el: _Element, c: _Ctx) -> BoolArray | None:
    """Where ``el``'s restrictions hold; None = everywhere (no restrictions)."""
    m: BoolArray | None = None

    def both(mask: BoolArray) -> None:
        nonlocal m
        m = mask if m is None else (m & mask)

    if el.tod is not None:
        start, end = el.tod[0] * 1000, el.tod[1] * 1000
        sod = c.get("sod")
        if start < end:
            both((sod >= start) & (sod < end) if start > 0 else sod < end)
        else:
            both((sod >= start) | (sod < end))
    if el.dow_mask:
        both(((el.dow_mask >> c.get("dow")) & 1).astype(bool))
    for bounds, name in ((el.days, "day"), (el.kwh, "cum"), (el.duration, "dur")):
        if bounds is None:
            continue
        lo, hi = bounds
        col = c.get(name)
        if lo is not None:
            both(col >= lo)
        if hi is not None:
            both(col < hi)
    for limits, lo_name, hi_name, avg_name in (
            (el.current, "current_ma_min", "current_ma_max", "current_ma"),
            (el.power, "power_w_min", "power_w_max", "power_w")):
        if limits is None:
            continue
        avg = c.column(avg_name)
        low = c.column(lo_name)
        high = c.column(hi_name)
        low = np.where(low >= 0, low, avg)
        high = np.where(high >= 0, high, avg)
        lo, hi = limits
        if lo is not None:
            both((low >= 0) & (low >= lo))
        if hi is not None:
            both((high >= 0) & (high < hi))
    return m


def _first_choice(candidates: Sequence[_Element], matches: dict[int, BoolArray | None],
                  eligible: BoolArray) -> IntArray:
    """Per period, the index of the first candidate that matches (-1 = none)."""
    choice = np.full(len(eligible), -1, dtype=np.int16)
    free = eligible.copy()
    for el in candidates:
        match = matches[el.index]
        hit = free if match is None else (free & match)
        choice[hit] = el.index
        if match is None:
            break
        free &= ~match
    return choice


def _last_position(valid: BoolArray, c: _Ctx) -> IntArray:
    return np.maximum.reduceat(np.where(valid, c.positions, -1), c.starts)


def _first_position(valid: BoolArray, c: _Ctx) -> IntArray:
    return np.minimum.reduceat(np.where(valid, c.positions, c.n_periods), c.starts)


class _Dim:
    """Per-element price lookups for one dimension (index -1 reads the trailing zero)."""

    def __init__(self, elements: Sequence[_Element], pick: str, factor: int, dtype: Any) -> None:
        comps: list[_Component | None] = [getattr(e, pick) for e in elements]
        self.factor = factor
        self.price = np.array([c.price_micro if c else 0 for c in comps] + [0], dtype=dtype)
        self.step = np.array([c.step if c else 1 for c in comps] + [1], dtype=np.int64)
        self.vat = np.array([c.vat_factor if c else VAT_SCALE for c in comps] + [VAT_SCALE],
                            dtype=np.int64)
        # The padding entry (no component) has price 0, so it needs no group of its own.
        self.vat_groups = sorted({c.vat_factor for c in comps if c}) or [VAT_SCALE]

    def split(self, cost: Any, choice: IntArray, c: _Ctx) -> list[tuple[int, Any]]:
        """Per-session sums of per-period costs, one per VAT factor (times the unit factor)."""
        if len(self.vat_groups) == 1:
            return [(self.vat_groups[0], np.add.reduceat(cost, c.starts) * self.factor)]
        vat = self.vat[choice]
        return [(g, np.add.reduceat(np.where(vat == g, cost, 0), c.starts) * self.factor)
                for g in self.vat_groups]

    def one(self, element: IntArray, quantity: Any) -> list[tuple[int, Any]]:
        """Per-session cost of ``quantity`` at each session's ``element`` (one per VAT factor)."""
        cost = self.price[element] * quantity * self.factor
        if len(self.vat_groups) == 1:
            return [(self.vat_groups[0], cost)]
        vat = self.vat[element]
        return [(g, np.where(vat == g, cost, 0)) for g in self.vat_groups]


def _part(groups: list[tuple[int, Any]]) -> Part:
    merged: dict[int, Any] = {}
    for factor, col in groups:
        merged[factor] = merged[factor] + col if factor in merged else col
    excl = sum(merged.values())
    return excl, sorted(merged.items(), key=lambda item: item[0])


def _step_extra(total: Any, pos: IntArray, step: IntArray) -> Any:
    return np.where((pos >= 0) & (total > 0) & (step > 1), (-total) % step, 0)


def rate_bulk(tariff: Tariff | CompiledTariff, batch: SessionBatch) -> BulkRated:
    ct = compile_tariff(tariff)
    c = _Ctx(batch)
    n = batch.size
    els = ct.elements
    matches = {el.index: _match(el, c) for el in els}

    # Expired reservations, per session.
    infer = ~c.has_charging
    if batch.reservation_expired is not None:
        expired = np.where(batch.reservation_expired >= 0, batch.reservation_expired == 1, infer)
    else:
        expired = infer

    dtype = _dtype_for(ct, batch)
    dims = {
        _ENERGY: _Dim(els, "energy", ENERGY_FACTOR, dtype),
        _TIME: _Dim(els, "time", TIME_FACTOR, dtype),
        _PARKING: _Dim(els, "parking", TIME_FACTOR, dtype),
    }
    names = {_ENERGY: "energy", _TIME: "time", _PARKING: "parking"}
    qty_cols = {_ENERGY: batch.energy_milliwh, _TIME: batch.time_ms, _PARKING: batch.parking_ms}
    choices: dict[int, IntArray] = {}
    last: dict[int, IntArray] = {}
    for dim, qty in qty_cols.items():
        eligible = (qty != 0) & c.charging if c.any_res else (qty != 0)
        choices[dim] = _first_choice(ct.candidates[_CHARGING][dim], matches, eligible)
        last[dim] = _last_position(choices[dim] >= 0, c)

    parts: dict[str, Part] = {}
    # Which time dimension was priced last (PARKING wins a tie: it follows TIME in a period).
    parking_last = last[_PARKING] >= last[_TIME]
    for dim, qty in qty_cols.items():
        d = dims[dim]
        choice = choices[dim]
        q = qty.astype(object) if dtype is object else qty
        priced = np.where(choice >= 0, q, 0)
        total_q = np.add.reduceat(priced, c.starts)
        pos = last[dim]
        if dim == _TIME:
            pos = np.where(parking_last, -1, pos)
        elif dim == _PARKING:
            pos = np.where(parking_last, pos, -1)
        el_last = np.where(pos >= 0, choice[np.maximum(pos, 0)], -1)
        extra = _step_extra(total_q, pos, d.step[el_last])
        parts[names[dim]] = _part(d.split(d.price[choice] * priced, choice, c)
                                  + d.one(el_last, extra))

    # FLAT: once, at the first charging period where an element with FLAT matches.
    flat = _Dim(els, "flat", FLAT_FACTOR, dtype)
    flat_choice = _first_choice(ct.flat_candidates[_CHARGING], matches, c.charging)
    first = _first_position(flat_choice >= 0, c)
    has_flat = (first < c.n_periods) & ~expired
    flat_el = np.where(has_flat, flat_choice[np.minimum(first, c.n_periods - 1)], -1)
    parts["fixed"] = _part(flat.one(flat_el, 1))
    parts["reservation"] = _reservation(ct, batch, c, matches, expired, dtype)

    components = [parts[k] for k in ("energy", "time", "parking", "reservation", "fixed")]
    total = _part([g for part in components for g in part[1]])
    bound = np.zeros(n, dtype=np.int64)
    zero = np.zeros(n, dtype=dtype)
    adjustment: Part = (zero, [(VAT_SCALE, zero)])
    if ct.min_price is not None or ct.max_price is not None:
        excl_total, incl_total = total[0], _incl(total[1])
        bounded_excl = np.array(excl_total, dtype=object)
        bounded_incl = np.array(incl_total, dtype=object)
        for i in range(n):
            part, name = _apply_bounds(CostPart(int(excl_total[i]), int(incl_total[i])),
                                       ct.min_price, ct.max_price)
            bounded_excl[i], bounded_incl[i] = part.excl, part.incl
            bound[i] = {None: 0, "min_price": 1, "max_price": 2}[name]
        adjustment = (bounded_excl - excl_total, [(1, bounded_incl - incl_total)])
        total = (bounded_excl, [(1, bounded_incl)])
    parts["total"] = total
    parts["adjustment"] = adjustment

    end = batch.session_end_epoch_ms
    quantities = {
        "energy": np.add.reduceat(np.where(c.charging, batch.energy_milliwh, 0) if c.any_res
                                  else batch.energy_milliwh, c.starts),
        "parking": np.add.reduceat(np.where(c.charging, batch.parking_ms, 0) if c.any_res
                                   else batch.parking_ms, c.starts),
        "reservation": np.add.reduceat(np.where(c.res, c.column("reservation_ms"), 0),
                                       c.starts) if c.any_res else np.zeros(n, dtype=np.int64),
        "time": np.where(c.has_charging, np.maximum(end - c.origin, 0), 0),
    }
    return BulkRated(ct.currency, parts, quantities, bound)


def _reservation(ct: CompiledTariff, batch: SessionBatch, c: _Ctx,
                 matches: dict[int, BoolArray | None], expired: BoolArray, dtype: Any) -> Part:
    n = batch.size
    if batch.reservation_ms is None or not c.any_res:
        zero = np.zeros(n, dtype=dtype)
        return zero, [(VAT_SCALE, zero)]
    d = _Dim(ct.elements, "time", TIME_FACTOR, dtype)
    flat = _Dim(ct.elements, "flat", FLAT_FACTOR, dtype)
    qty = batch.reservation_ms.astype(object) if dtype is object else batch.reservation_ms
    expired_p = c.per_period(expired)
    groups: list[tuple[int, Any]] = []
    for mode, in_mode in ((_RESERVED, c.res & ~expired_p), (_EXPIRED, c.res & expired_p)):
        choice = _first_choice(ct.candidates[mode][_RESERVATION], matches, in_mode)
        priced = np.where(choice >= 0, qty, 0)
        total_q = np.add.reduceat(priced, c.starts)
        pos = _last_position(choice >= 0, c)
        el_last = np.where(pos >= 0, choice[np.maximum(pos, 0)], -1)
        extra = _step_extra(total_q, pos, d.step[el_last])
        flat_choice = _first_choice(ct.flat_candidates[mode], matches, in_mode)
        first = _first_position(flat_choice >= 0, c)
        flat_el = np.where(first < c.n_periods,
                           flat_choice[np.minimum(first, c.n_periods - 1)], -1)
        groups += d.split(d.price[choice] * priced, choice, c) + d.one(el_last, extra) \
            + flat.one(flat_el, 1)
    return _part(groups)


def _dtype_for(ct: CompiledTariff, batch: SessionBatch) -> Any:
    """int64 when no session's sum can overflow, else Python ints (object)."""
    periods_max = int(np.diff(batch.offsets).max()) + 2
    worst = 0
    for pick, column, factor in (("energy", batch.energy_milliwh, ENERGY_FACTOR),
                                 ("time", batch.time_ms, TIME_FACTOR),
                                 ("parking", batch.parking_ms, TIME_FACTOR),
                                 ("time", batch.reservation_ms, TIME_FACTOR)):
        comps = [getattr(el, pick) for el in ct.elements if getattr(el, pick) is not None]
        if column is None or not comps:
            continue
        price = max(abs(comp.price_micro) for comp in comps)
        quantity = max(int(column.max()), -int(column.min())) + max(comp.step for comp in comps)
        worst += price * quantity * factor * periods_max
    flats = [abs(el.flat.price_micro) for el in ct.elements if el.flat is not None]
    worst += 2 * max(flats, default=0) * FLAT_FACTOR
    return np.int64 if worst < _I64_SAFE else object
