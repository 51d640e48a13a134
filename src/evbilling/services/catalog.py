"""Plans, promotions and loyalty tiers in storage, and the driver's plan.

* Row <-> domain mapping: a plan's, promotion's or tier's rules live in a ``terms`` JSON column
  (decimals as exact strings, energies as integer milliwh, times as ISO 8601 in UTC) and are
  validated by the domain on every read and write (``Plan``, ``Promotion``, ``LoyaltyTier``).
* Plans are versioned: an edit publishes ``version + 1`` (``Plan.edited``) as a new
  ``plan_versions`` row and moves the ``plans`` row to it; a published version never changes,
  so a session or quote at time t is priced with the version in force at t (the newest created
  at or before t; before the first version, the first), like tariff versions.
* Loaders for the pricing pipeline (``services/quotes.py``): the driver's plan at an instant,
  its ``PlanUsage`` for the period from ``charging_sessions``, promotions in force and by code,
  redemption counts, loyalty tiers and the driver's rolling energy, session history.
* Use cases: create / edit plans, promotions and tiers; switch a driver's plan (proration by
  ``domain.plans.plan_change``, ``driver_plans`` rows: the old row ends, the new one starts).
* Every write to plans, promotions or tiers bumps the operator's catalog generation in the same
  transaction (``services/catalog_generation.py``): quotes read them from a per-process snapshot
  (``services/catalog_cache.py``) that is trusted only while the generation is unchanged.

Storage is reached through the Core schema on a connection the caller opened (one unit of
work per call); the rules are the domain's (docs/plans.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.documents import (
    is_periods_document,
    periods_document,
    periods_from_document,
)
from evbilling.adapters.ids import new_id
from evbilling.domain.cdrs import parse_cdr
from evbilling.domain.errors import CurrencyMismatchError, DomainError, InvalidDocumentError
from evbilling.domain.money import Currency, Money, to_scaled_int
from evbilling.domain.periods import (
    MS_PER_HOUR,
    ChargingPeriod,
    SessionFacts,
    epoch_ms,
    from_epoch_ms,
)
from evbilling.domain.plans import (
    BillingPeriod,
    ChangeEffective,
    Plan,
    PlanChange,
    PlanKind,
    PlanUsage,
    Subscription,
    period_bounds,
    period_share,
    plan_change,
)
from evbilling.domain.pricing import (
    PricedFee,
    price_plan_fee,
    session_energy_milliwh,
    session_start_ms,
)
from evbilling.domain.promotions import (
    MAX_PROMOTIONS_PER_CHARGE,
    Benefit,
    LoyaltyTier,
    Promotion,
    PromotionContext,
    PromotionKind,
    PromotionScope,
    Purpose,
    Stacking,
    normalize_code,
    tier_for,
    validate_tiers,
)
from evbilling.services.catalog_generation import bump_catalog_generation
from evbilling.services.tariff_selection import NoTariffInForceError, TariffInForce, version_at

# -- limits ---------------------------------------------------------------------------------------
#: Promotions an operator may keep (active or not); more is a configuration problem.
MAX_PROMOTIONS_PER_OPERATOR = 1_000
#: Plans read for one advice (the domain compares at most 100).
MAX_PLANS_PER_OPERATOR = 1_000
#: Sessions read for a loyalty window or an advice.
MAX_SESSIONS_READ = 10_000

#: The id of the implicit plan of a driver without one: the public tariff, nothing else.
LIST_PRICE_PLAN_ID = "list_price"


# -- errors ---------------------------------------------------------------------------------------
class NotFoundError(DomainError):
    code = "not_found"


class UnknownReferenceError(InvalidDocumentError):
    """A body names a record that does not exist for this operator; ``field`` names it."""

    code = "unknown_reference"


class UnknownPromoCodeError(DomainError):
    """No promotion of the operator has this code (counts as a failed guess)."""

    code = "unknown_promo_code"
    field = "promo_code"


class AlreadyExistsError(DomainError):
    code = "already_exists"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InUseError(DomainError):
    code = "in_use"


class PlanTariffCurrencyError(CurrencyMismatchError):
    """A plan's member / fallback tariff is in another currency; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StoredSessionError(DomainError):
    """A session to store has a duration that OCPI hours cannot carry exactly."""

    code = "invalid_cdr"


# -- small conversions ----------------------------------------------------------------------------
_WIDE = Context(prec=100)


