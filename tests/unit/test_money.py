"""Money, currencies, unit prices, VAT and the one rounding policy (``domain/money.py``)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest

from evbilling.domain.errors import (
    CurrencyMismatchError,
    LossyCalculationError,
    UnknownCurrencyError,
)
from evbilling.domain.invariants import InvariantViolation
from evbilling.domain.money import (
    Currency,
    Money,
    PriceUnit,
    RoundingMode,
    UnitPrice,
    add_vat,
    allocate,
    money_sum,
    quantize_full,
    round_to_minor,
    to_scaled_int,
    vat_factor,
)

EUR = Currency.of("EUR")
USD = Currency.of("USD")
JPY = Currency.of("JPY")
KWD = Currency.of("KWD")


def eur(amount_minor: int) -> Money:
    return Money(amount_minor, EUR)


# -- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("EUR", 2), ("USD", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3), ("CLF", 4)],
)
def test_currency_exponent_comes_from_iso_4217_data(code: str, exponent: int) -> None:
    assert Currency.of(code).exponent == exponent


def test_currency_code_is_case_insensitive() -> None:
    assert Currency.of("eur") == EUR


@pytest.mark.parametrize("code", ["XYZ", "EURO", "EU", "", "E1R", "BTC"])
def test_unknown_currency_code_is_refused(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        Currency.of(code)


def test_unknown_currency_error_has_a_stable_code() -> None:
    with pytest.raises(UnknownCurrencyError) as caught:
        Currency.of("XYZ")
    assert caught.value.code == "unknown_currency"


# -- construction ------------------------------------------------------------------------------


def test_money_of_a_decimal_string_is_exact() -> None:
    assert Money.of("12.34", "EUR") == eur(1234)


def test_money_of_rounds_half_up_to_the_currency_exponent() -> None:
    assert Money.of(Decimal("0.125"), "EUR") == eur(13)


def test_money_of_rounds_negative_halves_away_from_zero() -> None:
    assert Money.of(Decimal("-0.125"), "EUR") == eur(-13)


def test_money_of_a_yen_amount_has_no_minor_digits() -> None:
    assert Money.of("1234.5", "JPY") == Money(1235, JPY)


def test_money_of_a_dinar_amount_keeps_three_minor_digits() -> None:
    assert Money.of("1.2345", "KWD") == Money(1235, KWD)


def test_money_amount_is_the_exact_major_value() -> None:
    assert Money(1234, EUR).amount == Decimal("12.34")


def test_money_prints_with_the_currency_exponent() -> None:
    assert str(Money(5, KWD)) == "0.005 KWD"


# -- float is refused everywhere ---------------------------------------------------------------


def test_money_refuses_a_float_amount() -> None:
    with pytest.raises(LossyCalculationError):
        Money(1.0, EUR)  # type: ignore[arg-type]


def test_money_of_refuses_a_float() -> None:
    with pytest.raises(LossyCalculationError):
        Money.of(1.5, "EUR")  # type: ignore[arg-type]


def test_multiplying_money_by_a_float_is_refused() -> None:
    with pytest.raises(LossyCalculationError):
        eur(100) * 1.5  # type: ignore[operator]


def test_allocating_with_float_weights_is_refused() -> None:
    with pytest.raises(LossyCalculationError):
        allocate(100, [0.5, 0.5])  # type: ignore[list-item]


def test_money_allocate_with_float_weights_is_refused() -> None:
    with pytest.raises(LossyCalculationError):
        eur(100).allocate([1, 0.5])  # type: ignore[list-item]


def test_round_to_minor_refuses_a_float() -> None:
    with pytest.raises(LossyCalculationError):
        round_to_minor(0.1, EUR)  # type: ignore[arg-type]


def test_unit_price_refuses_a_float() -> None:
    with pytest.raises(LossyCalculationError):
        UnitPrice(0.25, EUR, PriceUnit.KWH)  # type: ignore[arg-type]


def test_lossy_calculation_error_is_also_a_type_error() -> None:
    with pytest.raises(TypeError):
        Money(1.0, EUR)  # type: ignore[arg-type]


# -- arithmetic within one currency ------------------------------------------------------------


def test_money_of_one_currency_adds_exactly() -> None:
    assert eur(1050) + eur(99) == eur(1149)


def test_money_of_one_currency_subtracts_to_a_negative_amount() -> None:
    assert eur(99) - eur(1050) == eur(-951)


def test_negating_money_flips_the_sign() -> None:
    assert -eur(5) == eur(-5)


def test_money_of_one_currency_compares_by_amount() -> None:
    assert eur(1) < eur(2) <= eur(2) < eur(3)


def test_adding_money_of_two_currencies_is_refused() -> None:
    with pytest.raises(CurrencyMismatchError):
        eur(100) + Money(100, USD)


def test_subtracting_money_of_two_currencies_is_refused() -> None:
    with pytest.raises(CurrencyMismatchError):
        eur(100) - Money(100, USD)


def test_comparing_money_of_two_currencies_is_refused() -> None:
    with pytest.raises(CurrencyMismatchError):
        _ = eur(100) < Money(100, USD)


def test_adding_a_bare_number_to_money_is_refused() -> None:
    with pytest.raises(TypeError):
        eur(100) + 1  # type: ignore[operator]


def test_money_sum_of_nothing_is_zero() -> None:
    assert money_sum([], "EUR") == Money.zero("EUR")


def test_money_sum_of_mixed_currencies_is_refused() -> None:
    with pytest.raises(CurrencyMismatchError):
        money_sum([eur(1), Money(1, USD)], "EUR")


def test_multiplying_money_by_an_int_is_exact() -> None:
    assert eur(333) * 3 == eur(999)


def test_multiplying_money_by_a_decimal_rounds_half_up() -> None:
    # 1.00 EUR * 0.125 = 0.125 EUR -> half-up -> 0.13 EUR
    assert eur(100).multiply(Decimal("0.125")) == eur(13)


def test_multiplying_negative_money_by_a_decimal_rounds_half_away_from_zero() -> None:
    # -1.00 EUR * 0.125 = -0.125 EUR -> -0.13 EUR
    assert eur(-100).multiply(Decimal("0.125")) == eur(-13)


def test_multiplying_money_by_a_decimal_rounds_exactly_once() -> None:
    # 1.00 EUR * 0.01445 = 0.01445 EUR -> 0.01 EUR.
    # Rounding twice (0.0145 -> 0.015 -> 0.02) would give a cent more.
    assert eur(100).multiply(Decimal("0.01445")) == eur(1)


def test_multiplying_money_by_a_decimal_honours_the_rounding_mode() -> None:
    assert eur(100).multiply(Decimal("0.125"), RoundingMode.HALF_EVEN) == eur(12)


def test_multiplication_is_commutative() -> None:
    assert Decimal("0.125") * eur(100) == eur(100) * Decimal("0.125")


# -- rounding modes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode", "expected_minor"),
    [
        ("1.005", RoundingMode.HALF_UP, 101),
        ("-1.005", RoundingMode.HALF_UP, -101),
        ("1.005", RoundingMode.HALF_EVEN, 100),
        ("1.015", RoundingMode.HALF_EVEN, 102),
        ("1.001", RoundingMode.UP, 101),
        ("-1.009", RoundingMode.UP, -100),
        ("1.009", RoundingMode.DOWN, 100),
        ("-1.001", RoundingMode.DOWN, -101),
        ("1.009", RoundingMode.TRUNCATE, 100),
        ("-1.009", RoundingMode.TRUNCATE, -100),
    ],
)
def test_round_to_minor_applies_the_chosen_mode(
    value: str, mode: RoundingMode, expected_minor: int
) -> None:
    assert round_to_minor(Decimal(value), EUR, mode) == expected_minor


def test_round_to_minor_defaults_to_half_up() -> None:
    assert round_to_minor(Decimal("0.005"), EUR) == 1


def test_round_to_minor_of_yen_rounds_to_whole_yen() -> None:
    assert round_to_minor(Decimal("99.5"), JPY) == 100


def test_round_to_minor_of_dinar_rounds_to_fils() -> None:
    assert round_to_minor(Decimal("1.0005"), KWD) == 1001


def test_round_to_minor_accepts_an_int() -> None:
    assert round_to_minor(7, EUR) == 700  # type: ignore[arg-type]


# -- allocation --------------------------------------------------------------------------------


def test_allocating_100_into_three_equal_parts_gives_the_extra_cent_to_the_first() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]


def test_allocating_by_weights_follows_the_weights() -> None:
    # 1000 * 1/6, 2/6, 3/6 = 166.67, 333.33, 500 -> floors 166, 333, 500 (999);
    # the largest remainder (.67, the first part) gets the missing cent.
    assert allocate(1000, [1, 2, 3]) == [167, 333, 500]


def test_a_zero_weight_gets_nothing() -> None:
    assert allocate(10, [0, 1, 1]) == [0, 5, 5]


def test_zero_weights_never_receive_the_remainder() -> None:
    assert allocate(7, [0, 1, 0, 1, 0]) == [0, 4, 0, 3, 0]


def test_allocating_a_negative_total_mirrors_the_positive_split() -> None:
    assert allocate(-100, [1, 1, 1]) == [-34, -33, -33]


def test_allocating_with_decimal_weights_is_exact() -> None:
    assert allocate(5, [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")]) == [3, 1, 1]


def test_allocating_zero_gives_zeros() -> None:
    assert allocate(0, [1, 2]) == [0, 0]


@pytest.mark.parametrize(
    ("total_minor", "weights"),
    [
        (100, [1, 1, 1]),
        (-100, [1, 1, 1]),
        (1, [1] * 7),
        (99_999, [Decimal("21"), Decimal("9"), Decimal("0"), Decimal("7.75")]),
        (-7, [3, 0, 5]),
        (10**15 + 1, [1, 3]),
    ],
)
def test_allocation_always_sums_to_the_whole(total_minor: int, weights: list[int]) -> None:
    assert sum(allocate(total_minor, weights)) == total_minor


def test_allocating_with_all_zero_weights_breaks_an_invariant() -> None:
    with pytest.raises(InvariantViolation):
        allocate(100, [0, 0])


def test_allocating_with_a_negative_weight_breaks_an_invariant() -> None:
    with pytest.raises(InvariantViolation):
        allocate(100, [2, -1])


def test_allocating_with_no_weights_breaks_an_invariant() -> None:
    with pytest.raises(InvariantViolation):
        allocate(100, [])


def test_money_allocate_keeps_the_currency() -> None:
    assert Money(100, JPY).allocate([1, 1, 1]) == [Money(34, JPY), Money(33, JPY),
                                                   Money(33, JPY)]


# -- VAT ---------------------------------------------------------------------------------------


def test_add_vat_rounds_the_incl_amount_once() -> None:
    # 10.05 EUR * 1.21 = 12.1605 -> 12.16
    assert add_vat(eur(1005), Decimal("21")) == eur(1216)


def test_add_vat_rounds_half_up() -> None:
    # 0.50 EUR * 1.05 = 0.525 -> 0.53
    assert add_vat(eur(50), Decimal("5")) == eur(53)


def test_add_vat_with_no_vat_applicable_leaves_the_amount() -> None:
    assert add_vat(eur(1005), None) == eur(1005)


def test_add_vat_of_zero_percent_gives_the_same_amount_as_no_vat() -> None:
    # Not applicable (None) and 0 % differ in meaning (the breakdown says which), not in amount.
    assert add_vat(eur(1005), Decimal(0)) == add_vat(eur(1005), None)


def test_vat_factor_of_no_vat_is_one() -> None:
    assert vat_factor(None) == 1


def test_vat_factor_of_a_fractional_percentage_is_exact() -> None:
    assert vat_factor(Decimal("7.75")) == Decimal("1.0775")


# -- unit prices -------------------------------------------------------------------------------


def test_unit_price_keeps_more_decimals_than_the_currency() -> None:
    assert UnitPrice(Decimal("0.3949"), EUR, PriceUnit.KWH).amount_micro == 394_900


def test_unit_price_accepts_six_decimals() -> None:
    assert UnitPrice(Decimal("0.123456"), EUR, PriceUnit.HOUR).amount_micro == 123_456


def test_unit_price_ignores_trailing_zeros_when_counting_decimals() -> None:
    assert UnitPrice(Decimal("0.25000000"), EUR, PriceUnit.KWH).amount_micro == 250_000


def test_unit_price_refuses_more_than_six_decimals() -> None:
    with pytest.raises(InvariantViolation):
        UnitPrice(Decimal("0.1234567"), EUR, PriceUnit.KWH)


PAST_28_DIGITS = Decimal("0.25000000000000000000000000000001")  # 32 decimals, 31 digits


def test_unit_price_refuses_extra_decimals_beyond_28_significant_digits() -> None:
    with pytest.raises(InvariantViolation):
        UnitPrice(PAST_28_DIGITS, EUR, PriceUnit.KWH)


def test_unit_price_prints_its_unit() -> None:
    assert str(UnitPrice(Decimal("0.25"), EUR, PriceUnit.KWH)) == "0.25 EUR/kWh"


# -- exact scaling ----------------------------------------------------------------------------


def test_to_scaled_int_is_exact() -> None:
    assert to_scaled_int(Decimal("0.3949"), 6) == 394_900


def test_to_scaled_int_refuses_a_value_finer_than_the_scale() -> None:
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        to_scaled_int(Decimal("1.0000001"), 6)


def test_to_scaled_int_refuses_a_float() -> None:
    with pytest.raises(LossyCalculationError):
        to_scaled_int(0.5, 6)  # type: ignore[arg-type]


def test_to_scaled_int_refuses_a_value_finer_than_the_scale_beyond_28_digits() -> None:
    with pytest.raises(ValueError):
        to_scaled_int(Decimal("1.0000000000000000000000000000001"), 6)


# -- full precision ----------------------------------------------------------------------------


def test_quantize_full_gives_twelve_decimal_places() -> None:
    assert quantize_full(1, 3) == Decimal("0.333333333333")


def test_quantize_full_has_exponent_minus_twelve() -> None:
    assert quantize_full(5).as_tuple().exponent == -12


def test_quantize_full_rounds_the_thirteenth_place_half_up() -> None:
    assert quantize_full(2, 3) == Decimal("0.666666666667")


def test_quantize_full_rounds_a_negative_half_away_from_zero() -> None:
    assert quantize_full(-5, 10**13) == Decimal("-0.000000000001")


def test_quantize_full_is_independent_of_the_callers_decimal_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_FLOOR
        assert quantize_full(2, 3) == Decimal("0.666666666667")


def test_round_rational_takes_the_nearest_integer_and_halves_away_from_zero() -> None:
    from fractions import Fraction

    from evbilling.domain.money import round_rational

    assert [round_rational(Fraction(n, 2)) for n in (-3, -1, 1, 3)] == [-2, -1, 1, 2]
    assert round_rational(Fraction(1, 3)) == 0
    assert round_rational(Fraction(-5, 3)) == -2
