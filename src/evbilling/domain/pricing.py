"""The pricing pipeline and the plan advisor. Pure functions; no I/O, no clock.

``price_session`` (rules and worked examples in ``docs/plans.md``):

1. **Rate** the session with the tariff the plan implies (pay-per-use, wallet, fleet: the public
   tariff; subscription: the member tariff; flat rate: the fallback tariff), with
   ``rating.rate`` and its per-period breakdown. The caller selects the tariff versions.
2. **Plan coverage.** The allowance (subscription) or fair-use cap (flat rate) left in the
   period covers a prefix of the session measured in energy: walk the periods in order; a
   period fully inside the prefix is free of ENERGY and charging TIME; the period in which it
   runs out is split pro rata by energy (covered share of a quantity = ``q * a // e``, exact
   integers, the rest is charged); after it everything is charged. Idle time (PARKING_TIME) and
   reservations are never covered. ``waive_flat_fee`` removes the FLAT session fee. Covered
   quantities appear as zero-amount lines that say what the plan paid for.
   The tariff's min/max price bounds what the tariff charges (the part left after coverage);
   a session the plan covers completely costs nothing.
3. **Promotions, then loyalty** (``promotions.apply_promotions``): each discount a named line.
4. **Amounts**: every line is rounded once (excl. and incl. VAT separately) from the exact
   rational the rating engine's full precision gives; totals are exact sums of the lines;
   a VAT summary per rate.

How (a live session is re-priced at every meter sample, so this is a hot path): the lines come
from the rater's per-element sums (``RatedSession.billed``, O(tariff elements)), not from its
per-period ``Decimal`` breakdown; periods are visited one by one only as far as an allowance
reaches. Amounts are integer numerators over the rating engine's ``MONEY_DENOMINATOR`` (incl.
VAT: times ``VAT_SCALE``), each line rounded once from its numerator. Invariants, all
``require``: the charged lines add up to the engine's exact total when nothing is covered or
bounded (every call); and, where the session is rated here (``PricingRequest.rated`` None:
settlement, quotes, the advisor), the per-element sums equal the per-period breakdown summed,
an O(periods) cross-check a live preview skips. ``tests/unit/test_pricing_fast.py`` checks
the result against the previous per-period implementation field by field.

The answer depends only on the request: the same periods give the same lines whether the
session is still running (live) or finished. Pass the ``PlanUsage`` as it was when the session
started; ``usage_after`` is what to store when the session settles.

``advise_plans`` prices a usage history (or a typed monthly profile) under each plan the
driver may choose, with period fees and allowances, and returns them cheapest first.
"""

from __future__ import annotations

import datetime as dt
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache

from evbilling.domain.errors import CurrencyMismatchError, DomainError, InvalidDocumentError
from evbilling.domain.invariants import require
from evbilling.domain.money import (
    DEFAULT_ROUNDING,
    Currency,
    Money,
    RoundingMode,
    allocate,
    money_sum,
    round_exact_to_minor,
    round_ratio,
)
from evbilling.domain.periods import (
    MILLIWH_PER_KWH,
    MS_PER_HOUR,
    ChargingPeriod,
    SessionFacts,
    epoch_ms,
    from_epoch_ms,
)
from evbilling.domain.plans import (
    BillingPeriod,
    Plan,
    PlanKind,
    PlanUsage,
    local_date,
    local_midnight,
    period_dates,
)
from evbilling.domain.promotions import (
    MAX_PROMOTIONS_PER_CHARGE,
    AmountCell,
    Category,
    Discount,
    DiscountBase,
    DiscountSource,
    LoyaltyTier,
    Promotion,
    PromotionCheck,
    PromotionContext,
    Purpose,
    TooManyPromotionsError,
    apply_promotions,
    check_promotion,
    kwh_text,
)
from evbilling.domain.rating import (
    MONEY_DENOMINATOR,
    VAT_SCALE,
    BilledQuantity,
    RatedDimension,
    RatedSession,
    bound_total,
    money_factor,
    price_decimal,
    rate,
    vat_decimal,
)
from evbilling.domain.tariffs import Tariff
from evbilling.domain.timezones import zone

# -- limits ---------------------------------------------------------------------------------------
MAX_ADVISOR_OPTIONS = 100
MAX_ADVISOR_SESSIONS = 10_000
MAX_ADVISOR_WINDOW_DAYS = 400
MAX_PROFILE_SESSIONS_PER_MONTH = 1_000
MAX_PROFILE_ENERGY_MILLIWH = 1_000_000 * MILLIWH_PER_KWH
MAX_PROFILE_MINUTES = 24 * 60


# -- errors ---------------------------------------------------------------------------------------


class PricingError(DomainError):
    code = "pricing_failed"


class PlanTariffMissingError(PricingError):
    """The tariff the plan prices with was not supplied."""

    code = "plan_tariff_missing"


class PlanTariffMismatchError(PricingError):
    """The supplied member / fallback tariff is not the one the plan names."""

    code = "plan_tariff_mismatch"


class PlanUsageRequiredError(PricingError):
    code = "plan_usage_required"


class PlanUsageMismatchError(PricingError):
    """The usage record is for another plan, or for a period the session did not start in."""

    code = "plan_usage_mismatch"


class SessionStartUnknownError(PricingError):
    code = "session_start_unknown"


class SessionOutsideWindowError(PricingError):
    code = "session_outside_window"


class InvalidUsageProfileError(InvalidDocumentError):
    code = "invalid_usage_profile"


# -- request --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanTariffs:
    """The tariff versions in force for the connector and session start, selected by the
    caller. Only the one the plan prices with is needed."""

    public: Tariff | None = None
    member: Tariff | None = None
    fallback: Tariff | None = None

    def for_plan(self, plan: Plan) -> Tariff:
        """The tariff ``plan`` prices with; its id must be the plan's and its currency too."""
        if plan.kind is PlanKind.SUBSCRIPTION:
            tariff, role = self.member, "member"
        elif plan.kind is PlanKind.FLAT_RATE:
            tariff, role = self.fallback, "fallback"
        else:
            tariff, role = self.public, "public"
        if tariff is None:
            raise PlanTariffMissingError(f"plan {plan.id} needs its {role} tariff")
        if plan.tariff_id is not None and tariff.id != plan.tariff_id:
            raise PlanTariffMismatchError(
                f"plan {plan.id} prices with tariff {plan.tariff_id}, not {tariff.id}")
        if tariff.currency != plan.currency:
            raise CurrencyMismatchError(
                f"tariff {tariff.id} is in {tariff.currency}, plan {plan.id} in {plan.currency}")
        return tariff


@dataclass(frozen=True, slots=True)
class PricingRequest:
    session: SessionFacts  # so far (live) or complete
    plan: Plan
    tariffs: PlanTariffs
    #: The plan's usage in the period the session started in, as it was at the start.
    #: Required for subscriptions and flat rates; optional (energy is tracked) otherwise.
    usage: PlanUsage | None = None
    promotions: tuple[Promotion, ...] = ()  # candidates: automatic ones + the entered code's
    promotion_context: PromotionContext | None = None  # required when promotions are given
    loyalty_tier: LoyaltyTier | None = None  # the driver's tier at the session start
    #: The session already rated by a ``SessionRater`` fed these same periods (live cost:
    #: the rater works incrementally, so a meter sample is not a re-rating of the session).
    #: None: ``price_session`` rates ``session`` itself.
    rated: RatedSession | None = None
    #: False: the lines carry no descriptions and there is no VAT summary; every amount and
    #: total is the same. A running cost needs only the totals, at every meter sample.
    describe: bool = True


# -- result ---------------------------------------------------------------------------------------


