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

import threading
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, text

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


class GenerationReader:
    """Reads generations over one connection of its own, kept open, in autocommit mode.

    Every quote reads its operator's generation, so this read is the floor of a quote's cost.
    Through a pooled SQLAlchemy connection it costs a checkout (on PostgreSQL a pre-ping round
    trip), BEGIN, the query and ROLLBACK: about ten times the query itself. This reader sends
    the bare query on a DBAPI connection it keeps (autocommit: one round trip, no transaction
    left open; each read sees everything committed before it). A failed read drops the
    connection and retries once on a new one (the database restarted, the network dropped).
    Thread-safe (one lock); the connection is opened on first use, so a forked worker opens
    its own.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._connection: Any = None  # a pool connection (``engine.raw_connection()``)
        compiled = _READ.compile(dialect=engine.dialect)  # the dialect's own SQL and paramstyle
        self._sql = compiled.string
        self._positional = compiled.positional

    def _open(self) -> Any:
        connection = self._engine.raw_connection()
        connection.detach()  # ours alone: closing it closes it, it never goes back to the pool
        if self._engine.dialect.name == "postgresql":
            connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
        # SQLite: our connections are in autocommit mode until an explicit BEGIN
        # (``engine._sqlite_pragmas``), so the read holds no lock after it returns.
        return connection

    def _read(self, operator_id: str) -> int:
        if self._connection is None:
            self._connection = self._open()
        cursor = self._connection.cursor()
        try:
            cursor.execute(self._sql, (operator_id,) if self._positional
                           else {"operator_id": operator_id})
            row = cursor.fetchone()
        finally:
            cursor.close()
        return 0 if row is None else int(row[0])

    def generation(self, operator_id: str) -> int:
        """The operator's generation, as ``catalog_generation`` reads it."""
        with self._lock:
            try:
                return self._read(operator_id)
            except self._engine.dialect.loaded_dbapi.Error:
                self._drop()
                return self._read(operator_id)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - already broken; a new one is opened
                pass

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
