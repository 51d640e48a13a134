"""Quotes and the plan advisor: price hypothetical sessions so drivers and staff can preview them.

A quote is the pricing pipeline (``domain/pricing.price_session``) fed from storage:

site or connector -> the plan (given, else the driver's plan at the start, else list prices) ->
the tariff the plan prices with, version in force at the start (public: ``tariff_in_force`` for
the connector, site and plan; member / fallback: the plan's tariff) -> periods cut at every
moment that tariff cares about -> the plan's usage in the period as it was at the start ->
automatic promotions in force plus the entered code's -> the driver's loyalty tier at the start
-> ``price_session``: lines naming every discount, totals, VAT summary.

The advisor prices a driver's last 90 days (or a typed monthly profile) under every plan the
driver may choose, with ``domain/pricing.advise_plans``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from evbilling.adapters.db import schema as s
from evbilling.domain.errors import DomainError, InvalidDocumentError
from evbilling.domain.periods import SessionFacts, epoch_ms
from evbilling.domain.plans import Plan, PlanKind, PlanUsage, local_date, local_midnight
from evbilling.domain.pricing import (
    MAX_ADVISOR_OPTIONS,
    PlanCost,
    PlanOption,
    PlanTariffs,
    PricedSession,
    PricingRequest,
    SessionHistory,
    UsageProfile,
    advise_plans,
    price_session,
)
from evbilling.domain.profiles import synthesize_periods
from evbilling.domain.promotions import (
    MAX_PROMOTIONS_PER_CHARGE,
    LoyaltyTier,
    Promotion,
    PromotionContext,
    tier_for,
)
from evbilling.domain.rating import RatedSession
from evbilling.domain.tariffs import Tariff
from evbilling.services import catalog
from evbilling.services.catalog import LoyaltyStanding
from evbilling.services.catalog_cache import (
    CatalogCache,
    CatalogSnapshot,
    Connect,
    TariffVersion,
    UnknownLocationError,
)
from evbilling.services.tariff_selection import NoTariffInForceError, tariff_in_force

MAX_QUOTE_DURATION = dt.timedelta(days=7)
#: The advisor's history window: the last 90 local days (and today so far).
ADVISOR_WINDOW_DAYS = 90


class QuoteLimitError(DomainError):
    code = "validation_error"


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    operator_id: str
    site_id: str | None
    connector_id: str | None
    start_at: dt.datetime
    energy_milliwh: int
    charging_ms: int
    idle_ms: int
    plan_id: str | None = None
    driver_id: str | None = None
    promo_code: str | None = None


@dataclass(frozen=True, slots=True)
class PricingTariff:
    """The tariff version a quote priced with."""

    tariff_id: str
    version_id: str
    version: int
    role: str  # public, member or fallback


@dataclass(frozen=True, slots=True)
class Quote:
    site_id: str
    time_zone: str
    currency: str
    driver_id: str | None
    plan: Plan | None  # None: no plan (list prices)
    tariff: PricingTariff
    session: SessionFacts
    priced: PricedSession
    usage: PlanUsage | None  # the plan's usage at the start (subscription, flat rate)
    loyalty: LoyaltyStanding | None

    @property
    def rated(self) -> RatedSession:
        return self.priced.rated


def _site_of(conn: Connection, operator_id: str, site_id: str | None,
             connector_id: str | None) -> Any:
    if connector_id is not None:
        row = conn.execute(
            select(s.sites).join(s.chargers, s.chargers.c.site_id == s.sites.c.id)
            .join(s.evses, s.evses.c.charger_id == s.chargers.c.id)
            .join(s.connectors, s.connectors.c.evse_id == s.evses.c.id)
            .where(s.connectors.c.id == connector_id,
                   s.connectors.c.operator_id == operator_id)).first()
        if row is None:
            raise UnknownLocationError(f"no connector {connector_id!r}")
        if site_id is not None and site_id != row.id:
            raise QuoteLimitError("site_id: the connector belongs to another site")
        return row
    row = conn.execute(select(s.sites).where(s.sites.c.id == site_id,
                                             s.sites.c.operator_id == operator_id)).first()
    if row is None:
        raise UnknownLocationError(f"no site {site_id!r}")
    return row


def plan_tariffs(conn: Connection, plan: Plan, *, operator_id: str, site_id: str,
                 connector_id: str | None, at: dt.datetime
                 ) -> tuple[PlanTariffs, PricingTariff, Tariff]:
    """The tariff versions in force at ``at`` that ``plan`` prices with, plus which one it is
    and that tariff. Public: the connector's / site's, with a per-plan override for
    this plan (``tariff_in_force``); member / fallback: the tariff the plan names."""
    tariff_id = plan.tariff_id
    if tariff_id is None:
        real_plan = plan.id != catalog.LIST_PRICE_PLAN_ID
        selected = tariff_in_force(conn, operator_id=operator_id, site_id=site_id,
                                   connector_id=connector_id,
                                   plan_id=plan.id if real_plan else None, at=at)
        public = selected.tariff
        return (PlanTariffs(public=public),
                PricingTariff(selected.tariff_id, selected.version_id, selected.version,
                              "public"), public)
    version = catalog.tariff_version_at(conn, operator_id, tariff_id, at)
    tariff = version.tariff
    if plan.kind is PlanKind.SUBSCRIPTION:
        tariffs, role = PlanTariffs(member=tariff), "member"
    else:
        tariffs, role = PlanTariffs(fallback=tariff), "fallback"
    return (tariffs, PricingTariff(tariff_id, version.version_id, version.version, role),
            tariff)


def quote(connect: Connect, req: QuoteRequest, cache: CatalogCache | None = None) -> Quote:
    """Price a hypothetical session with the pricing pipeline (module doc).

    Plan usage: the driver's own plan uses their recorded usage of the period before the start;
    a plan the driver is not on (or a quote without a driver) starts a fresh period: the full
    allowance, nothing used **(choice)**. Promotion history and loyalty need a driver.
    An unknown promo code raises ``unknown_promo_code`` (the caller counts it as a failed
    guess); a known one that does not apply is priced and reported with its reason.

    ``connect`` opens (or returns) the read connection; it is called only when something
    must be read, and must not have read before this call. The catalog (site, tariffs, plans,
    promotions, tiers) comes from ``cache``'s snapshot for the operator, checked with one read
    of its generation (``services/catalog_cache.py``; by the cache's ``GenerationReader`` when
    it has one, so a quote the snapshot answers whole opens no connection); without a cache,
    from a snapshot made for this quote. What is the driver's own is read fresh: their record,
    plan row, session count and loyalty energy in one query (``catalog.driver_facts``), their
    plan usage, and the redemption counts of candidate promotions that have caps.
    """
    if req.start_at.tzinfo is None:
        raise QuoteLimitError("start_at: give a time zone offset (e.g. Z)")
    if dt.timedelta(milliseconds=req.charging_ms + req.idle_ms) > MAX_QUOTE_DURATION:
        raise QuoteLimitError("charging_minutes + idle_minutes: at most 7 days")
    op, at = req.operator_id, req.start_at
    if cache is None:
        snap = CatalogSnapshot(op, None)
    elif cache.reader is not None:
        snap = cache.current(op)
    else:
        snap = cache.snapshot(connect(), op)
    if req.connector_id is not None:
        site = snap.connector_site(connect, req.connector_id)
        if req.site_id is not None and req.site_id != site.id:
            raise QuoteLimitError("site_id: the connector belongs to another site")
    else:
        site = snap.site(connect, req.site_id or "")
    tiers: tuple[LoyaltyTier, ...] = ()
    driver_facts = None
    if req.driver_id is not None:
        tiers = snap.loyalty_tiers(connect)
        since = at - dt.timedelta(days=tiers[0].window_days) if tiers else None
        driver_facts = catalog.driver_facts(connect(), op, req.driver_id, at, since)
    driver = None if driver_facts is None else driver_facts.driver
    driver_plan = None if driver_facts is None else driver_facts.plan

    plan: Plan | None = None
    if req.plan_id is not None:
        plan = snap.plan_at(connect, req.plan_id, at)
    elif driver_plan is not None:
        plan = snap.plan_at(connect, driver_plan.plan_id, at)
    pricing_plan = plan or snap.list_price_plan(site.currency)
    billing_zone = driver.time_zone if driver is not None else site.time_zone

    usage: PlanUsage | None = None
    if pricing_plan.kind in (PlanKind.SUBSCRIPTION, PlanKind.FLAT_RATE):
        if driver is not None and driver_plan is not None \
                and driver_plan.plan_id == pricing_plan.id:
            usage = catalog.plan_usage(connect(), driver, pricing_plan, driver_plan, at)
        else:
            usage = PlanUsage.for_period(pricing_plan, at, billing_zone)

    tariffs, used, version = _snapshot_plan_tariffs(
        connect, snap, pricing_plan, site_id=site.id, connector_id=req.connector_id, at=at)
    start = epoch_ms(at)
    periods = synthesize_periods(version.compiled, site.time_zone, start,
                                 req.charging_ms, req.energy_milliwh, req.idle_ms)
    facts = SessionFacts(periods, site.time_zone, start, start + req.charging_ms + req.idle_ms)

    candidates: list[Promotion] = snap.automatic_promotions(connect, at, pricing_plan.currency)
    if req.promo_code is not None:
        entered = snap.promotion_by_code(connect, req.promo_code)
        others = [p for p in candidates if p.id != entered.id]
        candidates = [*others[:MAX_PROMOTIONS_PER_CHARGE - 1], entered]
    driver_id = None if driver is None else driver.id
    # Counts matter only against caps (``check_promotion``): read them for capped ones.
    capped = [p.id for p in candidates if p.redemptions_max_total is not None
              or (driver_id is not None and p.redemptions_max_per_driver is not None)]
    totals, by_driver = ({}, {}) if not capped else catalog.redemption_counts(
        connect(), capped, driver_id)
    context = PromotionContext(driver_id or "", pricing_plan.id, site.id, req.promo_code,
                               0 if driver_facts is None else driver_facts.sessions_before,
                               totals, by_driver)
    loyalty = None
    if driver_facts is not None and tiers:
        energy = driver_facts.energy_milliwh_since
        loyalty = LoyaltyStanding(tier_for(energy, tiers), energy, tiers[0].window_days)

    priced = price_session(PricingRequest(
        facts, pricing_plan, tariffs, usage=usage, promotions=tuple(candidates),
        promotion_context=context, loyalty_tier=None if loyalty is None else loyalty.tier))
    return Quote(site.id, site.time_zone, site.currency, driver_id, plan, used, facts, priced,
                 usage, loyalty)


def _snapshot_plan_tariffs(connect: Connect, snap: CatalogSnapshot, plan: Plan, *,
                           site_id: str, connector_id: str | None, at: dt.datetime
                           ) -> tuple[PlanTariffs, PricingTariff, TariffVersion]:
    """``plan_tariffs`` on a catalog snapshot."""
    tariff_id = plan.tariff_id
    if tariff_id is None:
        real_plan = plan.id != catalog.LIST_PRICE_PLAN_ID
        version = snap.tariff_in_force(connect, site_id=site_id, connector_id=connector_id,
                                       plan_id=plan.id if real_plan else None, at=at)
        return (PlanTariffs(public=version.tariff),
                PricingTariff(tariff_id=version.tariff_id, version_id=version.version_id,
                              version=version.version, role="public"), version)
    try:
        version = snap.version_at(connect, tariff_id, at)
    except NoTariffInForceError as exc:
        raise catalog.NotFoundError(f"no tariff {tariff_id!r}") from exc
    if plan.kind is PlanKind.SUBSCRIPTION:
        tariffs, role = PlanTariffs(member=version.tariff), "member"
    else:
        tariffs, role = PlanTariffs(fallback=version.tariff), "fallback"
    return tariffs, PricingTariff(tariff_id, version.version_id, version.version, role), version


# -- plan advisor ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProfileRequest:
    energy_milliwh_per_month: int
    sessions_per_month: int
    charging_minutes_avg: int
    idle_minutes_avg: int
    start_hour_local: int
    month: dt.date | None = None  # default: the month of ``as_of``
    time_zone: str | None = None  # default: the driver's, else the site's


@dataclass(frozen=True, slots=True)
class AdviceRequest:
    operator_id: str
    as_of: dt.datetime
    driver_id: str | None = None
    profile: ProfileRequest | None = None
    site_id: str | None = None


@dataclass(frozen=True, slots=True)
class Advice:
    site_id: str
    time_zone: str
    window_start_at: dt.datetime
    window_end_at: dt.datetime
    sessions: int
    driver_id: str | None
    current_plan_id: str | None
    costs: list[PlanCost]
    tariffs: dict[str, PricingTariff]  # plan id -> the tariff version priced with


class AdviceSiteError(InvalidDocumentError):
    code = "validation_error"


def _most_used_site(history: list[catalog.StoredSession]) -> str | None:
    energy: dict[str, int] = defaultdict(int)
    for session in history:
        energy[session.site_id] += max(0, session.energy_milliwh)
    return max(sorted(energy), key=lambda site: energy[site], default=None)


def advise(conn: Connection, req: AdviceRequest) -> Advice:
    """The cost of a driver's last 90 days (or a typed profile) under every plan the driver may
    choose, cheapest first.

    Plans: the operator's active plans in the site's currency, plus the driver's current plan
    even if withdrawn, each as in force at ``as_of``. Prices: the tariffs in force at ``as_of``
    at one site **(choice)**: the site given, else the site where the driver charged the most
    energy in the window, else the operator's first site. Window: local midnight 90 days before
    ``as_of``'s local date, to ``as_of``, in the driver's zone (fees and allowances pro rata by
    the days of each billing period inside it). List prices: promotions and loyalty are left out
    (``advise_plans``).
    """
    op, as_of = req.operator_id, req.as_of
    driver = None if req.driver_id is None else catalog.load_driver(conn, op, req.driver_id)
    history: list[catalog.StoredSession] = []
    window_start = window_end = as_of
    if driver is not None and req.profile is None:
        window_start = local_midnight(local_date(as_of, driver.time_zone)
                                      - dt.timedelta(days=ADVISOR_WINDOW_DAYS), driver.time_zone)
        history = catalog.session_history(conn, op, driver.id, window_start, window_end)

    site_id = req.site_id or _most_used_site(history)
    if site_id is None:
        site_id = conn.execute(select(s.sites.c.id).where(s.sites.c.operator_id == op)
                               .order_by(s.sites.c.id).limit(1)).scalar()
        if site_id is None:
            raise AdviceSiteError("site_id", "the operator has no site to take prices from")
    site = _site_of(conn, op, site_id, None)

    usage: SessionHistory | UsageProfile
    if req.profile is not None:
        p = req.profile
        zone_name = p.time_zone or (driver.time_zone if driver is not None else site.time_zone)
        usage = UsageProfile(p.energy_milliwh_per_month, p.sessions_per_month,
                             p.charging_minutes_avg, p.idle_minutes_avg, p.start_hour_local,
                             p.month or local_date(as_of, zone_name), zone_name)
        history_view = usage.to_history()
        window_start, window_end = history_view.window_start_at, history_view.window_end_at
        sessions = len(history_view.sessions)
    else:
        if driver is None:
            raise AdviceSiteError("driver_id", "give a driver_id or a usage_profile")
        zone_name = driver.time_zone
        usage = SessionHistory(tuple(h.facts for h in history), window_start, window_end,
                               zone_name)
        sessions = len(history)

    current = None if driver is None else catalog.driver_plan_at(conn, op, driver.id, as_of)
    current_plan_id = None if current is None else current.plan_id
    options: list[PlanOption] = []
    used: dict[str, PricingTariff] = {}
    for plan in catalog.offered_plans(conn, op, as_of):
        if plan.currency.code != site.currency or not (plan.active
                                                       or plan.id == current_plan_id):
            continue
        tariffs, tariff, _ = plan_tariffs(conn, plan, operator_id=op, site_id=site.id,
                                          connector_id=None, at=as_of)
        options.append(PlanOption(plan, tariffs))
        used[plan.id] = tariff
    costs = advise_plans(options[:MAX_ADVISOR_OPTIONS], usage)
    return Advice(site.id, zone_name, window_start, window_end, sessions,
                  None if driver is None else driver.id, current_plan_id, costs, used)
