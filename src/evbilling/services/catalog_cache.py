"""The catalog a quote reads, kept per operator in this process while its generation holds.

A quote needs the site (zone, currency, VAT), which site a connector is at, the tariff
assignments of the site and connector, tariff versions (parsed and compiled), plan versions,
promotions and loyalty tiers. They change rarely, so each process keeps a ``CatalogSnapshot`` per
operator and checks it with one primary-key read: the operator's catalog generation
(``services/catalog_generation.py``), bumped in the same transaction as every catalog write.
The snapshot is used only when it was made under the generation just read; otherwise a new,
empty one replaces it. So a write committed on any node is seen by the next quote on every node.

The API checks the generation with a ``GenerationReader`` (one bare query on a connection of its
own, about 10 us on SQLite) and opens a pooled connection only if something must be read
(``ReadConnection``): a quote without a driver that the snapshot answers whole reads nothing
else. Entries are read lazily, on first use, on a connection whose reads all come *after* the
generation read: an entry is never older than its snapshot's generation (it may be newer, which
the next generation check then replaces anyway). A missing site, connector, tariff, plan or
promo code is not kept (it is looked up again next time); lists (a site's assignments, the
automatic promotions, the tiers) are kept as read, so a change made without a bump is not seen.

The rules are the same as the uncached loaders' (``tariff_selection.tariff_in_force`` and
``version_at``, ``catalog.load_plan_at``, ``automatic_promotions``, ``promotion_by_code``,
``loyalty_tiers``, which other services still use); the worked examples of
``tests/integration/test_api_quotes.py`` run through the snapshot.

Limits: ``MAX_OPERATORS`` snapshots per process (least recently used out) and
``MAX_ENTRIES`` entries of each kind per snapshot (beyond it, lookups are not kept).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BindParameter, Connection, Engine, bindparam, select

from evbilling.adapters.db import schema as s
from evbilling.domain.money import Currency
from evbilling.domain.plans import Plan
from evbilling.domain.promotions import (
    MAX_PROMOTIONS_PER_CHARGE,
    LoyaltyTier,
    Promotion,
    normalize_code,
)
from evbilling.domain.rating import CompiledTariff, compile_tariff
from evbilling.domain.tariffs import Tariff
from evbilling.services import catalog
from evbilling.services.catalog_generation import GenerationReader, catalog_generation
from evbilling.services.tariff_selection import NoTariffInForceError, stored_tariff

#: Opens (or returns) the caller's read connection; called only when a row must be read.
Connect = Callable[[], Connection]

#: Operators whose snapshot one process keeps.
MAX_OPERATORS = 256
#: Entries of one kind (sites, connectors, tariffs, plans, codes ...) one snapshot keeps.
MAX_ENTRIES = 10_000


class UnknownLocationError(catalog.NotFoundError):
    """No such site or connector for this operator."""


@dataclass(frozen=True, slots=True)
class SiteInfo:
    id: str
    time_zone: str
    currency: str
    vat_percent: Decimal


@dataclass(frozen=True, slots=True)
class Assignment:
    id: str
    tariff_id: str
    site_id: str | None
    connector_id: str | None
    plan_id: str | None
    valid_from: dt.datetime
    valid_to: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TariffVersion:
    """A stored tariff version, parsed (``stored_tariff``) and compiled."""

    tariff_id: str
    version_id: str
    version: int
    created_at: dt.datetime
    tariff: Tariff
    compiled: CompiledTariff


@dataclass(frozen=True, slots=True)
class PlanHistory:
    """Every published version of a plan, oldest first, each with its ``created_at``."""

    versions: tuple[tuple[dt.datetime, Plan], ...]

    def at(self, at: dt.datetime) -> Plan:
        """The version in force at ``at``: the newest created at or before it (before the
        first: the first), as ``catalog.load_plan_at``."""
        in_force = [plan for created_at, plan in self.versions if created_at <= at]
        return in_force[-1] if in_force else self.versions[0][1]


# Statements built once (bound parameters): each use skips expression building and hits
# SQLAlchemy's compiled cache.
_OP: BindParameter[str] = bindparam("operator_id")
_SITE = select(s.sites.c.id, s.sites.c.time_zone, s.sites.c.currency, s.sites.c.vat_percent
               ).where(s.sites.c.id == bindparam("site_id"), s.sites.c.operator_id == _OP)
_CONNECTOR_SITE = (
    select(s.chargers.c.site_id)
    .join(s.evses, s.evses.c.charger_id == s.chargers.c.id)
    .join(s.connectors, s.connectors.c.evse_id == s.evses.c.id)
    .where(s.connectors.c.id == bindparam("connector_id"),
           s.connectors.c.operator_id == _OP))
_A = s.tariff_assignments.c
_ASSIGNMENT_COLUMNS = (_A.id, _A.tariff_id, _A.site_id, _A.connector_id, _A.plan_id,
                       _A.valid_from, _A.valid_to)
_SITE_ASSIGNMENTS = select(*_ASSIGNMENT_COLUMNS).where(
    _A.operator_id == _OP, _A.site_id == bindparam("site_id")).order_by(_A.id)
_CONNECTOR_ASSIGNMENTS = select(*_ASSIGNMENT_COLUMNS).where(
    _A.operator_id == _OP, _A.connector_id == bindparam("connector_id")).order_by(_A.id)
_V = s.tariff_versions.c
_VERSIONS = select(_V.id, _V.version, _V.created_at, _V.document).where(
    _V.tariff_id == bindparam("tariff_id"), _V.operator_id == _OP).order_by(_V.version)
_PLAN = select(s.plans).where(s.plans.c.id == bindparam("plan_id"), s.plans.c.operator_id == _OP)
_PV = s.plan_versions.c
_PLAN_VERSIONS = select(s.plan_versions).where(_PV.plan_id == bindparam("plan_id")
                                               ).order_by(_PV.version)
_P = s.promotions.c
_AUTOMATIC = select(s.promotions).where(
    _P.operator_id == _OP, _P.code.is_(None), _P.active.is_(True)
).order_by(_P.id).limit(catalog.MAX_PROMOTIONS_PER_OPERATOR)
_BY_CODE = select(s.promotions).where(_P.operator_id == _OP, _P.code == bindparam("code"))
_T = s.loyalty_tiers.c
_TIERS = select(s.loyalty_tiers).where(_T.operator_id == _OP).order_by(_T.id)


def _keep(memo: dict[str, Any], key: str, value: Any) -> None:
    if len(memo) < MAX_ENTRIES:
        memo[key] = value


class CatalogSnapshot:
    """One operator's catalog as of ``generation`` (``None``: not checked, for one use)."""

    def __init__(self, operator_id: str, generation: int | None) -> None:
        self.operator_id = operator_id
        self.generation = generation
        self._sites: dict[str, SiteInfo] = {}
        self._connector_sites: dict[str, str] = {}
        self._site_assignments: dict[str, tuple[Assignment, ...]] = {}
        self._connector_assignments: dict[str, tuple[Assignment, ...]] = {}
        self._versions: dict[str, tuple[TariffVersion, ...]] = {}
        self._plans: dict[str, PlanHistory] = {}
        self._list_price_plans: dict[str, Plan] = {}
        self._codes: dict[str, Promotion] = {}
        self._automatic: tuple[Promotion, ...] | None = None
        self._tiers: tuple[LoyaltyTier, ...] | None = None

    # -- locations --------------------------------------------------------------------------------
    def site(self, connect: Connect, site_id: str) -> SiteInfo:
        found = self._sites.get(site_id)
        if found is None:
            row = connect().execute(_SITE, {"site_id": site_id,
                                       "operator_id": self.operator_id}).first()
            if row is None:
                raise UnknownLocationError(f"no site {site_id!r}")
            found = SiteInfo(row.id, row.time_zone, row.currency, row.vat_percent)
            _keep(self._sites, site_id, found)
        return found

    def connector_site(self, connect: Connect, connector_id: str) -> SiteInfo:
        site_id = self._connector_sites.get(connector_id)
        if site_id is None:
            site_id = connect().execute(_CONNECTOR_SITE, {"connector_id": connector_id,
                                                     "operator_id": self.operator_id}).scalar()
            if site_id is None:
                raise UnknownLocationError(f"no connector {connector_id!r}")
            _keep(self._connector_sites, connector_id, site_id)
        return self.site(connect, site_id)

    # -- tariffs ----------------------------------------------------------------------------------
    def _assignments(self, connect: Connect, memo: dict[str, tuple[Assignment, ...]],
                     statement: Any, name: str, key: str) -> tuple[Assignment, ...]:
        found = memo.get(key)
        if found is None:
            rows = connect().execute(statement, {name: key, "operator_id": self.operator_id})
            found = tuple(Assignment(r.id, r.tariff_id, r.site_id, r.connector_id, r.plan_id,
                                     r.valid_from, r.valid_to) for r in rows)
            _keep(memo, key, found)
        return found

    def tariff_in_force(self, connect: Connect, *, site_id: str, connector_id: str | None,
                        plan_id: str | None, at: dt.datetime) -> TariffVersion:
        """``tariff_selection.tariff_in_force`` on the snapshot: a connector assignment beats
        a site one, a per-plan one beats a generic one, then the latest ``valid_from``."""
        candidates = list(self._assignments(connect, self._site_assignments, _SITE_ASSIGNMENTS,
                                            "site_id", site_id))
        if connector_id is not None:
            seen = {a.id for a in candidates}
            candidates += [a for a in self._assignments(
                connect, self._connector_assignments, _CONNECTOR_ASSIGNMENTS, "connector_id",
                connector_id) if a.id not in seen]
            candidates.sort(key=lambda a: a.id)
        in_force = [a for a in candidates
                    if a.valid_from <= at and (a.valid_to is None or a.valid_to > at)
                    and (a.plan_id is None or (plan_id is not None and a.plan_id == plan_id))]
        if not in_force:
            raise NoTariffInForceError(
                f"no tariff is assigned to site {site_id!r} at {at.isoformat()}")

        def rank(a: Assignment) -> tuple[int, int, dt.datetime]:
            return (int(a.connector_id is not None and a.connector_id == connector_id),
                    int(a.plan_id is not None), a.valid_from)

        return self.version_at(connect, max(in_force, key=rank).tariff_id, at)

    def version_at(self, connect: Connect, tariff_id: str, at: dt.datetime) -> TariffVersion:
        """``tariff_selection.version_at``: the newest version created at or before ``at``;
        before the first, the first."""
        versions = self._versions.get(tariff_id)
        if versions is None:
            rows = connect().execute(_VERSIONS, {"tariff_id": tariff_id,
                                            "operator_id": self.operator_id}).fetchall()
            versions = tuple(self._version(tariff_id, r) for r in rows)
            if versions:
                _keep(self._versions, tariff_id, versions)
        if not versions:
            raise NoTariffInForceError(f"no tariff {tariff_id!r}")
        in_force = [v for v in versions if v.created_at <= at]
        return in_force[-1] if in_force else versions[0]

    @staticmethod
    def _version(tariff_id: str, row: Any) -> TariffVersion:
        tariff = stored_tariff(tariff_id, row.document)
        return TariffVersion(tariff_id, row.id, row.version, row.created_at, tariff,
                             compile_tariff(tariff))

    # -- plans ------------------------------------------------------------------------------------
    def plan_at(self, connect: Connect, plan_id: str, at: dt.datetime) -> Plan:
        """``catalog.load_plan_at``: the version in force at ``at`` (``not_found`` for
        another operator's plan)."""
        history = self._plans.get(plan_id)
        if history is None:
            plan = connect().execute(_PLAN, {"plan_id": plan_id,
                                        "operator_id": self.operator_id}).first()
            if plan is None:
                raise catalog.NotFoundError(f"no plan {plan_id!r}")
            rows = connect().execute(_PLAN_VERSIONS, {"plan_id": plan_id}).fetchall()
            history = PlanHistory(tuple((r.created_at, catalog.plan_from_terms(
                plan_id=plan.id, operator_id=plan.operator_id, kind=plan.kind, name=r.name,
                currency=plan.currency, terms=r.terms, active=r.active, version=r.version))
                for r in rows))
            _keep(self._plans, plan_id, history)
        return history.at(at)

    def list_price_plan(self, currency: str) -> Plan:
        plan = self._list_price_plans.get(currency)
        if plan is None:
            plan = catalog.list_price_plan(self.operator_id, currency)
            _keep(self._list_price_plans, currency, plan)
        return plan

    # -- promotions and loyalty -------------------------------------------------------------------
    def automatic_promotions(self, connect: Connect, at: dt.datetime, currency: Currency
                             ) -> list[Promotion]:
        """``catalog.automatic_promotions``: active automatic promotions in ``currency`` whose
        window contains ``at``, in priority order, at most ``MAX_PROMOTIONS_PER_CHARGE``."""
        if self._automatic is None:
            rows = connect().execute(_AUTOMATIC, {"operator_id": self.operator_id})
            self._automatic = tuple(sorted((catalog.promotion_from_row(r) for r in rows),
                                           key=Promotion.order_key))
        return [p for p in self._automatic
                if p.currency == currency and p.starts_at <= at
                and (p.ends_at is None or at < p.ends_at)][:MAX_PROMOTIONS_PER_CHARGE]

    def promotion_by_code(self, connect: Connect, code: str) -> Promotion:
        """``catalog.promotion_by_code``; ``unknown_promo_code`` is never kept."""
        normalized = normalize_code(code)
        found = self._codes.get(normalized)
        if found is None:
            row = connect().execute(_BY_CODE, {"operator_id": self.operator_id,
                                          "code": normalized}).first()
            if row is None:
                raise catalog.UnknownPromoCodeError("no promotion has this code")
            found = catalog.promotion_from_row(row)
            _keep(self._codes, normalized, found)
        return found

    def loyalty_tiers(self, connect: Connect) -> tuple[LoyaltyTier, ...]:
        if self._tiers is None:
            self._tiers = tuple(catalog.tier_from_row(r) for r in connect().execute(
                _TIERS, {"operator_id": self.operator_id}))
        return self._tiers