def decimal_text(value: Decimal) -> str:
    """An exact decimal as a positional string without trailing zeros ("7.7", "100")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def kwh_text(energy_milliwh: int) -> str:
    return decimal_text(Decimal(energy_milliwh).scaleb(-6))


def kwh_to_milliwh(value: Decimal, field: str) -> int:
    try:
        return to_scaled_int(value, 6)
    except ValueError as exc:
        raise InvalidDocumentError(field, "at most 6 decimals (1 mWh)") from exc


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def _at(value: object) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _dec_text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# -- plans: mapping -------------------------------------------------------------------------------
_PLAN_TERMS = ("period", "fee_minor", "fee_vat_percent", "included_energy_milliwh",
               "member_tariff_id", "fair_use_cap_milliwh", "fallback_tariff_id",
               "waive_flat_fee", "wallet_top_up_threshold_minor", "wallet_top_up_amount_minor",
               "credit_limit_minor", "promotions_eligible")


def plan_terms(plan: Plan) -> dict[str, Any]:
    """The ``terms`` JSON of a plan: every rule except identity, name, active and version."""
    terms: dict[str, Any] = {name: getattr(plan, name) for name in _PLAN_TERMS}
    terms["period"] = plan.period.value
    terms["fee_vat_percent"] = _dec_text(plan.fee_vat_percent)
    return terms


def plan_from_terms(*, plan_id: str, operator_id: str, kind: str, name: str, currency: str,
                    terms: Mapping[str, Any], active: bool, version: int) -> Plan:
    values = {name: terms[name] for name in _PLAN_TERMS if name in terms}
    values["period"] = BillingPeriod(values.get("period", "month"))
    values["fee_vat_percent"] = _dec(values.get("fee_vat_percent"))
    return Plan(id=plan_id, operator_id=operator_id, kind=PlanKind(kind), name=name,
                currency=Currency.of(currency), active=bool(active), version=int(version),
                **values)


def _plan_from_row(row: Any) -> Plan:
    return plan_from_terms(plan_id=row.id, operator_id=row.operator_id, kind=row.kind,
                           name=row.name, currency=row.currency, terms=row.terms,
                           active=row.active, version=row.version)


@dataclass(frozen=True, slots=True)
class PlanRecord:
    plan: Plan
    created_at: dt.datetime  # of the plan (version 1)
    version_created_at: dt.datetime  # of this version


def list_price_plan(operator_id: str, currency: Currency | str) -> Plan:
    """The implicit plan of a driver without one (or a quote without a driver): list prices."""
    return Plan.pay_per_use(LIST_PRICE_PLAN_ID, operator_id, "Pay as you go (list price)",
                            currency)


# -- plans: loaders -------------------------------------------------------------------------------
def operator_currency(conn: Connection, operator_id: str) -> str:
    """The operator's currency: the default of its plans and promotions."""
    return str(conn.execute(select(s.operators.c.currency).where(
        s.operators.c.id == operator_id)).scalar_one())


def _plan_row(conn: Connection, operator_id: str, plan_id: str) -> Any:
    row = conn.execute(select(s.plans).where(s.plans.c.id == plan_id,
                                             s.plans.c.operator_id == operator_id)).first()
    if row is None:
        raise NotFoundError(f"no plan {plan_id!r}")
    return row


def load_plan(conn: Connection, operator_id: str, plan_id: str) -> Plan:
    """The current version of a plan (``not_found`` for another operator's)."""
    return _plan_from_row(_plan_row(conn, operator_id, plan_id))


def load_plan_record(conn: Connection, operator_id: str, plan_id: str) -> PlanRecord:
    row = _plan_row(conn, operator_id, plan_id)
    version_at = conn.execute(select(s.plan_versions.c.created_at).where(
        s.plan_versions.c.plan_id == plan_id,
        s.plan_versions.c.version == row.version)).scalar_one()
    return PlanRecord(_plan_from_row(row), _aware(row.created_at), _aware(version_at))


def load_plan_at(conn: Connection, operator_id: str, plan_id: str, at: dt.datetime) -> Plan:
    """The version of a plan in force at ``at``: the newest created at or before it (before the
    first version: the first)."""
    plan = _plan_row(conn, operator_id, plan_id)
    v = s.plan_versions.c
    row = conn.execute(select(s.plan_versions).where(v.plan_id == plan_id, v.created_at <= at)
                       .order_by(v.version.desc()).limit(1)).first()
    if row is None:
        row = conn.execute(select(s.plan_versions).where(v.plan_id == plan_id)
                           .order_by(v.version).limit(1)).one()
    return plan_from_terms(plan_id=plan.id, operator_id=plan.operator_id, kind=plan.kind,
                           name=row.name, currency=plan.currency, terms=row.terms,
                           active=row.active, version=row.version)


def list_plans(conn: Connection, operator_id: str, *, limit: int, starting_after: str | None,
               kind: str | None = None, active: bool | None = None
               ) -> tuple[list[PlanRecord], bool]:
    c = s.plans.c
    conditions = [c.operator_id == operator_id]
    if kind is not None:
        conditions.append(c.kind == kind)
    if active is not None:
        conditions.append(c.active == active)
    if starting_after:
        conditions.append(c.id > starting_after)
    rows = conn.execute(select(s.plans, s.plan_versions.c.created_at.label("version_at"))
                        .join(s.plan_versions, (s.plan_versions.c.plan_id == c.id)
                              & (s.plan_versions.c.version == c.version))
                        .where(*conditions).order_by(c.id).limit(limit + 1)).fetchall()
    records = [PlanRecord(_plan_from_row(r), _aware(r.created_at), _aware(r.version_at))
               for r in rows[:limit]]
    return records, len(rows) > limit


@dataclass(frozen=True, slots=True)
class PlanVersionRecord:
    plan: Plan
    created_at: dt.datetime


def plan_versions(conn: Connection, operator_id: str, plan_id: str) -> list[PlanVersionRecord]:
    """Every published version of a plan, newest first."""
    plan = _plan_row(conn, operator_id, plan_id)
    v = s.plan_versions.c
    rows = conn.execute(select(s.plan_versions).where(v.plan_id == plan_id)
                        .order_by(v.version.desc())).fetchall()
    return [PlanVersionRecord(plan_from_terms(
        plan_id=plan.id, operator_id=plan.operator_id, kind=plan.kind, name=r.name,
        currency=plan.currency, terms=r.terms, active=r.active, version=r.version),
        _aware(r.created_at)) for r in rows]


def offered_plans(conn: Connection, operator_id: str, at: dt.datetime) -> list[Plan]:
    """Every plan of the operator as in force at ``at`` (active or not), ordered by id."""
    ids = conn.execute(select(s.plans.c.id).where(s.plans.c.operator_id == operator_id)
                       .order_by(s.plans.c.id).limit(MAX_PLANS_PER_OPERATOR)).scalars().all()
    return [load_plan_at(conn, operator_id, plan_id, at) for plan_id in ids]


