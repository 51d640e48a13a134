"""Plans, billing periods, switching with proration, wallets and fleet accounts
(``domain/plans.py``; rules in ``docs/plans.md``). Expected numbers are worked out in comments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evbilling.domain.errors import CurrencyMismatchError
from evbilling.domain.money import Currency, allocate
from evbilling.domain.plans import (
    BillingPeriod,
    ChangeEffective,
    CreditLimitExceededError,
    FleetAccount,
    InsufficientFundsError,
    InvalidAmountError,
    InvalidPlanError,
    Plan,
    PlanInactiveError,
    PlanKind,
    PlanNotOfferedError,
    PlanUnchangedError,
    PlanUsage,
    Subscription,
    Wallet,
    WalletLimitExceededError,
    auto_top_up_minor,
    period_bounds,
    period_share,
    plan_change,
)
from evbilling.domain.timezones import UnknownTimeZoneError

BERLIN = "Europe/Berlin"
EUR = Currency.of("EUR")
KWH = 1_000_000  # milliwh


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def berlin(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(BERLIN))


def payg() -> Plan:
    return Plan.pay_per_use("payg", "op-1", "Pay as you go", "EUR")


def subscription(fee_minor: int = 999, included_kwh: int = 100, **options: object) -> Plan:
    return Plan.subscription("sub", "op-1", "Member", "EUR", fee_minor=fee_minor,
                             included_energy_milliwh=included_kwh * KWH,
                             member_tariff_id="member", **options)


def flat_rate(fee_minor: int = 2999, **options: object) -> Plan:
    return Plan.flat_rate("flat", "op-1", "Flat", "EUR", fee_minor=fee_minor,
                          fair_use_cap_milliwh=300 * KWH, fallback_tariff_id="public", **options)


# -- validation -----------------------------------------------------------------------------------


def test_a_subscription_waives_the_session_fee_by_default() -> None:
    plan = subscription()
    assert plan.kind is PlanKind.SUBSCRIPTION
    assert plan.waive_flat_fee is True
    assert plan.tariff_id == "member"
    assert plan.energy_allowance_milliwh == 100 * KWH


def test_a_flat_rate_allowance_is_its_fair_use_cap() -> None:
    plan = flat_rate()
    assert plan.tariff_id == "public"
    assert plan.energy_allowance_milliwh == 300 * KWH


def test_pay_per_use_prices_with_the_public_tariff_and_has_no_allowance() -> None:
    assert payg().tariff_id is None
    assert payg().energy_allowance_milliwh == 0


def test_a_subscription_without_a_member_tariff_is_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan("sub", "op-1", PlanKind.SUBSCRIPTION, "Member", EUR, fee_minor=999)
    assert err.value.code == "invalid_plan"
    assert err.value.field == "member_tariff_id"


@pytest.mark.parametrize(("options", "field"), [
    ({"fee_minor": 100}, "fee_minor"),
    ({"included_energy_milliwh": KWH}, "included_energy_milliwh"),
    ({"waive_flat_fee": True}, "waive_flat_fee"),
    ({"credit_limit_minor": 100}, "credit_limit_minor"),
])
def test_a_field_the_kind_does_not_use_is_refused_not_ignored(options: dict[str, object],
                                                              field: str) -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan.pay_per_use("payg", "op-1", "PAYG", "EUR", **options)
    assert err.value.field == field
    assert "does not apply to a pay_per_use plan" in err.value.reason


@pytest.mark.parametrize(("fee", "reason"), [
    (-1, "between 0"), (Decimal("9.99"), "integer"), (True, "integer"), (10**10, "between 0")])
def test_a_fee_must_be_whole_non_negative_minor_units(fee: object, reason: str) -> None:
    with pytest.raises(InvalidPlanError) as err:
        subscription(fee_minor=fee)  # type: ignore[arg-type]
    assert (err.value.field, reason in err.value.reason) == ("fee_minor", True)


def test_a_fee_vat_with_three_decimals_is_refused() -> None:
    with pytest.raises(InvalidPlanError) as err:
        subscription(fee_vat_percent=Decimal("19.005"))
    assert err.value.field == "fee_vat_percent"


def test_a_wallet_auto_top_up_needs_both_threshold_and_amount() -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan.prepaid_wallet("w", "op-1", "Wallet", "EUR", wallet_top_up_threshold_minor=500)
    assert err.value.field == "wallet_top_up_amount_minor"


def test_a_flat_rate_cap_must_be_positive() -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan.flat_rate("f", "op-1", "Flat", "EUR", fee_minor=1, fair_use_cap_milliwh=0,
                       fallback_tariff_id="public")
    assert err.value.field == "fair_use_cap_milliwh"


def test_a_fleet_plan_needs_a_credit_limit() -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan("fleet", "op-1", PlanKind.FLEET, "Fleet", EUR)
    assert err.value.field == "credit_limit_minor"


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(InvalidPlanError) as err:
        Plan.pay_per_use("payg", "op-1", "  ", "EUR")
    assert err.value.field == "name"


def test_editing_a_plan_gives_the_next_version_and_revalidates() -> None:
    plan = subscription()
    edited = plan.edited(fee_minor=1299, name="Member+")
    assert (edited.fee_minor, edited.name, edited.version, plan.version) == (1299, "Member+", 2, 1)
    with pytest.raises(InvalidPlanError):
        plan.edited(fee_minor=-5)


def test_editing_cannot_change_the_kind_of_a_plan() -> None:
    with pytest.raises(InvalidPlanError) as err:
        subscription().edited(kind=PlanKind.FLAT_RATE)
    assert err.value.field == "kind"


def test_the_fee_incl_vat_is_rounded_once() -> None:
    # 9.99 EUR * 1.19 = 11.8881 -> 11.89
    assert subscription(fee_vat_percent=Decimal("19")).fee_incl_vat().amount_minor == 1189


# -- billing periods ------------------------------------------------------------------------------


def test_a_month_is_a_local_calendar_month() -> None:
    # 2024-03-31 23:30 UTC is 2024-04-01 01:30 in Berlin (CEST, +2): April, which starts at
    # local midnight = 2024-03-31 22:00 UTC and ends 2024-04-30 22:00 UTC.
    start, end = period_bounds(BillingPeriod.MONTH, utc("2024-03-31 23:30"), BERLIN)
    assert (start, end) == (utc("2024-03-31 22:00"), utc("2024-04-30 22:00"))


def test_a_month_across_the_dst_change_starts_and_ends_at_local_midnight() -> None:
    # March 2024 in Berlin: 1 March 00:00 CET (+1) .. 1 April 00:00 CEST (+2).
    start, end = period_bounds(BillingPeriod.MONTH, utc("2024-03-15 12:00"), BERLIN)
    assert (start, end) == (utc("2024-02-29 23:00"), utc("2024-03-31 22:00"))


def test_a_week_starts_on_local_monday() -> None:
    # Wednesday 2024-05-08 -> Monday 2024-05-06 00:00 CEST = 2024-05-05 22:00 UTC.
    start, end = period_bounds(BillingPeriod.WEEK, utc("2024-05-08 09:00"), BERLIN)
    assert (start, end) == (utc("2024-05-05 22:00"), utc("2024-05-12 22:00"))


def test_december_rolls_over_into_january() -> None:
    start, end = period_bounds(BillingPeriod.MONTH, utc("2024-12-31 12:00"), "UTC")
    assert (start, end) == (utc("2024-12-01 00:00"), utc("2025-01-01 00:00"))


def test_the_day_of_a_change_counts_as_remaining() -> None:
    share = period_share(BillingPeriod.MONTH, berlin("2024-05-10 15:00"), BERLIN)
    # May has 31 days; 10 May .. 31 May = 22 days remaining, 9 elapsed.
    assert (share.days_in_period, share.days_remaining, share.days_elapsed) == (31, 22, 9)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(UnknownTimeZoneError):
        period_bounds(BillingPeriod.MONTH, utc("2024-05-01 00:00"), "Mars/Olympus")


# -- usage ----------------------------------------------------------------------------------------


def test_usage_tracks_energy_against_the_allowance() -> None:
    usage = PlanUsage.for_period(subscription(), berlin("2024-05-10 15:00"), BERLIN)
    assert (usage.energy_allowance_milliwh, usage.energy_used_milliwh) == (100 * KWH, 0)
    after = usage.with_energy(92_300_000).with_energy(20 * KWH)
    # 100 - 92.3 = 7.7 kWh left after the first; nothing (not -12.3) after the second.
    assert usage.with_energy(92_300_000).energy_remaining_milliwh == 7_700_000
    assert (after.energy_used_milliwh, after.energy_remaining_milliwh) == (112_300_000, 0)


# -- switching ------------------------------------------------------------------------------------


def on(plan: Plan) -> Subscription:
    return Subscription("driver-1", plan, BERLIN, utc("2024-01-01 00:00"))


def test_switching_now_from_pay_per_use_charges_the_new_fee_pro_rata() -> None:
    change = plan_change(on(payg()), subscription(), berlin("2024-05-10 15:00"),
                         ChangeEffective.NOW)
    # allocate(999, [22, 9]): 999*22/31 = 708.97, 999*9/31 = 290.03 -> 708 + 290 = 998, the
    # missing cent goes to the larger remainder (.97): 709 charged now, 290 "elapsed".
    assert change.charge_minor == 709 == allocate(999, [22, 9])[0]
    assert change.credit_minor == 0  # pay-per-use has no fee to credit
    # allowance 100 kWh: 100e6*22/31 = 70 967 741.94 -> 70 967 742 milliwh for the rest of May
    assert change.usage.energy_allowance_milliwh == 70_967_742
    assert change.usage.energy_used_milliwh == 0
    assert (change.usage.period_start_at, change.usage.period_end_at) == (
        utc("2024-04-30 22:00"), utc("2024-05-31 22:00"))
    assert change.effective_at == berlin("2024-05-10 15:00")


def test_switching_now_credits_the_unused_share_of_the_old_fee() -> None:
    change = plan_change(on(subscription()), flat_rate(), berlin("2024-05-10 15:00"),
                         ChangeEffective.NOW)
    # credit: allocate(999, [22, 9])[0] = 709 (as above)
    # charge: allocate(2999, [22, 9]): 2128.32 / 870.68 -> 2128 + 870 = 2998, the cent goes to
    #         the larger remainder (.68, the elapsed share): 2128 now
    assert (change.credit_minor, change.charge_minor, change.net_minor) == (709, 2128, 1419)
    assert change.old_share is not None and change.old_share.days_remaining == 22
    # The flat-rate cap, pro rata: 300e6*22/31 = 212 903 225.8 -> 212 903 226
    assert change.usage.energy_allowance_milliwh == 212_903_226


def test_switching_now_on_the_first_day_credits_and_charges_whole_fees() -> None:
    change = plan_change(on(subscription()), flat_rate(), berlin("2024-05-01 00:30"),
                         ChangeEffective.NOW)
    assert (change.credit_minor, change.charge_minor) == (999, 2999)


def test_switching_down_now_gives_the_driver_money_back() -> None:
    change = plan_change(on(flat_rate()), subscription(), berlin("2024-05-10 15:00"),
                         ChangeEffective.NOW)
    # credit 2128 (unused flat-rate share), charge 709 -> net -1419
    assert change.net_minor == -1419


def test_switching_next_period_moves_no_money_now_and_switches_at_the_boundary() -> None:
    change = plan_change(on(subscription()), flat_rate(), berlin("2024-05-10 15:00"),
                         ChangeEffective.NEXT_PERIOD)
    assert change.effective_at == utc("2024-05-31 22:00")  # 1 June 00:00 in Berlin
    assert change.credit_minor == 0 and change.old_share is None
    # Due at the boundary: the new plan's full first fee and its full cap.
    assert change.charge_minor == 2999
    assert change.usage.energy_allowance_milliwh == 300 * KWH
    assert change.usage.period_start_at == utc("2024-05-31 22:00")


def test_switching_next_period_to_a_weekly_plan_charges_the_first_partial_week() -> None:
    weekly = Plan.subscription("weekly", "op-1", "Weekly", "EUR", fee_minor=700,
                               included_energy_milliwh=70 * KWH, member_tariff_id="member",
                               period=BillingPeriod.WEEK)
    change = plan_change(on(subscription()), weekly, berlin("2024-05-10 15:00"),
                         ChangeEffective.NEXT_PERIOD)
    # 1 June 2024 is a Saturday: the week runs Mon 27 May .. Mon 3 June; 2 of 7 days remain.
    # allocate(700, [2, 5]) = [200, 500]; allowance allocate(70 kWh, [2, 5]) = 20 kWh.
    assert (change.charge_minor, change.usage.energy_allowance_milliwh) == (200, 20 * KWH)
    assert change.usage.period_end_at == utc("2024-06-02 22:00")


def test_switching_to_the_same_plan_is_refused() -> None:
    with pytest.raises(PlanUnchangedError) as err:
        plan_change(on(subscription()), subscription(), utc("2024-05-10 12:00"),
                    ChangeEffective.NOW)
    assert err.value.code == "plan_unchanged"


def test_switching_to_another_operators_plan_is_refused() -> None:
    other = Plan.pay_per_use("payg-2", "op-2", "Other", "EUR")
    with pytest.raises(PlanNotOfferedError):
        plan_change(on(subscription()), other, utc("2024-05-10 12:00"), ChangeEffective.NOW)


def test_switching_to_an_inactive_plan_is_refused() -> None:
    retired = Plan.pay_per_use("old", "op-1", "Old", "EUR", active=False)
    with pytest.raises(PlanInactiveError) as err:
        plan_change(on(subscription()), retired, utc("2024-05-10 12:00"), ChangeEffective.NOW)
    assert err.value.code == "plan_inactive"


def test_switching_to_a_plan_in_another_currency_is_refused() -> None:
    chf = Plan.pay_per_use("chf", "op-1", "CHF", "CHF")
    with pytest.raises(CurrencyMismatchError):
        plan_change(on(subscription()), chf, utc("2024-05-10 12:00"), ChangeEffective.NOW)


@given(day=st.integers(0, 30), hour=st.integers(0, 23), fee=st.integers(0, 100_000))
def test_credit_and_the_kept_share_always_add_up_to_the_old_fee(day: int, hour: int,
                                                                fee: int) -> None:
    at = berlin("2024-05-01 00:00") + dt.timedelta(days=day, hours=hour)
    old = subscription(fee_minor=fee)
    change = plan_change(on(old), payg(), at, ChangeEffective.NOW)
    share = change.old_share
    assert share is not None
    kept = allocate(fee, [share.days_remaining, share.days_elapsed])[1]
    assert change.credit_minor + kept == fee
    assert 0 <= change.credit_minor <= fee


# -- wallet ---------------------------------------------------------------------------------------


def test_a_wallet_debit_returns_a_new_wallet() -> None:
    wallet = Wallet(EUR, 2_000)
    assert wallet.debit(1_250) == Wallet(EUR, 750)
    assert wallet.balance_minor == 2_000  # unchanged: value object


def test_a_wallet_refuses_to_go_negative() -> None:
    with pytest.raises(InsufficientFundsError) as err:
        Wallet(EUR, 750).debit(1_000)
    assert (err.value.code, err.value.shortfall_minor) == ("insufficient_funds", 250)


@pytest.mark.parametrize("amount", [0, -5, Decimal("1.00")])
def test_wallet_amounts_are_positive_integers(amount: object) -> None:
    with pytest.raises(InvalidAmountError):
        Wallet(EUR, 750).credit(amount)  # type: ignore[arg-type]


def test_a_wallet_has_a_ceiling() -> None:
    with pytest.raises(WalletLimitExceededError):
        Wallet(EUR, 999_999_999).credit(2)


def wallet_plan() -> Plan:
    return Plan.prepaid_wallet("w", "op-1", "Wallet", "EUR", wallet_top_up_threshold_minor=500,
                               wallet_top_up_amount_minor=2_000)


@pytest.mark.parametrize(("balance", "pending", "top_up"), [
    (600, 0, 0),  # above the threshold: nothing
    (500, 0, 0),  # at the threshold: nothing (below means below)
    (400, 0, 2_000),  # below: the configured amount
    (400, 3_000, 3_100),  # 400 - 3000 = -2600; 2000 is not enough: 500 + 2600 = 3100
])
def test_auto_top_up_tops_up_below_the_threshold(balance: int, pending: int,
                                                 top_up: int) -> None:
    assert auto_top_up_minor(Wallet(EUR, balance), wallet_plan(), pending) == top_up


def test_a_wallet_plan_without_auto_top_up_never_tops_up() -> None:
    plan = Plan.prepaid_wallet("w", "op-1", "Wallet", "EUR")
    assert auto_top_up_minor(Wallet(EUR, 0), plan) == 0


# -- fleet ----------------------------------------------------------------------------------------


def fleet_plan() -> Plan:
    return Plan.fleet("fleet", "op-1", "Fleet", "EUR", credit_limit_minor=10_000, fee_minor=500)


def test_a_fleet_charge_above_the_credit_limit_is_refused() -> None:
    account = FleetAccount.for_plan(fleet_plan(), outstanding_minor=9_500)
    with pytest.raises(CreditLimitExceededError) as err:
        account.charge(600)
    assert (err.value.code, err.value.available_minor) == ("credit_limit_exceeded", 500)
    assert account.charge(500).outstanding_minor == 10_000


def test_paying_the_statement_frees_credit() -> None:
    account = FleetAccount.for_plan(fleet_plan(), outstanding_minor=9_500).settle(9_000)
    assert (account.outstanding_minor, account.available_minor) == (500, 9_500)
    with pytest.raises(InvalidAmountError):
        account.settle(501)
