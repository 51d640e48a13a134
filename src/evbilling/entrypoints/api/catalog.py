"""Plans, promotions, loyalty tiers, a driver's plan, and the plan advisor.

* ``/plans``: operators create and edit billing options. An edit publishes the next version
  (``GET /plans/{id}/versions`` lists them all); a version never changes and plans are never
  deleted (``active: false`` withdraws one from sale). Drivers read plans (they choose them).
* ``/promotions``: promo codes (unique per operator, compared upper-case) and automatic
  promotions. Staff and finance read them; drivers may not list them.
* ``/loyalty-tiers``: the operator's tier programme; everyone reads it, staff change it.
* ``/drivers/{id}/plan``: a driver's plan and usage; switching (``now`` or ``next_period``) with
  the proration of ``docs/plans.md``. Drivers see and switch their own.
* ``/plan-advisor``: a driver's last 90 days, or a typed usage profile, under every plan the
  driver may choose, cheapest first.

Energies are kWh as decimal strings, percentages decimal strings, money integer minor units
(and, in priced answers, also decimal strings). Rules are the domain's (docs/plans.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, WithJsonSchema

from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.errors import InvalidDocumentError
from evbilling.domain.money import Currency, Money
from evbilling.domain.plans import BillingPeriod, ChangeEffective, Plan, PlanKind, PlanUsage
from evbilling.domain.pricing import (
    AppliedPromotion,
    PlanCost,
    PriceLine,
    VatLine,
)
from evbilling.domain.promotions import (
    Benefit,
    LoyaltyTier,
    Promotion,
    PromotionCheck,
    PromotionKind,
    PromotionScope,
    Stacking,
)
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    STAFF_AND_FINANCE,
    CurrentPrincipal,
    Principal,
    Role,
    audit,
    now,
    require_role,
)
from evbilling.entrypoints.api.crud import Page
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Id, Name, Strict
from evbilling.services import catalog
from evbilling.services.quotes import Advice, AdviceRequest, ProfileRequest, advise

MAX_PAGE = 100
MAX_SCOPE_IDS = 100

router = APIRouter()

# -- common types and rendering -------------------------------------------------------------------
EnergyKwh = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=6,
                                     description="kWh, at most 6 decimals (a JSON string)")]
Minor = Annotated[int, Field(ge=0, le=1_000_000_000, description="integer minor units")]
Percent = Annotated[Decimal, Field(ge=0, le=100, decimal_places=2)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=64)]


def clock(request: Request) -> dt.datetime:
    """The time of a plan switch or an advice: ``app.state.clock()`` if set (tests), else now."""
    fixed: Callable[[], dt.datetime] | None = getattr(request.app.state, "clock", None)
    return fixed() if fixed is not None else now()


def decimal_string(value: Decimal | None) -> str | None:
    return None if value is None else catalog.decimal_text(value)


def money_string(value: Money) -> str:
    """The amount in major units with the currency's decimals ("-1.20", "1200" for JPY), from
    the integer minor units (no Decimal on the way: quotes render a dozen of these)."""
    minor, exponent = value.amount_minor, value.currency.exponent
    if exponent == 0:
        return str(minor)
    whole, fraction = divmod(abs(minor), 10 ** exponent)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{exponent}d}"


def amounts(excl: Money, incl: Money, prefix: str = "") -> dict[str, Any]:
    """``{prefix}excl_vat_minor``, ``..incl_vat_minor`` (ints) and the same as decimal strings."""
    return {f"{prefix}excl_vat_minor": excl.amount_minor,
            f"{prefix}incl_vat_minor": incl.amount_minor,
            f"{prefix}excl_vat": money_string(excl), f"{prefix}incl_vat": money_string(incl)}


def render_line(line: PriceLine) -> dict[str, Any]:
    return {"kind": line.kind.value, "code": line.code.value, "description": line.description,
            "quantity": line.quantity,
            "quantity_unit": None if line.quantity_unit is None else line.quantity_unit.value,
            "unit_price": decimal_string(line.unit_price),
            "vat_percent": decimal_string(line.vat_percent), "source_id": line.source_id,
            **amounts(line.amount_excl_vat, line.amount_incl_vat, "amount_")}


def render_vat(line: VatLine) -> dict[str, Any]:
    return {"vat_percent": decimal_string(line.vat_percent),
            **amounts(line.amount_excl_vat, line.amount_incl_vat),
            "vat_minor": line.vat_amount.amount_minor, "vat": money_string(line.vat_amount)}


def render_applied(applied: AppliedPromotion) -> dict[str, Any]:
    return {"promotion_id": applied.promotion_id, "label": applied.label,
            **amounts(applied.discount_excl_vat, applied.discount_incl_vat, "discount_")}


def render_refused(check: PromotionCheck) -> dict[str, Any]:
    return {"promotion_id": check.promotion_id,
            "reason": None if check.refusal is None else check.refusal.value,
            "detail": check.detail}


def render_usage(usage: PlanUsage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"plan_id": usage.plan_id, "period_start_at": usage.period_start_at,
            "period_end_at": usage.period_end_at,
            "energy_allowance_kwh": catalog.kwh_text(usage.energy_allowance_milliwh),
            "energy_used_kwh": catalog.kwh_text(usage.energy_used_milliwh),
            "energy_remaining_kwh": catalog.kwh_text(usage.energy_remaining_milliwh)}


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"data": data, "has_more": has_more,
            "next_cursor": data[-1]["id"] if has_more and data else None}


def _kwh_or_none(value: int | None) -> str | None:
    return None if value is None else catalog.kwh_text(value)


def _invalid(error: InvalidDocumentError, names: Mapping[str, str],
             code: str | None = None) -> ApiError:
    """A domain validation error with the field renamed to the API's (kWh, not milliwh)."""
    field = names.get(error.field, error.field)
    return ApiError(code or error.code, f"{field}: {error.reason}", extra={"field": field})