class LineKind(StrEnum):
    CHARGE = "charge"
    PLAN_BENEFIT = "plan_benefit"  # what the plan covered: zero amount, for information
    PRICE_BOUND = "price_bound"
    PROMOTION = "promotion"
    LOYALTY = "loyalty"
    PLAN_FEE = "plan_fee"


class LineCode(StrEnum):
    ENERGY = "energy"
    CHARGING_TIME = "charging_time"
    IDLE_TIME = "idle_time"
    RESERVATION = "reservation"
    RESERVATION_FEE = "reservation_fee"
    SESSION_FEE = "session_fee"
    INCLUDED_ENERGY = "included_energy"
    FAIR_USE_ENERGY = "fair_use_energy"
    COVERED_CHARGING_TIME = "covered_charging_time"
    SESSION_FEE_WAIVED = "session_fee_waived"
    MIN_PRICE = "min_price"
    MAX_PRICE = "max_price"
    PROMOTION = "promotion"
    LOYALTY = "loyalty"
    PLAN_FEE = "plan_fee"


class QuantityUnit(StrEnum):
    MILLIWH = "milliwh"
    MS = "ms"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class PriceLine:
    """One line of a receipt. Discounts are negative. Amounts are rounded once."""

    kind: LineKind
    code: LineCode
    description: str
    amount_excl_vat: Money
    amount_incl_vat: Money
    vat_percent: Decimal | None = None
    quantity: int | None = None  # in quantity_unit (exact)
    quantity_unit: QuantityUnit | None = None
    unit_price: Decimal | None = None  # excl. VAT per kWh, per hour or per session
    source_id: str | None = None  # tariff id, promotion id or loyalty tier name


@dataclass(frozen=True, slots=True)
class VatLine:
    vat_percent: Decimal | None  # None = no VAT applicable
    amount_excl_vat: Money
    vat_amount: Money
    amount_incl_vat: Money


@dataclass(frozen=True, slots=True)
class AppliedPromotion:
    """A redemption to record: what the promotion took off this charge."""

    promotion_id: str
    label: str
    discount_excl_vat: Money
    discount_incl_vat: Money


@dataclass(frozen=True, slots=True)
class PricedSession:
    plan_id: str
    tariff_id: str
    currency: Currency
    lines: tuple[PriceLine, ...]
    total_excl_vat: Money
    total_incl_vat: Money
    vat_summary: tuple[VatLine, ...]
    applied_promotions: tuple[AppliedPromotion, ...]
    refused_promotions: tuple[PromotionCheck, ...]
    loyalty_tier: str | None
    energy_milliwh: int  # charged in the session (positive periods)
    energy_covered_milliwh: int  # of which the allowance / cap covered
    usage_after: PlanUsage | None
    warnings: tuple[str, ...]
    #: The rating result (OCPI totals for a CDR); not part of the answer's equality.
    rated: RatedSession = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PricedFee:
    plan_id: str
    currency: Currency
    lines: tuple[PriceLine, ...]
    total_excl_vat: Money
    total_incl_vat: Money
    vat_summary: tuple[VatLine, ...]
    applied_promotions: tuple[AppliedPromotion, ...]
    refused_promotions: tuple[PromotionCheck, ...]


# -- step 1: rating, as exact integers ------------------------------------------------------------
#
# Every amount below is an exact integer numerator: excl. VAT over MONEY_DENOMINATOR, incl. VAT
# over MONEY_DENOMINATOR * VAT_SCALE, the rating engine's own scale (``docs/money.md``). A
# quantity q of a dimension at price_micro costs price_micro * q * factor (excl.), times
# VAT_SCALE + vat_bp (incl.): the rational unit price * q / per_unit, exactly, without a
# ``Fraction`` per piece. Each line is rounded once, from its exact numerator (``_minor``).


@dataclass(frozen=True, slots=True)
class _Dimension:
    code: LineCode
    unit: QuantityUnit
    per_unit: int  # quantity units per priced unit (milliwh per kWh, ms per hour, 1)
    label: str
    category: Category
    factor: int  # price_micro * quantity * factor = cost over MONEY_DENOMINATOR


_ENERGY = _Dimension(LineCode.ENERGY, QuantityUnit.MILLIWH, MILLIWH_PER_KWH, "Energy",
                     Category.ENERGY, money_factor("ENERGY"))
_DIMENSIONS: dict[str, _Dimension] = {
    "ENERGY": _ENERGY,
    "TIME": _Dimension(LineCode.CHARGING_TIME, QuantityUnit.MS, MS_PER_HOUR, "Charging time",
                       Category.CHARGING_TIME, money_factor("TIME")),
    "PARKING_TIME": _Dimension(LineCode.IDLE_TIME, QuantityUnit.MS, MS_PER_HOUR, "Idle time",
                               Category.IDLE_TIME, money_factor("PARKING_TIME")),
    "RESERVATION_TIME": _Dimension(LineCode.RESERVATION, QuantityUnit.MS, MS_PER_HOUR,
                                   "Reservation", Category.RESERVATION,
                                   money_factor("RESERVATION_TIME")),
    "FLAT": _Dimension(LineCode.SESSION_FEE, QuantityUnit.SESSION, 1, "Session fee",
                       Category.SESSION_FEE, money_factor("FLAT")),
}
_RESERVATION_FEE = _Dimension(LineCode.RESERVATION_FEE, QuantityUnit.SESSION, 1,
                              "Reservation fee", Category.RESERVATION, money_factor("FLAT"))
_BY_CODE = {d.code: d for d in (*_DIMENSIONS.values(), _RESERVATION_FEE)}
_COVERABLE = frozenset({LineCode.ENERGY, LineCode.CHARGING_TIME})
_INCL_DENOMINATOR = MONEY_DENOMINATOR * VAT_SCALE

#: A charge line's identity: dimension, unit price and VAT rate (basis points; None = no VAT).
_Key = tuple[LineCode, int, int | None]


def _dimension(q: BilledQuantity) -> _Dimension:
    return _RESERVATION_FEE if q.reservation_fee else _DIMENSIONS[q.kind]


@dataclass(slots=True)
class _Group:
    """What becomes one charge line: a dimension at one unit price and VAT rate, with the
    quantity charged (after plan coverage)."""

    dimension: _Dimension
    price_micro: int
    vat_bp: int | None
    quantity: int

    @property
    def excl(self) -> int:
        """Exact, over MONEY_DENOMINATOR."""
        return self.price_micro * self.quantity * self.dimension.factor

    @property
    def incl(self) -> int:
        """Exact, over MONEY_DENOMINATOR * VAT_SCALE."""
        return self.excl * (VAT_SCALE + (self.vat_bp or 0))


def _exact_total(groups: Iterable[_Group]) -> tuple[int, int]:
    excl = incl = 0
    for g in groups:
        x = g.excl
        excl += x
        incl += x * (VAT_SCALE + (g.vat_bp or 0))
    return excl, incl


# -- step 2: plan coverage ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Coverage:
    #: The charge lines in the making, in line order: by dimension, then by the first period
    #: that used the price (as a walk over the periods meets them).
    charged: dict[_Key, _Group]
    waived: tuple[BilledQuantity, ...]  # the FLAT session fee, when the plan waives it
    energy_covered_milliwh: int
    time_covered_ms: int
    every_period_whole: bool = False  # the allowance covered every period whole

    @property
    def covered_any(self) -> bool:
        return bool(self.waived) or self.energy_covered_milliwh > 0 or self.time_covered_ms > 0


