"""The fast pricing path gives exactly what the pipeline gave before it.

``price_session`` now prices from the rater's exact integers (``RatedSession.billed``, per-element
sums) and visits periods one by one only where a plan's allowance reaches; amounts are integer
numerators rounded once per line. ``_pricing_reference.py`` is the previous implementation
(``Fraction`` per period piece, built from the ``Decimal`` breakdown), kept only here. The
property compares the two field by field (``Decimal``s by their digits and exponent) over random
tariffs, sessions, plans, usages, promotions and loyalty tiers, live and settled.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Any

import _pricing_reference as reference
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_rating_properties import sessions as rating_sessions
from test_rating_properties import tariffs as rating_tariffs

from evbilling.domain import pricing
from evbilling.domain.errors import DomainError
from evbilling.domain.invariants import InvariantViolation
from evbilling.domain.money import Currency
from evbilling.domain.periods import ChargingPeriod, SessionFacts
from evbilling.domain.plans import Plan, PlanKind, PlanUsage
from evbilling.domain.promotions import (
    Benefit,
    LoyaltyTier,
    Promotion,
    PromotionContext,
    PromotionScope,
    Stacking,
)
from evbilling.domain.rating import (
    MONEY_DENOMINATOR,
    VAT_SCALE,
    BilledQuantity,
    RatedSession,
    SessionRater,
    money_factor,
    rate,
)
from evbilling.domain.tariffs import Tariff, parse_tariff

KWH = 1_000_000
EUR = Currency.of("EUR")
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- comparing answers -----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A comparable picture of an answer: dataclasses by their compared fields and class name
    (the reference has its own classes), enums by value, Decimals by their exact digits and
    exponent (``Decimal("19")`` and ``Decimal("19.00")`` are equal but not the same)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(
            (f.name, plain(getattr(value, f.name))) for f in dataclasses.fields(value)
            if f.compare))
    if isinstance(value, Enum):
        return (type(value).__name__, value.value)
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, tuple | list):
        return tuple(plain(v) for v in value)
    return value


def outcome(price: Any, request: Any) -> tuple[str, Any]:
    try:
        return "ok", plain(price(request))
    except (DomainError, InvariantViolation) as error:
        return "error", (type(error).__name__, str(error))


# -- generators ------------------------------------------------------------------------------------


def negative_energy_prices(tariff: Tariff, draw: st.DrawFn) -> Tariff:
    """Dynamic tariffs: some ENERGY prices below zero."""
    elements = []
    for element in tariff.elements:
        components = tuple(
            dataclasses.replace(c, price=-c.price)
            if c.type.value == "ENERGY" and draw(st.booleans()) else c
            for c in element.price_components)
        elements.append(dataclasses.replace(element, price_components=components))
    return dataclasses.replace(tariff, elements=tuple(elements))


def with_exports(facts: SessionFacts, draw: st.DrawFn) -> SessionFacts:
    """Some charging periods exporting energy (negative ENERGY volumes)."""
    periods = tuple(
        dataclasses.replace(p, energy_milliwh=-p.energy_milliwh)
        if p.energy_milliwh and draw(st.integers(0, 5)) == 0 else p
        for p in facts.periods)
    return dataclasses.replace(facts, periods=periods)


def promotion(draw: st.DrawFn, index: int) -> Promotion:
    benefit = draw(st.one_of(
        st.integers(1, 10_000).map(lambda p: Benefit.percent_off_energy(Decimal(p) / 100)),
        st.integers(1, 5_000).map(Benefit.amount_off_session),
        st.integers(1, 90).map(Benefit.free_idle_time),
        st.integers(1, 30 * KWH).map(Benefit.free_energy),
    ))
    options: dict[str, Any] = {
        "stacking": draw(st.sampled_from([Stacking.STACKABLE, Stacking.EXCLUSIVE])),
        "priority": draw(st.integers(0, 5)),
    }
    if draw(st.integers(0, 3)) == 0:
        options["min_spend_minor"] = draw(st.integers(1, 5_000))
    if draw(st.integers(0, 4)) == 0:
        options["scope"] = PromotionScope(local_start_time=dt.time(22),
                                          local_end_time=dt.time(6))
    if draw(st.integers(0, 4)) == 0:
        options["code"] = "CODE"
    return Promotion(f"promo-{index}", "op-1", f"Promo {index}", EUR, benefit,
                     starts_at=dt.datetime(2023, 1, 1, tzinfo=dt.UTC), **options)


def loyalty_tier(draw: st.DrawFn) -> LoyaltyTier | None:
    benefit = draw(st.one_of(
        st.none(),
        st.integers(1, 30).map(lambda p: Benefit.percent_off_energy(Decimal(p))),
        st.integers(1, 60).map(Benefit.free_idle_time),
    ))
    return draw(st.sampled_from([None, LoyaltyTier("Gold", 100 * KWH, benefit)]))


def plan_for(draw: st.DrawFn, kind: PlanKind, tariff_id: str) -> Plan:
    waive = draw(st.booleans())
    allowance = draw(st.integers(0, 60)) * KWH + draw(st.integers(1, 999_999))
    promotions_eligible = draw(st.integers(0, 5)) > 0
    if kind is PlanKind.SUBSCRIPTION:
        return Plan.subscription("plan", "op-1", "Member", EUR, fee_minor=999,
                                 included_energy_milliwh=allowance, member_tariff_id=tariff_id,
                                 waive_flat_fee=waive, promotions_eligible=promotions_eligible)
    if kind is PlanKind.FLAT_RATE:
        return Plan.flat_rate("plan", "op-1", "Flat", EUR, fee_minor=4999,
                              fair_use_cap_milliwh=allowance, fallback_tariff_id=tariff_id,
                              waive_flat_fee=waive, promotions_eligible=promotions_eligible)
    if kind is PlanKind.FLEET:
        return Plan.fleet("plan", "op-1", "Fleet", EUR, credit_limit_minor=100_000,
                          promotions_eligible=promotions_eligible)
    if kind is PlanKind.PREPAID_WALLET:
        return Plan.prepaid_wallet("plan", "op-1", "Wallet", EUR,
                                   promotions_eligible=promotions_eligible)
    return Plan.pay_per_use("plan", "op-1", "PAYG", EUR, promotions_eligible=promotions_eligible)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    """One pricing request, as the arguments of a ``PricingRequest`` of either module."""
    tariff = draw(rating_tariffs(current_power=True, reservation=True))
    if draw(st.integers(0, 4)) == 0:
        tariff = negative_energy_prices(tariff, draw)
    facts = draw(rating_sessions(reservations=True, current_power=True))
    if draw(st.integers(0, 3)) == 0:
        facts = with_exports(facts, draw)
    kind = draw(st.sampled_from(list(PlanKind)))
    plan = plan_for(draw, kind, tariff.id)
    start = dt.datetime.fromtimestamp(pricing.session_start_ms(facts) // 1000, dt.UTC)
    usage = None
    if kind in (PlanKind.SUBSCRIPTION, PlanKind.FLAT_RATE) or draw(st.booleans()):
        record = PlanUsage.for_period(plan, start, facts.time_zone)
        energy = pricing.session_energy_milliwh(facts)
        # Often the allowance runs out inside the session (crossing), sometimes before it
        # starts or after it ends.
        left = draw(st.one_of(st.integers(0, energy), st.integers(0, 80 * KWH)))
        used = max(0, record.energy_allowance_milliwh - left)
        usage = record.with_energy(used)
    promotions = tuple(promotion(draw, i) for i in range(draw(st.integers(0, 4))))
    context = None
    if promotions or draw(st.booleans()):
        context = PromotionContext("driver-1", plan.id, "site-1",
                                   promo_code=draw(st.sampled_from([None, "code"])))
    live = draw(st.booleans())
    if live:
        facts = dataclasses.replace(facts, end_epoch_ms=None)
    return {"session": facts, "plan": plan, "tariff": tariff, "usage": usage,
            "promotions": promotions, "promotion_context": context,
            "loyalty_tier": loyalty_tier(draw), "live": live,
            "incremental": live and draw(st.booleans())}


def live_rating(tariff: Tariff, facts: SessionFacts) -> RatedSession:
    """What the charging service passes: a rater fed the closed periods, the last one still
    open (``snapshot_with``), with snapshots taken on the way."""
    rater = SessionRater(tariff, facts.time_zone, facts.start_epoch_ms)
    *closed, pending = facts.periods
    for period in closed:
        rater.snapshot_with(period, period.start_epoch_ms)
        rater.add(period)
    return rater.snapshot_with(pending, None)


def requests(case: dict[str, Any]) -> tuple[Any, Any]:
    tariff = case["tariff"]
    roles = {PlanKind.SUBSCRIPTION: "member", PlanKind.FLAT_RATE: "fallback"}
    role = roles.get(case["plan"].kind, "public")
    rated = live_rating(tariff, case["session"]) if case["incremental"] else None
    common = {k: case[k] for k in ("usage", "promotions", "promotion_context", "loyalty_tier")}
    new = pricing.PricingRequest(case["session"], case["plan"],
                                 pricing.PlanTariffs(**{role: tariff}), rated=rated, **common)
    old = reference.PricingRequest(case["session"], case["plan"],
                                   reference.PlanTariffs(**{role: tariff}), rated=rated, **common)
    return new, old


# -- the property ------------------------------------------------------------------------------


@PROPERTY
@given(case=cases())
def test_the_fast_pipeline_prices_every_request_exactly_as_the_reference(
        case: dict[str, Any]) -> None:
    new, old = requests(case)
    result = outcome(pricing.price_session, new)
    assert result == outcome(reference.price_session, old)
    describe(result)


def describe(result: tuple[str, Any]) -> None:
    """What the example exercised (``pytest --hypothesis-show-statistics``)."""
    status, answer = result
    if status == "error":
        event(f"refused: {answer[0]}")
        return
    lines = dict(answer[1])["lines"]
    codes = {dict(line[1])["code"][1] for line in lines}
    for code in sorted(codes):
        event(f"line: {code}")


@PROPERTY
@given(case=cases())
def test_a_live_preview_from_the_rater_equals_pricing_the_same_periods_from_scratch(
        case: dict[str, Any]) -> None:
    """The fast path takes the rater's sums (live) or rates the session itself (settlement,
    with the breakdown cross-check): both give the same answer."""
    facts = dataclasses.replace(case["session"], end_epoch_ms=None)
    case = {**case, "session": facts, "incremental": False}
    from_scratch, _ = requests(case)
    live, _ = requests({**case, "incremental": True})
    assert outcome(pricing.price_session, live) == outcome(pricing.price_session, from_scratch)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_a_running_session_is_priced_as_the_reference_at_every_period(
        case: dict[str, Any]) -> None:
    """The charging service re-prices one session at every meter sample with the same
    promotion objects and a growing spend: the remembered promotion checks (and what the
    rater keeps between snapshots) must not change an answer."""
    facts = case["session"]
    for n in range(1, len(facts.periods) + 1):
        prefix = dataclasses.replace(facts, periods=facts.periods[:n], end_epoch_ms=None)
        new, old = requests({**case, "session": prefix, "live": True})
        assert outcome(pricing.price_session, new) == outcome(reference.price_session, old)


# -- the rater's exact sums ---------------------------------------------------------------------


def by_period_sums(rated: RatedSession) -> list[tuple[str, bool, int, int]]:
    """(kind, reservation fee, element, quantity) summed over ``billed_by_period`` in the order
    the periods first use them, kinds in ``billed`` order."""
    sums: dict[tuple[str, bool, int], int] = {}
    for pieces in rated.billed_by_period():
        for q in pieces:
            key = (q.kind, q.reservation_fee, q.element_index)
            sums[key] = sums.get(key, 0) + q.quantity
    kinds = ["ENERGY", "TIME", "PARKING_TIME", "RESERVATION_TIME", "FLAT"]
    ordered = sorted(sums.items(), key=lambda kv: (kinds.index(kv[0][0]), kv[0][1]))
    return [(kind, fee, element, quantity) for (kind, fee, element), quantity in ordered]


def billed_sums(rated: RatedSession) -> list[tuple[str, bool, int, int]]:
    return [(q.kind, q.reservation_fee, q.element_index, q.quantity) for q in rated.billed()]


def exact_cost(quantities: tuple[BilledQuantity, ...]) -> tuple[int, int]:
    excl = incl = 0
    for q in quantities:
        x = q.price_micro * q.quantity * money_factor(q.kind)
        excl += x
        incl += x * (VAT_SCALE + (q.vat_bp or 0))
    return excl, incl


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff=rating_tariffs(current_power=True, reservation=True),
       facts=rating_sessions(reservations=True, current_power=True), data=st.data())
def test_the_raters_sums_are_its_breakdown_summed_for_every_snapshot_old_and_new(
        tariff: Tariff, facts: SessionFacts, data: st.DataObject) -> None:
    """``billed`` comes from per-element sums and a first-use order the rater scans once per
    period; it must equal the per-period breakdown summed, for plain snapshots and previews
    of an open period, also when read after the rater has moved on."""
    rater = SessionRater(tariff, facts.time_zone, facts.start_epoch_ms)
    taken: list[tuple[RatedSession, list[tuple[str, bool, int, int]]]] = []
    for period in facts.periods:
        preview = rater.snapshot_with(period, period.start_epoch_ms + 60_000)
        if data.draw(st.booleans()):
            taken.append((preview, by_period_sums(preview)))
        else:
            assert billed_sums(preview) == by_period_sums(preview)
        rater.add(period)
        if data.draw(st.booleans()):
            snapshot = rater.snapshot()
            taken.append((snapshot, by_period_sums(snapshot)))
    for rated, expected in taken:
        assert billed_sums(rated) == expected
    whole = rate(tariff, facts)
    assert billed_sums(whole) == by_period_sums(whole)
    excl, incl = exact_cost(whole.billed())
    if whole.price_bound is None:
        assert (excl, incl) == (whole.total_cost_exact.excl, whole.total_cost_exact.incl)


def test_billed_quantities_write_prices_and_vat_as_the_breakdown_does() -> None:
    q = BilledQuantity("ENERGY", 0, 5 * KWH, 290_000, 1900)
    assert (str(q.price), str(q.vat)) == ("0.290000", "19.00")
    assert BilledQuantity("FLAT", 0, 1, 500_000, None).vat is None
    # 5 kWh at 0.29 = 1.45 excl: 290 000 * 5 000 000 * 18 / 1.8e13
    assert 290_000 * 5 * KWH * money_factor("ENERGY") == 145 * MONEY_DENOMINATOR // 100


# -- the rated session stays a value ----------------------------------------------------------


def test_a_rated_session_is_frozen_and_compares_by_its_totals() -> None:
    start = 1_714_989_600_000  # 2024-05-06 10:00 UTC
    facts = SessionFacts((ChargingPeriod(start, energy_milliwh=KWH, time_ms=3_600_000),), "UTC",
                         start, start + 3_600_000)
    tariff = parse_tariff({"id": "T", "currency": "EUR", "elements": [{"price_components": [
        {"type": "ENERGY", "price": Decimal("0.30"), "vat": Decimal("19"), "step_size": 1}]}]})
    a, b = rate(tariff, facts), rate(tariff, facts)
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert repr(a).startswith("RatedSession(currency=")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.final = True  # type: ignore[misc]
    assert copy.copy(a) == a and copy.deepcopy(a) == a


@PROPERTY
@given(case=cases())
def test_a_running_cost_without_descriptions_has_every_amount_of_the_described_price(
        case: dict[str, Any]) -> None:
    """``describe=False`` (the running cost at every meter sample) drops the description texts
    and the VAT summary and nothing else: same lines, amounts, totals, refusals."""
    described, _ = requests(case)
    bare = dataclasses.replace(described, describe=False)
    full, lean = outcome(pricing.price_session, described), outcome(pricing.price_session, bare)
    if full[0] == "error":
        assert lean == full
        return
    a, b = pricing.price_session(described), pricing.price_session(bare)
    assert b.vat_summary == ()
    assert [dataclasses.replace(line, description="") for line in a.lines] == \
        [dataclasses.replace(line, description="") for line in b.lines]
    assert (a.total_excl_vat, a.total_incl_vat, a.applied_promotions, a.refused_promotions,
            a.energy_milliwh, a.energy_covered_milliwh, a.usage_after) == \
        (b.total_excl_vat, b.total_incl_vat, b.applied_promotions, b.refused_promotions,
         b.energy_milliwh, b.energy_covered_milliwh, b.usage_after)
    assert all(line.description == "" for line in b.lines if line.kind.value == "charge")


@PROPERTY
@given(case=cases())
def test_a_running_pricer_gives_the_totals_of_the_pipeline_at_every_sample(
        case: dict[str, Any]) -> None:
    """``RunningPricer`` (the live cost at every meter sample) settles the session's invariants
    once and prices the rater's sums itself where it can: its totals are the pipeline's, and
    where the pipeline refuses a request, so does the pricer, with the same error."""
    facts = dataclasses.replace(case["session"], end_epoch_ms=None)
    request, _ = requests({**case, "session": facts, "live": True, "incremental": True})
    request = dataclasses.replace(request, describe=False)
    pricer = pricing.RunningPricer(dataclasses.replace(
        request, session=dataclasses.replace(facts, periods=()), rated=None))
    assert request.rated is not None
    expected = outcome(pricing.price_session, request)
    periods = request.session.periods
    # the service passes the open period apart (None when no period is open)
    closed, pending = ((periods, None) if len(periods) % 2 else (periods[:-1], periods[-1]))
    got = outcome(lambda r: pricer.totals(closed, pending, r.rated), request)
    if expected[0] == "error":
        assert got == expected
        event(f"refused: {expected[1][0]}")
        return
    priced = pricing.price_session(request)
    assert got == ("ok", plain(pricing.RunningTotals(priced.total_excl_vat.amount_minor,
                                                     priced.total_incl_vat.amount_minor)))
    event("priced by the pricer itself" if pricer._fast and request.rated.price_bound is None
          else "priced by the pipeline")


def test_a_running_pricer_prices_a_common_session_itself() -> None:
    """The point of the pricer: a pay-per-use session under a tariff with a maximum price that
    it has not reached, with a loyalty benefit, is priced without the pipeline."""
    tariff = parse_tariff({
        "country_code": "DE", "party_id": "EVB", "id": "t1", "currency": "EUR",
        "max_price": {"excl_vat": Decimal("40.00"), "incl_vat": Decimal("47.60")},
        "elements": [{"price_components": [
            {"type": "ENERGY", "price": Decimal("0.39"), "vat": Decimal(19), "step_size": 1},
            {"type": "PARKING_TIME", "price": Decimal("6.00"), "vat": Decimal(19),
             "step_size": 60}]}],
        "last_updated": "2026-01-01T00:00:00Z"})
    start = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp() * 1000)
    period = ChargingPeriod(start, energy_milliwh=12_345_678, time_ms=3_600_000)
    facts = SessionFacts((period,), "Europe/Berlin", start, None)
    plan = Plan.pay_per_use("plan", "op-1", "PAYG", EUR)
    tier = LoyaltyTier("Gold", 100 * KWH, Benefit.percent_off_energy(Decimal(10)))
    request = pricing.PricingRequest(facts, plan, pricing.PlanTariffs(public=tariff),
                                     loyalty_tier=tier, rated=live_rating(tariff, facts),
                                     describe=False)
    pricer = pricing.RunningPricer(dataclasses.replace(
        request, session=dataclasses.replace(facts, periods=()), rated=None))
    priced = pricing.price_session(request)
    assert pricer._fast
    # 12.345678 kWh x 0.39 = 4.81 excl. (5.73 incl.), less 10 % energy loyalty: 4.33 / 5.16
    assert pricer.totals((), period, request.rated) == pricing.RunningTotals(433, 516) == \
        pricing.RunningTotals(priced.total_excl_vat.amount_minor,
                              priced.total_incl_vat.amount_minor)