class CatalogCache:
    """This process's snapshots, one per operator (least recently used out).

    With a ``GenerationReader`` (the API's), ``current`` checks a snapshot without a pooled
    connection; ``snapshot`` reads the generation on the caller's connection."""

    def __init__(self, reader: GenerationReader | None = None,
                 max_operators: int = MAX_OPERATORS) -> None:
        self.reader = reader
        self.max_operators = max_operators
        self._snapshots: OrderedDict[str, CatalogSnapshot] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, operator_id: str) -> CatalogSnapshot:
        """The operator's snapshot as of its generation now (read by ``reader``). Rows the
        snapshot still has to load must be read on connections opened after this call."""
        if self.reader is None:
            raise RuntimeError("CatalogCache.current needs a GenerationReader")
        return self._for(operator_id, self.reader.generation(operator_id))

    def snapshot(self, conn: Connection, operator_id: str) -> CatalogSnapshot:
        """The operator's snapshot as of the generation ``conn`` reads now. Call it first in
        the transaction, before reading anything the snapshot may load."""
        return self._for(operator_id, catalog_generation(conn, operator_id))

    def _for(self, operator_id: str, generation: int) -> CatalogSnapshot:
        with self._lock:
            current = self._snapshots.get(operator_id)
            if current is not None and current.generation == generation:
                self._snapshots.move_to_end(operator_id)
                return current
            fresh = CatalogSnapshot(operator_id, generation)
            self._snapshots[operator_id] = fresh
            self._snapshots.move_to_end(operator_id)
            while len(self._snapshots) > self.max_operators:
                self._snapshots.popitem(last=False)
            return fresh

    def clear(self) -> None:
        with self._lock:
            self._snapshots.clear()

    def close(self) -> None:
        self.clear()
        if self.reader is not None:
            self.reader.close()


class ReadConnection:
    """A read connection opened on first call and closed with the ``with`` block, so a quote
    the snapshot answers whole opens none. On PostgreSQL in autocommit mode: no BEGIN and
    ROLLBACK round trips (each statement sees what was committed before it, as under READ
    COMMITTED). SQLite keeps its deferred read transaction (changing a pooled SQLite
    connection's isolation level would undo ``engine._sqlite_pragmas``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __call__(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect()
            if self._engine.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        return self._connection

    def __enter__(self) -> ReadConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