def _tier_invalid(error: InvalidDocumentError) -> ApiError:
    """A tier's benefit is checked by the promotion rules; it is still the tier that is
    invalid."""
    code = "invalid_loyalty_tier" if error.code == "invalid_promotion" else None
    return _invalid(error, _TIER_FIELDS, code)


def _refuse_nulls(values: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    """A PATCH may not set these to null (they have no "unset" state)."""
    for name in fields:
        if name in values and values[name] is None:
            raise ApiError("validation_error", f"{name}: may not be null",
                           extra={"field": name})


def _own_driver(principal: Principal, driver_id: str) -> None:
    """A driver reaches only their own driver record; another one is a missing one."""
    if principal.is_driver and driver_id != principal.driver_id:
        raise ApiError("not_found", f"no driver {driver_id!r}")


def _self_or_forbidden(principal: Principal, driver_id: str | None) -> str | None:
    """Drivers act for themselves: their own id by default, another driver's is refused."""
    if not principal.is_driver:
        return driver_id
    if driver_id is not None and driver_id != principal.driver_id:
        raise ApiError("forbidden", "drivers may do this only for themselves",
                       extra={"field": "driver_id"})
    return principal.driver_id


# -- plans ----------------------------------------------------------------------------------------
PLAN_CODES = raises("invalid_plan", "unknown_reference", "currency_mismatch", "unknown_currency")
_PLAN_FIELDS = {"included_energy_milliwh": "included_energy_kwh",
                "fair_use_cap_milliwh": "fair_use_cap_kwh"}


class PlanChanges(Strict):
    """What an operator may set on a plan; which fields a kind uses is the domain's rule (a
    field the kind does not use is refused with ``invalid_plan`` naming it)."""

    name: Name | None = None
    period: BillingPeriod | None = None
    fee_minor: Minor | None = Field(default=None, description="per period, excl. VAT")
    fee_vat_percent: Percent | None = None
    included_energy_kwh: EnergyKwh | None = Field(default=None, description="subscription")
    member_tariff_id: Id | None = Field(default=None, description="subscription")
    fair_use_cap_kwh: EnergyKwh | None = Field(default=None, description="flat rate")
    fallback_tariff_id: Id | None = Field(default=None, description="flat rate")
    waive_flat_fee: bool | None = Field(
        default=None, description="no session fee; default on for subscription and flat rate")
    wallet_top_up_threshold_minor: Minor | None = None
    wallet_top_up_amount_minor: Minor | None = None
    credit_limit_minor: Minor | None = Field(default=None, description="fleet")
    promotions_eligible: bool | None = None
    active: bool | None = None


class PlanCreate(PlanChanges):
    kind: PlanKind
    name: Name
    currency: str | None = Field(default=None, min_length=3, max_length=3,
                                 description="default: the operator's currency")


class PlanTerms(BaseModel):
    """A plan as one version says it (kWh and percentages as decimal strings)."""

    id: str
    kind: PlanKind
    name: str
    currency: str
    period: BillingPeriod
    fee_minor: int
    fee_vat_percent: str | None
    fee_incl_vat_minor: int
    included_energy_kwh: str | None
    member_tariff_id: str | None
    fair_use_cap_kwh: str | None
    fallback_tariff_id: str | None
    waive_flat_fee: bool
    wallet_top_up_threshold_minor: int | None
    wallet_top_up_amount_minor: int | None
    credit_limit_minor: int | None
    promotions_eligible: bool
    active: bool
    version: int


class PlanVersionOut(PlanTerms):
    created_at: dt.datetime


class PlanOut(PlanVersionOut):
    version_created_at: dt.datetime


class PlanVersions(BaseModel):
    data: list[PlanVersionOut]
    has_more: bool


def _plan_options(values: dict[str, Any]) -> dict[str, Any]:
    """API fields -> ``Plan`` fields (kWh -> integer milliwh, exactly)."""
    out = dict(values)
    for api_name, domain_name in (("included_energy_kwh", "included_energy_milliwh"),
                                  ("fair_use_cap_kwh", "fair_use_cap_milliwh")):
        if api_name in out:
            kwh = out.pop(api_name)
            out[domain_name] = None if kwh is None else catalog.kwh_to_milliwh(kwh, api_name)
    return out


def render_plan(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id, "kind": plan.kind.value, "name": plan.name,
        "currency": plan.currency.code, "period": plan.period.value,
        "fee_minor": plan.fee_minor, "fee_vat_percent": decimal_string(plan.fee_vat_percent),
        "fee_incl_vat_minor": plan.fee_incl_vat().amount_minor,
        "included_energy_kwh": (catalog.kwh_text(plan.included_energy_milliwh)
                                if plan.kind is PlanKind.SUBSCRIPTION else None),
        "member_tariff_id": plan.member_tariff_id,
        "fair_use_cap_kwh": _kwh_or_none(plan.fair_use_cap_milliwh),
        "fallback_tariff_id": plan.fallback_tariff_id, "waive_flat_fee": plan.waive_flat_fee,
        "wallet_top_up_threshold_minor": plan.wallet_top_up_threshold_minor,
        "wallet_top_up_amount_minor": plan.wallet_top_up_amount_minor,
        "credit_limit_minor": plan.credit_limit_minor,
        "promotions_eligible": plan.promotions_eligible, "active": plan.active,
        "version": plan.version,
    }


def _plan_out(record: catalog.PlanRecord) -> dict[str, Any]:
    return {**render_plan(record.plan), "created_at": record.created_at,
            "version_created_at": record.version_created_at}


def _operator_currency(request: Request, operator_id: str) -> str:
    with request.app.state.engine.connect() as conn:
        return catalog.operator_currency(conn, operator_id)


@router.get("/plans", tags=["plans"], summary="List plans", response_model=Page[PlanOut])
def list_plans(request: Request, principal: CurrentPrincipal, limit: Limit = 20,
               starting_after: Cursor = None,
               kind: Annotated[PlanKind | None, Query()] = None,
               active: Annotated[bool | None, Query()] = None) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        records, more = catalog.list_plans(conn, principal.operator_id, limit=limit,
                                           starting_after=starting_after,
                                           kind=None if kind is None else kind.value,
                                           active=active)
    return _page([_plan_out(r) for r in records], more)


@router.post("/plans", tags=["plans"], status_code=201, summary="Create a plan (version 1)",
             openapi_extra=PLAN_CODES, response_model=PlanOut)
def create_plan(body: PlanCreate, request: Request, principal: CurrentPrincipal
                ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = body.model_dump(exclude_none=True)
    kind, name = values.pop("kind"), values.pop("name")
    currency = values.pop("currency", None) or _operator_currency(request,
                                                                  principal.operator_id)
    if kind in (PlanKind.SUBSCRIPTION, PlanKind.FLAT_RATE):
        values.setdefault("waive_flat_fee", True)
    try:
        options = _plan_options(values)
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.create_plan(conn, principal.operator_id, kind=kind, name=name,
                                         currency=currency, options=options, at=now())
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="plans.create", target=record.plan.id, outcome="success")
    except InvalidDocumentError as exc:
        raise _invalid(exc, _PLAN_FIELDS) from exc
    return _plan_out(record)


@router.get("/plans/{row_id}", tags=["plans"], summary="Get a plan (current version)",
            response_model=PlanOut)
def get_plan(row_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        return _plan_out(catalog.load_plan_record(conn, principal.operator_id, row_id))


@router.patch("/plans/{row_id}", tags=["plans"], summary="Edit a plan: publishes version + 1",
              openapi_extra=PLAN_CODES, response_model=PlanOut)
def edit_plan(row_id: str, body: PlanChanges, request: Request, principal: CurrentPrincipal
              ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = body.model_dump(exclude_unset=True)
    _refuse_nulls(values, ("name", "period", "fee_minor", "waive_flat_fee",
                           "promotions_eligible", "active"))
    try:
        changes = _plan_options(values)
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.edit_plan(conn, principal.operator_id, row_id, changes, now())
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="plans.edit", target=f"{row_id}@{record.plan.version}",
                  outcome="success")
    except InvalidDocumentError as exc:
        raise _invalid(exc, _PLAN_FIELDS) from exc
    return _plan_out(record)


@router.get("/plans/{row_id}/versions", tags=["plans"],
            summary="Every published version of a plan, newest first",
            response_model=PlanVersions)
def list_plan_versions(row_id: str, request: Request, principal: CurrentPrincipal
                       ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        versions = catalog.plan_versions(conn, principal.operator_id, row_id)
    return {"data": [{**render_plan(v.plan), "created_at": v.created_at} for v in versions],
            "has_more": False}


# -- promotions -----------------------------------------------------------------------------------
PROMOTION_CODES = raises("invalid_promotion", "already_exists", "unknown_reference",
                         "unknown_currency")
_PROMOTION_FIELDS = {"benefit.free_energy_milliwh": "benefit.free_energy_kwh"}


class BenefitIn(Strict):
    kind: PromotionKind
    percent: Annotated[Decimal, Field(gt=0, le=100, decimal_places=2)] | None = None
    amount_minor: Annotated[int, Field(gt=0, le=1_000_000_000)] | None = Field(
        default=None, description="amount_off_session: incl. VAT")
    free_energy_kwh: Annotated[Decimal, Field(gt=0, le=10_000, decimal_places=6)] | None = None
    free_idle_minutes: Annotated[int, Field(gt=0, le=44_640)] | None = None

    def to_domain(self) -> Benefit:
        energy = (None if self.free_energy_kwh is None
                  else catalog.kwh_to_milliwh(self.free_energy_kwh, "benefit.free_energy_kwh"))
        return Benefit(self.kind, percent=self.percent, amount_minor=self.amount_minor,
                       free_energy_milliwh=energy, free_idle_minutes=self.free_idle_minutes)


class ScopeIn(Strict):
    site_ids: list[Id] = Field(default_factory=list, max_length=MAX_SCOPE_IDS)
    plan_ids: list[Id] = Field(default_factory=list, max_length=MAX_SCOPE_IDS)
    local_start_time: dt.time | None = Field(default=None, description="e.g. 22:00, site time")
    local_end_time: dt.time | None = Field(default=None, description="00:00 = end of day")

    def to_domain(self) -> PromotionScope:
        return PromotionScope(frozenset(self.site_ids), frozenset(self.plan_ids),
                              self.local_start_time, self.local_end_time)


class PromotionChanges(Strict):
    name: Name | None = None
    code: str | None = Field(default=None, min_length=3, max_length=32,
                             description="3-32 of A-Z 0-9 - _; compared upper-case; "
                                         "none = automatic")
    benefit: BenefitIn | None = None
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = Field(default=None, description="exclusive")
    scope: ScopeIn | None = None
    redemptions_max_total: Annotated[int, Field(ge=1)] | None = None
    redemptions_max_per_driver: Annotated[int, Field(ge=1)] | None = None
    first_n_sessions: Annotated[int, Field(ge=1)] | None = None
    min_spend_minor: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="incl. VAT, after plan coverage, before promotions")
    stacking: Stacking | None = None
    priority: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None, description="lower applies first")
    active: bool | None = None


class PromotionCreate(PromotionChanges):
    name: Name
    benefit: BenefitIn
    starts_at: dt.datetime
    currency: str | None = Field(default=None, min_length=3, max_length=3,
                                 description="default: the operator's currency")


def _promotion_fields(body: PromotionChanges, values: dict[str, Any]) -> dict[str, Any]:
    """Validated body -> ``Promotion`` fields (nested objects become domain values)."""
    out = dict(values)
    if "benefit" in out:
        out["benefit"] = body.benefit.to_domain() if body.benefit is not None else None
    if "scope" in out:
        out["scope"] = body.scope.to_domain() if body.scope is not None else PromotionScope()
    if "currency" in out:
        out["currency"] = Currency.of(out["currency"])
    return out


def render_benefit(benefit: Benefit | None) -> dict[str, Any] | None:
    if benefit is None:
        return None
    return {"kind": benefit.kind.value, "percent": decimal_string(benefit.percent),
            "amount_minor": benefit.amount_minor,
            "free_energy_kwh": _kwh_or_none(benefit.free_energy_milliwh),
            "free_idle_minutes": benefit.free_idle_minutes}


class BenefitOut(BaseModel):
    kind: PromotionKind
    percent: str | None
    amount_minor: int | None
    free_energy_kwh: str | None
    free_idle_minutes: int | None


LocalTime = Annotated[dt.time, WithJsonSchema(
    {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9](:[0-5][0-9](\\.[0-9]+)?)?$",
     "description": "local time of day at the site, no offset (00:00 = end of day)"})]