def _cover(periods: Sequence[ChargingPeriod], rated: RatedSession, allowance_milliwh: int,
           waive_flat_fee: bool, energy: _Energy) -> _Coverage:
    """Walk the periods in order, covering energy and charging time while the allowance lasts
    (module doc, step 2).

    The charged quantities start from the rater's per-element sums (``RatedSession.billed``,
    O(tariff elements)); only the periods the allowance reaches are visited one by one, to
    take off what it covers (``q * a // e`` per piece, as a walk over every piece would).
    An allowance larger than the session's energy, without exports, covers every period
    whole, so nothing is visited: all ENERGY and charging TIME is covered."""
    charged, waived = _groups(rated, waive_flat_fee)
    remaining = allowance_milliwh
    energy_covered = time_covered = 0
    if remaining > energy.charged_milliwh and not energy.exported:
        # Every period whole: covered == whole, so each piece's covered share is all of it.
        for group in charged.values():
            if group.dimension.code in _COVERABLE:
                if group.dimension.code is LineCode.CHARGING_TIME:
                    time_covered += group.quantity
                group.quantity = 0
        return _Coverage(charged, tuple(waived), energy.charged_milliwh, time_covered, True)
    if remaining > 0:
        for period, pieces in zip(periods, rated.billed_by_period(), strict=False):
            if remaining <= 0:
                break  # nothing covered from here on
            covered, whole = _covered_share(period, remaining)
            if period.energy_milliwh > 0 and not period.is_reservation:
                energy_covered += covered
                remaining -= covered
            if not covered:
                continue
            for q in pieces:
                dim = _dimension(q)
                if dim.code in _COVERABLE:
                    covered_units = q.quantity * covered // whole
                    charged[(dim.code, q.price_micro, q.vat_bp)].quantity -= covered_units
                    if dim.code is LineCode.CHARGING_TIME:
                        time_covered += covered_units
    return _Coverage(charged, tuple(waived), energy_covered, time_covered)


def _groups(rated: RatedSession, waive_flat_fee: bool
            ) -> tuple[dict[_Key, _Group], list[BilledQuantity]]:
    """The rater's per-element sums as charge lines in the making (one per dimension, unit
    price and VAT rate, in line order), and the FLAT fees the plan waives."""
    charged: dict[_Key, _Group] = {}
    waived: list[BilledQuantity] = []
    for q in rated.billed():
        dim = _dimension(q)
        if dim.code is LineCode.SESSION_FEE and waive_flat_fee:
            waived.append(q)
            continue
        key = (dim.code, q.price_micro, q.vat_bp)
        group = charged.get(key)
        if group is None:
            charged[key] = _Group(dim, q.price_micro, q.vat_bp, q.quantity)
        else:
            group.quantity += q.quantity
    return charged, waived


def _has_charged_quantity(periods: Sequence[ChargingPeriod], rated: RatedSession,
                          allowance_milliwh: int, waive_flat_fee: bool, coverage: _Coverage
                          ) -> bool:
    """Whether any period's priced dimension is left with a quantity after coverage (only
    asked when a plan covered something and the tariff has a min or max price).

    When the allowance covered every period whole, only the dimensions it never covers are
    left: none means nothing; a FLAT fee bills 1; idle and reservation time bill their
    volume (plus any step extra), so with no negative volume any piece of them is > 0.
    Otherwise, a walk over every period."""
    if coverage.every_period_whole:
        uncovered = [q for q in rated.billed() if _dimension(q).code not in _COVERABLE
                     and not (_dimension(q).code is LineCode.SESSION_FEE and waive_flat_fee)]
        if not uncovered:
            return False
        if any(q.kind == "FLAT" for q in uncovered) or (
                min(map(_PARKING_OF, periods)) >= 0 and min(map(_RESERVATION_OF, periods)) >= 0):
            return True
    remaining = allowance_milliwh
    for period, pieces in zip(periods, rated.billed_by_period(), strict=True):
        covered, whole = _covered_share(period, remaining)
        if period.energy_milliwh > 0 and not period.is_reservation:
            remaining -= covered
        for q in pieces:
            dim = _dimension(q)
            if dim.code is LineCode.SESSION_FEE and waive_flat_fee:
                continue
            left = q.quantity
            if dim.code in _COVERABLE and covered:
                left -= left * covered // whole
            if left != 0:
                return True
    return False


def _covered_share(period: ChargingPeriod, remaining_milliwh: int) -> tuple[int, int]:
    """(covered, whole): the share of the period the allowance covers, as energy over energy;
    a period without energy is covered whole while any allowance is left; exported energy and
    reservations never are."""
    if period.is_reservation or period.energy_milliwh < 0 or remaining_milliwh <= 0:
        return 0, 1
    if period.energy_milliwh == 0:
        return 1, 1
    return min(remaining_milliwh, period.energy_milliwh), period.energy_milliwh


# -- invariants -----------------------------------------------------------------------------------


def _check_against_rating(coverage: _Coverage, rated: RatedSession) -> None:
    """Nothing covered, nothing bounded: the charged amounts add up to the engine's exact
    total."""
    excl, incl = _exact_total(coverage.charged.values())
    require(excl == rated.total_cost_exact.excl and incl == rated.total_cost_exact.incl,
            "the priced breakdown adds up to the rating engine's exact total")


def _check_against_breakdown(rated: RatedSession) -> None:
    """The per-element sums the lines are made from (``RatedSession.billed``) are what the
    per-period breakdown (``RatedSession.periods``, a separate walk in ``Decimal``s) bills:
    the same unit prices and VAT rates, in the same order, with the same quantities.
    O(periods): run where a session is priced from scratch (settlement, quotes, the
    advisor), not on every live meter sample."""
    from_periods: dict[tuple[LineCode, Decimal, Decimal | None], int] = {}
    for period in rated.periods():
        reserved = any(d.type == "RESERVATION_TIME" for d in period.dimensions)
        for d in period.dimensions:
            if d.element_index is None or d.price is None:
                continue
            dim = _RESERVATION_FEE if (reserved and d.type == "FLAT") else _DIMENSIONS[d.type]
            key = (dim.code, d.price, d.vat)
            from_periods[key] = from_periods.get(key, 0) + _billed_units(d, dim.per_unit)
    from_sums: dict[tuple[LineCode, Decimal, Decimal | None], int] = {}
    for q in rated.billed():
        key = (_dimension(q).code, q.price, q.vat)
        from_sums[key] = from_sums.get(key, 0) + q.quantity
    order = list(_BY_CODE)
    require(list(from_sums.items())
            == sorted(from_periods.items(), key=lambda kv: order.index(kv[0][0])),
            "the per-element sums bill what the per-period breakdown bills")


def _billed_units(d: RatedDimension, per_unit: int) -> int:
    """The billed quantity as an integer of our scale. The breakdown reports hours at 12
    decimals, within 3.6e-6 ms of a whole ms, so the nearest integer is the exact quantity."""
    scaled = d.billed_volume * per_unit
    units = scaled.to_integral_value(rounding=ROUND_HALF_UP)
    require(abs(scaled - units) < Decimal("0.001"), "billed volumes are whole units")
    return int(units)


# -- lines ----------------------------------------------------------------------------------------


def _minor(numerator: int, denominator: int, currency: Currency) -> int:
    """``numerator / denominator`` major units rounded once to minor units with the rounding
    policy. For the default (HALF_UP) that is ``money.round_ratio`` of the exact amount in
    minor units: the same answer as ``round_exact_to_minor`` without its 1000-digit
    division."""
    if DEFAULT_ROUNDING is RoundingMode.HALF_UP:
        return round_ratio(numerator * currency.minor_per_major, denominator)
    return round_exact_to_minor(Fraction(numerator, denominator), currency)


