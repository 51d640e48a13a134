"""Billing options (plans) a driver can choose, switching between them, wallets, fleet accounts.

Pure: no I/O, no clock. The rules, with worked examples, are in ``docs/plans.md``:

* Five kinds of plan (``PlanKind``). Which fields a kind uses is fixed (``_KIND_FIELDS``); a field
  a kind does not use must stay unset, so an operator's mistake is refused with the field named
  (``InvalidPlanError``, code ``invalid_plan``) instead of being silently ignored.
* Billing periods are calendar months or ISO weeks (Monday 00:00) in the driver's IANA zone
  (``period_bounds``). ``PlanUsage`` is the energy a driver used in one period against the
  period's allowance (subscription) or fair-use cap (flat rate).
* Switching (``plan_change``): effective NOW credits the unused share of the old fee and charges
  the new fee for the rest of the new plan's period, both split with ``money.allocate`` by whole
  local days (the day of the change counts as remaining); the new allowance is split the same
  way. NEXT_PERIOD moves no money now and switches at the end of the current period.
* Amounts are integer minor units; plan fees are excl. VAT with ``fee_vat_percent`` beside them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from evbilling.domain.errors import CurrencyMismatchError, DomainError, InvalidDocumentError
from evbilling.domain.invariants import require
from evbilling.domain.money import (
    VAT_DECIMALS,
    Currency,
    Money,
    add_vat,
    allocate,
    decimal_places,
)
from evbilling.domain.periods import MILLIWH_PER_KWH
from evbilling.domain.timezones import zone

# -- limits (TIGER_STYLE: a limit on everything) --------------------------------------------------
MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 200
#: A plan fee, wallet top-up or credit limit above this is refused (10 million in major units
#: of a 2-decimal currency).
MAX_AMOUNT_MINOR = 1_000_000_000
#: Included energy or a fair-use cap above this per period is refused (1 GWh).
MAX_PERIOD_ENERGY_MILLIWH = 1_000_000 * MILLIWH_PER_KWH
#: A wallet never holds more than this.
MAX_WALLET_BALANCE_MINOR = MAX_AMOUNT_MINOR


class PlanKind(StrEnum):
    PAY_PER_USE = "pay_per_use"  # the site's public tariff, nothing else
    SUBSCRIPTION = "subscription"  # fee, included energy, member tariff, (usually) no session fee
    FLAT_RATE = "flat_rate"  # fee, fair-use cap, fallback tariff above the cap
    PREPAID_WALLET = "prepaid_wallet"  # public tariff, paid from a balance; optional auto top-up
    FLEET = "fleet"  # public tariff, post-paid on a monthly statement up to a credit limit


class BillingPeriod(StrEnum):
    MONTH = "month"  # calendar month, local midnight of the 1st to the next 1st
    WEEK = "week"  # ISO week, local Monday 00:00 to the next Monday 00:00


class ChangeEffective(StrEnum):
    NOW = "now"
    NEXT_PERIOD = "next_period"


# -- errors (stable codes) ------------------------------------------------------------------------


class InvalidPlanError(InvalidDocumentError):
    """A plan an operator creates or edits breaks a rule; ``field`` names the field."""

    code = "invalid_plan"


class PlanChangeError(DomainError):
    """A driver may not switch to that plan."""

    code = "plan_change_refused"


class PlanUnchangedError(PlanChangeError):
    code = "plan_unchanged"


class PlanInactiveError(PlanChangeError):
    code = "plan_inactive"


class PlanNotOfferedError(PlanChangeError):
    """The plan belongs to another operator."""

    code = "plan_not_offered"


class InvalidAmountError(DomainError):
    code = "invalid_amount"


class InsufficientFundsError(DomainError):
    code = "insufficient_funds"

    def __init__(self, message: str, shortfall_minor: int) -> None:
        super().__init__(message)
        self.shortfall_minor = shortfall_minor


class WalletLimitExceededError(DomainError):
    code = "wallet_limit_exceeded"


class CreditLimitExceededError(DomainError):
    code = "credit_limit_exceeded"

    def __init__(self, message: str, available_minor: int) -> None:
        super().__init__(message)
        self.available_minor = available_minor


# -- the plan -------------------------------------------------------------------------------------

#: The optional fields each kind may set. Everything else must keep its default.
_KIND_FIELDS: dict[PlanKind, frozenset[str]] = {
    PlanKind.PAY_PER_USE: frozenset(),
    PlanKind.SUBSCRIPTION: frozenset(
        {"fee_minor", "included_energy_milliwh", "member_tariff_id", "waive_flat_fee"}),
    PlanKind.FLAT_RATE: frozenset(
        {"fee_minor", "fair_use_cap_milliwh", "fallback_tariff_id", "waive_flat_fee"}),
    PlanKind.PREPAID_WALLET: frozenset(
        {"wallet_top_up_threshold_minor", "wallet_top_up_amount_minor"}),
    PlanKind.FLEET: frozenset({"fee_minor", "credit_limit_minor"}),
}
_REQUIRED_FIELDS: dict[PlanKind, tuple[str, ...]] = {
    PlanKind.PAY_PER_USE: (),
    PlanKind.SUBSCRIPTION: ("member_tariff_id",),
    PlanKind.FLAT_RATE: ("fallback_tariff_id", "fair_use_cap_milliwh"),
    PlanKind.PREPAID_WALLET: (),
    PlanKind.FLEET: ("credit_limit_minor",),
}
#: Defaults of the kind-specific fields ("unset").
_UNSET: dict[str, object] = {
    "fee_minor": 0,
    "included_energy_milliwh": 0,
    "member_tariff_id": None,
    "fair_use_cap_milliwh": None,
    "fallback_tariff_id": None,
    "waive_flat_fee": False,
    "wallet_top_up_threshold_minor": None,
    "wallet_top_up_amount_minor": None,
    "credit_limit_minor": None,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A billing option an operator offers. Validated on construction (``InvalidPlanError``).

    Use the named constructors (``Plan.subscription(...)`` etc.) for kind-appropriate defaults;
    ``edited`` returns the next version of a plan.
    """

    id: str
    operator_id: str
    kind: PlanKind
    name: str
    currency: Currency
    period: BillingPeriod = BillingPeriod.MONTH
    #: Fee per period in minor units, excl. VAT (subscription, flat rate, fleet account fee).
    fee_minor: int = 0
    #: VAT on the fee in percent; None = no VAT applicable.
    fee_vat_percent: Decimal | None = None
    #: Subscription: energy included per period, free of energy and charging-time charges.
    included_energy_milliwh: int = 0
    #: Subscription: the tariff (id) that prices charging beyond the allowance.
    member_tariff_id: str | None = None
    #: Flat rate: energy per period covered by the fee.
    fair_use_cap_milliwh: int | None = None
    #: Flat rate: the tariff (id) that prices charging above the cap.
    fallback_tariff_id: str | None = None
    #: Subscription / flat rate: the tariff's FLAT (session fee) is not charged.
    waive_flat_fee: bool = False
    #: Prepaid wallet: top up automatically when the balance falls below the threshold.
    wallet_top_up_threshold_minor: int | None = None
    wallet_top_up_amount_minor: int | None = None
    #: Fleet: the most a fleet account may owe (posted and unpaid).
    credit_limit_minor: int | None = None
    #: False: promotions never apply to sessions or fees under this plan (loyalty still does).
    promotions_eligible: bool = True
    #: False: no longer offered to new drivers (existing drivers keep being priced under it).
    active: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        _validate_plan(self)

    # -- named constructors ----------------------------------------------------------------
    @staticmethod
    def pay_per_use(id: str, operator_id: str, name: str, currency: Currency | str,
                    **options: object) -> Plan:
        return _make(PlanKind.PAY_PER_USE, id, operator_id, name, currency, options)

    @staticmethod
    def subscription(id: str, operator_id: str, name: str, currency: Currency | str, *,
                     fee_minor: int, included_energy_milliwh: int, member_tariff_id: str,
                     waive_flat_fee: bool = True, **options: object) -> Plan:
        return _make(PlanKind.SUBSCRIPTION, id, operator_id, name, currency, {
            "fee_minor": fee_minor, "included_energy_milliwh": included_energy_milliwh,
            "member_tariff_id": member_tariff_id, "waive_flat_fee": waive_flat_fee, **options})

    @staticmethod
    def flat_rate(id: str, operator_id: str, name: str, currency: Currency | str, *,
                  fee_minor: int, fair_use_cap_milliwh: int, fallback_tariff_id: str,
                  waive_flat_fee: bool = True, **options: object) -> Plan:
        return _make(PlanKind.FLAT_RATE, id, operator_id, name, currency, {
            "fee_minor": fee_minor, "fair_use_cap_milliwh": fair_use_cap_milliwh,
            "fallback_tariff_id": fallback_tariff_id, "waive_flat_fee": waive_flat_fee,
            **options})

    @staticmethod
    def prepaid_wallet(id: str, operator_id: str, name: str, currency: Currency | str,
                       **options: object) -> Plan:
        return _make(PlanKind.PREPAID_WALLET, id, operator_id, name, currency, options)

    @staticmethod
    def fleet(id: str, operator_id: str, name: str, currency: Currency | str, *,
              credit_limit_minor: int, **options: object) -> Plan:
        return _make(PlanKind.FLEET, id, operator_id, name, currency,
                     {"credit_limit_minor": credit_limit_minor, **options})

    # -- editing -------------------------------------------------------------------------
    def edited(self, **changes: object) -> Plan:
        """The next version of this plan with ``changes`` applied (and validated).

        ``id``, ``operator_id``, ``kind`` and ``currency`` cannot change: drivers and stored
        usage refer to them; create a new plan instead.
        """
        for frozen in ("id", "operator_id", "kind", "currency"):
            if frozen in changes and changes[frozen] != getattr(self, frozen):
                raise InvalidPlanError(frozen, "cannot be changed; create a new plan instead")
        changes.pop("version", None)
        return dataclasses.replace(self, **changes, version=self.version + 1)  # type: ignore[arg-type]

    # -- views ---------------------------------------------------------------------------
    @property
    def tariff_id(self) -> str | None:
        """The tariff the plan prices with; None = the site's public tariff."""
        if self.kind is PlanKind.SUBSCRIPTION:
            return self.member_tariff_id
        if self.kind is PlanKind.FLAT_RATE:
            return self.fallback_tariff_id
        return None

    @property
    def energy_allowance_milliwh(self) -> int:
        """Energy per full period covered by the plan: included energy or the fair-use cap."""
        if self.kind is PlanKind.SUBSCRIPTION:
            return self.included_energy_milliwh
        if self.kind is PlanKind.FLAT_RATE:
            return self.fair_use_cap_milliwh or 0
        return 0

    @property
    def fee(self) -> Money:
        """The fee per period, excl. VAT."""
        return Money(self.fee_minor, self.currency)

    def fee_incl_vat(self, fee_minor: int | None = None) -> Money:
        """A fee (default: the full period fee) incl. VAT, rounded once."""
        amount = self.fee_minor if fee_minor is None else fee_minor
        return add_vat(Money(amount, self.currency), self.fee_vat_percent)