# -- plans: use cases -----------------------------------------------------------------------------
def _check_plan_tariffs(conn: Connection, plan: Plan) -> None:
    """The member / fallback tariff must be one of the operator's, in the plan's currency."""
    for field in ("member_tariff_id", "fallback_tariff_id"):
        tariff_id = getattr(plan, field)
        if tariff_id is None:
            continue
        row = conn.execute(select(s.tariffs).where(
            s.tariffs.c.id == tariff_id, s.tariffs.c.operator_id == plan.operator_id)).first()
        if row is None:
            raise UnknownReferenceError(field, f"no such tariff: {tariff_id!r}")
        if row.currency != plan.currency.code:
            raise PlanTariffCurrencyError(field, f"tariff {tariff_id} is in {row.currency}, "
                                          f"the plan in {plan.currency.code}")


def _insert_version(conn: Connection, plan: Plan, at: dt.datetime) -> None:
    conn.execute(insert(s.plan_versions).values(
        id=new_id("plv"), operator_id=plan.operator_id, plan_id=plan.id, version=plan.version,
        name=plan.name, terms=plan_terms(plan), active=plan.active, created_at=at))


def create_plan(conn: Connection, operator_id: str, *, kind: PlanKind, name: str,
                currency: str, options: Mapping[str, Any], at: dt.datetime) -> PlanRecord:
    """Validate (domain) and store version 1 of a new plan."""
    plan_id = new_id("plan")
    plan = Plan(plan_id, operator_id, kind, name, Currency.of(currency), **options)
    _check_plan_tariffs(conn, plan)
    conn.execute(insert(s.plans).values(
        id=plan.id, operator_id=operator_id, kind=plan.kind.value, name=plan.name,
        currency=plan.currency.code, terms=plan_terms(plan), active=plan.active,
        version=plan.version, created_at=at))
    _insert_version(conn, plan, at)
    bump_catalog_generation(conn, operator_id)
    return PlanRecord(plan, at, at)