def _price_text(price: Decimal, currency: Currency) -> str:
    text = f"{price:.2f}" if price == price.quantize(Decimal("0.01")) else f"{price.normalize():f}"
    return f"{text} {currency}"


@lru_cache(maxsize=1024)
def _unit_price_text(price_micro: int, currency: Currency) -> str:
    """``_price_text`` of a tariff price (the same at every meter sample)."""
    return _price_text(price_decimal(price_micro), currency)


def duration_text(ms: int) -> str:
    """"1:05:30" (whole seconds shown; the line's quantity keeps the exact ms)."""
    seconds = ms // 1000
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _quantity_text(dim: _Dimension, quantity: int) -> str:
    if dim.unit is QuantityUnit.MILLIWH:
        return f"{kwh_text(quantity)} kWh"
    if dim.unit is QuantityUnit.MS:
        return duration_text(quantity)
    return ""


_TARIFF_NOTE = {PlanKind.SUBSCRIPTION: ", member tariff", PlanKind.FLAT_RATE: ", fallback tariff"}
_PER_UNIT_TEXT = {QuantityUnit.MILLIWH: "/kWh", QuantityUnit.MS: "/h"}


def _charge_lines(groups: Iterable[_Group], plan: Plan, tariff: Tariff,
                  describe: bool = True) -> list[PriceLine]:
    """One line per dimension, unit price and VAT rate, in dimension order (``describe``:
    with the description text)."""
    cur = tariff.currency
    note = _TARIFF_NOTE.get(plan.kind, "")
    lines: list[PriceLine] = []
    for g in groups:
        quantity = g.quantity
        if quantity == 0:
            continue
        dim = g.dimension
        unit_price = price_decimal(g.price_micro)
        description = ""
        if describe:
            text = _quantity_text(dim, quantity)
            description = (f"{dim.label}{' ' + text if text else ''} @ "
                           f"{_unit_price_text(g.price_micro, cur)}"
                           f"{_PER_UNIT_TEXT.get(dim.unit, '')}{note}")
        excl_minor, incl_minor = _charge_amounts(g, cur)
        lines.append(PriceLine(
            LineKind.CHARGE, dim.code, description, Money(excl_minor, cur), Money(incl_minor, cur),
            None if g.vat_bp is None else vat_decimal(g.vat_bp), quantity, dim.unit,
            unit_price, tariff.id))
    return lines


def _charge_amounts(group: _Group, currency: Currency) -> tuple[int, int]:
    """A charge line's amounts excl. and incl. VAT in minor units, each rounded once from its
    exact numerator."""
    excl = group.excl
    return (_minor(excl, MONEY_DENOMINATOR, currency),
            _minor(excl * (VAT_SCALE + (group.vat_bp or 0)), _INCL_DENOMINATOR, currency))


def _benefit_lines(coverage: _Coverage, plan: Plan, currency: Currency) -> list[PriceLine]:
    zero = Money.zero(currency)
    lines: list[PriceLine] = []
    if coverage.energy_covered_milliwh:
        if plan.kind is PlanKind.SUBSCRIPTION:
            code, text = LineCode.INCLUDED_ENERGY, "Included energy {} kWh (subscription)"
        else:
            code, text = LineCode.FAIR_USE_ENERGY, "Energy within the fair-use cap {} kWh"
        lines.append(PriceLine(
            LineKind.PLAN_BENEFIT, code, text.format(kwh_text(coverage.energy_covered_milliwh)),
            zero, zero, None, coverage.energy_covered_milliwh, QuantityUnit.MILLIWH,
            source_id=plan.id))
    if coverage.time_covered_ms:
        lines.append(PriceLine(
            LineKind.PLAN_BENEFIT, LineCode.COVERED_CHARGING_TIME,
            f"Charging time covered by the plan {duration_text(coverage.time_covered_ms)}",
            zero, zero, None, coverage.time_covered_ms, QuantityUnit.MS, source_id=plan.id))
    for q in coverage.waived:
        lines.append(_waived_fee_line(plan.kind, plan.id, currency, q.price_micro))
    return lines


@lru_cache(maxsize=1024)
def _waived_fee_line(kind: PlanKind, plan_id: str, currency: Currency, price_micro: int
                     ) -> PriceLine:
    """The same line at every meter sample of a session: made once."""
    zero = Money.zero(currency)
    fee = Money(_minor(price_micro * _DIMENSIONS["FLAT"].factor, MONEY_DENOMINATOR, currency),
                currency)
    return PriceLine(
        LineKind.PLAN_BENEFIT, LineCode.SESSION_FEE_WAIVED,
        f"Session fee {fee} waived ({kind.value.replace('_', ' ')})", zero, zero,
        None, 1, QuantityUnit.SESSION, price_decimal(price_micro), plan_id)


# -- step 2b: the tariff's min / max price --------------------------------------------------------


def _bound_delta(tariff: Tariff, rated: RatedSession, coverage: _Coverage,
                 has_charged_quantity: Callable[[], bool]
                 ) -> tuple[LineCode, Fraction, Fraction] | None:
    """(which bound, excl delta, incl delta) to add to the charged part, or None."""
    if tariff.min_price is None and tariff.max_price is None:
        return None
    excl, incl = _exact_total(coverage.charged.values())
    if not coverage.covered_any:
        # The charged part is the whole session: the rating engine's own bounded total.
        if rated.price_bound is None:
            return None
        return (LineCode(rated.price_bound),
                Fraction(rated.total_cost_exact.excl - excl, MONEY_DENOMINATOR),
                Fraction(rated.total_cost_exact.incl - incl, _INCL_DENOMINATOR))
    if not has_charged_quantity():
        return None  # the plan covered the whole session
    excl_f, incl_f = Fraction(excl, MONEY_DENOMINATOR), Fraction(incl, _INCL_DENOMINATOR)
    which, b_excl, b_incl = bound_total(excl_f, incl_f, tariff.min_price, tariff.max_price)
    if which is None:
        return None
    return LineCode(which), b_excl - excl_f, b_incl - incl_f


def _bound_lines(delta: tuple[LineCode, Fraction, Fraction] | None, charges: Sequence[PriceLine],
                 tariff: Tariff) -> list[PriceLine]:
    """The bound adjustment, rounded once (excl., incl.), split over the charged VAT rates in
    proportion to their incl. amounts (``money.allocate``)."""
    if delta is None:
        return []
    code, d_excl, d_incl = delta
    cur = tariff.currency
    excl_minor, incl_minor = round_exact_to_minor(d_excl, cur), round_exact_to_minor(d_incl, cur)
    rates = _vat_weights(charges, tariff)
    weights = [w for _, w in rates]
    if sum(weights) == 0:
        weights = [1] + [0] * (len(weights) - 1)
    label = "Minimum price" if code is LineCode.MIN_PRICE else "Maximum price"
    bound = tariff.min_price if code is LineCode.MIN_PRICE else tariff.max_price
    text = f"{label} {_price_text(bound.excl_vat, cur)} excl. VAT" if bound else label
    return [
        PriceLine(LineKind.PRICE_BOUND, code, text, Money(e, cur), Money(i, cur), vat,
                  source_id=tariff.id)
        for (vat, _), e, i in zip(rates, allocate(excl_minor, weights),
                                  allocate(incl_minor, weights), strict=True)
    ]


def _vat_weights(charges: Sequence[PriceLine], tariff: Tariff
                 ) -> list[tuple[Decimal | None, int]]:
    weights: dict[Decimal | None, int] = {}
    for line in charges:
        weights[line.vat_percent] = (weights.get(line.vat_percent, 0)
                                     + max(0, line.amount_incl_vat.amount_minor))
    if not weights:
        weights[_tariff_vat(tariff)] = 0
    return list(weights.items())


