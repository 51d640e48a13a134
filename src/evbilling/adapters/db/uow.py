"""Write transactions: one transaction, committed when the block ends, rolled back on any error.

On SQLite the transaction takes the write lock up front (BEGIN IMMEDIATE), so concurrent writers
queue on busy_timeout instead of failing when a read lock cannot be upgraded; readers
(``engine.connect()``) begin deferred and never wait in WAL mode. On PostgreSQL it is a plain
transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection, \
            connection.begin():
        yield connection
