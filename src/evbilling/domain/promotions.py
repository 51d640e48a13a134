"""Promotions, loyalty tiers and the brute-force limiter for promo codes. Pure; no I/O, no clock.

Rules (worked examples in ``docs/plans.md``):

* A ``Promotion`` is a promo code (``code`` set) or automatic (``code`` None), with a validity
  window, a scope (sites, plans, local time of day of the session start), redemption caps (all
  drivers / per driver), "first N sessions", a minimum spend and a stacking rule.
* ``check_promotion`` says whether a promotion applies, or the first reason it does not
  (``Refusal``; precedence is the enum's order).
* ``apply_promotions`` turns eligible promotions into discounts on a ``DiscountBase`` (the
  session's amounts per category and VAT rate, incl. VAT). Stacking:

  - STACKABLE promotions apply together in priority order (lower number first, then id); each
    percentage applies to what is left of its target after the discounts before it.
  - Each EXCLUSIVE promotion is tried alone. The option worth most to the driver wins; on a tie
    the one with fewer promotions (it spends fewer redemptions), then the lower priority number.
  - A loyalty benefit applies after the promotions, whichever won, to what is left.
  - Nothing discounts a target below zero, and the session total never goes below zero.

* Promotion amounts are driver-facing, so they are computed on amounts **incl. VAT**; each
  discount is rounded once (``money``), split over VAT rates by ``money.allocate``, and its
  excl.-VAT part is the incl. part divided by that rate's VAT factor, rounded once.
* ``SlidingWindowLimiter`` counts failed code attempts per key in a sliding window (e.g. 5 in
  15 minutes) with an injected millisecond clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from evbilling.domain.errors import DomainError, InvalidDocumentError
from evbilling.domain.invariants import require
from evbilling.domain.money import (
    VAT_DECIMALS,
    Currency,
    Money,
    allocate,
    decimal_places,
    round_exact_to_minor,
    vat_factor,
)
from evbilling.domain.periods import MILLIWH_PER_KWH
from evbilling.domain.timezones import zone

# -- limits ---------------------------------------------------------------------------------------
MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 200
MAX_AMOUNT_MINOR = 1_000_000_000
MAX_FREE_ENERGY_MILLIWH = 10_000 * MILLIWH_PER_KWH
MAX_FREE_IDLE_MINUTES = 31 * 24 * 60
MAX_PRIORITY = 10_000
MAX_LOYALTY_TIERS = 32
MAX_LOYALTY_WINDOW_DAYS = 366
#: More promotions than this for one session is a configuration error, not a use case.
MAX_PROMOTIONS_PER_CHARGE = 64
#: Codes: 3-32 characters of A-Z, 0-9, "-" and "_", compared upper-case.
CODE_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9_-]{2,31}")
MS_PER_MINUTE = 60_000


class PromotionKind(StrEnum):
    PERCENT_OFF_ENERGY = "percent_off_energy"
    AMOUNT_OFF_SESSION = "amount_off_session"  # a fixed amount off the session, incl. VAT
    FREE_ENERGY = "free_energy"  # N kWh free, valued at the session's average energy price
    FREE_IDLE_TIME = "free_idle_time"  # N idle minutes free, at the average idle price
    PERCENT_OFF_PLAN_FEE = "percent_off_plan_fee"  # applies to a plan's period fee


class Purpose(StrEnum):
    """What is being priced: a charging session, or a plan's period fee."""

    SESSION = "session"
    PLAN_FEE = "plan_fee"


_PURPOSE: dict[PromotionKind, Purpose] = {
    PromotionKind.PERCENT_OFF_ENERGY: Purpose.SESSION,
    PromotionKind.AMOUNT_OFF_SESSION: Purpose.SESSION,
    PromotionKind.FREE_ENERGY: Purpose.SESSION,
    PromotionKind.FREE_IDLE_TIME: Purpose.SESSION,
    PromotionKind.PERCENT_OFF_PLAN_FEE: Purpose.PLAN_FEE,
}


class Stacking(StrEnum):
    EXCLUSIVE = "exclusive"
    STACKABLE = "stackable"


class Refusal(StrEnum):
    """Why a promotion does not apply. ``check_promotion`` returns the first in this order."""

    PROMOTION_INACTIVE = "promotion_inactive"
    NOT_FOR_THIS_CHARGE = "not_for_this_charge"  # a fee promotion on a session or vice versa
    CURRENCY_MISMATCH = "currency_mismatch"
    PLAN_EXCLUDED = "plan_excluded"  # the driver's plan takes no promotions
    CODE_REQUIRED = "code_required"
    PROMOTION_NOT_STARTED = "promotion_not_started"
    PROMOTION_EXPIRED = "promotion_expired"
    NOT_IN_SCOPE = "not_in_scope"
    REDEMPTION_CAP_REACHED = "redemption_cap_reached"
    DRIVER_REDEMPTION_CAP_REACHED = "driver_redemption_cap_reached"
    FIRST_SESSIONS_ONLY = "first_sessions_only"
    MIN_SPEND_NOT_MET = "min_spend_not_met"
    # Set when applying, not by check_promotion:
    NOT_BEST_OFFER = "not_best_offer"  # another option (exclusive or the stack) was worth more
    NOTHING_TO_DISCOUNT = "nothing_to_discount"  # eligible, but its target is zero