class ScopeOut(BaseModel):
    site_ids: list[str]
    plan_ids: list[str]
    local_start_time: LocalTime | None
    local_end_time: LocalTime | None


class PromotionOut(BaseModel):
    id: str
    name: str
    code: str | None = Field(description="none: automatic")
    automatic: bool
    currency: str
    benefit: BenefitOut
    label: str
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    scope: ScopeOut
    redemptions_max_total: int | None
    redemptions_max_per_driver: int | None
    first_n_sessions: int | None
    min_spend_minor: int | None
    stacking: Stacking
    priority: int
    active: bool
    created_at: dt.datetime
    redemptions: int


def render_promotion(p: Promotion) -> dict[str, Any]:
    scope = p.scope
    return {
        "id": p.id, "name": p.name, "code": p.code, "automatic": p.is_automatic,
        "currency": p.currency.code, "benefit": render_benefit(p.benefit), "label": p.label,
        "starts_at": p.starts_at, "ends_at": p.ends_at,
        "scope": {"site_ids": sorted(scope.site_ids), "plan_ids": sorted(scope.plan_ids),
                  "local_start_time": scope.local_start_time,
                  "local_end_time": scope.local_end_time},
        "redemptions_max_total": p.redemptions_max_total,
        "redemptions_max_per_driver": p.redemptions_max_per_driver,
        "first_n_sessions": p.first_n_sessions, "min_spend_minor": p.min_spend_minor,
        "stacking": p.stacking.value, "priority": p.priority, "active": p.active,
    }


