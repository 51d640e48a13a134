"""Money, currencies, unit prices, VAT and the one rounding policy of evbilling.

Rules (see docs/money.md):

* Amounts that are stored, posted, invoiced or sent to a gateway are ``Money``: integer minor units
  of an ISO 4217 currency whose exponent comes from ISO data (Babel).
* Tariff rates are ``UnitPrice``: a ``Decimal`` with at most ``PRICE_DECIMALS`` places, because
  OCPI prices carry more decimals than the currency (0.3949 EUR/kWh).
* Rounding happens here and only here: ``round_to_minor`` with ``ROUND_HALF_UP`` by default,
  once per priced line. Sums of rounded lines are exact integer sums.
* Splitting an amount uses ``allocate`` (largest remainder), which always sums back to the whole.
* ``float`` is refused everywhere (``LossyCalculationError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
)
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

from evbilling.domain.errors import (
    CurrencyMismatchError,
    LossyCalculationError,
    UnknownCurrencyError,
)
from evbilling.domain.invariants import require

#: Decimal places a tariff rate may carry (OCPI prices, stored as NUMERIC(18, 6)).
PRICE_DECIMALS = 6
#: Decimal places a VAT percentage may carry (21.0, 5.2, 7.75 ...).
VAT_DECIMALS = 2


class RoundingMode(StrEnum):
    """The rounding modes an operator may choose; HALF_UP is the default everywhere."""

    HALF_UP = ROUND_HALF_UP
    HALF_EVEN = ROUND_HALF_EVEN
    UP = ROUND_CEILING
    DOWN = ROUND_FLOOR
    TRUNCATE = ROUND_DOWN


DEFAULT_ROUNDING = RoundingMode.HALF_UP


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency with its minor-unit exponent (EUR 2, JPY 0, KWD 3)."""

    code: str
    exponent: int

    @staticmethod
    def of(code: str) -> Currency:
        currency: Currency = _currency(code.upper())
        return currency

    @property
    def minor_per_major(self) -> int:
        return int(10**self.exponent)

    def __str__(self) -> str:
        return self.code


@lru_cache(maxsize=512)
def _currency(code: str) -> Currency:
    if len(code) != 3 or not code.isalpha() or not is_currency(code):
        raise UnknownCurrencyError(f"unknown ISO 4217 currency code: {code!r}")
    return Currency(code, int(get_currency_precision(code)))


def _refuse_float(value: object) -> None:
    if isinstance(value, float):
        raise LossyCalculationError("float is never used for money; pass int or Decimal")