def _tariff_vat(tariff: Tariff) -> Decimal | None:
    """The first VAT rate the tariff names (for an adjustment with nothing charged)."""
    for element in tariff.elements:
        for component in element.price_components:
            if component.vat is not None:
                return component.vat
    return None


# -- step 3: promotions and loyalty ---------------------------------------------------------------


_CATEGORY = {
    LineCode.MIN_PRICE: Category.PRICE_BOUND, LineCode.MAX_PRICE: Category.PRICE_BOUND,
    LineCode.PLAN_FEE: Category.PLAN_FEE,
    **{code: dim.category for code, dim in _BY_CODE.items()},
}


def _discount_base(lines: Sequence[PriceLine], currency: Currency) -> DiscountBase:
    cells = tuple(AmountCell(_CATEGORY[line.code], line.vat_percent,
                             line.amount_excl_vat.amount_minor, line.amount_incl_vat.amount_minor)
                  for line in lines)
    return DiscountBase(currency, cells, _priced_quantity(lines, LineCode.ENERGY),
                        _priced_quantity(lines, LineCode.IDLE_TIME))


def _priced_quantity(lines: Iterable[PriceLine], code: LineCode) -> int:
    return sum(line.quantity or 0 for line in lines
               if line.code is code and (line.unit_price or 0) > 0)


@dataclass(frozen=True, slots=True)
class _Discounts:
    lines: tuple[PriceLine, ...]
    applied: tuple[AppliedPromotion, ...]
    refused: tuple[PromotionCheck, ...]


def _apply_discounts(base: DiscountBase, promotions: Sequence[Promotion],
                     context: PromotionContext | None, *, plan: Plan, at: dt.datetime,
                     time_zone: str, purpose: Purpose, loyalty: LoyaltyTier | None
                     ) -> _Discounts:
    if len(promotions) > MAX_PROMOTIONS_PER_CHARGE:
        raise TooManyPromotionsError(
            f"at most {MAX_PROMOTIONS_PER_CHARGE} candidate promotions for one charge")
    checks: list[PromotionCheck] = []
    if promotions:
        require(context is not None, "promotions come with a PromotionContext")
        require(context is None or context.plan_id == plan.id,
                "the promotion context is for the plan being priced")
    if context is not None:
        spend = base.total_incl_minor if purpose is Purpose.SESSION else None
        checks = [_check_promotion(p, context, at, time_zone, purpose, base.currency,
                                   plan.promotions_eligible, spend) for p in promotions]
    eligible = [p for p, c in zip(promotions, checks, strict=True) if c.eligible]
    if not eligible and (loyalty is None or loyalty.benefit is None or not base.cells):
        # What apply_promotions gives without promotions, when loyalty has no benefit or
        # there is no amount for it to discount (a discount never takes a target below 0).
        return _Discounts((), (), tuple(checks))
    outcome = apply_promotions(base, eligible, loyalty)
    lines = tuple(line for d in outcome.discounts for line in _discount_lines(d, base.currency))
    applied = tuple(
        AppliedPromotion(d.source_id, d.label, Money(d.excl_minor, base.currency),
                         Money(d.incl_minor, base.currency))
        for d in outcome.discounts if d.source is DiscountSource.PROMOTION)
    refused = tuple(c for c in checks if not c.eligible) + outcome.not_applied
    return _Discounts(lines, applied, refused)


_CHECKS_MAX = 4096
_checks: OrderedDict[tuple[object, ...], tuple[Promotion, PromotionContext, PromotionCheck]] = (
    OrderedDict())
_checks_lock = threading.Lock()


def _check_promotion(promotion: Promotion, context: PromotionContext, at: dt.datetime,
                     time_zone: str, purpose: Purpose, currency: Currency, plan_ok: bool,
                     spend_minor: int | None) -> PromotionCheck:
    """``check_promotion``, remembered for the same promotion, context and charge.

    A live session is re-priced at every meter sample with the same (immutable) promotions
    and context; only the spend grows. The spend decides only the last refusal of the
    precedence (``min_spend_not_met``, docs/plans.md), so the answer without the spend is
    kept per (promotion, context) object and the check is run again, with the spend, only
    for a promotion that passes everything else and has a minimum spend. The cache holds the
    objects themselves (an id is not reused while its entry lives) and is bounded (least
    recently used out)."""
    key = (id(promotion), id(context), at, time_zone, purpose, currency, plan_ok)
    with _checks_lock:
        entry = _checks.get(key)
        if entry is not None and entry[0] is promotion and entry[1] is context:
            _checks.move_to_end(key)
            check = entry[2]
        else:
            check = None
    if check is None:
        check = check_promotion(promotion, context, at=at, time_zone=time_zone,
                                purpose=purpose, currency=currency,
                                plan_promotions_eligible=plan_ok)
        with _checks_lock:
            _checks[key] = (promotion, context, check)
            while len(_checks) > _CHECKS_MAX:
                _checks.popitem(last=False)
    if check.eligible and promotion.min_spend_minor is not None and spend_minor is not None:
        return check_promotion(promotion, context, at=at, time_zone=time_zone,
                               purpose=purpose, currency=currency,
                               plan_promotions_eligible=plan_ok, spend_minor=spend_minor)
    return check


def _discount_lines(discount: Discount, currency: Currency) -> list[PriceLine]:
    kind, code = ((LineKind.PROMOTION, LineCode.PROMOTION)
                  if discount.source is DiscountSource.PROMOTION
                  else (LineKind.LOYALTY, LineCode.LOYALTY))
    several = len(discount.parts) > 1
    return [
        PriceLine(kind, code,
                  f"{discount.label}{_vat_suffix(part.vat_percent) if several else ''}",
                  Money(-part.excl_minor, currency), Money(-part.incl_minor, currency),
                  part.vat_percent, source_id=discount.source_id)
        for part in discount.parts
    ]


def _vat_suffix(vat: Decimal | None) -> str:
    return " (no VAT)" if vat is None else f" (VAT {vat.normalize():f}%)"


# -- step 4: totals -------------------------------------------------------------------------------


def vat_summary(lines: Iterable[PriceLine], currency: Currency) -> tuple[VatLine, ...]:
    """Per VAT rate: exact sums of the lines' rounded amounts (informational lines out)."""
    groups: dict[Decimal | None, list[int]] = {}
    for line in lines:
        if line.kind is not LineKind.PLAN_BENEFIT:
            acc = groups.get(line.vat_percent)
            if acc is None:
                acc = groups[line.vat_percent] = [0, 0]
            acc[0] += _minor_of(line.amount_excl_vat, currency)
            acc[1] += _minor_of(line.amount_incl_vat, currency)
    out: list[VatLine] = []
    for vat in sorted(groups, key=lambda v: (v is None, v or Decimal(0))):
        excl, incl = groups[vat]
        out.append(VatLine(vat, Money(excl, currency), Money(incl - excl, currency),
                           Money(incl, currency)))
    return tuple(out)


def _totals(lines: Sequence[PriceLine], currency: Currency) -> tuple[Money, Money]:
    excl = incl = 0
    for line in lines:
        excl += _minor_of(line.amount_excl_vat, currency)
        incl += _minor_of(line.amount_incl_vat, currency)
    return Money(excl, currency), Money(incl, currency)


def _minor_of(amount: Money, currency: Currency) -> int:
    """An amount to add up in ``currency`` (integer sums, as ``money_sum`` checks them)."""
    if amount.currency is not currency and amount.currency != currency:
        raise CurrencyMismatchError(
            f"cannot combine {currency.code} with {amount.currency.code}")
    return amount.amount_minor