def _promotion_out(record: catalog.PromotionRecord) -> dict[str, Any]:
    return {**render_promotion(record.promotion), "created_at": record.created_at,
            "redemptions": record.redemptions}


@router.get("/promotions", tags=["promotions"], summary="List promotions (not for drivers)",
            response_model=Page[PromotionOut])
def list_promotions(request: Request, principal: CurrentPrincipal, limit: Limit = 20,
                    starting_after: Cursor = None,
                    code: Annotated[str | None, Query(max_length=32)] = None,
                    active: Annotated[bool | None, Query()] = None) -> dict[str, Any]:
    require_role(principal, STAFF_AND_FINANCE)
    with request.app.state.engine.connect() as conn:
        records, more = catalog.list_promotions(conn, principal.operator_id, limit=limit,
                                                starting_after=starting_after, code=code,
                                                active=active)
    return _page([_promotion_out(r) for r in records], more)


@router.post("/promotions", tags=["promotions"], status_code=201, summary="Create a promotion",
             openapi_extra=PROMOTION_CODES, response_model=PromotionOut)
def create_promotion(body: PromotionCreate, request: Request, principal: CurrentPrincipal
                     ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = body.model_dump(exclude_none=True)
    values["currency"] = values.get("currency") or _operator_currency(request,
                                                                      principal.operator_id)
    try:
        fields = _promotion_fields(body, values)
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.create_promotion(conn, principal.operator_id, fields, now())
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="promotions.create", target=record.promotion.id, outcome="success")
    except InvalidDocumentError as exc:
        raise _invalid(exc, _PROMOTION_FIELDS) from exc
    return _promotion_out(record)