# -- errors ---------------------------------------------------------------------------------------


class InvalidPromotionError(InvalidDocumentError):
    code = "invalid_promotion"


class InvalidLoyaltyTierError(InvalidDocumentError):
    code = "invalid_loyalty_tier"


class PromotionNotApplicableError(DomainError):
    """A promo code the driver entered exists but does not apply; ``reason`` says why."""

    code = "promotion_not_applicable"

    def __init__(self, message: str, reason: Refusal) -> None:
        super().__init__(message)
        self.reason = reason


class TooManyPromotionsError(DomainError):
    """More candidate promotions for one charge than ``MAX_PROMOTIONS_PER_CHARGE``."""

    code = "too_many_promotions"


class TooManyAttemptsError(DomainError):
    """Too many failed attempts for a key; ``code`` matches the API's 429 mapping."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    @property
    def retry_after_s(self) -> int:
        return max(1, -(-self.retry_after_ms // 1000))


# -- exact rounding of a rational amount ----------------------------------------------------------

#: 80 significant digits. A rational p/q that is not exactly on a rounding boundary of a currency
#: with exponent e lies at least 1/(2 * 10**e * q) from it; the amounts here have q < 10**40 and
#: magnitudes < 10**15, so an 80-digit quotient is always on the correct side, and one exactly on
#: a boundary divides exactly. So rounding the quotient equals rounding the rational.
def minor_to_major(amount_minor: int, currency: Currency) -> Fraction:
    return Fraction(amount_minor, currency.minor_per_major)


# -- benefits -------------------------------------------------------------------------------------


def _bad(field: str, reason: str) -> InvalidPromotionError:
    return InvalidPromotionError(field, reason)


@dataclass(frozen=True, slots=True)
class Benefit:
    """What a promotion or loyalty tier gives. Exactly the field its kind needs is set."""

    kind: PromotionKind
    percent: Decimal | None = None  # PERCENT_OFF_ENERGY, PERCENT_OFF_PLAN_FEE: 0 < p <= 100
    amount_minor: int | None = None  # AMOUNT_OFF_SESSION, incl. VAT
    free_energy_milliwh: int | None = None  # FREE_ENERGY
    free_idle_minutes: int | None = None  # FREE_IDLE_TIME

    def __post_init__(self) -> None:
        _validate_benefit(self)

    @staticmethod
    def percent_off_energy(percent: Decimal) -> Benefit:
        return Benefit(PromotionKind.PERCENT_OFF_ENERGY, percent=percent)

    @staticmethod
    def amount_off_session(amount_minor: int) -> Benefit:
        return Benefit(PromotionKind.AMOUNT_OFF_SESSION, amount_minor=amount_minor)

    @staticmethod
    def free_energy(energy_milliwh: int) -> Benefit:
        return Benefit(PromotionKind.FREE_ENERGY, free_energy_milliwh=energy_milliwh)

    @staticmethod
    def free_idle_time(minutes: int) -> Benefit:
        return Benefit(PromotionKind.FREE_IDLE_TIME, free_idle_minutes=minutes)

    @staticmethod
    def percent_off_plan_fee(percent: Decimal) -> Benefit:
        return Benefit(PromotionKind.PERCENT_OFF_PLAN_FEE, percent=percent)

    @property
    def purpose(self) -> Purpose:
        return _PURPOSE[self.kind]

    def describe(self, currency: Currency | None = None) -> str:
        """"10% off energy", "2.00 EUR off the session", "5.000 kWh free", ...

        ``currency`` is needed for AMOUNT_OFF_SESSION only."""
        kind = self.kind
        if kind is PromotionKind.PERCENT_OFF_ENERGY:
            return f"{_percent_text(self.percent)}% off energy"
        if kind is PromotionKind.PERCENT_OFF_PLAN_FEE:
            return f"{_percent_text(self.percent)}% off the plan fee"
        if kind is PromotionKind.AMOUNT_OFF_SESSION:
            require(currency is not None, "an amount needs its currency to be described")
            amount = Money(self.amount_minor or 0, currency or Currency.of("EUR"))
            return f"{amount} off the session"
        if kind is PromotionKind.FREE_ENERGY:
            return f"{kwh_text(self.free_energy_milliwh or 0)} kWh free"
        return f"{self.free_idle_minutes} idle minutes free"


_BENEFIT_FIELD: dict[PromotionKind, str] = {
    PromotionKind.PERCENT_OFF_ENERGY: "percent",
    PromotionKind.PERCENT_OFF_PLAN_FEE: "percent",
    PromotionKind.AMOUNT_OFF_SESSION: "amount_minor",
    PromotionKind.FREE_ENERGY: "free_energy_milliwh",
    PromotionKind.FREE_IDLE_TIME: "free_idle_minutes",
}


def _validate_benefit(benefit: Benefit) -> None:
    if not isinstance(benefit.kind, PromotionKind):
        raise _bad("benefit.kind", "is not a known promotion kind")
    needed = _BENEFIT_FIELD[benefit.kind]
    for name in ("percent", "amount_minor", "free_energy_milliwh", "free_idle_minutes"):
        value = getattr(benefit, name)
        if name != needed and value is not None:
            raise _bad(f"benefit.{name}", f"does not apply to {benefit.kind.value}")
        if name == needed and value is None:
            raise _bad(f"benefit.{name}", f"is required for {benefit.kind.value}")
    if needed == "percent":
        _check_percent(benefit.percent)
    else:
        limit = {"amount_minor": MAX_AMOUNT_MINOR, "free_energy_milliwh": MAX_FREE_ENERGY_MILLIWH,
                 "free_idle_minutes": MAX_FREE_IDLE_MINUTES}[needed]
        _check_positive_int(getattr(benefit, needed), f"benefit.{needed}", limit)


def _check_percent(value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _bad("benefit.percent", "must be a Decimal percentage")
    if not Decimal(0) < value <= Decimal(100) or decimal_places(value) > VAT_DECIMALS:
        raise _bad("benefit.percent",
                   f"must be above 0 and at most 100, with at most {VAT_DECIMALS} decimals")


def _check_positive_int(value: object, field: str, limit: int) -> None:
    if type(value) is not int or not 0 < value <= limit:
        raise _bad(field, f"must be an integer from 1 to {limit}")


def _percent_text(value: Decimal | None) -> str:
    return f"{(value or Decimal(0)).normalize():f}"


def kwh_text(energy_milliwh: int) -> str:
    """Energy in kWh for people: 3 decimals when exact ("12.300"), all needed ones otherwise."""
    value = Decimal(energy_milliwh).scaleb(-6)
    if energy_milliwh % 1000 == 0:
        return f"{value:.3f}"
    return f"{value.normalize():f}"


# -- promotions -----------------------------------------------------------------------------------


def normalize_code(code: str) -> str:
    """How codes are compared: surrounding space removed, upper-case."""
    return code.strip().upper()


@dataclass(frozen=True, slots=True)
class PromotionScope:
    """Where and when a promotion applies; an empty set means "any"."""

    site_ids: frozenset[str] = frozenset()
    plan_ids: frozenset[str] = frozenset()
    #: Local time of day of the session start: [start, end); end 00:00 = end of day;
    #: end before start wraps midnight (22:00-06:00).
    local_start_time: dt.time | None = None
    local_end_time: dt.time | None = None

    @property
    def has_time_window(self) -> bool:
        return self.local_start_time is not None

    def contains_time(self, local: dt.time) -> bool:
        if self.local_start_time is None or self.local_end_time is None:
            return True
        start = _second_of_day(self.local_start_time)
        end = _second_of_day(self.local_end_time) or 86_400
        second = _second_of_day(local)
        if start < end:
            return start <= second < end
        return second >= start or second < end

    def miss(self, site_id: str | None, plan_id: str, local: dt.time | None) -> str | None:
        """Why a charge is outside this scope, or None."""
        if self.plan_ids and plan_id not in self.plan_ids:
            return f"plan {plan_id} is not in the promotion's plans"
        if self.site_ids and site_id not in self.site_ids:
            return f"site {site_id} is not in the promotion's sites"
        if local is not None and not self.contains_time(local):
            return (f"the session starts at {local:%H:%M}, outside "
                    f"{self.local_start_time:%H:%M}-{self.local_end_time:%H:%M}")
        return None


def _second_of_day(t: dt.time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


@dataclass(frozen=True, slots=True)
class Promotion:
    """A promotion an operator runs. Validated on construction (``InvalidPromotionError``)."""

    id: str
    operator_id: str
    name: str
    currency: Currency
    benefit: Benefit
    starts_at: dt.datetime
    ends_at: dt.datetime | None = None  # exclusive; None = open-ended
    code: str | None = None  # None = automatic
    scope: PromotionScope = PromotionScope()
    redemptions_max_total: int | None = None
    redemptions_max_per_driver: int | None = None
    first_n_sessions: int | None = None  # only the driver's first N sessions
    min_spend_minor: int | None = None  # session total incl. VAT before promotions
    stacking: Stacking = Stacking.STACKABLE
    priority: int = 100  # lower applies first
    active: bool = True

    def __post_init__(self) -> None:
        _validate_promotion(self)

    @property
    def is_automatic(self) -> bool:
        return self.code is None

    @property
    def label(self) -> str:
        name = f"{self.name} ({self.code})" if self.code else self.name
        return f"{name}: {self.benefit.describe(self.currency)}"

    def order_key(self) -> tuple[int, str]:
        return (self.priority, self.id)


def _validate_promotion(p: Promotion) -> None:
    require(isinstance(p.currency, Currency), "Promotion.currency is a Currency")
    require(isinstance(p.benefit, Benefit), "Promotion.benefit is a Benefit")
    for name, limit in (("id", MAX_ID_LENGTH), ("operator_id", MAX_ID_LENGTH),
                        ("name", MAX_NAME_LENGTH)):
        value = getattr(p, name)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise _bad(name, f"must be a non-empty string of at most {limit} characters")
    _check_window(p)
    if p.code is not None and (p.code != normalize_code(p.code)
                               or not CODE_PATTERN.fullmatch(p.code)):
        raise _bad("code", "must be 3-32 characters of A-Z, 0-9, '-' and '_' (upper-case)")
    _check_scope(p)
    for name in ("redemptions_max_total", "redemptions_max_per_driver", "first_n_sessions"):
        if getattr(p, name) is not None:
            _check_positive_int(getattr(p, name), name, MAX_AMOUNT_MINOR)
    if p.min_spend_minor is not None:
        _check_positive_int(p.min_spend_minor, "min_spend_minor", MAX_AMOUNT_MINOR)
    if type(p.priority) is not int or not 0 <= p.priority <= MAX_PRIORITY:
        raise _bad("priority", f"must be an integer from 0 to {MAX_PRIORITY}")
    if not isinstance(p.stacking, Stacking):
        raise _bad("stacking", "must be exclusive or stackable")


def _check_window(p: Promotion) -> None:
    if p.starts_at.tzinfo is None:
        raise _bad("starts_at", "must be timezone-aware")
    if p.ends_at is not None:
        if p.ends_at.tzinfo is None:
            raise _bad("ends_at", "must be timezone-aware")
        if p.ends_at <= p.starts_at:
            raise _bad("ends_at", "must be after starts_at")


def _check_scope(p: Promotion) -> None:
    scope = p.scope
    if (scope.local_start_time is None) != (scope.local_end_time is None):
        raise _bad("scope.local_end_time", "a time window needs both a start and an end")
    if scope.local_start_time is not None and scope.local_start_time == scope.local_end_time:
        raise _bad("scope.local_end_time", "must differ from local_start_time")
    if p.benefit.purpose is Purpose.PLAN_FEE:
        for name, value in (("scope.site_ids", scope.site_ids),
                            ("scope.local_start_time", scope.local_start_time),
                            ("first_n_sessions", p.first_n_sessions),
                            ("min_spend_minor", p.min_spend_minor)):
            if value:
                raise _bad(name, "does not apply to a plan-fee promotion")


@dataclass(frozen=True, slots=True)
class PromotionContext:
    """Who is charging where, and their history with each promotion.

    Redemption counts exclude the charge being priced (re-pricing a session must not count it
    against its own caps).
    """

    driver_id: str
    plan_id: str
    site_id: str | None = None  # None when pricing a plan fee
    promo_code: str | None = None  # as the driver typed it
    sessions_before: int = 0  # the driver's sessions before this one (for first_n_sessions)
    redemptions_total: Mapping[str, int] = field(default_factory=dict, hash=False)
    redemptions_by_driver: Mapping[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class PromotionCheck:
    promotion_id: str
    refusal: Refusal | None = None
    detail: str = ""

    @property
    def eligible(self) -> bool:
        return self.refusal is None


def check_promotion(promotion: Promotion, context: PromotionContext, *, at: dt.datetime,
                    time_zone: str, purpose: Purpose = Purpose.SESSION,
                    currency: Currency | None = None, plan_promotions_eligible: bool = True,
                    spend_minor: int | None = None) -> PromotionCheck:
    """Whether ``promotion`` applies to a charge starting at ``at`` (a session's start, or a
    fee's due date) at a site in ``time_zone``; else the first ``Refusal`` in enum order.

    ``currency`` (the charge's) and ``spend_minor`` (the charge incl. VAT before promotions)
    are checked when given; a code-validation request before a session passes neither.
    """
    require(at.tzinfo is not None, "datetimes in the domain are timezone-aware")
    first = next(iter(_refusals(promotion, context, at, time_zone, purpose, currency,
                                plan_promotions_eligible, spend_minor)), None)
    if first is None:
        return PromotionCheck(promotion.id)
    return PromotionCheck(promotion.id, first[0], first[1])


def _refusals(p: Promotion, ctx: PromotionContext, at: dt.datetime, time_zone: str,
              purpose: Purpose, currency: Currency | None, plan_ok: bool,
              spend_minor: int | None) -> Iterable[tuple[Refusal, str]]:
    """Every reason, lazily, in precedence order (the caller takes the first)."""
    if not p.active:
        yield Refusal.PROMOTION_INACTIVE, "the promotion is switched off"
    if p.benefit.purpose is not purpose:
        yield Refusal.NOT_FOR_THIS_CHARGE, f"{p.benefit.kind.value} does not apply to a {purpose}"
    if currency is not None and currency != p.currency:
        yield (Refusal.CURRENCY_MISMATCH,
               f"the promotion is in {p.currency}, the charge in {currency}")
    if not plan_ok:
        yield Refusal.PLAN_EXCLUDED, f"plan {ctx.plan_id} takes no promotions"
    if p.code is not None and (ctx.promo_code is None
                               or normalize_code(ctx.promo_code) != p.code):
        yield Refusal.CODE_REQUIRED, "the promotion needs its code"
    if at < p.starts_at:
        yield Refusal.PROMOTION_NOT_STARTED, f"the promotion starts at {p.starts_at.isoformat()}"
    if p.ends_at is not None and at >= p.ends_at:
        yield Refusal.PROMOTION_EXPIRED, f"the promotion ended at {p.ends_at.isoformat()}"
    local = at.astimezone(zone(time_zone)).time() if p.scope.has_time_window else None
    miss = p.scope.miss(ctx.site_id, ctx.plan_id, local)
    if miss is not None:
        yield Refusal.NOT_IN_SCOPE, miss
    if p.redemptions_max_total is not None \
            and ctx.redemptions_total.get(p.id, 0) >= p.redemptions_max_total:
        yield Refusal.REDEMPTION_CAP_REACHED, f"redeemed {p.redemptions_max_total} times already"
    if p.redemptions_max_per_driver is not None \
            and ctx.redemptions_by_driver.get(p.id, 0) >= p.redemptions_max_per_driver:
        yield (Refusal.DRIVER_REDEMPTION_CAP_REACHED,
               f"the driver redeemed it {p.redemptions_max_per_driver} times already")
    if p.first_n_sessions is not None and ctx.sessions_before >= p.first_n_sessions:
        yield (Refusal.FIRST_SESSIONS_ONLY,
               f"only for a driver's first {p.first_n_sessions} sessions")
    if p.min_spend_minor is not None and spend_minor is not None \
            and spend_minor < p.min_spend_minor:
        yield (Refusal.MIN_SPEND_NOT_MET,
               f"needs a spend of {Money(p.min_spend_minor, p.currency)} before discounts")


def require_applicable(promotion: Promotion, context: PromotionContext, *, at: dt.datetime,
                       time_zone: str, purpose: Purpose = Purpose.SESSION,
                       currency: Currency | None = None,
                       plan_promotions_eligible: bool = True) -> None:
    """For an entered code: raise ``PromotionNotApplicableError`` (with ``reason``) unless
    ``promotion`` applies. Minimum spend is not known yet and not checked."""
    check = check_promotion(promotion, context, at=at, time_zone=time_zone, purpose=purpose,
                            currency=currency, plan_promotions_eligible=plan_promotions_eligible)
    if check.refusal is not None:
        raise PromotionNotApplicableError(check.detail, check.refusal)


# -- the discount engine --------------------------------------------------------------------------


class Category(StrEnum):
    """What an amount in a ``DiscountBase`` pays for; promotions target categories."""

    ENERGY = "energy"
    CHARGING_TIME = "charging_time"
    IDLE_TIME = "idle_time"
    RESERVATION = "reservation"
    SESSION_FEE = "session_fee"
    PRICE_BOUND = "price_bound"  # the tariff's min/max price adjustment
    PLAN_FEE = "plan_fee"


_SESSION_CATEGORIES = frozenset(Category) - {Category.PLAN_FEE}
_TARGETS: dict[PromotionKind, frozenset[Category]] = {
    PromotionKind.PERCENT_OFF_ENERGY: frozenset({Category.ENERGY}),
    PromotionKind.FREE_ENERGY: frozenset({Category.ENERGY}),
    PromotionKind.FREE_IDLE_TIME: frozenset({Category.IDLE_TIME}),
    PromotionKind.AMOUNT_OFF_SESSION: _SESSION_CATEGORIES,
    PromotionKind.PERCENT_OFF_PLAN_FEE: frozenset({Category.PLAN_FEE}),
}


@dataclass(frozen=True, slots=True)
class AmountCell:
    """The (rounded) amount of one category at one VAT rate."""

    category: Category
    vat_percent: Decimal | None
    excl_minor: int
    incl_minor: int


@dataclass(frozen=True, slots=True)
class DiscountBase:
    """What discounts work on: amounts per category and VAT rate, plus the quantities that
    free-kWh and free-minutes benefits are valued against (billed at a positive price)."""

    currency: Currency
    cells: tuple[AmountCell, ...]
    energy_priced_milliwh: int = 0
    idle_priced_ms: int = 0

    @property
    def total_incl_minor(self) -> int:
        return sum(c.incl_minor for c in self.cells)

    @property
    def total_excl_minor(self) -> int:
        return sum(c.excl_minor for c in self.cells)

    def target_incl_minor(self, targets: frozenset[Category]) -> int:
        """The positive amount left to discount in ``targets``."""
        return sum(max(0, c.incl_minor) for c in self.cells if c.category in targets)


class DiscountSource(StrEnum):
    PROMOTION = "promotion"
    LOYALTY = "loyalty"


@dataclass(frozen=True, slots=True)
class DiscountPart:
    """One discount's share at one VAT rate; amounts are positive (they are subtracted)."""

    vat_percent: Decimal | None
    excl_minor: int
    incl_minor: int


@dataclass(frozen=True, slots=True)
class Discount:
    source: DiscountSource
    source_id: str  # promotion id or loyalty tier name
    label: str
    parts: tuple[DiscountPart, ...]

    @property
    def incl_minor(self) -> int:
        return sum(p.incl_minor for p in self.parts)

    @property
    def excl_minor(self) -> int:
        return sum(p.excl_minor for p in self.parts)


@dataclass(frozen=True, slots=True)
class DiscountOutcome:
    discounts: tuple[Discount, ...]
    #: Eligible promotions that were not applied: NOT_BEST_OFFER or NOTHING_TO_DISCOUNT.
    not_applied: tuple[PromotionCheck, ...]
    remaining: DiscountBase

    @property
    def incl_minor(self) -> int:
        return sum(d.incl_minor for d in self.discounts)


def apply_promotions(base: DiscountBase, eligible: Sequence[Promotion],
                     loyalty: LoyaltyTier | None = None) -> DiscountOutcome:
    """Apply eligible promotions by the stacking rule, then the loyalty benefit (module doc)."""
    if len(eligible) > MAX_PROMOTIONS_PER_CHARGE:
        raise TooManyPromotionsError(
            f"at most {MAX_PROMOTIONS_PER_CHARGE} promotions can apply to one charge")
    require(all(p.currency == base.currency for p in eligible),
            "promotions share the charge's currency (check_promotion refuses others)")
    options = _options(eligible)
    runs = [_run(base, option) for option in options]
    best = min(range(len(options)), key=lambda i: (
        -sum(d.incl_minor for d in runs[i][0]), len(runs[i][0]),
        options[i][0].order_key() if options[i] else (-1, "")))
    discounts, state = runs[best]
    applied = {d.source_id for d in discounts}
    gave_something = {d.source_id for run, _ in runs for d in run}
    not_applied = tuple(
        PromotionCheck(p.id, Refusal.NOT_BEST_OFFER, "another offer was worth more")
        if p.id in gave_something else
        PromotionCheck(p.id, Refusal.NOTHING_TO_DISCOUNT, "there is nothing it discounts")
        for p in sorted(eligible, key=Promotion.order_key) if p.id not in applied)
    if loyalty is not None and loyalty.benefit is not None:
        state, parts = apply_benefit(state, loyalty.benefit)
        if parts:
            discounts += (Discount(DiscountSource.LOYALTY, loyalty.name, loyalty.label, parts),)
    return DiscountOutcome(discounts, not_applied, state)


def _options(eligible: Sequence[Promotion]) -> list[tuple[Promotion, ...]]:
    """The stack of all stackables (possibly empty) and each exclusive alone."""
    ordered = sorted(eligible, key=Promotion.order_key)
    stack = tuple(p for p in ordered if p.stacking is Stacking.STACKABLE)
    return [stack] + [(p,) for p in ordered if p.stacking is Stacking.EXCLUSIVE]


def _run(base: DiscountBase, promotions: Sequence[Promotion]
         ) -> tuple[tuple[Discount, ...], DiscountBase]:
    """Promotions applied one after the other, each on what the previous ones left."""
    state = base
    discounts: list[Discount] = []
    for p in promotions:
        state, parts = apply_benefit(state, p.benefit)
        if parts:
            discounts.append(Discount(DiscountSource.PROMOTION, p.id, p.label, parts))
    return tuple(discounts), state


def apply_benefit(base: DiscountBase, benefit: Benefit
                  ) -> tuple[DiscountBase, tuple[DiscountPart, ...]]:
    """One benefit on ``base``: (what is left, the discount per VAT rate; empty = nothing)."""
    targets = _TARGETS[benefit.kind]
    target = base.target_incl_minor(targets)
    amount = min(_benefit_value(benefit, base, target), target, max(0, base.total_incl_minor))
    if amount <= 0:
        return base, ()
    indices = [i for i, c in enumerate(base.cells) if c.category in targets]
    shares = allocate(amount, [max(0, base.cells[i].incl_minor) for i in indices])
    cells = list(base.cells)
    taken: dict[Decimal | None, list[int]] = {}
    for i, share in zip(indices, shares, strict=True):
        if share == 0:
            continue
        cell = cells[i]
        excl = _excl_share(cell, share, base.currency)
        cells[i] = dataclasses.replace(cell, excl_minor=cell.excl_minor - excl,
                                       incl_minor=cell.incl_minor - share)
        acc = taken.setdefault(cell.vat_percent, [0, 0])
        acc[0] += excl
        acc[1] += share
    parts = [DiscountPart(vat, excl, incl) for vat, (excl, incl) in taken.items()]
    energy_left, idle_left = _quantities_after(benefit, base)
    state = dataclasses.replace(base, cells=tuple(cells), energy_priced_milliwh=energy_left,
                                idle_priced_ms=idle_left)
    return _never_below_zero(state, parts)


def _benefit_value(benefit: Benefit, base: DiscountBase, target_minor: int) -> int:
    """The discount the benefit asks for, incl. VAT, rounded once."""
    cur = base.currency
    if benefit.percent is not None:
        return Money(target_minor, cur).multiply(benefit.percent / 100).amount_minor
    if benefit.amount_minor is not None:
        return benefit.amount_minor
    if benefit.free_energy_milliwh is not None:
        return _free_share(target_minor, benefit.free_energy_milliwh, base.energy_priced_milliwh,
                           cur)
    free_ms = (benefit.free_idle_minutes or 0) * MS_PER_MINUTE
    return _free_share(target_minor, free_ms, base.idle_priced_ms, cur)


def _free_share(target_minor: int, free: int, priced: int, currency: Currency) -> int:
    """The value of ``free`` units out of ``priced`` units costing ``target_minor``
    (the average price), rounded once."""
    if priced <= 0 or target_minor <= 0:
        return 0
    exact = minor_to_major(target_minor, currency) * Fraction(min(free, priced), priced)
    return round_exact_to_minor(exact, currency)


def _quantities_after(benefit: Benefit, base: DiscountBase) -> tuple[int, int]:
    """(priced energy, priced idle time) left: free units a benefit used up are no longer
    there for the next one."""
    energy, idle = base.energy_priced_milliwh, base.idle_priced_ms
    if benefit.free_energy_milliwh is not None:
        energy -= min(benefit.free_energy_milliwh, energy)
    if benefit.free_idle_minutes is not None:
        idle -= min(benefit.free_idle_minutes * MS_PER_MINUTE, idle)
    return energy, idle


def _excl_share(cell: AmountCell, share_incl: int, currency: Currency) -> int:
    """The excl.-VAT part of an incl.-VAT discount share: share / VAT factor, rounded once,
    never more than the cell holds (all of it when the share empties the cell)."""
    available = max(0, cell.excl_minor)
    if share_incl >= cell.incl_minor:
        return available
    exact = minor_to_major(share_incl, currency) / Fraction(vat_factor(cell.vat_percent))
    return min(available, round_exact_to_minor(exact, currency))


def _never_below_zero(state: DiscountBase, parts: list[DiscountPart]
                      ) -> tuple[DiscountBase, tuple[DiscountPart, ...]]:
    """Rounding the excl. parts separately could leave the excl. total a cent off where the
    incl. total reached zero, or below zero; move that cent on the discount (last part first,
    never making a part negative)."""
    excl_left = state.total_excl_minor
    target = 0 if (state.total_incl_minor == 0 or excl_left < 0) else excl_left
    shift = excl_left - target  # > 0: discount more excl; < 0: discount less
    if shift == 0:
        return state, tuple(parts)
    adjusted = list(parts)
    for k in range(len(adjusted) - 1, -1, -1):
        part = adjusted[k]
        delta = shift if shift > 0 else max(shift, -part.excl_minor)
        adjusted[k] = dataclasses.replace(part, excl_minor=part.excl_minor + delta)
        state = _shift_cell_excl(state, part.vat_percent, delta)
        shift -= delta
        if shift == 0:
            break
    return state, tuple(adjusted)


def _shift_cell_excl(state: DiscountBase, vat: Decimal | None, delta: int) -> DiscountBase:
    cells = list(state.cells)
    for i, cell in enumerate(cells):
        if cell.vat_percent == vat:
            cells[i] = dataclasses.replace(cell, excl_minor=cell.excl_minor - delta)
            break
    return dataclasses.replace(state, cells=tuple(cells))


# -- loyalty --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoyaltyTier:
    """A tier reached with ``min_energy_milliwh`` charged in the last ``window_days`` days."""

    name: str
    min_energy_milliwh: int
    benefit: Benefit | None = None  # None: a tier without a benefit (e.g. the entry tier)
    window_days: int = 90

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() \
                or len(self.name) > MAX_NAME_LENGTH:
            raise InvalidLoyaltyTierError("name", "must be a non-empty string")
        if type(self.min_energy_milliwh) is not int or self.min_energy_milliwh < 0:
            raise InvalidLoyaltyTierError("min_energy_milliwh", "must be a non-negative integer")
        if type(self.window_days) is not int \
                or not 1 <= self.window_days <= MAX_LOYALTY_WINDOW_DAYS:
            raise InvalidLoyaltyTierError(
                "window_days", f"must be an integer from 1 to {MAX_LOYALTY_WINDOW_DAYS}")
        if self.benefit is not None and self.benefit.kind not in (
                PromotionKind.PERCENT_OFF_ENERGY, PromotionKind.FREE_IDLE_TIME):
            raise InvalidLoyaltyTierError(
                "benefit.kind", "a loyalty benefit is percent_off_energy or free_idle_time")

    @property
    def label(self) -> str:
        if self.benefit is None:
            return f"Loyalty {self.name}"
        return f"Loyalty {self.name}: {self.benefit.describe()}"


def validate_tiers(tiers: Sequence[LoyaltyTier]) -> None:
    """One programme: at most MAX_LOYALTY_TIERS tiers, one window, distinct names and
    thresholds."""
    if len(tiers) > MAX_LOYALTY_TIERS:
        raise InvalidLoyaltyTierError("tiers", f"at most {MAX_LOYALTY_TIERS} tiers")
    if len({t.window_days for t in tiers}) > 1:
        raise InvalidLoyaltyTierError("window_days", "all tiers use the same rolling window")
    if len({t.name for t in tiers}) != len(tiers):
        raise InvalidLoyaltyTierError("name", "tier names are distinct")
    if len({t.min_energy_milliwh for t in tiers}) != len(tiers):
        raise InvalidLoyaltyTierError("min_energy_milliwh", "tier thresholds are distinct")


def tier_for(usage_milliwh: int, tiers: Sequence[LoyaltyTier]) -> LoyaltyTier | None:
    """The highest tier whose threshold ``usage_milliwh`` reaches (thresholds inclusive)."""
    validate_tiers(tiers)
    reached = [t for t in tiers if usage_milliwh >= t.min_energy_milliwh]
    return max(reached, key=lambda t: t.min_energy_milliwh, default=None)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One past session for loyalty: when it started and the energy it charged."""

    started_at: dt.datetime
    energy_milliwh: int


def rolling_energy_milliwh(records: Iterable[UsageRecord], at: dt.datetime,
                           window_days: int) -> int:
    """Energy of sessions that started in [at - window_days, at); negative energy counts 0."""
    require(at.tzinfo is not None, "datetimes in the domain are timezone-aware")
    since = at - dt.timedelta(days=window_days)
    return sum(max(0, r.energy_milliwh) for r in records if since <= r.started_at < at)


# -- brute-force limiter --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    failures_in_window: int
    retry_after_ms: int = 0  # > 0 when not allowed


def sliding_window_decision(failures_ms: Sequence[int], now_ms: int, *, max_failures: int,
                            window_ms: int) -> LimitDecision:
    """Locked while ``max_failures`` or more failures lie in (now - window, now]; unlocked when
    the oldest of the last ``max_failures`` leaves the window. For callers that store the
    failure times themselves (e.g. in a database shared by several nodes)."""
    recent = sorted(t for t in failures_ms if now_ms - window_ms < t <= now_ms)
    if len(recent) < max_failures:
        return LimitDecision(True, len(recent))
    unlock_ms = recent[-max_failures] + window_ms
    return LimitDecision(False, len(recent), unlock_ms - now_ms)


class SlidingWindowLimiter:
    """Failed attempts per key in a sliding window, e.g. 5 wrong promo codes in 15 minutes.

    ``clock`` returns milliseconds (monotonic or epoch; e.g. ``lambda: time.monotonic_ns() //
    1_000_000``). Attempts refused while locked are not recorded, so hammering a locked key does
    not extend its lock. Memory is bounded: at most ``max_failures`` times per key and
    ``max_keys`` keys (the least recently used key is forgotten first). Not thread-safe: callers
    serialise access (one lock) or keep one limiter per worker.
    """

    __slots__ = ("_clock", "max_failures", "window_ms", "max_keys", "_failures")

    def __init__(self, clock: Callable[[], int], *, max_failures: int = 5,
                 window_ms: int = 15 * 60_000, max_keys: int = 100_000) -> None:
        require(max_failures >= 1 and window_ms >= 1 and max_keys >= 1,
                "limiter limits are positive")
        self._clock = clock
        self.max_failures = max_failures
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[int]] = OrderedDict()

    def check(self, key: str) -> LimitDecision:
        return sliding_window_decision(self._failures.get(key, ()), self._clock(),
                                       max_failures=self.max_failures, window_ms=self.window_ms)

    def ensure_allowed(self, key: str) -> None:
        """Raise ``TooManyAttemptsError`` (code ``rate_limited``) while ``key`` is locked."""
        decision = self.check(key)
        if not decision.allowed:
            raise TooManyAttemptsError(
                f"too many failed attempts; retry in {-(-decision.retry_after_ms // 1000)} s",
                decision.retry_after_ms)

    def record_failure(self, key: str) -> LimitDecision:
        """Count a failed attempt (unless the key is locked) and return the new decision."""
        decision = self.check(key)
        if not decision.allowed:
            return decision
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return self.check(key)

    def tracked_keys(self) -> int:
        return len(self._failures)