# -- the pipeline ---------------------------------------------------------------------------------


def session_start_ms(session: SessionFacts) -> int:
    """The session's start: the CDR's start, else its first period's."""
    if session.start_epoch_ms is not None:
        return session.start_epoch_ms
    if session.periods:
        return session.periods[0].start_epoch_ms
    raise SessionStartUnknownError("a session without periods needs its start time")


def session_energy_milliwh(session: SessionFacts) -> int:
    """Energy charged (exported energy counts 0), which is what uses up an allowance."""
    return sum(max(0, p.energy_milliwh) for p in session.periods if not p.is_reservation)


@dataclass(frozen=True, slots=True)
class _Energy:
    charged_milliwh: int  # session_energy_milliwh
    exported: bool  # some period has a negative ENERGY volume


_ENERGY_OF = operator.attrgetter("energy_milliwh")
_PARKING_OF = operator.attrgetter("parking_ms")
_RESERVATION_OF = operator.attrgetter("reservation_ms")


def _session_energy(session: SessionFacts, rated: RatedSession) -> _Energy:
    """``session_energy_milliwh`` from the rater's exact total when no period exports (then
    the charged energy is the net energy of the charging periods): one pass in C over the
    periods instead of a generator."""
    if not session.periods or min(map(_ENERGY_OF, session.periods)) >= 0:
        return _Energy(rated.energy_milliwh, False)
    return _Energy(session_energy_milliwh(session), True)


def _checked_usage(plan: Plan, usage: PlanUsage | None, started_at: dt.datetime
                   ) -> PlanUsage | None:
    if usage is None:
        if plan.kind in (PlanKind.SUBSCRIPTION, PlanKind.FLAT_RATE):
            raise PlanUsageRequiredError(f"a {plan.kind.value} plan needs the period's usage")
        return None
    if usage.plan_id != plan.id:
        raise PlanUsageMismatchError(f"the usage record is for plan {usage.plan_id}, "
                                     f"not {plan.id}")
    if not usage.contains(started_at):
        raise PlanUsageMismatchError(
            f"the session started at {started_at.isoformat()}, outside the usage period "
            f"{usage.period_start_at.isoformat()} - {usage.period_end_at.isoformat()}")
    return usage


def price_session(request: PricingRequest) -> PricedSession:
    """Price a session (so far, or complete) under a plan: rating, plan coverage, promotions
    and loyalty, amounts (module doc)."""
    plan, session = request.plan, request.session
    tariff = request.tariffs.for_plan(plan)
    started_at = from_epoch_ms(session_start_ms(session))
    usage = _checked_usage(plan, request.usage, started_at)
    cur = tariff.currency

    rated = request.rated if request.rated is not None else rate(tariff, session)
    require(rated.currency == cur, "the session was rated with the plan's tariff")
    require(rated.period_count == len(session.periods), "the session was rated from its periods")
    if request.rated is None:
        _check_against_breakdown(rated)
    allowance = usage.energy_remaining_milliwh if usage is not None else 0
    energy = _session_energy(session, rated)
    coverage = _cover(session.periods, rated, allowance, plan.waive_flat_fee, energy)
    if not coverage.covered_any and rated.price_bound is None:
        _check_against_rating(coverage, rated)

    charges = _charge_lines(coverage.charged.values(), plan, tariff, request.describe)
    delta = _bound_delta(tariff, rated, coverage, lambda: _has_charged_quantity(
        session.periods, rated, allowance, plan.waive_flat_fee, coverage))
    bounds = _bound_lines(delta, charges, tariff)
    benefits = _benefit_lines(coverage, plan, cur)
    base = _discount_base([*charges, *bounds], cur)
    discounts = _apply_discounts(
        base, request.promotions, request.promotion_context, plan=plan, at=started_at,
        time_zone=session.time_zone, purpose=Purpose.SESSION, loyalty=request.loyalty_tier)

    lines = (*charges, *benefits, *bounds, *discounts.lines)
    total_excl, total_incl = _totals(lines, cur)
    return PricedSession(
        plan_id=plan.id, tariff_id=tariff.id, currency=cur, lines=lines,
        total_excl_vat=total_excl, total_incl_vat=total_incl,
        vat_summary=vat_summary(lines, cur) if request.describe else (),
        applied_promotions=discounts.applied, refused_promotions=discounts.refused,
        loyalty_tier=request.loyalty_tier.name if request.loyalty_tier is not None else None,
        energy_milliwh=energy.charged_milliwh,
        energy_covered_milliwh=coverage.energy_covered_milliwh,
        usage_after=usage.with_energy(energy.charged_milliwh) if usage is not None else None,
        warnings=rated.warnings, rated=rated,
    )


@dataclass(frozen=True, slots=True)
class RunningTotals:
    """What a running cost shows: ``price_session``'s totals, in minor units."""

    total_excl_minor: int
    total_incl_minor: int


class RunningPricer:
    """``price_session``'s totals for one live session, at every meter sample.

    Everything that cannot change while the session runs is settled once, when the session
    starts: the plan's tariff, the usage check, and each candidate promotion's eligibility
    without the spend (a minimum spend is checked again at every sample, with it). Then, in the
    common case (no allowance left to cover anything, the tariff's min/max price not reached),
    a sample costs the rater's per-element sums made into charge amounts, the discounts on them,
    and two sums: the same numbers ``price_session`` gives, without its lines, texts and result
    objects. Anything else (an allowance, a bound reached, a waived fee under a bound, a request
    ``price_session`` refuses) is answered by ``price_session`` itself (``describe=False``), so
    the two never disagree:
    ``tests/unit/test_pricing_fast.py`` holds them equal over random requests.

    ``request`` is the session's request without periods (its ``session`` gives the start and
    the zone; ``rated`` and ``describe`` are ignored)."""

    __slots__ = ("_request", "_fast", "_currency", "_waive", "_checks", "_loyalty")

    def __init__(self, request: PricingRequest) -> None:
        self._request = request
        self._fast = False
        self._checks: tuple[tuple[Promotion, PromotionCheck,
                                  Callable[[int], bool] | None], ...] = ()
        plan = request.plan
        self._currency = plan.currency
        self._waive = plan.waive_flat_fee
        self._loyalty = request.loyalty_tier
        try:
            tariff = request.tariffs.for_plan(plan)
            started_at = from_epoch_ms(session_start_ms(request.session))
            usage = _checked_usage(plan, request.usage, started_at)
        except DomainError:
            return  # price_session raises it, at every sample
        if usage is not None and usage.energy_remaining_milliwh > 0:
            return  # coverage: price_session
        if self._waive and (tariff.min_price is not None or tariff.max_price is not None):
            return  # a waived fee with a price bound: price_session
        promotions, context = request.promotions, request.promotion_context
        if len(promotions) > MAX_PROMOTIONS_PER_CHARGE or (promotions and (
                context is None or context.plan_id != plan.id)):
            return  # refused by price_session
        if context is not None:
            self._checks = tuple(
                (p, _check_promotion(p, context, started_at, request.session.time_zone,
                                     Purpose.SESSION, plan.currency, plan.promotions_eligible,
                                     None),
                 _spend_check(p, context, started_at, request.session.time_zone,
                              plan.currency, plan.promotions_eligible))
                for p in promotions)
        self._fast = True

    def totals(self, closed: Sequence[ChargingPeriod], pending: ChargingPeriod | None,
               rated: RatedSession) -> RunningTotals:
        """The totals of the session so far: the ``closed`` periods and the ``pending`` one
        (still open, if any), rated by a ``SessionRater`` of the plan's tariff (``rated``).
        The periods are read only when ``price_session`` answers."""
        if not self._fast or rated.price_bound is not None:
            periods = tuple(closed) if pending is None else (*closed, pending)
            return self._priced(periods, rated)
        charged, _ = _groups(rated, self._waive)
        cells: list[AmountCell] = []
        excl_total = incl_total = energy_priced = idle_priced = 0
        for g in charged.values():
            if g.quantity == 0:
                continue
            excl_minor, incl_minor = _charge_amounts(g, self._currency)
            excl_total += excl_minor
            incl_total += incl_minor
            code = g.dimension.code
            cells.append(AmountCell(_CATEGORY[code], None if g.vat_bp is None
                                    else vat_decimal(g.vat_bp), excl_minor, incl_minor))
            if g.price_micro > 0:
                if code is LineCode.ENERGY:
                    energy_priced += g.quantity
                elif code is LineCode.IDLE_TIME:
                    idle_priced += g.quantity
        eligible = [p for p, check, needs_spend in self._checks
                    if check.eligible and (needs_spend is None or needs_spend(incl_total))]
        loyalty = self._loyalty
        if eligible or (loyalty is not None and loyalty.benefit is not None and cells):
            base = DiscountBase(self._currency, tuple(cells), energy_priced, idle_priced)
            for d in apply_promotions(base, eligible, loyalty).discounts:
                for part in d.parts:
                    excl_total -= part.excl_minor
                    incl_total -= part.incl_minor
        return RunningTotals(excl_total, incl_total)

    def _priced(self, periods: tuple[ChargingPeriod, ...], rated: RatedSession
                ) -> RunningTotals:
        request = self._request
        priced = price_session(replace(request, session=replace(request.session, periods=periods),
                                       rated=rated, describe=False))
        return RunningTotals(priced.total_excl_vat.amount_minor,
                             priced.total_incl_vat.amount_minor)