@router.get("/promotions/{row_id}", tags=["promotions"], summary="Get a promotion",
            response_model=PromotionOut)
def get_promotion(row_id: str, request: Request, principal: CurrentPrincipal
                  ) -> dict[str, Any]:
    require_role(principal, STAFF_AND_FINANCE)
    with request.app.state.engine.connect() as conn:
        return _promotion_out(catalog.load_promotion(conn, principal.operator_id, row_id))


@router.patch("/promotions/{row_id}", tags=["promotions"], summary="Change a promotion",
              openapi_extra=PROMOTION_CODES, response_model=PromotionOut)
def edit_promotion(row_id: str, body: PromotionChanges, request: Request,
                   principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = body.model_dump(exclude_unset=True)
    _refuse_nulls(values, ("name", "benefit", "starts_at", "stacking", "priority", "active"))
    try:
        fields = _promotion_fields(body, values)
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.edit_promotion(conn, principal.operator_id, row_id, fields)
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="promotions.edit", target=row_id, outcome="success")
    except InvalidDocumentError as exc:
        raise _invalid(exc, _PROMOTION_FIELDS) from exc
    return _promotion_out(record)


@router.delete("/promotions/{row_id}", tags=["promotions"], status_code=204,
               summary="Delete a promotion never redeemed", openapi_extra=raises("in_use"))