def round_to_minor(
    value: Decimal, currency: Currency, mode: RoundingMode = DEFAULT_ROUNDING
) -> int:
    """Round a major-unit Decimal (e.g. 5.125 EUR) to integer minor units (513 cents).

    This is the only rounding of money in the code base.
    """
    _refuse_float(value)
    require(isinstance(value, Decimal | int), "round_to_minor takes Decimal or int")
    exponent = Decimal(1).scaleb(-currency.exponent)
    quantized = Decimal(value).quantize(exponent, rounding=str(mode.value))
    return int(quantized.scaleb(currency.exponent))


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An exact amount in integer minor units of one currency."""

    amount_minor: int
    currency: Currency

    def __post_init__(self) -> None:
        _refuse_float(self.amount_minor)
        require(type(self.amount_minor) is int, "Money.amount_minor must be an int")

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def zero(currency: Currency | str) -> Money:
        return Money(0, _as_currency(currency))

    @staticmethod
    def of(major: Decimal | int | str, currency: Currency | str,
           mode: RoundingMode = DEFAULT_ROUNDING) -> Money:
        """Money from a major-unit value ("12.34"), rounded with the policy."""
        _refuse_float(major)
        cur = _as_currency(currency)
        return Money(round_to_minor(Decimal(major), cur, mode), cur)

    # -- views --------------------------------------------------------------------------
    @property
    def amount(self) -> Decimal:
        """The exact major-unit value (Decimal('12.34'))."""
        return Decimal(self.amount_minor).scaleb(-self.currency.exponent)

    def __str__(self) -> str:
        return f"{self.amount:.{self.currency.exponent}f} {self.currency.code}"

    # -- arithmetic -----------------------------------------------------------------------
    def _check(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(
                f"cannot combine {self.currency.code} with {other.currency.code}"
            )
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount_minor + self._check(other).amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount_minor - self._check(other).amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount_minor < self._check(other).amount_minor

    def __le__(self, other: Money) -> bool:
        return self.amount_minor <= self._check(other).amount_minor

    def __gt__(self, other: Money) -> bool:
        return self.amount_minor > self._check(other).amount_minor

    def __ge__(self, other: Money) -> bool:
        return self.amount_minor >= self._check(other).amount_minor

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def multiply(self, factor: int | Decimal, mode: RoundingMode = DEFAULT_ROUNDING) -> Money:
        """Multiply by an int (exact) or a Decimal (rounded once with the policy)."""
        _refuse_float(factor)
        if isinstance(factor, int):
            return Money(self.amount_minor * factor, self.currency)
        return Money(round_to_minor(self.amount * factor, self.currency, mode), self.currency)

    def __mul__(self, factor: int | Decimal) -> Money:
        return self.multiply(factor)

    __rmul__ = __mul__

    def allocate(self, weights: Sequence[int | Decimal]) -> list[Money]:
        return [Money(part, self.currency) for part in allocate(self.amount_minor, weights)]


def _as_currency(currency: Currency | str) -> Currency:
    return currency if isinstance(currency, Currency) else Currency.of(currency)


def money_sum(items: Sequence[Money], currency: Currency | str) -> Money:
    """Exact sum of Money values of one currency (an empty sum is zero)."""
    total = Money.zero(currency)
    for item in items:
        total = total + item
    return total


def allocate(total_minor: int, weights: Sequence[int | Decimal]) -> list[int]:
    """Split ``total_minor`` in proportion to ``weights`` (largest-remainder method).

    The parts always sum to ``total_minor`` exactly. Ties in the remainder go to the earlier
    weight, so the split is deterministic. Negative totals are split as the negation of the
    positive split; weights must be non-negative with a positive sum.
    """
    for w in weights:
        _refuse_float(w)
    require(len(weights) > 0, "allocate needs at least one weight")
    require(all(w >= 0 for w in weights), "allocation weights must be non-negative")
    weight_sum = sum((Decimal(w) for w in weights), Decimal(0))
    require(weight_sum > 0, "allocation weights must not all be zero")
    if total_minor < 0:
        return [-part for part in allocate(-total_minor, weights)]
    exact = [Decimal(total_minor) * Decimal(w) / weight_sum for w in weights]
    parts = [int(x.to_integral_value(rounding=ROUND_FLOOR)) for x in exact]
    shortfall = total_minor - sum(parts)
    by_remainder = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in by_remainder[:shortfall]:
        parts[i] += 1
    require(sum(parts) == total_minor, "allocation must sum back to the whole")
    return parts


class PriceUnit(StrEnum):
    """What a tariff rate is per."""

    KWH = "kWh"
    HOUR = "h"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class UnitPrice:
    """A tariff rate such as 0.3949 EUR per kWh (excl. VAT), exact to PRICE_DECIMALS places."""

    amount: Decimal
    currency: Currency
    per: PriceUnit

    def __post_init__(self) -> None:
        _refuse_float(self.amount)
        require(isinstance(self.amount, Decimal), "UnitPrice.amount must be a Decimal")
        require(
            decimal_places(self.amount) <= PRICE_DECIMALS,
            f"a unit price has at most {PRICE_DECIMALS} decimal places",
        )

    @property
    def amount_micro(self) -> int:
        """The rate in millionths of the currency's major unit, exactly."""
        return to_scaled_int(self.amount, PRICE_DECIMALS)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency.code}/{self.per.value}"