def _spend_check(promotion: Promotion, context: PromotionContext, at: dt.datetime,
                 time_zone: str, currency: Currency, plan_ok: bool
                 ) -> Callable[[int], bool] | None:
    """For a promotion with a minimum spend: whether it is eligible at a spend (``_check_
    promotion`` with the spend); None for one without."""
    if promotion.min_spend_minor is None:
        return None
    return lambda spend: _check_promotion(promotion, context, at, time_zone, Purpose.SESSION,
                                          currency, plan_ok, spend).eligible


def price_plan_fee(plan: Plan, *, at: dt.datetime, time_zone: str, fee_minor: int | None = None,
                   promotions: Sequence[Promotion] = (),
                   promotion_context: PromotionContext | None = None,
                   description: str | None = None) -> PricedFee:
    """A plan's period fee (default: the full fee; or e.g. ``PlanChange.charge_minor``) with
    VAT and plan-fee promotions (``percent_off_plan_fee``), due at ``at``."""
    fee = plan.fee_minor if fee_minor is None else fee_minor
    require(type(fee) is int and fee >= 0, "a fee is a non-negative int")
    cur = plan.currency
    line = PriceLine(LineKind.PLAN_FEE, LineCode.PLAN_FEE, description or f"{plan.name} fee",
                     Money(fee, cur), plan.fee_incl_vat(fee), plan.fee_vat_percent,
                     source_id=plan.id)
    base = _discount_base([line], cur)
    discounts = _apply_discounts(base, promotions, promotion_context, plan=plan, at=at,
                                 time_zone=time_zone, purpose=Purpose.PLAN_FEE, loyalty=None)
    lines = (line, *discounts.lines)
    total_excl, total_incl = _totals(lines, cur)
    return PricedFee(plan.id, cur, lines, total_excl, total_incl, vat_summary(lines, cur),
                     discounts.applied, discounts.refused)


# -- plan advisor ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanOption:
    plan: Plan
    tariffs: PlanTariffs


@dataclass(frozen=True, slots=True)
class SessionHistory:
    """A driver's sessions in a window (e.g. the last 90 days), with the driver's zone for
    billing periods."""

    sessions: tuple[SessionFacts, ...]
    window_start_at: dt.datetime
    window_end_at: dt.datetime  # exclusive
    time_zone: str

    def __post_init__(self) -> None:
        require(self.window_start_at.tzinfo is not None and self.window_end_at.tzinfo is not None,
                "history windows are timezone-aware")
        zone(self.time_zone)
        if not self.window_start_at < self.window_end_at:
            raise SessionOutsideWindowError("the window must end after it starts")
        if self.window_end_at - self.window_start_at > dt.timedelta(days=MAX_ADVISOR_WINDOW_DAYS):
            raise SessionOutsideWindowError(
                f"a window spans at most {MAX_ADVISOR_WINDOW_DAYS} days")
        if len(self.sessions) > MAX_ADVISOR_SESSIONS:
            raise SessionOutsideWindowError(f"at most {MAX_ADVISOR_SESSIONS} sessions")


