"""The generated restriction matcher agrees with the readable reference ``_Element.matches``."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from evbilling.domain.periods import ChargingPeriod
from evbilling.domain.rating import compile_tariff
from evbilling.domain.tariffs import parse_tariff

times = st.sampled_from(["00:00", "00:30", "07:00", "12:45", "17:00", "23:59"])
optional_int = st.one_of(st.none(), st.integers(0, 40))


@st.composite
def restrictions(draw: st.DrawFn) -> dict[str, object]:
    r: dict[str, object] = {}
    for key in ("start_time", "end_time"):
        if draw(st.booleans()):
            r[key] = draw(times)
    if draw(st.booleans()):
        r["day_of_week"] = draw(st.lists(st.sampled_from(
            ["MONDAY", "TUESDAY", "FRIDAY", "SUNDAY"]), min_size=1, unique=True))
    if draw(st.booleans()):
        r["start_date"] = "2024-03-01"
    if draw(st.booleans()):
        r["end_date"] = "2024-04-01"
    for low, high, scale in (("min_kwh", "max_kwh", 1), ("min_duration", "max_duration", 600),
                             ("min_current", "max_current", 1), ("min_power", "max_power", 1)):
        lo, hi = draw(optional_int), draw(optional_int)
        if lo is not None:
            r[low] = lo * scale if scale != 1 else Decimal(lo)
        if hi is not None and (lo is None or hi > lo):
            r[high] = hi * scale if scale != 1 else Decimal(hi)
    return r


@settings(max_examples=300, deadline=None)
@given(r=restrictions(), sod=st.integers(0, 86_399), day=st.integers(19_700, 19_830),
       cum=st.integers(0, 50_000_000), dur=st.integers(0, 30_000_000),
       current=st.one_of(st.none(), st.integers(0, 40_000)),
       power=st.one_of(st.none(), st.integers(0, 40_000)))
def test_generated_matcher_agrees_with_the_reference_for_every_restriction(
        r: dict[str, object], sod: int, day: int, cum: int, dur: int, current: int | None,
        power: int | None) -> None:
    tariff = compile_tariff(parse_tariff({"id": "t", "currency": "EUR", "elements": [
        {"price_components": [{"type": "ENERGY", "price": 1, "step_size": 1}],
         "restrictions": r}]}))
    element = tariff.elements[0]
    period = ChargingPeriod(0, current_ma=current, power_w_max=power)
    dow = (day + 3) % 7
    assert bool(element.matcher(sod, day, dow, cum, dur, period)) == \
        element.matches(sod, day, dow, cum, dur, period)