#: Decimal places of "full precision" amounts: what rating reports before any rounding to cents.
FULL_PRECISION_PLACES = 12
_FULL_SCALE = 10**FULL_PRECISION_PLACES
#: Wide enough that scaling a parsed number never rounds (inputs are capped in length).
_EXACT = Context(prec=1000, Emax=10**6, Emin=-(10**6))
_FULL_ZERO = Decimal(0).scaleb(-FULL_PRECISION_PLACES, context=_EXACT)


_RATIONAL_DENOMINATOR_MAX = 10**40


def round_exact_to_minor(value: Fraction, currency: Currency,
                         mode: RoundingMode = DEFAULT_ROUNDING) -> int:
    """Round an exact rational amount in major units to minor units, once, with the policy.

    The rational is written as a Decimal at 1000 significant digits first; with a denominator
    below 10**40 a non-terminating value lies far further than that from any rounding boundary,
    so ``round_to_minor`` decides exactly as it would on the true value.
    """
    require(value.denominator < _RATIONAL_DENOMINATOR_MAX,
            "exact amounts keep a bounded denominator")
    quotient = _EXACT.divide(Decimal(value.numerator), Decimal(value.denominator))
    return round_to_minor(quotient, currency, mode)


def round_rational(value: Fraction) -> int:
    """The nearest integer to an exact rational, halves away from zero (grid rounding of exact
    intermediate amounts, far below a minor unit)."""
    return round_ratio(value.numerator, value.denominator)


def round_ratio(numerator: int, denominator: int) -> int:
    """``round_rational(Fraction(numerator, denominator))`` without making the ``Fraction``
    (no gcd; ``denominator`` > 0): the nearest integer, halves away from zero."""
    magnitude, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        magnitude += 1
    return magnitude if numerator >= 0 else -magnitude


def exact_multiply(value: Decimal, factor: int) -> Decimal:
    """``value * factor`` without the 28-digit rounding of the default context."""
    return _EXACT.multiply(value, Decimal(factor))


def quantize_full(numerator: int, denominator: int = 1) -> Decimal:
    """``numerator / denominator`` as a Decimal at full (12-place) precision, rounded half-up
    (half away from zero).

    Used for rating results, which are exact rationals (e.g. time priced per hour but measured
    in ms). Pure integer arithmetic: independent of any decimal context, so every path gives
    the same digits.
    """
    require(denominator > 0, "quantize_full needs a positive denominator")
    if numerator == 0:
        return _FULL_ZERO
    magnitude, remainder = divmod(abs(numerator) * _FULL_SCALE, denominator)
    if 2 * remainder >= denominator:
        magnitude += 1
    return Decimal(magnitude if numerator > 0 else -magnitude).scaleb(
        -FULL_PRECISION_PLACES, context=_EXACT)


def decimal_places(value: Decimal) -> int:
    """Number of decimal places needed to write ``value`` exactly (trailing zeros ignored)."""
    if not value.is_finite():
        return 10**9
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return 10**9
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0")) if any(digits) \
        else len(digits)
    return max(0, -(exponent + trailing_zeros))


def to_scaled_int(value: Decimal | int, places: int) -> int:
    """``value * 10**places`` as an exact int; raises ValueError if it is not exact."""
    _refuse_float(value)
    scaled = Decimal(value).scaleb(places, context=_EXACT)
    if scaled != scaled.to_integral_value(context=_EXACT):
        raise ValueError(f"{value} has more than {places} decimal places")
    return int(scaled)


def vat_factor(vat_percent: Decimal | None) -> Decimal:
    """1 + vat/100; a missing VAT (not applicable) leaves the amount unchanged."""
    return Decimal(1) if vat_percent is None else 1 + vat_percent / 100


def add_vat(excl: Money, vat_percent: Decimal | None,
            mode: RoundingMode = DEFAULT_ROUNDING) -> Money:
    """The incl-VAT amount of an excl-VAT line, rounded once with the policy."""
    return excl.multiply(vat_factor(vat_percent), mode)
