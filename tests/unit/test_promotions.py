"""Promotions: eligibility, stacking and discounts; loyalty tiers; the promo-code limiter
(``domain/promotions.py``; rules in ``docs/plans.md``). Amounts are minor units (cents); the
arithmetic is in the comments. VAT is 20 % so incl = 1.2 x excl."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evbilling.domain.money import Currency, round_exact_to_minor
from evbilling.domain.promotions import (
    AmountCell,
    Benefit,
    Category,
    DiscountBase,
    InvalidLoyaltyTierError,
    InvalidPromotionError,
    LoyaltyTier,
    Promotion,
    PromotionContext,
    PromotionKind,
    PromotionNotApplicableError,
    PromotionScope,
    Purpose,
    Refusal,
    SlidingWindowLimiter,
    Stacking,
    TooManyAttemptsError,
    UsageRecord,
    apply_promotions,
    check_promotion,
    require_applicable,
    rolling_energy_milliwh,
    sliding_window_decision,
    tier_for,
)

EUR = Currency.of("EUR")
BERLIN = "Europe/Berlin"
KWH = 1_000_000
VAT = Decimal("20")
MAY_6_NOON = dt.datetime(2024, 5, 6, 10, 0, tzinfo=dt.UTC)  # 12:00 in Berlin (CEST)


def promotion(pid: str = "P1", benefit: Benefit | None = None, **options: Any) -> Promotion:
    values: dict[str, Any] = {
        "id": pid, "operator_id": "op-1", "name": f"Promo {pid}", "currency": EUR,
        "benefit": benefit or Benefit.percent_off_energy(Decimal("10")),
        "starts_at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        "ends_at": dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    }
    values.update(options)
    return Promotion(**values)


def context(**options: Any) -> PromotionContext:
    values: dict[str, Any] = {"driver_id": "d-1", "plan_id": "payg", "site_id": "site-1"}
    values.update(options)
    return PromotionContext(**values)


def refusal(p: Promotion, ctx: PromotionContext | None = None, *, at: dt.datetime = MAY_6_NOON,
            **options: Any) -> Refusal | None:
    return check_promotion(p, ctx or context(), at=at, time_zone=BERLIN, **options).refusal


# -- eligibility ----------------------------------------------------------------------------------


def test_an_automatic_promotion_in_its_window_applies() -> None:
    assert refusal(promotion()) is None


def test_a_switched_off_promotion_is_refused() -> None:
    assert refusal(promotion(active=False)) is Refusal.PROMOTION_INACTIVE


def test_a_code_promotion_needs_its_code_compared_case_insensitively() -> None:
    p = promotion(code="WELCOME")
    assert refusal(p) is Refusal.CODE_REQUIRED
    assert refusal(p, context(promo_code="HELLO")) is Refusal.CODE_REQUIRED
    assert refusal(p, context(promo_code="  welcome ")) is None


def test_before_the_window_the_promotion_has_not_started() -> None:
    assert refusal(promotion(), at=dt.datetime(2024, 4, 30, 23, tzinfo=dt.UTC)) \
        is Refusal.PROMOTION_NOT_STARTED


def test_the_window_end_is_exclusive() -> None:
    assert refusal(promotion(), at=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)) \
        is Refusal.PROMOTION_EXPIRED
    assert refusal(promotion(), at=dt.datetime(2024, 5, 31, 23, 59, tzinfo=dt.UTC)) is None


def test_a_site_outside_the_scope_is_refused_with_a_detail() -> None:
    p = promotion(scope=PromotionScope(site_ids=frozenset({"site-2"})))
    check = check_promotion(p, context(), at=MAY_6_NOON, time_zone=BERLIN)
    assert (check.refusal, check.detail) == (Refusal.NOT_IN_SCOPE,
                                             "site site-1 is not in the promotion's sites")


def test_a_plan_outside_the_scope_is_refused() -> None:
    p = promotion(scope=PromotionScope(plan_ids=frozenset({"sub"})))
    assert refusal(p) is Refusal.NOT_IN_SCOPE
    assert refusal(p, context(plan_id="sub")) is None


@pytest.mark.parametrize(("utc_hour", "minute", "inside"), [
    (20, 0, True),  # 22:00 Berlin: the window starts (inclusive)
    (23, 30, True),  # 01:30 Berlin: after midnight, still inside 22:00-06:00
    (3, 59, True),  # 05:59
    (4, 0, False),  # 06:00 Berlin: the end is exclusive
    (10, 0, False),  # noon
])
def test_a_night_window_wraps_midnight_in_local_time(utc_hour: int, minute: int,
                                                     inside: bool) -> None:
    p = promotion(scope=PromotionScope(local_start_time=dt.time(22),
                                       local_end_time=dt.time(6)))
    at = dt.datetime(2024, 5, 6, utc_hour, minute, tzinfo=dt.UTC)
    assert (refusal(p, at=at) is None) is inside


def test_the_total_redemption_cap_counts_all_drivers() -> None:
    p = promotion(redemptions_max_total=100)
    assert refusal(p, context(redemptions_total={"P1": 99})) is None
    assert refusal(p, context(redemptions_total={"P1": 100})) is Refusal.REDEMPTION_CAP_REACHED


def test_the_per_driver_cap_counts_this_driver() -> None:
    p = promotion(redemptions_max_per_driver=1)
    assert refusal(p, context(redemptions_by_driver={"P1": 1})) \
        is Refusal.DRIVER_REDEMPTION_CAP_REACHED


def test_first_n_sessions_counts_the_drivers_earlier_sessions() -> None:
    p = promotion(first_n_sessions=3)
    assert refusal(p, context(sessions_before=2)) is None  # this is the third
    assert refusal(p, context(sessions_before=3)) is Refusal.FIRST_SESSIONS_ONLY


def test_minimum_spend_is_checked_when_the_spend_is_known() -> None:
    p = promotion(min_spend_minor=2_000)
    assert refusal(p, spend_minor=1_999) is Refusal.MIN_SPEND_NOT_MET
    assert refusal(p, spend_minor=2_000) is None
    assert refusal(p) is None  # a code check before the session knows no spend yet


def test_a_fee_promotion_does_not_apply_to_a_session() -> None:
    p = promotion(benefit=Benefit.percent_off_plan_fee(Decimal("50")))
    assert refusal(p) is Refusal.NOT_FOR_THIS_CHARGE
    assert refusal(p, purpose=Purpose.PLAN_FEE) is None


def test_a_promotion_in_another_currency_is_refused() -> None:
    assert refusal(promotion(), currency=Currency.of("CHF")) is Refusal.CURRENCY_MISMATCH


def test_a_plan_without_promotions_refuses_them_all() -> None:
    assert refusal(promotion(), plan_promotions_eligible=False) is Refusal.PLAN_EXCLUDED


def test_the_first_reason_in_precedence_order_is_reported() -> None:
    # Expired AND over its cap: expiry comes first in the documented order.
    p = promotion(redemptions_max_total=1)
    assert refusal(p, context(redemptions_total={"P1": 5}),
                   at=dt.datetime(2024, 7, 1, tzinfo=dt.UTC)) is Refusal.PROMOTION_EXPIRED


def test_an_entered_code_that_does_not_apply_raises_with_the_reason() -> None:
    p = promotion(code="SUMMER", first_n_sessions=1)
    with pytest.raises(PromotionNotApplicableError) as err:
        require_applicable(p, context(promo_code="summer", sessions_before=4), at=MAY_6_NOON,
                           time_zone=BERLIN)
    assert (err.value.code, err.value.reason) == ("promotion_not_applicable",
                                                  Refusal.FIRST_SESSIONS_ONLY)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [Decimal("0"), Decimal("100.01"), Decimal("12.345")])
def test_a_percentage_is_above_0_at_most_100_with_2_decimals(percent: Decimal) -> None:
    with pytest.raises(InvalidPromotionError) as err:
        Benefit.percent_off_energy(percent)
    assert (err.value.code, err.value.field) == ("invalid_promotion", "benefit.percent")


def test_a_benefit_sets_only_its_own_field() -> None:
    with pytest.raises(InvalidPromotionError) as err:
        Benefit(PromotionKind.FREE_ENERGY, free_energy_milliwh=KWH, amount_minor=100)
    assert err.value.field == "benefit.amount_minor"


@pytest.mark.parametrize("code", ["welcome", "AB", "WITH SPACE", "X" * 33])
def test_codes_are_3_to_32_upper_case_characters(code: str) -> None:
    with pytest.raises(InvalidPromotionError) as err:
        promotion(code=code)
    assert err.value.field == "code"


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidPromotionError) as err:
        promotion(ends_at=dt.datetime(2024, 4, 1, tzinfo=dt.UTC))
    assert err.value.field == "ends_at"


def test_a_fee_promotion_cannot_be_scoped_to_sites() -> None:
    with pytest.raises(InvalidPromotionError) as err:
        promotion(benefit=Benefit.percent_off_plan_fee(Decimal("50")),
                  scope=PromotionScope(site_ids=frozenset({"site-1"})))
    assert err.value.field == "scope.site_ids"


# -- discounts and stacking -----------------------------------------------------------------------


def base() -> DiscountBase:
    """Energy 10.00 excl / 12.00 incl for 10 kWh; idle 5.00 / 6.00 for 60 minutes."""
    return DiscountBase(EUR, (AmountCell(Category.ENERGY, VAT, 1_000, 1_200),
                              AmountCell(Category.IDLE_TIME, VAT, 500, 600)),
                        energy_priced_milliwh=10 * KWH, idle_priced_ms=60 * 60_000)


def amounts(outcome: Any) -> list[tuple[str, int, int]]:
    return [(d.source_id, d.excl_minor, d.incl_minor) for d in outcome.discounts]


TEN_OFF_ENERGY = promotion("TEN", Benefit.percent_off_energy(Decimal("10")), priority=1)
TWO_EUR_OFF = promotion("TWO", Benefit.amount_off_session(200), priority=2)


def test_stackable_promotions_apply_in_priority_order_on_what_is_left() -> None:
    outcome = apply_promotions(base(), [TWO_EUR_OFF, TEN_OFF_ENERGY])
    # TEN: 10 % of 12.00 = 1.20 incl, 1.20 / 1.2 = 1.00 excl. Energy left 9.00 / 10.80.
    # TWO: 2.00 over energy 10.80 and idle 6.00: allocate(200, [1080, 600]) = 128.57 / 71.43
    #      -> 128 + 71, the cent to the larger remainder: 129 + 71.
    #      excl 129 / 1.2 = 107.5 -> 108, 71 / 1.2 = 59.17 -> 59: 1.67.
    assert amounts(outcome) == [("TEN", 100, 120), ("TWO", 167, 200)]
    assert (outcome.remaining.total_excl_minor, outcome.remaining.total_incl_minor) == (
        1_500 - 267, 1_800 - 320)


def test_a_second_percentage_applies_to_the_amount_after_the_first() -> None:
    twenty = promotion("TWENTY", Benefit.percent_off_energy(Decimal("20")), priority=2)
    outcome = apply_promotions(base(), [TEN_OFF_ENERGY, twenty])
    # 10 % of 12.00 = 1.20, then 20 % of 10.80 = 2.16: 3.36, not 30 % = 3.60.
    assert [d.incl_minor for d in outcome.discounts] == [120, 216]


def test_the_stack_beats_a_smaller_exclusive() -> None:
    exclusive = promotion("EX25", Benefit.percent_off_energy(Decimal("25")),
                          stacking=Stacking.EXCLUSIVE)
    outcome = apply_promotions(base(), [TEN_OFF_ENERGY, TWO_EUR_OFF, exclusive])
    # stack 1.20 + 2.00 = 3.20 > 25 % of 12.00 = 3.00
    assert [d.source_id for d in outcome.discounts] == ["TEN", "TWO"]
    assert [(c.promotion_id, c.refusal) for c in outcome.not_applied] == [
        ("EX25", Refusal.NOT_BEST_OFFER)]


def test_a_bigger_exclusive_beats_the_stack_and_stands_alone() -> None:
    exclusive = promotion("EX30", Benefit.percent_off_energy(Decimal("30")),
                          stacking=Stacking.EXCLUSIVE)
    outcome = apply_promotions(base(), [TEN_OFF_ENERGY, TWO_EUR_OFF, exclusive])
    # 30 % of 12.00 = 3.60 (excl 3.00) > the stack's 3.20
    assert amounts(outcome) == [("EX30", 300, 360)]
    assert {(c.promotion_id, c.refusal) for c in outcome.not_applied} == {
        ("TEN", Refusal.NOT_BEST_OFFER), ("TWO", Refusal.NOT_BEST_OFFER)}


def test_on_a_tie_the_option_with_fewer_promotions_wins() -> None:
    one = promotion("ONE", Benefit.amount_off_session(100), priority=1)
    twenty_cents = promotion("CENTS", Benefit.amount_off_session(20), priority=2)
    exclusive = promotion("EX10", Benefit.percent_off_energy(Decimal("10")),
                          stacking=Stacking.EXCLUSIVE)
    # stack 1.00 + 0.20 = 1.20 == 10 % of 12.00: the exclusive spends one redemption, not two.
    outcome = apply_promotions(base(), [one, twenty_cents, exclusive])
    assert [d.source_id for d in outcome.discounts] == ["EX10"]


def test_a_discount_never_takes_the_total_below_zero() -> None:
    outcome = apply_promotions(base(), [promotion("BIG", Benefit.amount_off_session(5_000))])
    # 50.00 off an 18.00 session: 18.00 (excl 15.00), and nothing is left.
    assert amounts(outcome) == [("BIG", 1_500, 1_800)]
    assert (outcome.remaining.total_excl_minor, outcome.remaining.total_incl_minor) == (0, 0)


def test_free_kwh_are_valued_at_the_average_energy_price() -> None:
    outcome = apply_promotions(base(), [promotion("KWH", Benefit.free_energy(2_500_000))])
    # 2.5 of 10 kWh costing 12.00: 12.00 * 2.5 / 10 = 3.00 (excl 2.50)
    assert amounts(outcome) == [("KWH", 250, 300)]


def test_free_kwh_after_a_percentage_are_valued_at_the_discounted_price() -> None:
    free = promotion("KWH", Benefit.free_energy(2_500_000), priority=5)
    outcome = apply_promotions(base(), [TEN_OFF_ENERGY, free])
    # energy 10.80 after 10 % off; 10.80 * 2.5 / 10 = 2.70
    assert [d.incl_minor for d in outcome.discounts] == [120, 270]


def test_free_idle_minutes_are_valued_at_the_average_idle_price() -> None:
    outcome = apply_promotions(base(), [promotion("IDLE", Benefit.free_idle_time(15))])
    # 15 of 60 idle minutes costing 6.00: 1.50 (excl 1.25)
    assert amounts(outcome) == [("IDLE", 125, 150)]


def test_a_promotion_with_nothing_to_discount_is_reported_not_applied() -> None:
    no_idle = DiscountBase(EUR, (AmountCell(Category.ENERGY, VAT, 1_000, 1_200),))
    outcome = apply_promotions(no_idle, [promotion("IDLE", Benefit.free_idle_time(15))])
    assert outcome.discounts == ()
    assert [(c.promotion_id, c.refusal) for c in outcome.not_applied] == [
        ("IDLE", Refusal.NOTHING_TO_DISCOUNT)]


def test_loyalty_applies_after_the_winning_promotions() -> None:
    exclusive = promotion("EX30", Benefit.percent_off_energy(Decimal("30")),
                          stacking=Stacking.EXCLUSIVE)
    gold = LoyaltyTier("Gold", 100 * KWH, Benefit.percent_off_energy(Decimal("5")))
    outcome = apply_promotions(base(), [exclusive], gold)
    # 30 % of 12.00 = 3.60; loyalty 5 % of the 8.40 left = 0.42 (excl 0.35)
    assert amounts(outcome) == [("EX30", 300, 360), ("Gold", 35, 42)]
    assert outcome.discounts[1].label == "Loyalty Gold: 5% off energy"


def test_a_discount_over_two_vat_rates_is_split_in_proportion() -> None:
    mixed = DiscountBase(EUR, (AmountCell(Category.ENERGY, VAT, 1_000, 1_200),
                               AmountCell(Category.ENERGY, None, 300, 300)))
    outcome = apply_promotions(mixed, [TEN_OFF_ENERGY])
    # 10 % of 15.00 = 1.50, allocate(150, [1200, 300]) = 120 / 30
    (discount,) = outcome.discounts
    assert [(p.vat_percent, p.excl_minor, p.incl_minor) for p in discount.parts] == [
        (VAT, 100, 120), (None, 30, 30)]


def promotion_strategy() -> st.SearchStrategy[Promotion]:
    benefits = st.one_of(
        st.integers(1, 10_000).map(lambda p: Benefit.percent_off_energy(Decimal(p) / 100)),
        st.integers(1, 5_000).map(Benefit.amount_off_session),
        st.integers(1, 50 * KWH).map(Benefit.free_energy),
        st.integers(1, 300).map(Benefit.free_idle_time),
    )
    return st.builds(lambda i, b, s, prio: promotion(f"P{i}", b, stacking=s, priority=prio),
                     st.integers(0, 10**6), benefits, st.sampled_from(Stacking),
                     st.integers(0, 5))


@st.composite
def bases(draw: st.DrawFn) -> DiscountBase:
    cells = []
    for category in (Category.ENERGY, Category.IDLE_TIME, Category.SESSION_FEE):
        vat = draw(st.sampled_from([VAT, Decimal("7"), None]))
        excl = draw(st.integers(0, 20_000))
        incl = round_exact_to_minor(Fraction(excl, 100) * Fraction(
            1 + (vat or 0) / Decimal(100)), EUR)
        cells.append(AmountCell(category, vat, excl, incl))
    return DiscountBase(EUR, tuple(cells), draw(st.integers(0, 80 * KWH)),
                        draw(st.integers(0, 600 * 60_000)))


@given(bases(), st.lists(promotion_strategy(), max_size=5, unique_by=lambda p: p.id))
def test_discounts_never_make_a_total_negative_and_account_for_every_cent(
        start: DiscountBase, promotions: list[Promotion]) -> None:
    outcome = apply_promotions(start, promotions)
    left = outcome.remaining
    assert left.total_incl_minor >= 0 and left.total_excl_minor >= 0
    assert all(c.incl_minor >= 0 and c.excl_minor >= 0 for c in left.cells)
    assert all(p.incl_minor >= 0 and p.excl_minor >= 0
               for d in outcome.discounts for p in d.parts)
    assert left.total_incl_minor + outcome.incl_minor == start.total_incl_minor
    assert left.total_excl_minor + sum(d.excl_minor for d in outcome.discounts) \
        == start.total_excl_minor


# -- exact rounding -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "minor"), [
    (Fraction(1, 3), 33),  # 0.333.. -> 0.33
    (Fraction(2, 3), 67),
    (Fraction(5, 1000), 1),  # exactly half a cent: half-up
    (Fraction(4_999_999_999, 10**12), 0),  # a hair below half a cent
    (Fraction(-5, 1000), -1),  # half-up is away from zero
])
def test_exact_rationals_are_rounded_once_with_the_policy(value: Fraction, minor: int) -> None:
    assert round_exact_to_minor(value, EUR) == minor


# -- loyalty --------------------------------------------------------------------------------------


BASE = LoyaltyTier("Base", 0)
SILVER = LoyaltyTier("Silver", 40 * KWH, Benefit.percent_off_energy(Decimal("5")))
GOLD = LoyaltyTier("Gold", 100 * KWH, Benefit.percent_off_energy(Decimal("10")))
TIERS = [GOLD, BASE, SILVER]  # any order


@pytest.mark.parametrize(("kwh", "tier"), [(0, BASE), (39, BASE), (40, SILVER), (99, SILVER),
                                           (100, GOLD), (5_000, GOLD)])
def test_the_highest_reached_threshold_sets_the_tier(kwh: int, tier: LoyaltyTier) -> None:
    assert tier_for(kwh * KWH, TIERS) == tier


def test_without_an_entry_tier_a_light_user_has_none() -> None:
    assert tier_for(10 * KWH, [SILVER, GOLD]) is None


def test_the_tier_changes_as_rolling_usage_crosses_a_threshold() -> None:
    at = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)
    records = [UsageRecord(at - dt.timedelta(days=80), 60 * KWH),
               UsageRecord(at - dt.timedelta(days=10), 45 * KWH)]
    # now: 60 + 45 = 105 kWh in the last 90 days -> Gold
    assert tier_for(rolling_energy_milliwh(records, at, 90), TIERS) == GOLD
    # 15 days later the 60 kWh session is 95 days old and drops out: 45 kWh -> Silver
    later = at + dt.timedelta(days=15)
    assert rolling_energy_milliwh(records, later, 90) == 45 * KWH
    assert tier_for(rolling_energy_milliwh(records, later, 90), TIERS) == SILVER
    # a 60 kWh session the day before brings the driver back to Gold
    records.append(UsageRecord(later - dt.timedelta(days=1), 60 * KWH))
    assert tier_for(rolling_energy_milliwh(records, later, 90), TIERS) == GOLD


def test_the_rolling_window_includes_its_start_and_excludes_now() -> None:
    at = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)
    records = [UsageRecord(at - dt.timedelta(days=90), KWH), UsageRecord(at, 2 * KWH)]
    assert rolling_energy_milliwh(records, at, 90) == KWH


def test_tiers_of_one_programme_share_one_window() -> None:
    with pytest.raises(InvalidLoyaltyTierError) as err:
        tier_for(0, [BASE, LoyaltyTier("Silver", 40 * KWH, window_days=30)])
    assert (err.value.code, err.value.field) == ("invalid_loyalty_tier", "window_days")


def test_tier_thresholds_are_distinct() -> None:
    with pytest.raises(InvalidLoyaltyTierError):
        tier_for(0, [SILVER, LoyaltyTier("Silver+", 40 * KWH)])


def test_a_loyalty_benefit_is_a_percentage_off_energy_or_free_idle_minutes() -> None:
    with pytest.raises(InvalidLoyaltyTierError):
        LoyaltyTier("Cash", 0, Benefit.amount_off_session(100))


# -- brute-force limiter --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, minutes: int | Fraction) -> None:
        self.now_ms += int(Fraction(minutes) * 60_000)


MINUTE = 60_000


def test_five_wrong_codes_in_fifteen_minutes_lock_the_key() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, max_failures=5, window_ms=15 * MINUTE)
    for _ in range(4):
        assert limiter.record_failure("driver-1").allowed
        clock.advance(1)
    locked = limiter.record_failure("driver-1")  # at minute 4: the fifth failure
    # unlocks when the first failure (minute 0) leaves the window: at minute 15, in 11 minutes
    assert (locked.allowed, locked.failures_in_window, locked.retry_after_ms) == (
        False, 5, 11 * MINUTE)
    assert limiter.check("driver-2").allowed  # keys are independent


def test_a_locked_key_raises_rate_limited_with_retry_after() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, max_failures=2, window_ms=15 * MINUTE)
    limiter.record_failure("k")
    limiter.record_failure("k")
    clock.advance(Fraction(1, 2))
    with pytest.raises(TooManyAttemptsError) as err:
        limiter.ensure_allowed("k")
    assert (err.value.code, err.value.retry_after_s) == ("rate_limited", 870)  # 14.5 minutes


def test_the_window_slides_failures_expire_one_by_one() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, max_failures=5, window_ms=15 * MINUTE)
    for _ in range(5):
        limiter.record_failure("k")
        clock.advance(1)
    # failures at minutes 0..4; now minute 5
    clock.advance(10)  # minute 15: the failure at minute 0 is out of (0, 15]
    decision = limiter.check("k")
    assert (decision.allowed, decision.failures_in_window) == (True, 4)
    limiter.record_failure("k")  # one more failure locks again
    assert not limiter.check("k").allowed


def test_attempts_while_locked_do_not_extend_the_lock() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(clock, max_failures=2, window_ms=10 * MINUTE)
    limiter.record_failure("k")
    limiter.record_failure("k")
    clock.advance(5)
    assert limiter.record_failure("k").retry_after_ms == 5 * MINUTE  # refused, not recorded
    clock.advance(5)
    assert limiter.check("k").allowed


def test_the_limiter_forgets_the_least_recently_used_key_beyond_its_bound() -> None:
    limiter = SlidingWindowLimiter(FakeClock(), max_failures=1, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.record_failure(key)
    assert limiter.tracked_keys() == 2
    assert limiter.check("a").allowed and not limiter.check("c").allowed


def test_the_decision_function_works_on_stored_failure_times() -> None:
    decision = sliding_window_decision([0, 100, 200, 5_000], 1_000, max_failures=3,
                                       window_ms=1_000)
    # in (0, 1000]: 100 and 200 -> 2 < 3 (0 has left; 5000 is in the future)
    assert (decision.allowed, decision.failures_in_window) == (True, 2)
