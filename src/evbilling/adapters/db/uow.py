"""Unit of work over a SQLAlchemy Core connection: one transaction, rolled back unless
committed. On SQLite every write transaction starts with BEGIN IMMEDIATE (see engine.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


class SqlUnitOfWork:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends normally, rolled back on any
        error; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
        with self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection, \
                connection.begin():
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection
            connection.rollback()