def delete_promotion(row_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    require_role(principal, STAFF, write=True)
    with write_transaction(request.app.state.engine) as conn:
        catalog.delete_promotion(conn, principal.operator_id, row_id)
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="promotions.delete", target=row_id, outcome="success")
    return Response(status_code=204)


# -- loyalty tiers --------------------------------------------------------------------------------
_TIER_FIELDS = {"min_energy_milliwh": "min_energy_kwh",
                "benefit.free_energy_milliwh": "benefit.free_energy_kwh"}


class TierChanges(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    min_energy_kwh: EnergyKwh | None = Field(
        default=None, description="charged in the window, inclusive")
    benefit: BenefitIn | None = Field(
        default=None, description="percent_off_energy or free_idle_time; none for an entry tier")
    window_days: Annotated[int, Field(ge=1, le=366)] | None = None


class TierCreate(TierChanges):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    min_energy_kwh: EnergyKwh
    window_days: Annotated[int, Field(ge=1, le=366)] = 90


class TierOut(BaseModel):
    id: str
    name: str
    min_energy_kwh: str
    benefit: BenefitOut | None
    window_days: int
    label: str
    created_at: dt.datetime


def _tier_fields(body: TierChanges, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "min_energy_kwh" in out:
        out["min_energy_milliwh"] = catalog.kwh_to_milliwh(out.pop("min_energy_kwh"),
                                                           "min_energy_kwh")
    if "benefit" in out:
        out["benefit"] = None if body.benefit is None else body.benefit.to_domain()
    return out


def render_tier(tier_id: str, tier: LoyaltyTier) -> dict[str, Any]:
    return {"id": tier_id, "name": tier.name,
            "min_energy_kwh": catalog.kwh_text(tier.min_energy_milliwh),
            "benefit": render_benefit(tier.benefit), "window_days": tier.window_days,
            "label": tier.label}


def _tier_out(record: catalog.TierRecord) -> dict[str, Any]:
    return {**render_tier(record.id, record.tier), "created_at": record.created_at}


@router.get("/loyalty-tiers", tags=["loyalty"], summary="List loyalty tiers",
            response_model=Page[TierOut])
def list_tiers(request: Request, principal: CurrentPrincipal, limit: Limit = 20,
               starting_after: Cursor = None) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        records, more = catalog.list_tiers(conn, principal.operator_id, limit=limit,
                                           starting_after=starting_after)
    return _page([_tier_out(r) for r in records], more)


@router.post("/loyalty-tiers", tags=["loyalty"], status_code=201,
             summary="Create a loyalty tier", openapi_extra=raises("invalid_loyalty_tier"),
             response_model=TierOut)
def create_tier(body: TierCreate, request: Request, principal: CurrentPrincipal
                ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    try:
        fields = _tier_fields(body, body.model_dump(exclude_none=True))
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.save_tier(conn, principal.operator_id, None, fields, now())
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="loyalty_tiers.create", target=record.id, outcome="success")
    except InvalidDocumentError as exc:
        raise _tier_invalid(exc) from exc
    return _tier_out(record)


@router.get("/loyalty-tiers/{row_id}", tags=["loyalty"], summary="Get a loyalty tier",
            response_model=TierOut)
def get_tier(row_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        return _tier_out(catalog.load_tier(conn, principal.operator_id, row_id))


@router.patch("/loyalty-tiers/{row_id}", tags=["loyalty"], summary="Change a loyalty tier",
              openapi_extra=raises("invalid_loyalty_tier"), response_model=TierOut)
def edit_tier(row_id: str, body: TierChanges, request: Request, principal: CurrentPrincipal
              ) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    values = body.model_dump(exclude_unset=True)
    _refuse_nulls(values, ("name", "min_energy_kwh", "window_days"))
    try:
        fields = _tier_fields(body, values)
        with write_transaction(request.app.state.engine) as conn:
            record = catalog.save_tier(conn, principal.operator_id, row_id, fields, now())
            audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                  action="loyalty_tiers.edit", target=row_id, outcome="success")
    except InvalidDocumentError as exc:
        raise _tier_invalid(exc) from exc
    return _tier_out(record)


@router.delete("/loyalty-tiers/{row_id}", tags=["loyalty"], status_code=204,
               summary="Delete a loyalty tier")
def delete_tier(row_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    require_role(principal, STAFF, write=True)
    with write_transaction(request.app.state.engine) as conn:
        catalog.delete_tier(conn, principal.operator_id, row_id)
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="loyalty_tiers.delete", target=row_id, outcome="success")
    return Response(status_code=204)


# -- a driver's plan ------------------------------------------------------------------------------
class UsageOut(BaseModel):
    plan_id: str
    period_start_at: dt.datetime
    period_end_at: dt.datetime
    energy_allowance_kwh: str
    energy_used_kwh: str
    energy_remaining_kwh: str


class DriverPlanRowOut(BaseModel):
    plan_id: str
    starts_at: dt.datetime
    ends_at: dt.datetime | None


class DriverPlanOut(BaseModel):
    driver_id: str
    time_zone: str
    plan: PlanTerms | None = Field(description="none: list prices")
    current: DriverPlanRowOut | None
    pending: DriverPlanRowOut | None = Field(description="a switch at the period end")
    usage: UsageOut | None = Field(description="this period's allowance and use")


class PlanSwitchIn(Strict):
    plan_id: Id
    effective: ChangeEffective = Field(
        description="now: pro rata credit and charge today; next_period: at the period end")


def _row(row: catalog.DriverPlanRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"plan_id": row.plan_id, "starts_at": row.starts_at, "ends_at": row.ends_at}


@router.get("/drivers/{row_id}/plan", tags=["plans"],
            summary="A driver's plan, pending switch and usage this period",
            response_model=DriverPlanOut)
def get_driver_plan(row_id: str, request: Request, principal: CurrentPrincipal
                    ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    _own_driver(principal, row_id)
    with request.app.state.engine.connect() as conn:
        view = catalog.driver_plan_view(conn, principal.operator_id, row_id, clock(request))
    return {"driver_id": view.driver_id, "time_zone": view.time_zone,
            "plan": None if view.plan is None else render_plan(view.plan),
            "current": _row(view.current), "pending": _row(view.pending),
            "usage": render_usage(view.usage)}


@router.post("/drivers/{row_id}/plan", tags=["plans"],
             summary="Switch a driver's plan (now or next period), with proration",
             openapi_extra=raises("plan_unchanged", "plan_inactive", "plan_not_offered",
                                  "currency_mismatch", "unknown_reference"))
def switch_driver_plan(row_id: str, body: PlanSwitchIn, request: Request,
                       principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF | {Role.DRIVER}, write=True)
    _own_driver(principal, row_id)
    at = clock(request)
    with write_transaction(request.app.state.engine) as conn:
        switch = catalog.switch_plan(conn, principal.operator_id, row_id, body.plan_id,
                                     body.effective, at)
        change = switch.change
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="drivers.plan_switch", target=row_id, outcome="success",
              detail=f"{change.from_plan_id} -> {change.to_plan_id} "
                     f"{change.effective.value} at {change.effective_at.isoformat()}")
    cur = change.currency
    credit = Money(change.credit_minor, cur)
    charge = switch.charge
    old_share = change.old_share
    return {
        "driver_id": row_id,
        "from_plan_id": None if switch.from_plan is None else switch.from_plan.id,
        "to_plan_id": switch.to_plan.id, "effective": change.effective.value,
        "effective_at": change.effective_at, "currency": cur.code,
        "credit": {**amounts(credit, switch.credit_incl_vat),
                   "days_remaining": None if old_share is None else old_share.days_remaining,
                   "days_in_period": None if old_share is None else old_share.days_in_period},
        "charge": {**amounts(charge.total_excl_vat, charge.total_incl_vat),
                   "days_remaining": change.new_share.days_remaining,
                   "days_in_period": change.new_share.days_in_period,
                   "lines": [render_line(line) for line in charge.lines],
                   "applied_promotions": [render_applied(a) for a in charge.applied_promotions]},
        "net": amounts(charge.total_excl_vat - credit,
                       charge.total_incl_vat - switch.credit_incl_vat),
        "allowance": render_usage(change.usage),
    }


# -- plan advisor ---------------------------------------------------------------------------------
class UsageProfileIn(Strict):
    energy_kwh_per_month: EnergyKwh
    sessions_per_month: Annotated[int, Field(ge=0, le=1000)]
    charging_minutes_avg: Annotated[int, Field(ge=0, le=1440)]
    idle_minutes_avg: Annotated[int, Field(ge=0, le=1440)] = 0
    start_hour_local: Annotated[int, Field(ge=0, le=23)] = 18
    month: dt.date | None = Field(default=None, ge=dt.date(2000, 1, 1), le=dt.date(2199, 12, 31),
                                  description="any day of the month to simulate; default: "
                                  "this month")
    time_zone: str | None = Field(default=None, max_length=64,
                                  description="default: the driver's, else the site's")


class AdvisorIn(Strict):
    driver_id: Id | None = Field(default=None, description="price the driver's last 90 days")
    usage_profile: UsageProfileIn | None = Field(default=None,
                                                 description="or a typed monthly profile")
    site_id: Id | None = Field(default=None, description="whose public prices; default: the "
                               "driver's most used site")
    as_of: dt.datetime | None = Field(default=None, description="end of the window; "
                                      "default: now")


def render_cost(rank: int, cost: PlanCost, advice: Advice) -> dict[str, Any]:
    tariff = advice.tariffs.get(cost.plan_id)
    return {
        "rank": rank, "plan_id": cost.plan_id, "plan_name": cost.plan_name,
        "kind": cost.kind.value, "current": cost.plan_id == advice.current_plan_id,
        **amounts(cost.total_excl_vat, cost.total_incl_vat, "total_"),
        **amounts(cost.fees_excl_vat, cost.fees_incl_vat, "fees_"),
        **amounts(cost.sessions_excl_vat, cost.sessions_incl_vat, "sessions_"),
        "sessions": cost.sessions, "energy_kwh": catalog.kwh_text(cost.energy_milliwh),
        "energy_covered_kwh": catalog.kwh_text(cost.energy_covered_milliwh),
        "tariff": None if tariff is None else {"id": tariff.tariff_id,
                                               "version": tariff.version, "role": tariff.role},
        "periods": [{
            "period_start_at": p.period_start_at, "period_end_at": p.period_end_at,
            "days_in_period": p.days_in_period, "days_in_window": p.days_in_window,
            **amounts(p.fee_excl_vat, p.fee_incl_vat, "fee_"),
            "energy_allowance_kwh": catalog.kwh_text(p.energy_allowance_milliwh),
            "energy_used_kwh": catalog.kwh_text(p.energy_used_milliwh),
            "sessions": p.sessions,
            **amounts(p.sessions_excl_vat, p.sessions_incl_vat, "sessions_"),
        } for p in cost.periods],
        "breakdown": [{"kind": b.kind.value, "code": b.code.value, "quantity": b.quantity,
                       **amounts(b.amount_excl_vat, b.amount_incl_vat, "amount_")}
                      for b in cost.breakdown],
    }


@router.post("/plan-advisor", tags=["plans"],
             summary="A driver's usage under every plan they may choose, cheapest first",
             openapi_extra=raises("not_found", "invalid_usage_profile", "unknown_time_zone",
                                  "no_tariff_in_force"))
def plan_advisor(body: AdvisorIn, request: Request, principal: CurrentPrincipal
                 ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    driver_id = _self_or_forbidden(principal, body.driver_id)
    if driver_id is None and body.usage_profile is None:
        raise ApiError("validation_error", "driver_id: give a driver_id or a usage_profile",
                       extra={"field": "driver_id"})
    as_of = body.as_of or clock(request)
    if as_of.tzinfo is None:
        raise ApiError("validation_error", "as_of: give a time zone offset (e.g. Z)",
                       extra={"field": "as_of"})
    p = body.usage_profile
    profile = None if p is None else ProfileRequest(
        catalog.kwh_to_milliwh(p.energy_kwh_per_month, "usage_profile.energy_kwh_per_month"),
        p.sessions_per_month, p.charging_minutes_avg, p.idle_minutes_avg, p.start_hour_local,
        p.month, p.time_zone)
    with request.app.state.engine.connect() as conn:
        advice = advise(conn, AdviceRequest(principal.operator_id, as_of, driver_id, profile,
                                            body.site_id))
    return {
        "driver_id": advice.driver_id, "site_id": advice.site_id,
        "time_zone": advice.time_zone, "window_start_at": advice.window_start_at,
        "window_end_at": advice.window_end_at, "sessions": advice.sessions,
        "source": "usage_profile" if profile is not None else "history",
        "current_plan_id": advice.current_plan_id,
        "plans": [render_cost(i + 1, cost, advice) for i, cost in enumerate(advice.costs)],
    }