def edit_plan(conn: Connection, operator_id: str, plan_id: str, changes: Mapping[str, Any],
              at: dt.datetime) -> PlanRecord:
    """Publish the next version of a plan (``Plan.edited``); earlier versions stay as they
    were. No changes: the plan as it is, no new version."""
    row = conn.execute(select(s.plans).where(s.plans.c.id == plan_id,
                                             s.plans.c.operator_id == operator_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no plan {plan_id!r}")
    current = _plan_from_row(row)
    if not changes:
        return load_plan_record(conn, operator_id, plan_id)
    plan = current.edited(**changes)
    _check_plan_tariffs(conn, plan)
    conn.execute(update(s.plans).where(s.plans.c.id == plan_id).values(
        name=plan.name, terms=plan_terms(plan), active=plan.active, version=plan.version))
    _insert_version(conn, plan, at)
    bump_catalog_generation(conn, operator_id)
    return PlanRecord(plan, _aware(row.created_at), at)


# -- the driver's plan ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DriverRecord:
    id: str
    operator_id: str
    time_zone: str


def load_driver(conn: Connection, operator_id: str, driver_id: str, *,
                for_update: bool = False) -> DriverRecord:
    query = select(s.drivers).where(s.drivers.c.id == driver_id,
                                    s.drivers.c.operator_id == operator_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFoundError(f"no driver {driver_id!r}")
    return DriverRecord(row.id, row.operator_id, row.time_zone)


@dataclass(frozen=True, slots=True)
class DriverPlanRow:
    id: str
    plan_id: str
    starts_at: dt.datetime
    ends_at: dt.datetime | None


def _driver_plan(row: Any) -> DriverPlanRow:
    return DriverPlanRow(row.id, row.plan_id, _aware(row.starts_at),
                         None if row.ends_at is None else _aware(row.ends_at))


def driver_plan_at(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime
                   ) -> DriverPlanRow | None:
    """The ``driver_plans`` row in force at ``at`` (starts_at <= at < ends_at)."""
    c = s.driver_plans.c
    row = conn.execute(select(s.driver_plans).where(
        c.operator_id == operator_id, c.driver_id == driver_id, c.starts_at <= at,
        or_(c.ends_at.is_(None), c.ends_at > at)).order_by(c.starts_at.desc()).limit(1)).first()
    return None if row is None else _driver_plan(row)


def pending_driver_plan(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime
                        ) -> DriverPlanRow | None:
    """A switch that takes effect after ``at`` (a NEXT_PERIOD change), if any."""
    c = s.driver_plans.c
    row = conn.execute(select(s.driver_plans).where(
        c.operator_id == operator_id, c.driver_id == driver_id, c.starts_at > at)
        .order_by(c.starts_at).limit(1)).first()
    return None if row is None else _driver_plan(row)


def plan_usage(conn: Connection, driver: DriverRecord, plan: Plan, driver_plan: DriverPlanRow,
               at: dt.datetime) -> PlanUsage:
    """The driver's usage of ``plan`` in the billing period containing ``at``, as it is at
    ``at``: the allowance of the period (pro rata by days when the plan started during it, the
    rule of ``plan_change``) and the energy of the driver's sessions that started in the period,
    since the plan started, and before ``at``."""
    start, end = period_bounds(plan.period, at, driver.time_zone)
    allowance = plan.energy_allowance_milliwh
    if driver_plan.starts_at > start:
        allowance = period_share(plan.period, driver_plan.starts_at, driver.time_zone
                                 ).split(allowance)
    c = s.charging_sessions.c
    used = conn.execute(select(func.coalesce(func.sum(c.energy_milliwh), 0)).where(
        c.operator_id == driver.operator_id, c.driver_id == driver.id,
        c.started_at >= max(start, driver_plan.starts_at), c.started_at < at,
        c.energy_milliwh > 0)).scalar_one()
    return PlanUsage(plan.id, start, end, allowance, int(used))


@dataclass(frozen=True, slots=True)
class DriverFacts:
    """What a quote needs about one driver at an instant, read in one query
    (``driver_facts``)."""

    driver: DriverRecord
    plan: DriverPlanRow | None  # the driver_plans row in force (``driver_plan_at``)
    sessions_before: int  # sessions that started before the instant (first-N promotions)
    energy_milliwh_since: int  # energy of sessions started in [since, at), negative as 0


_D = s.drivers.c
_DP = s.driver_plans.c
_CS = s.charging_sessions.c
_DRIVER_FACTS = (
    select(
        _D.id, _D.operator_id, _D.time_zone,
        _DP.id.label("driver_plan_id"), _DP.plan_id, _DP.starts_at, _DP.ends_at,
        select(func.count()).where(
            _CS.operator_id == bindparam("operator_id"), _CS.driver_id == bindparam("driver_id"),
            _CS.started_at < bindparam("at")).scalar_subquery().label("sessions_before"),
        select(func.coalesce(func.sum(case((_CS.energy_milliwh > 0, _CS.energy_milliwh),
                                           else_=0)), 0)).where(
            _CS.operator_id == bindparam("operator_id"), _CS.driver_id == bindparam("driver_id"),
            _CS.started_at >= bindparam("since"), _CS.started_at < bindparam("at"),
        ).scalar_subquery().label("energy_since"))
    .select_from(s.drivers.outerjoin(s.driver_plans, and_(
        _DP.driver_id == _D.id, _DP.operator_id == _D.operator_id,
        _DP.starts_at <= bindparam("at"),
        or_(_DP.ends_at.is_(None), _DP.ends_at > bindparam("at")))))
    .where(_D.id == bindparam("driver_id"), _D.operator_id == bindparam("operator_id"))
    .order_by(_DP.starts_at.desc()).limit(1))


def driver_facts(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime,
                 since: dt.datetime | None = None) -> DriverFacts:
    """The driver (``not_found`` for another operator's), their plan row at ``at``, how many
    sessions they started before ``at`` and the energy of those started in [since, at) (the
    loyalty window; 0 without ``since``): ``load_driver``, ``driver_plan_at``, the count of
    ``promotion_context`` and the sum of ``loyalty_standing`` in one round trip."""
    row = conn.execute(_DRIVER_FACTS, {"operator_id": operator_id, "driver_id": driver_id,
                                       "at": at, "since": at if since is None else since}
                       ).first()
    if row is None:
        raise NotFoundError(f"no driver {driver_id!r}")
    plan = None if row.driver_plan_id is None else DriverPlanRow(
        row.driver_plan_id, row.plan_id, _aware(row.starts_at),
        None if row.ends_at is None else _aware(row.ends_at))
    return DriverFacts(DriverRecord(row.id, row.operator_id, row.time_zone), plan,
                       int(row.sessions_before), int(row.energy_since))


@dataclass(frozen=True, slots=True)
class DriverPlanView:
    driver_id: str
    time_zone: str
    plan: Plan | None
    current: DriverPlanRow | None
    pending: DriverPlanRow | None
    usage: PlanUsage | None


def driver_plan_view(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime
                     ) -> DriverPlanView:
    driver = load_driver(conn, operator_id, driver_id)
    current = driver_plan_at(conn, operator_id, driver_id, at)
    plan = usage = None
    if current is not None:
        plan = load_plan_at(conn, operator_id, current.plan_id, at)
        usage = plan_usage(conn, driver, plan, current, at)
    return DriverPlanView(driver.id, driver.time_zone, plan, current,
                          pending_driver_plan(conn, operator_id, driver_id, at), usage)


@dataclass(frozen=True, slots=True)
class PlanSwitch:
    change: PlanChange
    from_plan: Plan | None  # None: the driver had no plan (list prices)
    to_plan: Plan
    credit_incl_vat: Money
    charge: PricedFee  # the new plan's (pro rata) fee, with VAT and plan-fee promotions


def switch_plan(conn: Connection, operator_id: str, driver_id: str, plan_id: str,
                effective: ChangeEffective, at: dt.datetime) -> PlanSwitch:
    """Switch a driver's plan NOW or at the end of the current period (``plan_change``).

    A ``plan_id`` the operator does not have is an ``UnknownReferenceError`` (the driver's
    absence is the ``NotFoundError``). The driver row is locked first (``FOR UPDATE``; on
    SQLite the write transaction is already exclusive). A pending NEXT_PERIOD switch is
    replaced. NOW: the current row ends at ``at``
    and the new one starts there; NEXT_PERIOD: the current row ends at the period end, where the
    new one starts. Without a current plan the driver is on list prices (no fee), so the new
    plan's pro rata fee is charged and nothing credited.
    """
    driver = load_driver(conn, operator_id, driver_id, for_update=True)
    try:
        new_plan = load_plan(conn, operator_id, plan_id)
    except NotFoundError as exc:  # 404 is for the driver of the path, not a body field
        raise UnknownReferenceError("plan_id", f"no such plan: {plan_id!r}") from exc
    current = driver_plan_at(conn, operator_id, driver_id, at)
    old_plan = (load_plan_at(conn, operator_id, current.plan_id, at) if current is not None
                else list_price_plan(operator_id, new_plan.currency))
    subscription = Subscription(driver_id, old_plan, driver.time_zone,
                                current.starts_at if current is not None else at)
    change = plan_change(subscription, new_plan, at, effective)

    c = s.driver_plans.c
    conn.execute(delete(s.driver_plans).where(c.operator_id == operator_id,
                                              c.driver_id == driver_id, c.starts_at > at))
    if current is not None:
        conn.execute(update(s.driver_plans).where(c.id == current.id)
                     .values(ends_at=change.effective_at))
    conn.execute(insert(s.driver_plans).values(
        id=new_id("dpl"), operator_id=operator_id, driver_id=driver_id, plan_id=new_plan.id,
        starts_at=change.effective_at, ends_at=None, created_at=at))

    fee_promotions = [p for p in automatic_promotions(conn, operator_id, change.effective_at,
                                                      new_plan.currency)
                      if p.benefit.purpose is Purpose.PLAN_FEE]
    context = PromotionContext(driver_id, new_plan.id)
    charge = price_plan_fee(new_plan, at=change.effective_at, time_zone=driver.time_zone,
                            fee_minor=change.charge_minor, promotions=fee_promotions,
                            promotion_context=context,
                            description=f"{new_plan.name} fee, first period "
                                        f"({change.new_share.days_remaining} of "
                                        f"{change.new_share.days_in_period} days)")
    return PlanSwitch(change, old_plan if current is not None else None, new_plan,
                      old_plan.fee_incl_vat(change.credit_minor), charge)


# -- promotions -----------------------------------------------------------------------------------
def benefit_json(benefit: Benefit) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": benefit.kind.value}
    if benefit.percent is not None:
        out["percent"] = decimal_text(benefit.percent)
    for name in ("amount_minor", "free_energy_milliwh", "free_idle_minutes"):
        if getattr(benefit, name) is not None:
            out[name] = getattr(benefit, name)
    return out


def benefit_from_json(data: Mapping[str, Any]) -> Benefit:
    return Benefit(PromotionKind(data["kind"]), percent=_dec(data.get("percent")),
                   amount_minor=data.get("amount_minor"),
                   free_energy_milliwh=data.get("free_energy_milliwh"),
                   free_idle_minutes=data.get("free_idle_minutes"))


def _time_text(value: dt.time | None) -> str | None:
    return None if value is None else value.strftime("%H:%M")


def promotion_terms(p: Promotion) -> dict[str, Any]:
    return {
        "currency": p.currency.code,
        "benefit": benefit_json(p.benefit),
        "starts_at": _iso(p.starts_at),
        "ends_at": _iso(p.ends_at),
        "scope": {"site_ids": sorted(p.scope.site_ids), "plan_ids": sorted(p.scope.plan_ids),
                  "local_start_time": _time_text(p.scope.local_start_time),
                  "local_end_time": _time_text(p.scope.local_end_time)},
        "redemptions_max_total": p.redemptions_max_total,
        "redemptions_max_per_driver": p.redemptions_max_per_driver,
        "first_n_sessions": p.first_n_sessions,
        "min_spend_minor": p.min_spend_minor,
        "stacking": p.stacking.value,
        "priority": p.priority,
    }


def _tod(value: object) -> dt.time | None:
    return None if value is None else dt.time.fromisoformat(str(value))


def promotion_from_row(row: Any) -> Promotion:
    t = row.terms
    scope = t.get("scope") or {}
    return Promotion(
        id=row.id, operator_id=row.operator_id, name=row.name,
        currency=Currency.of(t["currency"]), benefit=benefit_from_json(t["benefit"]),
        starts_at=_aware(dt.datetime.fromisoformat(t["starts_at"])),
        ends_at=_at(t.get("ends_at")), code=row.code,
        scope=PromotionScope(frozenset(scope.get("site_ids") or ()),
                             frozenset(scope.get("plan_ids") or ()),
                             _tod(scope.get("local_start_time")),
                             _tod(scope.get("local_end_time"))),
        redemptions_max_total=t.get("redemptions_max_total"),
        redemptions_max_per_driver=t.get("redemptions_max_per_driver"),
        first_n_sessions=t.get("first_n_sessions"), min_spend_minor=t.get("min_spend_minor"),
        stacking=Stacking(t.get("stacking", "stackable")), priority=int(t.get("priority", 100)),
        active=bool(row.active))


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    promotion: Promotion
    created_at: dt.datetime
    redemptions: int


def _redemptions(conn: Connection, promotion_ids: Sequence[str], driver_id: str | None = None
                 ) -> dict[str, int]:
    if not promotion_ids:
        return {}
    c = s.promotion_redemptions.c
    query = select(c.promotion_id, func.count()).where(c.promotion_id.in_(promotion_ids))
    if driver_id is not None:
        query = query.where(c.driver_id == driver_id)
    return {pid: int(n) for pid, n in conn.execute(query.group_by(c.promotion_id)).all()}


_R = s.promotion_redemptions.c
_REDEMPTION_COUNTS = select(
    _R.promotion_id, func.count().label("total"),
    func.sum(case((_R.driver_id == bindparam("driver_id"), 1), else_=0)).label("driver"),
).where(_R.promotion_id.in_(bindparam("promotion_ids", expanding=True))
        ).group_by(_R.promotion_id)


def redemption_counts(conn: Connection, promotion_ids: Iterable[str], driver_id: str | None
                      ) -> tuple[dict[str, int], dict[str, int]]:
    """Redemptions of each promotion: in total, and by ``driver_id`` (empty without one), in
    one query; promotions never redeemed are left out (they count 0)."""
    ids = sorted(set(promotion_ids))
    if not ids:
        return {}, {}
    total: dict[str, int] = {}
    by_driver: dict[str, int] = {}
    for row in conn.execute(_REDEMPTION_COUNTS, {"promotion_ids": ids,
                                                 "driver_id": driver_id or ""}):
        total[row.promotion_id] = int(row.total)
        if driver_id is not None and row.driver:
            by_driver[row.promotion_id] = int(row.driver)
    return total, by_driver


def _promotion_record(conn: Connection, row: Any) -> PromotionRecord:
    return PromotionRecord(promotion_from_row(row), _aware(row.created_at),
                           _redemptions(conn, [row.id]).get(row.id, 0))


def _promotion_row(conn: Connection, operator_id: str, promotion_id: str, *,
                   for_update: bool = False) -> Any:
    query = select(s.promotions).where(s.promotions.c.id == promotion_id,
                                       s.promotions.c.operator_id == operator_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFoundError(f"no promotion {promotion_id!r}")
    return row


def load_promotion(conn: Connection, operator_id: str, promotion_id: str) -> PromotionRecord:
    return _promotion_record(conn, _promotion_row(conn, operator_id, promotion_id))


def list_promotions(conn: Connection, operator_id: str, *, limit: int,
                    starting_after: str | None, code: str | None = None,
                    active: bool | None = None) -> tuple[list[PromotionRecord], bool]:
    c = s.promotions.c
    conditions = [c.operator_id == operator_id]
    if code is not None:
        conditions.append(c.code == normalize_code(code))
    if active is not None:
        conditions.append(c.active == active)
    if starting_after:
        conditions.append(c.id > starting_after)
    rows = conn.execute(select(s.promotions).where(*conditions).order_by(c.id)
                        .limit(limit + 1)).fetchall()
    counts = _redemptions(conn, [r.id for r in rows[:limit]])
    return ([PromotionRecord(promotion_from_row(r), _aware(r.created_at), counts.get(r.id, 0))
             for r in rows[:limit]], len(rows) > limit)


def _check_scope_references(conn: Connection, p: Promotion) -> None:
    for field, table, ids in (("scope.site_ids", s.sites, p.scope.site_ids),
                              ("scope.plan_ids", s.plans, p.scope.plan_ids)):
        if not ids:
            continue
        found = set(conn.execute(select(table.c.id).where(
            table.c.id.in_(sorted(ids)), table.c.operator_id == p.operator_id)).scalars())
        missing = sorted(set(ids) - found)
        if missing:
            raise UnknownReferenceError(field, f"no such record: {missing[0]!r}")


def _code_taken(conn: Connection, p: Promotion) -> None:
    if p.code is None:
        return
    c = s.promotions.c
    other = conn.execute(select(c.id).where(c.operator_id == p.operator_id, c.code == p.code,
                                            c.id != p.id)).first()
    if other is not None:
        raise AlreadyExistsError(f"code: another promotion has the code {p.code}", "code")


def _store_promotion(conn: Connection, p: Promotion, *, creating: bool,
                     at: dt.datetime) -> None:
    _check_scope_references(conn, p)
    _code_taken(conn, p)
    values = {"name": p.name, "code": p.code, "terms": promotion_terms(p), "active": p.active}
    try:
        if creating:
            conn.execute(insert(s.promotions).values(id=p.id, operator_id=p.operator_id,
                                                     created_at=at, **values))
        else:
            conn.execute(update(s.promotions).where(s.promotions.c.id == p.id).values(**values))
    except IntegrityError as exc:  # a concurrent writer took the code first
        raise AlreadyExistsError(f"code: another promotion has the code {p.code}",
                                 "code") from exc
    bump_catalog_generation(conn, p.operator_id)


def create_promotion(conn: Connection, operator_id: str, fields: Mapping[str, Any],
                     at: dt.datetime) -> PromotionRecord:
    """Validate (domain) and store a promotion; codes are unique per operator (compared
    upper-case; the database's unique constraint backs the check)."""
    values = dict(fields)
    if values.get("code") is not None:
        values["code"] = normalize_code(values["code"])
    promotion = Promotion(id=new_id("promo"), operator_id=operator_id, **values)
    _store_promotion(conn, promotion, creating=True, at=at)
    return PromotionRecord(promotion, at, 0)


def edit_promotion(conn: Connection, operator_id: str, promotion_id: str,
                   changes: Mapping[str, Any]) -> PromotionRecord:
    row = _promotion_row(conn, operator_id, promotion_id, for_update=True)
    values = dict(changes)
    if values.get("code") is not None:
        values["code"] = normalize_code(values["code"])
    promotion = dataclasses.replace(promotion_from_row(row), **values)
    _store_promotion(conn, promotion, creating=False, at=_aware(row.created_at))
    return load_promotion(conn, operator_id, promotion_id)


def delete_promotion(conn: Connection, operator_id: str, promotion_id: str) -> None:
    """Delete a promotion never redeemed; one with redemptions is ``in_use`` (switch it off
    with ``active = false`` instead)."""
    _promotion_row(conn, operator_id, promotion_id, for_update=True)
    if _redemptions(conn, [promotion_id]).get(promotion_id, 0):
        raise InUseError(f"promotion {promotion_id!r} was redeemed; set active to false")
    conn.execute(delete(s.promotions).where(s.promotions.c.id == promotion_id))
    bump_catalog_generation(conn, operator_id)


def _operator_promotions(conn: Connection, operator_id: str, *conditions: Any) -> list[Any]:
    c = s.promotions.c
    return list(conn.execute(select(s.promotions).where(c.operator_id == operator_id,
                                                        *conditions)
                             .order_by(c.id).limit(MAX_PROMOTIONS_PER_OPERATOR)).fetchall())


def automatic_promotions(conn: Connection, operator_id: str, at: dt.datetime,
                         currency: Currency) -> list[Promotion]:
    """Active automatic promotions in the charge's currency whose window contains ``at``,
    in priority order, at most ``MAX_PROMOTIONS_PER_CHARGE`` (the rest of the scope, caps and
    minimum spend are ``check_promotion``'s, so their refusals are reported)."""
    c = s.promotions.c
    found = [promotion_from_row(r) for r in _operator_promotions(
        conn, operator_id, c.code.is_(None), c.active.is_(True))]
    in_force = [p for p in found if p.currency == currency and p.starts_at <= at
                and (p.ends_at is None or at < p.ends_at)]
    return sorted(in_force, key=Promotion.order_key)[:MAX_PROMOTIONS_PER_CHARGE]


def promotion_by_code(conn: Connection, operator_id: str, code: str) -> Promotion:
    """The promotion with this code (any state: its refusal says why it does not apply), or
    ``unknown_promo_code``."""
    c = s.promotions.c
    row = conn.execute(select(s.promotions).where(
        c.operator_id == operator_id, c.code == normalize_code(code))).first()
    if row is None:
        raise UnknownPromoCodeError("no promotion has this code")
    return promotion_from_row(row)


def promotion_context(conn: Connection, *, operator_id: str, driver_id: str | None,
                      plan_id: str, site_id: str | None, promo_code: str | None,
                      at: dt.datetime, promotions: Iterable[Promotion]) -> PromotionContext:
    """Who is charging and their history, as of ``at``: sessions before it, and redemption
    counts (which never include the charge being priced, as the domain asks)."""
    ids = sorted({p.id for p in promotions})
    sessions_before = 0
    by_driver: dict[str, int] = {}
    if driver_id is not None:
        c = s.charging_sessions.c
        sessions_before = int(conn.execute(select(func.count()).where(
            c.operator_id == operator_id, c.driver_id == driver_id, c.started_at < at)
        ).scalar_one())
        by_driver = _redemptions(conn, ids, driver_id)
    return PromotionContext(driver_id or "", plan_id, site_id, promo_code, sessions_before,
                            _redemptions(conn, ids), by_driver)


# -- loyalty tiers --------------------------------------------------------------------------------
def tier_terms(tier: LoyaltyTier) -> dict[str, Any]:
    return {"min_energy_milliwh": tier.min_energy_milliwh, "window_days": tier.window_days,
            "benefit": None if tier.benefit is None else benefit_json(tier.benefit)}


def tier_from_row(row: Any) -> LoyaltyTier:
    t = row.terms
    benefit = t.get("benefit")
    return LoyaltyTier(row.name, int(t["min_energy_milliwh"]),
                       None if benefit is None else benefit_from_json(benefit),
                       int(t.get("window_days", 90)))


@dataclass(frozen=True, slots=True)
class TierRecord:
    id: str
    tier: LoyaltyTier
    created_at: dt.datetime


def _tier_rows(conn: Connection, operator_id: str) -> list[Any]:
    c = s.loyalty_tiers.c
    return list(conn.execute(select(s.loyalty_tiers).where(c.operator_id == operator_id)
                             .order_by(c.id)).fetchall())


def loyalty_tiers(conn: Connection, operator_id: str) -> list[LoyaltyTier]:
    return [tier_from_row(r) for r in _tier_rows(conn, operator_id)]


def list_tiers(conn: Connection, operator_id: str, *, limit: int, starting_after: str | None
               ) -> tuple[list[TierRecord], bool]:
    c = s.loyalty_tiers.c
    conditions = [c.operator_id == operator_id]
    if starting_after:
        conditions.append(c.id > starting_after)
    rows = conn.execute(select(s.loyalty_tiers).where(*conditions).order_by(c.id)
                        .limit(limit + 1)).fetchall()
    return ([TierRecord(r.id, tier_from_row(r), _aware(r.created_at)) for r in rows[:limit]],
            len(rows) > limit)


def load_tier(conn: Connection, operator_id: str, tier_id: str) -> TierRecord:
    row = conn.execute(select(s.loyalty_tiers).where(
        s.loyalty_tiers.c.id == tier_id, s.loyalty_tiers.c.operator_id == operator_id)).first()
    if row is None:
        raise NotFoundError(f"no loyalty tier {tier_id!r}")
    return TierRecord(row.id, tier_from_row(row), _aware(row.created_at))


def _lock_operator(conn: Connection, operator_id: str) -> None:
    """Serialise changes to the operator's tier programme (validated as a whole)."""
    conn.execute(select(s.operators.c.id).where(s.operators.c.id == operator_id)
                 .with_for_update()).first()


def save_tier(conn: Connection, operator_id: str, tier_id: str | None,
              fields: Mapping[str, Any], at: dt.datetime) -> TierRecord:
    """Create (``tier_id`` None) or change a tier; the programme is validated as a whole
    (``validate_tiers``: one window, distinct names and thresholds, at most 32 tiers)."""
    _lock_operator(conn, operator_id)
    rows = _tier_rows(conn, operator_id)
    others = [tier_from_row(r) for r in rows if r.id != tier_id]
    if tier_id is None:
        tier = LoyaltyTier(**fields)
        created_at = at
    else:
        row = next((r for r in rows if r.id == tier_id), None)
        if row is None:
            raise NotFoundError(f"no loyalty tier {tier_id!r}")
        tier = dataclasses.replace(tier_from_row(row), **fields)
        created_at = _aware(row.created_at)
    validate_tiers([*others, tier])
    if tier_id is None:
        tier_id = new_id("tier")
        conn.execute(insert(s.loyalty_tiers).values(id=tier_id, operator_id=operator_id,
                                                    name=tier.name, terms=tier_terms(tier),
                                                    created_at=at))
    else:
        conn.execute(update(s.loyalty_tiers).where(s.loyalty_tiers.c.id == tier_id)
                     .values(name=tier.name, terms=tier_terms(tier)))
    bump_catalog_generation(conn, operator_id)
    return TierRecord(tier_id, tier, created_at)


def delete_tier(conn: Connection, operator_id: str, tier_id: str) -> None:
    result = conn.execute(delete(s.loyalty_tiers).where(
        s.loyalty_tiers.c.id == tier_id, s.loyalty_tiers.c.operator_id == operator_id))
    if result.rowcount == 0:
        raise NotFoundError(f"no loyalty tier {tier_id!r}")
    bump_catalog_generation(conn, operator_id)


@dataclass(frozen=True, slots=True)
class LoyaltyStanding:
    tier: LoyaltyTier | None
    energy_milliwh: int
    window_days: int


def loyalty_standing(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime,
                     tiers: Sequence[LoyaltyTier]) -> LoyaltyStanding | None:
    """The driver's tier at ``at``: energy of sessions that started in the window before it
    (``rolling_energy_milliwh``), the highest tier reached (``tier_for``). None: no programme."""
    if not tiers:
        return None
    window = tiers[0].window_days
    c = s.charging_sessions.c
    # ``rolling_energy_milliwh`` as one aggregate over the (operator, driver, started_at)
    # index: the window [at - window, at), negative energy counting 0. A session start runs
    # this, so its cost must not grow with the driver's history (tests compare the two).
    energy = int(conn.execute(select(func.coalesce(func.sum(
        case((c.energy_milliwh > 0, c.energy_milliwh), else_=0)), 0)).where(
        c.operator_id == operator_id, c.driver_id == driver_id,
        c.started_at >= at - dt.timedelta(days=window), c.started_at < at)).scalar_one())
    return LoyaltyStanding(tier_for(energy, tiers), energy, window)


# -- tariffs for plans ----------------------------------------------------------------------------
def tariff_version_at(conn: Connection, operator_id: str, tariff_id: str, at: dt.datetime
                      ) -> TariffInForce:
    """The version of a tariff in force at ``at`` (the rule lives in ``tariff_selection``)."""
    try:
        return version_at(conn, operator_id, tariff_id, at)
    except NoTariffInForceError as exc:
        raise NotFoundError(f"no tariff {tariff_id!r}") from exc


# -- charging sessions ----------------------------------------------------------------------------
def _hours(ms: int) -> str:
    hours = _WIDE.divide(Decimal(ms), Decimal(MS_PER_HOUR))
    if _WIDE.multiply(hours, Decimal(MS_PER_HOUR)) != ms:
        raise StoredSessionError(f"{ms} ms is not a whole number of ms in decimal hours")
    return decimal_text(hours)


def ocpi_charging_periods(periods: Sequence[ChargingPeriod]) -> list[dict[str, Any]]:
    """Periods as OCPI 2.2.1 ``ChargingPeriod`` JSON (volumes as exact decimal strings: kWh,
    hours), the form ``charging_sessions.periods`` holds. Durations must be exact in decimal
    hours (multiples of 9 ms; every multiple of 36 s is)."""
    out: list[dict[str, Any]] = []
    for p in periods:
        dims: list[dict[str, str]] = []
        if p.energy_milliwh:
            dims.append({"type": "ENERGY", "volume": kwh_text(p.energy_milliwh)})
        for kind, ms in (("TIME", p.time_ms), ("PARKING_TIME", p.parking_ms),
                         ("RESERVATION_TIME", p.reservation_ms)):
            if ms:
                dims.append({"type": kind, "volume": _hours(ms)})
        if not dims:
            dims.append({"type": "TIME", "volume": "0"})
        start = _iso(p.start_at)
        out.append({"start_date_time": (start or "").replace("+00:00", "Z"), "dimensions": dims})
    return out


def store_session(conn: Connection, *, operator_id: str, site_id: str, driver_id: str | None,
                  plan_id: str | None, currency: str, facts: SessionFacts,
                  at: dt.datetime, connector_id: str | None = None) -> str:
    """Record a finished session's facts in ``charging_sessions`` (history for allowances,
    loyalty, first-N promotions and the advisor). Amounts are left to settlement."""
    started_at = from_epoch_ms(session_start_ms(facts))
    ended_at = None if facts.end_epoch_ms is None else from_epoch_ms(facts.end_epoch_ms)
    session_id = new_id("cs")
    conn.execute(insert(s.charging_sessions).values(
        id=session_id, operator_id=operator_id, driver_id=driver_id, site_id=site_id,
        connector_id=connector_id, plan_id=plan_id, tariff_version_id=None,
        started_at=started_at, ended_at=ended_at,
        energy_milliwh=session_energy_milliwh(facts),
        periods=periods_document(facts.periods), currency=currency,
        total_excl_minor=None, total_incl_minor=None, created_at=at))
    return session_id


def _facts(row: Any, time_zone: str) -> SessionFacts:
    if is_periods_document(row.periods):
        return SessionFacts(
            periods_from_document(row.periods), time_zone, epoch_ms(_aware(row.started_at)),
            None if row.ended_at is None else epoch_ms(_aware(row.ended_at)))
    # rows written before the exact form: OCPI charging periods (decimal kWh and hours)
    def text(value: dt.datetime | None) -> str | None:
        return None if value is None else _aware(value).isoformat().replace("+00:00", "Z")

    return parse_cdr({"start_date_time": text(row.started_at), "end_date_time": text(row.ended_at),
                      "charging_periods": row.periods}, time_zone=time_zone,
                     path=f"charging_sessions[{row.id}]")


@dataclass(frozen=True, slots=True)
class StoredSession:
    id: str
    site_id: str
    energy_milliwh: int
    facts: SessionFacts


def session_history(conn: Connection, operator_id: str, driver_id: str,
                    start_at: dt.datetime, end_at: dt.datetime) -> list[StoredSession]:
    """The driver's sessions that started in [start_at, end_at), in time order, as rating
    facts in their site's time zone."""
    c = s.charging_sessions.c
    rows = conn.execute(select(s.charging_sessions, s.sites.c.time_zone.label("site_zone"))
                        .join(s.sites, s.sites.c.id == c.site_id).where(
        c.operator_id == operator_id, c.driver_id == driver_id, c.started_at >= start_at,
        c.started_at < end_at).order_by(c.started_at).limit(MAX_SESSIONS_READ + 1)).fetchall()
    if len(rows) > MAX_SESSIONS_READ:
        raise InvalidDocumentError("driver_id", f"more than {MAX_SESSIONS_READ} sessions in "
                                   "the window; use a usage profile")
    return [StoredSession(r.id, r.site_id, int(r.energy_milliwh), _facts(r, r.site_zone))
            for r in rows]
