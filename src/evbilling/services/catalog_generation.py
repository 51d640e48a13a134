"""The catalog generation: one counter per operator, bumped with every change to the catalog.

"The catalog" is what a quote reads that is not the driver's own: sites (zone, currency, VAT),
chargers / EVSEs / connectors (which site a connector is at), tariffs, their versions and
assignments, plans and plan versions, promotions and loyalty tiers. **Every transaction that
changes one of them calls ``bump_catalog_generation(conn, operator_id)`` before it commits**;
the counter row (``catalog_generations``) commits or rolls back with the change. A process may
then keep a snapshot of the catalog and trust it exactly while the counter is unchanged
(``services/catalog_cache.py``): one primary-key read per quote instead of ten queries, and a
write on any node is seen by the next quote on every node.

Not catalog (read fresh for every quote): drivers, their plans (``driver_plans``), sessions,
promotion redemptions; OCPP status columns (``connectors.status``, ``chargers.last_seen_at``,
``tariff_versions.used_at``) are not read by quotes either, so updating them needs no bump.

Bump after the transaction's other writes and locks: on PostgreSQL the upsert locks the
operator's counter row until commit, so catalog writers of one operator queue there, always as
their last lock (no lock-order cycle).
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select, text

from evbilling.adapters.db import schema as s

_BUMP = text(
    "INSERT INTO catalog_generations (operator_id, generation) VALUES (:operator_id, 1) "
    "ON CONFLICT (operator_id) DO UPDATE SET generation = catalog_generations.generation + 1")
# Built once: executing a prebuilt statement skips SQLAlchemy's expression building and hits
# its compiled-statement cache.
_READ = select(s.catalog_generations.c.generation).where(
    s.catalog_generations.c.operator_id == bindparam("operator_id"))


def bump_catalog_generation(conn: Connection, operator_id: str) -> None:
    """Record that the operator's catalog changed in this transaction (see module doc)."""
    conn.execute(_BUMP, {"operator_id": operator_id})


def catalog_generation(conn: Connection, operator_id: str) -> int:
    """The operator's current generation (0: never changed since the table existed)."""
    value = conn.execute(_READ, {"operator_id": operator_id}).scalar()
    return 0 if value is None else int(value)