def _make(kind: PlanKind, id: str, operator_id: str, name: str, currency: Currency | str,
          options: dict[str, object]) -> Plan:
    cur = currency if isinstance(currency, Currency) else Currency.of(currency)
    return Plan(id, operator_id, kind, name, cur, **options)  # type: ignore[arg-type]


def _validate_plan(plan: Plan) -> None:
    require(isinstance(plan.currency, Currency), "Plan.currency is a Currency")
    require(isinstance(plan.kind, PlanKind), "Plan.kind is a PlanKind")
    _check_text(plan.id, "id", MAX_ID_LENGTH)
    _check_text(plan.operator_id, "operator_id", MAX_ID_LENGTH)
    _check_text(plan.name, "name", MAX_NAME_LENGTH)
    if not isinstance(plan.period, BillingPeriod):
        raise InvalidPlanError("period", "must be one of: month, week")
    if type(plan.version) is not int or plan.version < 1:
        raise InvalidPlanError("version", "must be a positive integer")
    _check_kind_fields(plan)
    _check_amount(plan.fee_minor, "fee_minor")
    _check_vat(plan.fee_vat_percent)
    _check_energy(plan.included_energy_milliwh, "included_energy_milliwh", allow_zero=True)
    if plan.fair_use_cap_milliwh is not None:
        _check_energy(plan.fair_use_cap_milliwh, "fair_use_cap_milliwh", allow_zero=False)
    for name in ("member_tariff_id", "fallback_tariff_id"):
        value = getattr(plan, name)
        if value is not None:
            _check_text(value, name, MAX_ID_LENGTH)
    _check_wallet_fields(plan)
    if plan.credit_limit_minor is not None:
        _check_amount(plan.credit_limit_minor, "credit_limit_minor")


