"""Alembic migrations on SQLite and PostgreSQL: they build exactly ``schema.metadata`` and running
them again changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Engine, insert, inspect, select

from evbilling.adapters.db import schema
from evbilling.adapters.db.engine import alembic_config, make_engine, migrate


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request, tmp_path) -> Iterator[Engine]:
    """An engine on a brand-new, empty database (not the shared test database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        url = request.getfixturevalue("new_postgres_database")()
    engine = make_engine(url)
    yield engine
    engine.dispose()


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"the migration history has several heads: {heads}"
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_snapshot(engine: Engine) -> dict[str, Any]:
    inspector = inspect(engine)
    return {
        table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted((fk["name"] or "", tuple(fk["constrained_columns"]),
                                    fk["referred_table"])
                                   for fk in inspector.get_foreign_keys(table)),
            "indexes": sorted((i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)),
            "unique": sorted((u["name"] or "", tuple(u["column_names"]))
                             for u in inspector.get_unique_constraints(table)),
        }
        for table in sorted(inspector.get_table_names())
    }


def test_the_migration_history_has_one_head():
    assert head_revision()


def test_an_empty_database_migrates_to_the_head_revision(empty_engine):
    migrate(empty_engine)

    assert current_revision(empty_engine) == head_revision()
    assert set(inspect(empty_engine).get_table_names()) == {
        *schema.metadata.tables, "alembic_version"}


def test_migrating_twice_changes_nothing(empty_engine):
    migrate(empty_engine)
    before = schema_snapshot(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(insert(schema.operators).values(
            id="op_kept", name="Kept", country_code="DE", party_id="KPT", currency="EUR",
            created_at=dt.datetime.now(dt.UTC)))

    migrate(empty_engine)

    assert schema_snapshot(empty_engine) == before
    assert current_revision(empty_engine) == head_revision()
    with empty_engine.connect() as conn:
        assert conn.execute(select(schema.operators.c.id)).scalars().all() == ["op_kept"]


def test_the_migrated_database_matches_the_schema_in_code(empty_engine):
    migrate(empty_engine)

    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "compare_server_default": True})
        differences = compare_metadata(context, schema.metadata)

    assert differences == []


def test_the_migrated_database_has_the_check_constraints_in_code(empty_engine):
    """Alembic's comparison skips CHECK constraints; they hold the money and role rules."""
    migrate(empty_engine)
    inspector = inspect(empty_engine)

    in_database = {(table, check["name"]) for table in inspector.get_table_names()
                   for check in inspector.get_check_constraints(table)}

    assert in_database == {(table.name, constraint.name)
                           for table in schema.metadata.sorted_tables
                           for constraint in table.constraints
                           if isinstance(constraint, CheckConstraint)}
