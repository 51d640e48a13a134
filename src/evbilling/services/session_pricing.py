"""The pricing context of a charging session: everything the pricing pipeline needs besides the
periods, read once when the session starts (and again, identically, when it is settled).

site or connector -> the driver's plan at the start (else list prices) -> the tariff version in
force that the plan prices with -> the plan's usage of its period before the start -> automatic
promotions in force (and an entered code's) with the driver's history -> the loyalty tier at the
start. ``price`` then runs ``domain.pricing.price_session`` on periods, live or final;
``running_pricer`` gives a live session's ``RunningPricer`` (the same totals at every sample).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, select

from evbilling.adapters.db import schema as s
from evbilling.domain.periods import ChargingPeriod, SessionFacts
from evbilling.domain.plans import Plan, PlanKind, PlanUsage
from evbilling.domain.pricing import (
    PlanTariffs,
    PricedSession,
    PricingRequest,
    RunningPricer,
    price_session,
)
from evbilling.domain.promotions import (
    MAX_PROMOTIONS_PER_CHARGE,
    LoyaltyTier,
    Promotion,
    PromotionContext,
)
from evbilling.domain.rating import CompiledTariff, RatedSession, compile_tariff
from evbilling.services import catalog
from evbilling.services.catalog import LoyaltyStanding
from evbilling.services.quotes import PricingTariff, plan_tariffs


@dataclass(frozen=True, slots=True)
class PricingContext:
    operator_id: str
    site_id: str
    connector_id: str | None
    driver_id: str | None
    time_zone: str  # the site's: tariff restrictions are local to it
    currency: str
    plan: Plan  # the driver's plan, or the list-price plan
    has_plan: bool  # False: list prices (no driver plan)
    tariffs: PlanTariffs
    tariff: PricingTariff  # which tariff version prices it
    compiled: CompiledTariff
    usage: PlanUsage | None
    promotions: tuple[Promotion, ...]
    promotion_context: PromotionContext | None
    loyalty: LoyaltyStanding | None

    @property
    def loyalty_tier(self) -> LoyaltyTier | None:
        return None if self.loyalty is None else self.loyalty.tier


def load_context(conn: Connection, *, operator_id: str, site_id: str, connector_id: str | None,
                 driver_id: str | None, at: dt.datetime, plan_id: str | None = None,
                 promo_code: str | None = None) -> PricingContext:
    """The context for a session (or a quote) starting at ``at`` (see the module doc)."""
    op = operator_id
    site = conn.execute(select(s.sites).where(s.sites.c.id == site_id,
                                              s.sites.c.operator_id == op)).one()
    driver = None if driver_id is None else catalog.load_driver(conn, op, driver_id)
    driver_plan = None if driver is None else catalog.driver_plan_at(conn, op, driver.id, at)
    plan: Plan | None = None
    if plan_id is not None:
        plan = catalog.load_plan_at(conn, op, plan_id, at)
    elif driver_plan is not None:
        plan = catalog.load_plan_at(conn, op, driver_plan.plan_id, at)
    pricing_plan = plan or catalog.list_price_plan(op, site.currency)
    billing_zone = driver.time_zone if driver is not None else site.time_zone

    usage: PlanUsage | None = None
    if pricing_plan.kind in (PlanKind.SUBSCRIPTION, PlanKind.FLAT_RATE):
        if driver is not None and driver_plan is not None \
                and driver_plan.plan_id == pricing_plan.id:
            usage = catalog.plan_usage(conn, driver, pricing_plan, driver_plan, at)
        else:
            usage = PlanUsage.for_period(pricing_plan, at, billing_zone)

    tariffs, used, tariff = plan_tariffs(conn, pricing_plan, operator_id=op, site_id=site.id,
                                         connector_id=connector_id, at=at)
    candidates: list[Promotion] = catalog.automatic_promotions(conn, op, at,
                                                               pricing_plan.currency)
    if promo_code is not None:
        entered = catalog.promotion_by_code(conn, op, promo_code)
        others = [p for p in candidates if p.id != entered.id]
        candidates = [*others[:MAX_PROMOTIONS_PER_CHARGE - 1], entered]
    context = catalog.promotion_context(
        conn, operator_id=op, driver_id=None if driver is None else driver.id,
        plan_id=pricing_plan.id, site_id=site.id, promo_code=promo_code, at=at,
        promotions=candidates)
    loyalty = None
    if driver is not None:
        loyalty = catalog.loyalty_standing(conn, op, driver.id, at,
                                           catalog.loyalty_tiers(conn, op))
    return PricingContext(
        operator_id=op, site_id=site.id, connector_id=connector_id,
        driver_id=None if driver is None else driver.id, time_zone=site.time_zone,
        currency=site.currency, plan=pricing_plan, has_plan=plan is not None, tariffs=tariffs,
        tariff=used, compiled=compile_tariff(tariff), usage=usage,
        promotions=tuple(candidates), promotion_context=context, loyalty=loyalty)


def price(ctx: PricingContext, periods: tuple[ChargingPeriod, ...], *, start_ms: int,
          end_ms: int | None, rated: RatedSession | None = None,
          describe: bool = True) -> PricedSession:
    """The pipeline on these periods (``rated``: already rated incrementally; None = rate;
    ``describe=False``: totals and amounts only, for a running cost)."""
    facts = SessionFacts(periods, ctx.time_zone, start_ms, end_ms)
    return price_session(PricingRequest(
        facts, ctx.plan, ctx.tariffs, usage=ctx.usage, promotions=ctx.promotions,
        promotion_context=ctx.promotion_context, loyalty_tier=ctx.loyalty_tier, rated=rated,
        describe=describe))


def running_pricer(ctx: PricingContext, *, start_ms: int) -> RunningPricer:
    """The running cost of a session that started at ``start_ms``: ``price``'s totals, with
    what does not change during the session settled once."""
    return RunningPricer(PricingRequest(
        SessionFacts((), ctx.time_zone, start_ms, None), ctx.plan, ctx.tariffs, usage=ctx.usage,
        promotions=ctx.promotions, promotion_context=ctx.promotion_context,
        loyalty_tier=ctx.loyalty_tier))
