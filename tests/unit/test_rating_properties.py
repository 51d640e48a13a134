"""Properties of rating and allocation that hold for every tariff and session (hypothesis).

Each property states the conditions under which the spec makes it true; the generators are
shaped to those conditions, and the docstring of each test says why the property holds.
Budget: the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evbilling.domain.money import allocate
from evbilling.domain.periods import ChargingPeriod, SessionFacts, epoch_ms
from evbilling.domain.rating import RatedSession, SessionRater, rate
from evbilling.domain.tariffs import Tariff, parse_tariff

TIME_ZONE = "Europe/Berlin"
YEAR_START_MS = epoch_ms(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
QUARTER_HOUR_MS = 900_000
KINDS = ("ENERGY", "TIME", "PARKING_TIME", "FLAT")
TOLERANCE = Decimal("1e-11")  # six totals each quantized to 12 places, half-up

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- generators ----------------------------------------------------------------------------------

prices = st.decimals(min_value=Decimal(0), max_value=Decimal("9.9999"), places=4)
vats = st.one_of(st.none(), st.sampled_from(
    [Decimal(0), Decimal("5.5"), Decimal(7), Decimal(19), Decimal(21), Decimal("25.5")]))
any_steps = st.sampled_from([0, 1, 5, 60, 300, 500, 900, 1800])
one_steps = st.sampled_from([0, 1])  # 0 is read as 1
times_of_day = st.sampled_from(["00:00", "02:00", "03:00", "06:30", "08:00", "12:00", "17:00",
                                "18:00", "22:00", "23:59"])
days = st.sampled_from(["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY",
                        "SUNDAY"])


RESTRICTION_KINDS = ("time_of_day", "day_of_week", "date", "duration", "kwh", "current",
                     "power")
kwh_limits = st.sampled_from([Decimal(0), Decimal(1), Decimal("2.5"), Decimal(5), Decimal(10),
                              Decimal(20), Decimal("40.001"), Decimal(80)])
duration_limits = st.sampled_from([0, 300, 600, 900, 1800, 3600, 7200, 14_400])


def _ordered_pair(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """(low, high) with low < high, either possibly None (but not both)."""
    low, high = draw(values), draw(values)
    if low == high:
        return (low, None) if draw(st.booleans()) else (None, high)
    low, high = min(low, high), max(low, high)
    return draw(st.sampled_from([(low, high), (low, None), (None, high)]))


@st.composite
def restriction_sets(draw: st.DrawFn, *, kwh: bool, current_power: bool) -> dict[str, Any]:
    """One or two kinds of restriction per element, so elements do match now and then."""
    allowed = [k for k in RESTRICTION_KINDS
               if (kwh or k != "kwh") and (current_power or k not in ("current", "power"))]
    r: dict[str, Any] = {}
    for kind in draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=2, unique=True)):
        if kind == "time_of_day":
            start, end = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
            if start:
                r["start_time"] = draw(times_of_day)
            if end:
                r["end_time"] = draw(times_of_day)
        elif kind == "day_of_week":
            r["day_of_week"] = draw(st.lists(days, min_size=1, max_size=5, unique=True))
        elif kind == "date":
            first = dt.date(2024, 1, 1) + dt.timedelta(days=draw(st.integers(0, 360)))
            r["start_date"] = first.isoformat()
            if draw(st.booleans()):
                r["end_date"] = (first + dt.timedelta(days=draw(st.integers(1, 90)))).isoformat()
        else:
            names, values = {
                "duration": (("min_duration", "max_duration"), duration_limits),
                "kwh": (("min_kwh", "max_kwh"), kwh_limits),
                "current": (("min_current", "max_current"),
                            st.sampled_from([Decimal(6), Decimal(16), Decimal(32)])),
                "power": (("min_power", "max_power"),
                          st.sampled_from([Decimal(11), Decimal(22), Decimal(50)])),
            }[kind]
            for name, value in zip(names, _ordered_pair(draw, values), strict=True):
                if value is not None:
                    r[name] = value
    return r


@st.composite
def components(draw: st.DrawFn, kind: str, steps: st.SearchStrategy[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "price": draw(prices)}
    if kind != "FLAT" or draw(st.booleans()):
        out["step_size"] = draw(steps if kind == "ENERGY" else any_steps)
    vat = draw(vats)
    if vat is not None:
        out["vat"] = vat
    return out


@st.composite
def price_bounds(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    low = None
    if draw(st.booleans()):
        low = draw(prices)
        out["min_price"] = {"excl_vat": low}
        if draw(st.booleans()):
            out["min_price"]["incl_vat"] = low + draw(prices)
    if draw(st.booleans()):
        high = (low or Decimal(0)) + draw(st.decimals(Decimal(0), Decimal(60), places=2))
        out["max_price"] = {"excl_vat": high}
        if draw(st.booleans()):
            out["max_price"]["incl_vat"] = high + draw(prices)
    return out


@st.composite
def tariffs(draw: st.DrawFn, *, restricted: bool = True, kwh: bool = True,
            current_power: bool = False, reservation: bool = False, bounds: bool = True,
            energy_steps: st.SearchStrategy[int] = any_steps) -> Tariff:
    """1-6 elements. Like real tariffs (and the spec's advice), restricted elements usually
    come first and an unrestricted fallback, when there is one, usually last."""
    elements: list[dict[str, Any]] = []
    n_elements = draw(st.integers(1, 6))
    fallback_last = draw(st.integers(0, 3)) > 0
    for i in range(n_elements):
        kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4, unique=True))
        element: dict[str, Any] = {
            "price_components": [draw(components(k, energy_steps)) for k in kinds]}
        is_fallback = fallback_last and i == n_elements - 1
        if restricted and not is_fallback and draw(st.integers(0, 5)):
            element["restrictions"] = draw(restriction_sets(kwh=kwh,
                                                            current_power=current_power))
        elements.append(element)
    if reservation:
        for kind in draw(st.lists(st.sampled_from(["RESERVATION", "RESERVATION_EXPIRES"]),
                                  max_size=2, unique=True)):
            kinds = draw(st.lists(st.sampled_from(["TIME", "FLAT"]), min_size=1, unique=True))
            elements.insert(draw(st.integers(0, len(elements))), {
                "price_components": [draw(components(k, any_steps)) for k in kinds],
                "restrictions": {"reservation": kind}})
    doc: dict[str, Any] = {"id": "T-PROP", "currency": "EUR", "elements": elements}
    if bounds:
        doc.update(draw(price_bounds()))
    return parse_tariff(doc)


# Local midnight before the 2024 DST changes in Berlin, so sessions often cross them.
DST_NIGHTS_MS = (epoch_ms(dt.datetime(2024, 3, 30, 23, tzinfo=dt.UTC)),
                 epoch_ms(dt.datetime(2024, 10, 26, 22, tzinfo=dt.UTC)))
charging_powers_w = st.sampled_from([0, 1_400, 3_700, 7_400, 11_000, 22_000, 50_000, 150_000])


def share(draw: st.DrawFn, whole: int) -> int:
    """A part of ``whole`` (0..whole), spread over the range rather than bunched near 0."""
    return draw(st.one_of(st.integers(0, whole),
                          st.integers(0, 100).map(lambda pct: whole * pct // 100)))


def gap_ms(draw: st.DrawFn) -> int:
    return draw(st.integers(1, 60)) * 60_000 + draw(st.integers(0, 999))


@st.composite
def session_starts(draw: st.DrawFn) -> int:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(DST_NIGHTS_MS)) + draw(st.integers(0, 24)) * QUARTER_HOUR_MS
    return (YEAR_START_MS + draw(st.integers(0, 365 * 96)) * QUARTER_HOUR_MS
            + draw(st.integers(0, QUARTER_HOUR_MS - 1)))


@st.composite
def sessions(draw: st.DrawFn, *, reservations: bool = False, whole_wh: bool = False,
             current_power: bool = False) -> SessionFacts:
    """1-30 periods 1-60 min apart, anywhere in 2024 (DST nights often), Berlin time.

    A charging period has TIME and the energy of a realistic charging power (plus a few mWh,
    or whole Wh only); a parking period has PARKING_TIME only. Volumes are whole ms / mWh.
    """
    t = start = draw(session_starts())
    periods: list[ChargingPeriod] = []
    if reservations and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            gap = gap_ms(draw)
            periods.append(ChargingPeriod(t, reservation_ms=max(1, share(draw, gap))))
            t += gap
    for _ in range(draw(st.integers(0 if periods else 1, 30))):
        gap = gap_ms(draw)
        volume_ms = gap if draw(st.booleans()) else max(1, share(draw, gap))
        if draw(st.integers(0, 3)):
            energy = draw(charging_powers_w) * volume_ms // 3_600 + draw(st.integers(0, 999))
            if whole_wh:
                energy -= energy % 1_000
            extra: dict[str, int | None] = {}
            if current_power:
                extra = {
                    "current_ma_max": draw(st.sampled_from([None, 10_000, 16_000, 40_000])),
                    "current_ma_min": draw(st.sampled_from([None, 6_000, 32_000])),
                    "power_w": draw(st.sampled_from([None, 7_400, 22_000, 150_000])),
                }
            periods.append(ChargingPeriod(t, energy_milliwh=energy, time_ms=volume_ms, **extra))
        else:
            periods.append(ChargingPeriod(t, parking_ms=volume_ms))
        t += gap
    return SessionFacts(tuple(periods), TIME_ZONE, start_epoch_ms=start, end_epoch_ms=t)


def totals(session: RatedSession) -> tuple[object, ...]:
    return (session.total_cost_exact, session.total_cost, session.total_fixed_cost,
            session.total_energy_cost, session.total_time_cost, session.total_parking_cost,
            session.total_reservation_cost, session.price_bound_adjustment,
            session.total_energy, session.total_time, session.total_parking_time)


def split_volumes(draw: st.DrawFn, period: ChargingPeriod, start_ms: int
                  ) -> tuple[ChargingPeriod, ChargingPeriod]:
    """Two periods whose volumes add up to ``period``'s; the second starts at ``start_ms``."""
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    for key in ("energy_milliwh", "time_ms", "parking_ms"):
        volume = getattr(period, key)
        part = share(draw, volume)
        first[key], second[key] = part, volume - part
    return (replace(period, **first),
            replace(period, start_epoch_ms=start_ms, **second))


def with_period_split(facts: SessionFacts, index: int, pieces: tuple[ChargingPeriod, ...]
                      ) -> SessionFacts:
    periods = facts.periods[:index] + pieces + facts.periods[index + 1:]
    return replace(facts, periods=periods)


def period_end(facts: SessionFacts, index: int) -> int:
    if index + 1 < len(facts.periods):
        return facts.periods[index + 1].start_epoch_ms
    assert facts.end_epoch_ms is not None
    return facts.end_epoch_ms


# -- (1) splitting a period --------------------------------------------------------------------


@FAST
@given(tariff=tariffs(restricted=False), facts=sessions(), data=st.data())
def test_splitting_a_period_under_an_unrestricted_tariff_never_changes_the_cost(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """Without restrictions every period of a dimension is priced by the same element, so the
    same totals reach the same step_size, FLAT and bounds wherever the period is split."""
    index = data.draw(st.integers(0, len(facts.periods) - 1))
    period = facts.periods[index]
    at_ms = period.start_epoch_ms + share(
        data.draw, period_end(facts, index) - 1 - period.start_epoch_ms)
    pieces = split_volumes(data.draw, period, at_ms)
    assert totals(rate(tariff, with_period_split(facts, index, pieces))) == \
        totals(rate(tariff, facts))


@FAST
@given(tariff=tariffs(kwh=False), facts=sessions(), data=st.data())
def test_splitting_a_period_at_its_own_start_never_changes_the_cost(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """Both pieces start at the same instant, so time-of-day, date, weekday and duration
    restrictions see the same values; without kWh restrictions (the only ones that look at
    energy before the period) every piece gets the element the whole period got."""
    index = data.draw(st.integers(0, len(facts.periods) - 1))
    period = facts.periods[index]
    pieces = split_volumes(data.draw, period, period.start_epoch_ms)
    assert totals(rate(tariff, with_period_split(facts, index, pieces))) == \
        totals(rate(tariff, facts))


# -- (2) monotonic in energy -------------------------------------------------------------------


@FAST
@given(tariff=tariffs(kwh=False, bounds=False, energy_steps=one_steps),
       facts=sessions(whole_wh=True), data=st.data())
def test_adding_whole_wh_to_any_period_never_lowers_the_cost(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """Energy steps of 1 Wh and whole-Wh volumes leave no step extra, and without kWh
    restrictions the added energy changes no element choice: the cost grows by the added
    energy times a non-negative price (plus non-negative VAT)."""
    index = data.draw(st.integers(0, len(facts.periods) - 1))
    period = facts.periods[index]
    added = data.draw(st.integers(1, 10_000)) * 1_000
    more = with_period_split(facts, index, (replace(
        period, energy_milliwh=period.energy_milliwh + added),))
    before, after = rate(tariff, facts).total_cost, rate(tariff, more).total_cost
    assert (after.excl_vat >= before.excl_vat, after.incl_vat >= before.incl_vat) == (
        True, True)


@FAST
@given(tariff=tariffs(kwh=False, bounds=False), facts=sessions(), data=st.data())
def test_adding_energy_to_the_last_energy_period_never_lowers_the_cost(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """The step extra is billed at the last energy period's element. Adding energy there keeps
    that element and raises the rounded-up total, so the cost cannot fall, whatever the steps.
    (Added elsewhere, a cheap element's energy can swallow a dear element's step extra: the
    spec allows that, so it is not claimed.)"""
    with_energy = [i for i, p in enumerate(facts.periods) if p.energy_milliwh]
    index = with_energy[-1] if with_energy else data.draw(
        st.integers(0, len(facts.periods) - 1))
    period = facts.periods[index]
    added = data.draw(st.integers(1, 5_000_000))
    more = with_period_split(facts, index, (replace(
        period, energy_milliwh=period.energy_milliwh + added),))
    before, after = rate(tariff, facts).total_cost, rate(tariff, more).total_cost
    assert (after.excl_vat >= before.excl_vat, after.incl_vat >= before.incl_vat) == (
        True, True)


@FAST
@given(tariff=tariffs(kwh=False, energy_steps=one_steps), facts=sessions(whole_wh=True),
       data=st.data())
def test_adding_energy_never_lowers_the_cost_excl_vat_under_price_bounds(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """min/max_price clamp the excl-VAT total, and a clamp is monotonic. (Incl VAT is not
    claimed: a bound without incl_vat scales incl by the session's VAT mix, which energy with a
    lower VAT rate than the rest can lower.)"""
    index = data.draw(st.integers(0, len(facts.periods) - 1))
    period = facts.periods[index]
    more = with_period_split(facts, index, (replace(
        period, energy_milliwh=period.energy_milliwh + data.draw(st.integers(1, 10_000)) * 1_000),))
    assert rate(tariff, more).total_cost.excl_vat >= rate(tariff, facts).total_cost.excl_vat


# -- (3) incl >= excl --------------------------------------------------------------------------


@FAST
@given(tariff=tariffs(current_power=True, reservation=True),
       facts=sessions(reservations=True, current_power=True),
       expired=st.sampled_from([None, True, False]))
def test_every_total_incl_vat_is_at_least_excl_vat_for_non_negative_prices(
        tariff: Tariff, facts: SessionFacts, expired: bool | None) -> None:
    """VAT rates are >= 0, and bounds keep incl >= excl (a bound's incl_vat is >= its excl_vat;
    a bound without one scales incl by the same factor as excl)."""
    session = rate(tariff, replace(facts, reservation_expired=expired))
    for total in (session.total_cost, session.total_fixed_cost, session.total_energy_cost,
                  session.total_time_cost, session.total_parking_cost,
                  session.total_reservation_cost):
        assert total.incl_vat >= total.excl_vat


# -- (4) allocation ----------------------------------------------------------------------------

weights = st.lists(
    st.one_of(st.integers(0, 10**6), st.decimals(Decimal(0), Decimal(1000), places=3)),
    min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(total_minor=st.integers(-(10**12), 10**12), weights=weights)
def test_allocation_sums_to_the_whole_and_each_part_is_within_one_of_its_share(
        total_minor: int, weights: list[int | Decimal]) -> None:
    weight_sum = sum(Fraction(w) for w in weights)
    assume(weight_sum > 0)
    parts = allocate(total_minor, weights)
    shares = [total_minor * Fraction(w) / weight_sum for w in weights]
    assert sum(parts) == total_minor
    assert all(abs(part - share) < 1 for part, share in zip(parts, shares, strict=True))


# -- (5) live rating equals one-call rating ------------------------------------------------------


@FAST
@given(tariff=tariffs(current_power=True, reservation=True),
       facts=sessions(reservations=True, current_power=True), data=st.data())
def test_rating_period_by_period_with_snapshots_equals_rating_in_one_call(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    rater = SessionRater(tariff, facts.time_zone, facts.start_epoch_ms)
    for period in facts.periods:
        rater.add(period)
        rater.snapshot(period.start_epoch_ms + data.draw(st.integers(0, 3_600_000)),
                       reservation_expired=data.draw(st.sampled_from([None, True, False])))
    live = rater.snapshot(facts.end_epoch_ms, final=True)
    whole = rate(tariff, facts)
    assert (live, live.periods()) == (whole, whole.periods())


# -- (6) the total is the sum of its parts ---------------------------------------------------------


@FAST
@given(tariff=tariffs(current_power=True, reservation=True),
       facts=sessions(reservations=True, current_power=True))
def test_total_cost_is_the_sum_of_the_component_totals_and_the_bound_adjustment(
        tariff: Tariff, facts: SessionFacts) -> None:
    s = rate(tariff, facts)
    parts = (s.total_fixed_cost, s.total_energy_cost, s.total_time_cost, s.total_parking_cost,
             s.total_reservation_cost, s.price_bound_adjustment)
    excl = sum((p.excl_vat for p in parts), Decimal(0))
    incl = sum((p.incl_vat for p in parts), Decimal(0))
    assert abs(s.total_cost.excl_vat - excl) <= TOLERANCE
    assert abs(s.total_cost.incl_vat - incl) <= TOLERANCE