def _check_kind_fields(plan: Plan) -> None:
    allowed = _KIND_FIELDS[plan.kind]
    for name, unset in _UNSET.items():
        value = getattr(plan, name)
        if name not in allowed and value != unset:
            raise InvalidPlanError(name, f"does not apply to a {plan.kind.value} plan")
    for name in _REQUIRED_FIELDS[plan.kind]:
        if getattr(plan, name) is None:
            raise InvalidPlanError(name, f"is required for a {plan.kind.value} plan")


def _check_wallet_fields(plan: Plan) -> None:
    threshold = plan.wallet_top_up_threshold_minor
    amount = plan.wallet_top_up_amount_minor
    if (threshold is None) != (amount is None):
        field = "wallet_top_up_amount_minor" if amount is None else "wallet_top_up_threshold_minor"
        raise InvalidPlanError(field, "auto top-up needs both a threshold and an amount")
    if threshold is not None:
        _check_amount(threshold, "wallet_top_up_threshold_minor")
    if amount is not None:
        _check_amount(amount, "wallet_top_up_amount_minor")
        if amount == 0:
            raise InvalidPlanError("wallet_top_up_amount_minor", "must be positive")


def _check_text(value: object, field: str, max_length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidPlanError(field, "must be a non-empty string")
    if len(value) > max_length:
        raise InvalidPlanError(field, f"must be at most {max_length} characters")


def _check_amount(value: object, field: str) -> None:
    if type(value) is not int:
        raise InvalidPlanError(field, "must be an integer amount in minor units")
    if not 0 <= value <= MAX_AMOUNT_MINOR:
        raise InvalidPlanError(field, f"must be between 0 and {MAX_AMOUNT_MINOR}")


def _check_energy(value: object, field: str, *, allow_zero: bool) -> None:
    if type(value) is not int:
        raise InvalidPlanError(field, "must be an integer number of milliwatt-hours")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_PERIOD_ENERGY_MILLIWH:
        raise InvalidPlanError(field, f"must be between {low} and {MAX_PERIOD_ENERGY_MILLIWH}")


def _check_vat(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidPlanError("fee_vat_percent", "must be a Decimal percentage")
    if not Decimal(0) <= value <= Decimal(100) or decimal_places(value) > VAT_DECIMALS:
        raise InvalidPlanError(
            "fee_vat_percent", f"must be 0..100 with at most {VAT_DECIMALS} decimal places")


# -- billing periods ------------------------------------------------------------------------------


def local_date(at: dt.datetime, time_zone: str) -> dt.date:
    """The calendar date of an aware instant in an IANA zone."""
    require(at.tzinfo is not None, "datetimes in the domain are timezone-aware")
    return at.astimezone(zone(time_zone)).date()


def period_dates(period: BillingPeriod, day: dt.date) -> tuple[dt.date, dt.date]:
    """[first day, first day of the next period) of the period containing ``day``."""
    if period is BillingPeriod.WEEK:
        start = day - dt.timedelta(days=day.weekday())
        return start, start + dt.timedelta(days=7)
    start = day.replace(day=1)
    following = (start.replace(year=start.year + 1, month=1) if start.month == 12
                 else start.replace(month=start.month + 1))
    return start, following


def local_midnight(day: dt.date, time_zone: str) -> dt.datetime:
    """Local 00:00 of ``day`` as an aware UTC datetime (a midnight skipped by DST maps to the
    first instant after the gap)."""
    local = dt.datetime.combine(day, dt.time(), tzinfo=zone(time_zone))
    return local.astimezone(dt.UTC)


def period_bounds(period: BillingPeriod, at: dt.datetime, time_zone: str
                  ) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the billing period containing ``at``, as aware UTC datetimes.

    Months and weeks are calendar periods in ``time_zone`` (the driver's zone), so a month in
    Berlin starts at 22:00 or 23:00 UTC the day before, depending on DST.
    """
    first, following = period_dates(period, local_date(at, time_zone))
    return local_midnight(first, time_zone), local_midnight(following, time_zone)


@dataclass(frozen=True, slots=True)
class PeriodShare:
    """How much of a billing period is left at an instant, in whole local days.

    The day of ``at`` counts as remaining: a plan that takes effect during a day is in force
    for that day.
    """

    period_start_at: dt.datetime
    period_end_at: dt.datetime
    days_in_period: int
    days_remaining: int

    @property
    def days_elapsed(self) -> int:
        return self.days_in_period - self.days_remaining

    def split(self, whole: int) -> int:
        """The remaining share of ``whole`` (minor units or milliwh): ``money.allocate`` over
        [days remaining, days elapsed], so the two shares always add up to ``whole``."""
        return allocate(whole, [self.days_remaining, self.days_elapsed])[0]


def period_share(period: BillingPeriod, at: dt.datetime, time_zone: str) -> PeriodShare:
    day = local_date(at, time_zone)
    first, following = period_dates(period, day)
    return PeriodShare(
        period_start_at=local_midnight(first, time_zone),
        period_end_at=local_midnight(following, time_zone),
        days_in_period=(following - first).days,
        days_remaining=(following - day).days,
    )


# -- usage in a period ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanUsage:
    """Energy a driver used in one billing period of one plan, against the period's allowance.

    ``energy_allowance_milliwh`` is the plan's included energy (subscription) or fair-use cap
    (flat rate) for this period: the full amount, or a pro rata share when the plan started
    during the period (see ``plan_change``). Other kinds have no allowance (0).
    """

    plan_id: str
    period_start_at: dt.datetime
    period_end_at: dt.datetime
    energy_allowance_milliwh: int = 0
    energy_used_milliwh: int = 0

    def __post_init__(self) -> None:
        require(self.period_start_at.tzinfo is not None and self.period_end_at.tzinfo is not None,
                "PlanUsage periods are timezone-aware")
        require(self.period_start_at < self.period_end_at, "PlanUsage period is not empty")
        require(type(self.energy_allowance_milliwh) is int and self.energy_allowance_milliwh >= 0,
                "PlanUsage allowance is a non-negative int")
        require(type(self.energy_used_milliwh) is int and self.energy_used_milliwh >= 0,
                "PlanUsage energy used is a non-negative int")

    @staticmethod
    def for_period(plan: Plan, at: dt.datetime, time_zone: str) -> PlanUsage:
        """A fresh usage record for the full period containing ``at`` (nothing used yet)."""
        start, end = period_bounds(plan.period, at, time_zone)
        return PlanUsage(plan.id, start, end, plan.energy_allowance_milliwh)

    @property
    def energy_remaining_milliwh(self) -> int:
        return max(0, self.energy_allowance_milliwh - self.energy_used_milliwh)

    def contains(self, at: dt.datetime) -> bool:
        return self.period_start_at <= at < self.period_end_at

    def with_energy(self, energy_milliwh: int) -> PlanUsage:
        """This record after a session that used ``energy_milliwh`` (>= 0)."""
        require(energy_milliwh >= 0, "energy used by a session is not negative")
        return dataclasses.replace(self, energy_used_milliwh=self.energy_used_milliwh
                                   + energy_milliwh)


# -- switching plans ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """The plan a driver is on (any kind: "subscription" in the sense of "signed up to")."""

    driver_id: str
    plan: Plan
    time_zone: str  # the driver's IANA zone: billing periods are local calendar periods
    started_at: dt.datetime

    def __post_init__(self) -> None:
        require(self.started_at.tzinfo is not None, "Subscription.started_at is aware")
        zone(self.time_zone)  # an unknown zone raises UnknownTimeZoneError


@dataclass(frozen=True, slots=True)
class PlanChange:
    """What switching plans costs and when it happens.

    ``credit_minor`` and ``charge_minor`` are excl. VAT and due at ``effective_at``:
    the credit is the unused share of the old plan's fee (refund or wallet credit), the charge
    is the new plan's fee for its first, possibly partial, period. After that, the new plan's
    full fee is charged at each of its period starts.
    """

    driver_id: str
    from_plan_id: str
    to_plan_id: str
    effective: ChangeEffective
    effective_at: dt.datetime
    currency: Currency
    credit_minor: int
    charge_minor: int
    #: The old plan's period at the change (credit basis); None for NEXT_PERIOD.
    old_share: PeriodShare | None
    #: The new plan's first period from ``effective_at`` (charge and allowance basis).
    new_share: PeriodShare
    #: The new plan's usage record from ``effective_at``: pro rata allowance, nothing used.
    usage: PlanUsage

    @property
    def net_minor(self) -> int:
        """Charge minus credit: positive = the driver pays, negative = the driver gets money."""
        return self.charge_minor - self.credit_minor

    @property
    def credit(self) -> Money:
        return Money(self.credit_minor, self.currency)

    @property
    def charge(self) -> Money:
        return Money(self.charge_minor, self.currency)


def plan_change(current: Subscription, new_plan: Plan, at: dt.datetime,
                effective: ChangeEffective) -> PlanChange:
    """Switch ``current`` to ``new_plan`` at ``at``.

    Checks, in this order (the first that fails is raised): same plan (``plan_unchanged``),
    other operator (``plan_not_offered``), new plan inactive (``plan_inactive``), other currency
    (``currency_mismatch``).

    NOW: credit = ``allocate(old fee, [days remaining, days elapsed])[0]`` over the old plan's
    current period; charge = the same split of the new fee over the new plan's current period;
    new allowance = the same split of the new plan's allowance. Whole local days; the day of the
    change counts as remaining (the new plan is in force that day, the old one is not charged
    for it). ``allocate`` is the largest-remainder split, so credit + the kept share = old fee.

    NEXT_PERIOD: nothing now; the switch happens at the end of the old plan's current period,
    and the charge is the new plan's fee for its period starting there (the full fee when both
    plans have the same kind of period).
    """
    require(at.tzinfo is not None, "datetimes in the domain are timezone-aware")
    old_plan = current.plan
    _check_change(old_plan, new_plan)
    tz = current.time_zone
    old_share: PeriodShare | None = None
    credit = 0
    if effective is ChangeEffective.NOW:
        old_share = period_share(old_plan.period, at, tz)
        credit = old_share.split(old_plan.fee_minor)
        effective_at = at
    else:
        effective_at = period_bounds(old_plan.period, at, tz)[1]
    new_share = period_share(new_plan.period, effective_at, tz)
    usage = PlanUsage(
        plan_id=new_plan.id,
        period_start_at=new_share.period_start_at,
        period_end_at=new_share.period_end_at,
        energy_allowance_milliwh=new_share.split(new_plan.energy_allowance_milliwh),
    )
    return PlanChange(
        driver_id=current.driver_id, from_plan_id=old_plan.id, to_plan_id=new_plan.id,
        effective=effective, effective_at=effective_at, currency=new_plan.currency,
        credit_minor=credit, charge_minor=new_share.split(new_plan.fee_minor),
        old_share=old_share, new_share=new_share, usage=usage,
    )


def _check_change(old_plan: Plan, new_plan: Plan) -> None:
    if new_plan.id == old_plan.id:
        raise PlanUnchangedError(f"the driver is already on plan {new_plan.id}")
    if new_plan.operator_id != old_plan.operator_id:
        raise PlanNotOfferedError(f"plan {new_plan.id} is not offered by this operator")
    if not new_plan.active:
        raise PlanInactiveError(f"plan {new_plan.id} is no longer offered")
    if new_plan.currency != old_plan.currency:
        raise CurrencyMismatchError(
            f"plan {new_plan.id} is in {new_plan.currency}, the current plan in "
            f"{old_plan.currency}")


# -- prepaid wallet -------------------------------------------------------------------------------


def _positive_amount(amount_minor: object) -> int:
    if type(amount_minor) is not int or amount_minor <= 0:
        raise InvalidAmountError("an amount must be a positive integer in minor units")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidAmountError(f"an amount must be at most {MAX_AMOUNT_MINOR} minor units")
    return amount_minor


@dataclass(frozen=True, slots=True)
class Wallet:
    """A prepaid balance in minor units. Never negative; operations return a new wallet."""

    currency: Currency
    balance_minor: int = 0

    def __post_init__(self) -> None:
        require(type(self.balance_minor) is int, "Wallet.balance_minor is an int")
        require(0 <= self.balance_minor <= MAX_WALLET_BALANCE_MINOR,
                "a wallet balance is between 0 and the wallet limit")

    @property
    def balance(self) -> Money:
        return Money(self.balance_minor, self.currency)

    def can_pay(self, amount_minor: int) -> bool:
        return 0 <= amount_minor <= self.balance_minor

    def credit(self, amount_minor: int) -> Wallet:
        """Add a top-up or a refund."""
        amount = _positive_amount(amount_minor)
        if self.balance_minor + amount > MAX_WALLET_BALANCE_MINOR:
            raise WalletLimitExceededError(
                f"a wallet holds at most {Money(MAX_WALLET_BALANCE_MINOR, self.currency)}")
        return Wallet(self.currency, self.balance_minor + amount)

    def debit(self, amount_minor: int) -> Wallet:
        """Take a payment; refuses to go below zero (``insufficient_funds``)."""
        amount = _positive_amount(amount_minor)
        if amount > self.balance_minor:
            shortfall = amount - self.balance_minor
            raise InsufficientFundsError(
                f"the wallet holds {self.balance}, {Money(shortfall, self.currency)} short of "
                f"{Money(amount, self.currency)}", shortfall)
        return Wallet(self.currency, self.balance_minor - amount)


def auto_top_up_minor(wallet: Wallet, plan: Plan, pending_debit_minor: int = 0) -> int:
    """How much to top up now; 0 = nothing.

    When the balance after ``pending_debit_minor`` (a payment about to be taken, or 0) is below
    the plan's threshold, top up the plan's amount, or more if that is not enough to get back to
    the threshold (and to cover the pending debit). Never beyond the wallet limit.
    """
    require(plan.kind is PlanKind.PREPAID_WALLET, "auto top-up is for prepaid wallet plans")
    require(plan.currency == wallet.currency, "wallet and plan share a currency")
    require(pending_debit_minor >= 0, "a pending debit is not negative")
    threshold = plan.wallet_top_up_threshold_minor
    amount = plan.wallet_top_up_amount_minor
    if threshold is None or amount is None:
        return 0
    after = wallet.balance_minor - pending_debit_minor
    if after >= threshold:
        return 0
    top_up = max(amount, threshold - after)
    return min(top_up, MAX_WALLET_BALANCE_MINOR - wallet.balance_minor)


# -- fleet (post-paid) account --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetAccount:
    """A post-paid account: sessions are posted to it and paid on the monthly statement.

    ``outstanding_minor`` is everything posted and not yet paid (current statement and any
    unpaid earlier ones); a charge that would take it above the credit limit is refused.
    """

    currency: Currency
    credit_limit_minor: int
    outstanding_minor: int = 0

    def __post_init__(self) -> None:
        require(type(self.credit_limit_minor) is int and self.credit_limit_minor >= 0,
                "a credit limit is a non-negative int")
        require(type(self.outstanding_minor) is int and self.outstanding_minor >= 0,
                "an outstanding amount is a non-negative int")

    @staticmethod
    def for_plan(plan: Plan, outstanding_minor: int = 0) -> FleetAccount:
        limit = plan.credit_limit_minor
        require(plan.kind is PlanKind.FLEET and limit is not None,
                "a fleet account needs a fleet plan")
        return FleetAccount(plan.currency, limit or 0, outstanding_minor)

    @property
    def available_minor(self) -> int:
        return max(0, self.credit_limit_minor - self.outstanding_minor)

    def check_credit(self, amount_minor: int) -> None:
        """Raise ``credit_limit_exceeded`` unless ``amount_minor`` fits under the limit."""
        amount = _positive_amount(amount_minor)
        if amount > self.available_minor:
            raise CreditLimitExceededError(
                f"{Money(amount, self.currency)} exceeds the available credit of "
                f"{Money(self.available_minor, self.currency)}", self.available_minor)

    def charge(self, amount_minor: int) -> FleetAccount:
        self.check_credit(amount_minor)
        return dataclasses.replace(self, outstanding_minor=self.outstanding_minor + amount_minor)

    def settle(self, amount_minor: int) -> FleetAccount:
        """Record a statement payment; paying more than is owed is refused."""
        amount = _positive_amount(amount_minor)
        if amount > self.outstanding_minor:
            raise InvalidAmountError(
                f"{Money(amount, self.currency)} is more than the "
                f"{Money(self.outstanding_minor, self.currency)} owed")
        return dataclasses.replace(self, outstanding_minor=self.outstanding_minor - amount)