@dataclass(frozen=True, slots=True)
class UsageProfile:
    """A typed usage profile: one month of evenly spread sessions like this.

    Sessions start at ``start_hour_local`` on days spread evenly over ``month`` (any date in
    it), each charging ``energy_milliwh_per_month / sessions_per_month`` (largest-remainder
    split) during ``charging_minutes_avg`` and then idling ``idle_minutes_avg``.
    """

    energy_milliwh_per_month: int
    sessions_per_month: int
    charging_minutes_avg: int
    idle_minutes_avg: int
    start_hour_local: int
    month: dt.date
    time_zone: str

    def __post_init__(self) -> None:
        checks = (
            ("energy_milliwh_per_month", self.energy_milliwh_per_month, 0,
             MAX_PROFILE_ENERGY_MILLIWH),
            ("sessions_per_month", self.sessions_per_month, 0, MAX_PROFILE_SESSIONS_PER_MONTH),
            ("charging_minutes_avg", self.charging_minutes_avg, 0, MAX_PROFILE_MINUTES),
            ("idle_minutes_avg", self.idle_minutes_avg, 0, MAX_PROFILE_MINUTES),
            ("start_hour_local", self.start_hour_local, 0, 23),
        )
        for name, value, low, high in checks:
            if type(value) is not int or not low <= value <= high:
                raise InvalidUsageProfileError(name, f"must be an integer from {low} to {high}")
        if self.energy_milliwh_per_month and not self.sessions_per_month:
            raise InvalidUsageProfileError("sessions_per_month", "energy needs sessions")
        zone(self.time_zone)

    def to_history(self) -> SessionHistory:
        first, following = period_dates(BillingPeriod.MONTH, self.month)
        days = (following - first).days
        n = self.sessions_per_month
        energies = allocate(self.energy_milliwh_per_month, [1] * n) if n else []
        sessions = tuple(self._session(first + dt.timedelta(days=i * days // n), energy)
                         for i, energy in enumerate(energies))
        return SessionHistory(sessions, local_midnight(first, self.time_zone),
                              local_midnight(following, self.time_zone), self.time_zone)

    def _session(self, day: dt.date, energy_milliwh: int) -> SessionFacts:
        local = dt.datetime.combine(day, dt.time(self.start_hour_local),
                                    tzinfo=zone(self.time_zone))
        start = epoch_ms(local)
        charging_ms = self.charging_minutes_avg * 60_000
        idle_ms = self.idle_minutes_avg * 60_000
        periods = [ChargingPeriod(start, energy_milliwh=energy_milliwh, time_ms=charging_ms)]
        if idle_ms:
            periods.append(ChargingPeriod(start + charging_ms, parking_ms=idle_ms))
        return SessionFacts(tuple(periods), self.time_zone, start, start + charging_ms + idle_ms)


@dataclass(frozen=True, slots=True)
class PeriodCost:
    """One billing period (or the part of it inside the window) under a plan."""

    period_start_at: dt.datetime
    period_end_at: dt.datetime
    days_in_period: int
    days_in_window: int
    fee_excl_vat: Money  # pro rata by days in the window (money.allocate)
    fee_incl_vat: Money
    energy_allowance_milliwh: int  # pro rata the same way
    energy_used_milliwh: int
    sessions: int
    sessions_excl_vat: Money
    sessions_incl_vat: Money


@dataclass(frozen=True, slots=True)
class BreakdownItem:
    """All lines of one code summed over the window (fees, energy, idle, included energy ...)."""

    kind: LineKind
    code: LineCode
    quantity: int | None
    amount_excl_vat: Money
    amount_incl_vat: Money


@dataclass(frozen=True, slots=True)
class PlanCost:
    plan_id: str
    plan_name: str
    kind: PlanKind
    total_excl_vat: Money
    total_incl_vat: Money
    fees_excl_vat: Money
    fees_incl_vat: Money
    sessions_excl_vat: Money
    sessions_incl_vat: Money
    energy_milliwh: int
    energy_covered_milliwh: int
    sessions: int
    periods: tuple[PeriodCost, ...]
    breakdown: tuple[BreakdownItem, ...]


def advise_plans(options: Sequence[PlanOption], usage: SessionHistory | UsageProfile
                 ) -> list[PlanCost]:
    """The cost of ``usage`` under every option, cheapest (incl. VAT) first; ties by plan id.

    Period fees and allowances are pro rata for periods the window only partly covers (the
    switching rule of ``plans.plan_change``); sessions use up allowances in time order. List
    prices: promotions and loyalty are not part of the comparison.
    """
    require(len(options) <= MAX_ADVISOR_OPTIONS, "too many plans to compare")
    if len({o.plan.currency for o in options}) > 1:
        raise CurrencyMismatchError("plans compared with each other share a currency")
    history = usage.to_history() if isinstance(usage, UsageProfile) else usage
    costs = [_plan_cost(option, history) for option in options]
    return sorted(costs, key=lambda c: (c.total_incl_vat.amount_minor,
                                        c.total_excl_vat.amount_minor, c.plan_id))


@dataclass(frozen=True, slots=True)
class _Slice:
    start_at: dt.datetime
    end_at: dt.datetime
    days_in_period: int
    days_in_window: int


def _slices(period: BillingPeriod, history: SessionHistory) -> list[_Slice]:
    """The plan's billing periods the window touches, with the local days of each inside it."""
    tz = history.time_zone
    first = local_date(history.window_start_at, tz)
    last = local_date(history.window_end_at - dt.timedelta(milliseconds=1), tz)
    out: list[_Slice] = []
    day = first
    while day <= last:
        start, following = period_dates(period, day)
        inside = (min(following, last + dt.timedelta(days=1)) - max(start, first)).days
        out.append(_Slice(local_midnight(start, tz), local_midnight(following, tz),
                          (following - start).days, inside))
        day = following
    return out


def _plan_cost(option: PlanOption, history: SessionHistory) -> PlanCost:
    plan = option.plan
    slices = _slices(plan.period, history)
    usages = [PlanUsage(plan.id, s.start_at, s.end_at,
                        _pro_rata(plan.energy_allowance_milliwh, s)) for s in slices]
    priced: list[list[PricedSession]] = [[] for _ in slices]
    for session in sorted(history.sessions, key=session_start_ms):
        k = _slice_of(session, slices, history)
        result = price_session(PricingRequest(session, plan, option.tariffs, usage=usages[k]))
        priced[k].append(result)
        usages[k] = result.usage_after or usages[k]
    periods = tuple(_period_cost(plan, s, u, p) for s, u, p in zip(slices, usages, priced,
                                                                     strict=True))
    return _summarise(plan, periods, [r for group in priced for r in group])


def _pro_rata(whole: int, s: _Slice) -> int:
    return allocate(whole, [s.days_in_window, s.days_in_period - s.days_in_window])[0]


def _slice_of(session: SessionFacts, slices: Sequence[_Slice], history: SessionHistory) -> int:
    started_at = from_epoch_ms(session_start_ms(session))
    if history.window_start_at <= started_at < history.window_end_at:
        for k, s in enumerate(slices):
            if s.start_at <= started_at < s.end_at:
                return k
    raise SessionOutsideWindowError(
        f"a session starting at {started_at.isoformat()} is outside the window")


def _period_cost(plan: Plan, s: _Slice, usage: PlanUsage, sessions: Sequence[PricedSession]
                 ) -> PeriodCost:
    cur = plan.currency
    fee = _pro_rata(plan.fee_minor, s)
    return PeriodCost(
        period_start_at=s.start_at, period_end_at=s.end_at, days_in_period=s.days_in_period,
        days_in_window=s.days_in_window, fee_excl_vat=Money(fee, cur),
        fee_incl_vat=plan.fee_incl_vat(fee),
        energy_allowance_milliwh=usage.energy_allowance_milliwh,
        energy_used_milliwh=usage.energy_used_milliwh, sessions=len(sessions),
        sessions_excl_vat=money_sum([r.total_excl_vat for r in sessions], cur),
        sessions_incl_vat=money_sum([r.total_incl_vat for r in sessions], cur),
    )


def _summarise(plan: Plan, periods: Sequence[PeriodCost], sessions: Sequence[PricedSession]
               ) -> PlanCost:
    cur = plan.currency
    fees_excl = money_sum([p.fee_excl_vat for p in periods], cur)
    fees_incl = money_sum([p.fee_incl_vat for p in periods], cur)
    sessions_excl = money_sum([p.sessions_excl_vat for p in periods], cur)
    sessions_incl = money_sum([p.sessions_incl_vat for p in periods], cur)
    return PlanCost(
        plan_id=plan.id, plan_name=plan.name, kind=plan.kind,
        total_excl_vat=fees_excl + sessions_excl, total_incl_vat=fees_incl + sessions_incl,
        fees_excl_vat=fees_excl, fees_incl_vat=fees_incl,
        sessions_excl_vat=sessions_excl, sessions_incl_vat=sessions_incl,
        energy_milliwh=sum(r.energy_milliwh for r in sessions),
        energy_covered_milliwh=sum(r.energy_covered_milliwh for r in sessions),
        sessions=len(sessions), periods=tuple(periods),
        breakdown=_breakdown(fees_excl, fees_incl, sessions, cur),
    )


def _breakdown(fees_excl: Money, fees_incl: Money, sessions: Sequence[PricedSession],
               currency: Currency) -> tuple[BreakdownItem, ...]:
    items: dict[tuple[LineKind, LineCode], BreakdownItem] = {}
    if fees_incl.amount_minor or fees_excl.amount_minor:
        items[(LineKind.PLAN_FEE, LineCode.PLAN_FEE)] = BreakdownItem(
            LineKind.PLAN_FEE, LineCode.PLAN_FEE, None, fees_excl, fees_incl)
    for line in (line for r in sessions for line in r.lines):
        key = (line.kind, line.code)
        item = items.get(key) or BreakdownItem(line.kind, line.code, None,
                                               Money.zero(currency), Money.zero(currency))
        quantity = (None if line.quantity is None
                    else (item.quantity or 0) + line.quantity)
        items[key] = BreakdownItem(line.kind, line.code, quantity,
                                   item.amount_excl_vat + line.amount_excl_vat,
                                   item.amount_incl_vat + line.amount_incl_vat)
    return tuple(items.values())
