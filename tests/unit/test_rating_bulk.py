"""The vectorised bulk path prices every session exactly as the one-call path does."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evbilling.domain.errors import RatingError
from evbilling.domain.periods import ChargingPeriod, SessionFacts
from evbilling.domain.rating import compile_tariff, rate
from evbilling.domain.rating_bulk import SessionBatch, rate_bulk
from evbilling.domain.tariffs import parse_tariff

TOTAL_FIELDS = (
    "total_cost", "total_fixed_cost", "total_energy", "total_energy_cost", "total_time",
    "total_time_cost", "total_parking_time", "total_parking_cost", "total_reservation_time",
    "total_reservation_cost", "price_bound_adjustment", "price_bound", "total_cost_exact",
)
START_MS = 1_711_843_200_000  # 2024-03-31 00:00 UTC: spring-forward night in Europe/Berlin

prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("9.9999"), places=4)
vats = st.one_of(st.none(), st.sampled_from([Decimal(0), Decimal(7), Decimal(19), Decimal("5.5")]))
steps = st.sampled_from([0, 1, 60, 100, 300, 900])
hhmm = st.sampled_from(["00:00", "06:30", "07:00", "12:00", "17:00", "22:00"])


@st.composite
def restrictions(draw: st.DrawFn) -> dict[str, object]:
    r: dict[str, object] = {}
    if draw(st.booleans()):
        r["start_time"], r["end_time"] = draw(hhmm), draw(hhmm)
    if draw(st.booleans()):
        r["day_of_week"] = draw(st.lists(st.sampled_from(
            ["MONDAY", "SATURDAY", "SUNDAY", "WEDNESDAY"]), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        low = draw(st.integers(0, 30))
        r["min_kwh"] = Decimal(low)
        if draw(st.booleans()):
            r["max_kwh"] = Decimal(low + draw(st.integers(1, 30)))
    if draw(st.booleans()):
        r["min_duration"] = draw(st.sampled_from([0, 1800, 3600]))
    if draw(st.booleans()):
        r["max_current"] = Decimal(draw(st.sampled_from([16, 32])))
    if draw(st.booleans()):
        r["min_power"] = Decimal(draw(st.sampled_from([7, 22])))
    return r


@st.composite
def tariffs(draw: st.DrawFn) -> dict[str, object]:
    elements = []
    for _ in range(draw(st.integers(1, 6))):
        kinds = draw(st.lists(st.sampled_from(["ENERGY", "TIME", "PARKING_TIME", "FLAT"]),
                              min_size=1, max_size=4, unique=True))
        element: dict[str, object] = {"price_components": [
            {"type": k, "price": draw(prices), "step_size": draw(steps),
             **({"vat": v} if (v := draw(vats)) is not None else {})} for k in kinds]}
        if draw(st.booleans()):
            element["restrictions"] = draw(restrictions())
        elements.append(element)
    if draw(st.booleans()):  # reservation elements
        elements.insert(0, {"price_components": [
            {"type": "TIME", "price": draw(prices), "step_size": draw(steps), "vat": Decimal(20)},
            {"type": "FLAT", "price": draw(prices), "step_size": 1}],
            "restrictions": {"reservation": draw(st.sampled_from(
                ["RESERVATION", "RESERVATION_EXPIRES"]))}})
    tariff: dict[str, object] = {"id": "t", "currency": "EUR", "elements": elements}
    if draw(st.booleans()):
        tariff["min_price"] = {"excl_vat": draw(prices)}
    if draw(st.booleans()):
        bound = draw(prices) + 10  # above any min_price drawn
        tariff["max_price"] = {"excl_vat": bound,
                               **({"incl_vat": bound * Decimal("1.1")} if draw(st.booleans())
                                  else {})}
    return tariff


@st.composite
def sessions(draw: st.DrawFn, time_zone: str) -> SessionFacts:
    t = START_MS + draw(st.integers(0, 14 * 96)) * 900_000
    start = t
    periods = []
    if draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            minutes = draw(st.integers(1, 40))
            periods.append(ChargingPeriod(t, reservation_ms=minutes * 60_000))
            t += minutes * 60_000
    for _ in range(draw(st.integers(0, 12))):
        ms = draw(st.integers(1, 120)) * 60_000 + draw(st.integers(0, 999))
        if draw(st.booleans()):
            periods.append(ChargingPeriod(
                t, energy_milliwh=draw(st.integers(0, 30_000_000)), time_ms=ms,
                current_ma_max=draw(st.sampled_from([None, 10_000, 40_000])),
                power_w_min=draw(st.sampled_from([None, 3_000, 50_000]))))
        else:
            periods.append(ChargingPeriod(t, parking_ms=ms))
        t += ms
    if not periods:
        periods.append(ChargingPeriod(t, energy_milliwh=1_000, time_ms=60_000))
        t += 60_000
    expired = draw(st.sampled_from([None, None, True, False]))
    return SessionFacts(tuple(periods), time_zone, start, t, reservation_expired=expired)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff=tariffs(), data=st.data())
def test_bulk_rating_equals_one_call_rating_field_by_field(tariff: dict[str, object],
                                                           data: st.DataObject) -> None:
    compiled = compile_tariff(parse_tariff(tariff))
    batch_sessions = [data.draw(sessions("Europe/Berlin")) for _ in range(data.draw(
        st.integers(1, 6)))]
    bulk = rate_bulk(compiled, SessionBatch.from_sessions(batch_sessions))
    for i, session in enumerate(batch_sessions):
        single = rate(compiled, session)
        totals = bulk.totals(i)
        for name in TOTAL_FIELDS:
            assert getattr(totals, name) == getattr(single, name), (name, i)


def test_bulk_total_cost_numerators_sum_exactly_to_the_single_totals() -> None:
    tariff = compile_tariff(parse_tariff({"id": "t", "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGY", "price": Decimal("0.3949"), "vat": Decimal(19),
                               "step_size": 1}]}]}))
    facts = [SessionFacts((ChargingPeriod(START_MS, energy_milliwh=1_234_567 * k),),
                          "UTC", START_MS, START_MS + 3_600_000) for k in range(1, 6)]
    bulk = rate_bulk(tariff, SessionBatch.from_sessions(facts))
    assert int(np.sum(bulk.total_cost_excl())) == sum(
        rate(tariff, f).total_cost_exact.excl for f in facts)
    assert sum(bulk.total_cost_incl()) == sum(rate(tariff, f).total_cost_exact.incl for f in facts)


def test_a_batch_with_an_empty_session_is_refused() -> None:
    with pytest.raises(RatingError, match="at least one charging period"):
        SessionBatch(offsets=np.array([0, 0], dtype=np.int64),
                     start_epoch_ms=np.array([], dtype=np.int64),
                     energy_milliwh=np.array([], dtype=np.int64),
                     time_ms=np.array([], dtype=np.int64),
                     parking_ms=np.array([], dtype=np.int64),
                     session_end_epoch_ms=np.array([START_MS], dtype=np.int64))


def test_huge_prices_fall_back_to_exact_python_integers() -> None:
    tariff = compile_tariff(parse_tariff({"id": "t", "currency": "IDR", "elements": [
        {"price_components": [{"type": "TIME", "price": Decimal("900000.123456"),
                               "step_size": 1}]}]}))
    session = SessionFacts((ChargingPeriod(START_MS, time_ms=30 * 24 * 3_600_000),),
                           "UTC", START_MS, START_MS + 30 * 24 * 3_600_000)
    bulk = rate_bulk(tariff, SessionBatch.from_sessions([session]))
    assert bulk.totals(0).total_cost == rate(tariff, session).total_cost
