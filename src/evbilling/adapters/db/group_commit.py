"""Group commit: many small writes from the event loop, one transaction per batch.

The OCPP gateway receives thousands of meter samples a second; one transaction per sample would
cap it at the disk's fsync rate. Writers ``submit`` a statement with its parameters and get a
future (or ``submit_nowait`` and get none); a background task collects what arrived in the last
few milliseconds — ``max_delay_s`` (5 ms) when someone awaits a write of the batch or a
``flush``, else up to ``idle_delay_s`` (25 ms: fewer, larger transactions) — at most
``max_batch`` writes, runs it in a worker thread as ONE transaction (``write_transaction``:
BEGIN IMMEDIATE on SQLite), executing identical statements as one ``executemany``, and resolves
every future when the commit is durable. A caller that must not answer before its write is
durable (a StopTransaction frame) awaits the future; a caller that need not (a meter sample whose
energy the register carries anyway) does not.

Failure isolation: if a batch fails, each write is retried in its own transaction, so one bad
row fails only its own future. The queue is bounded (``max_pending``): ``submit`` raises
``WriterOverloadedError`` rather than growing without limit.

Hot writes (a meter sample per MeterValues) are submitted as a ``PreparedWrite``: the statement
is compiled once per dialect and set of parameter names, and a batch of its writes goes to the
driver as one ``exec_driver_sql`` executemany of positional tuples, each made by a small
converter that applies the column types' bind processors (UtcDateTime, JSON, Boolean) as
SQLAlchemy would. SQLAlchemy's per-row work (``construct_params``, the processor lookups, the
positional list) was a quarter of the writer's CPU in bench/ocpp_billing.py (28 -> 21 µs). What is
stored is the same; any other statement keeps going through ``Connection.execute``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Dialect, Engine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from evbilling.adapters.db.uow import write_transaction

logger = logging.getLogger(__name__)


class WriterOverloadedError(RuntimeError):
    retryable = True


class WriterStoppedError(RuntimeError):
    retryable = True


MAX_FORMS = 16  # compiled forms kept per PreparedWrite (sets of parameter names)

_Row = Callable[[Mapping[str, Any]], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _DriverForm:
    """A ``PreparedWrite`` for one dialect and set of parameter names: the SQL the driver
    runs, and the converter from a write's parameters to the driver's positional tuple."""

    dialect: Dialect
    sql: str
    row: _Row


class PreparedWrite:
    """A statement written many times with different parameters (a meter sample), run at the
    driver level: compiled once per dialect and set of parameter names, each batch of its
    writes one ``exec_driver_sql`` executemany of positional tuples.

    Submit it to ``GroupCommitWriter.submit``/``submit_nowait`` like a statement; parameters
    are a mapping of bind names (column keys for an INSERT) as for ``Connection.execute``.
    A statement that needs SQLAlchemy's per-row work (Python-side column defaults, expanding
    or callable parameters, RETURNING), or a driver with a parameter style this does not
    translate, runs through ``Connection.execute`` as before (logged once)."""

    __slots__ = ("statement", "_forms")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, ...], _DriverForm | None] = {}

    def __repr__(self) -> str:
        return f"PreparedWrite({self.statement})"

    def form(self, dialect: Dialect, keys: tuple[str, ...]) -> _DriverForm | None:
        """The driver-level form for these parameter names, or None: use SQLAlchemy."""
        try:
            form = self._forms[keys]
        except KeyError:
            form = None
        else:
            if form is None or form.dialect is dialect:
                return form
        form = _driver_form(self.statement, dialect, keys)
        if form is None:
            logger.warning("%s runs through SQLAlchemy's execute on %s",
                           str(self.statement).split("\n")[0][:80], dialect.name)
        if len(self._forms) >= MAX_FORMS:  # callers that vary their names: recompile
            self._forms.clear()
        self._forms[keys] = form
        return form

    def execute_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the writes in order, as one executemany (all with the first one's names)."""
        form = self.form(conn.dialect, tuple(params[0]))
        if form is None:
            conn.execute(self.statement, list(params))
            return
        row = form.row
        conn.exec_driver_sql(form.sql, [row(p) for p in params])


_PYFORMAT = re.compile(r"%%|%\((.+?)\)s")


def _driver_form(statement: Executable, dialect: Dialect, keys: tuple[str, ...]
                 ) -> _DriverForm | None:
    """Compile ``statement`` as ``Connection.execute`` would for an executemany of parameter
    sets with these names, and build the converter that does what its per-row parameter
    processing (``construct_params`` + bind processors + positional order) does."""
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):  # not "numeric", "named"
        return None
    compiled = statement.compile(dialect=dialect,  # type: ignore[attr-defined]
                                 column_keys=list(keys), for_executemany=True)
    if not isinstance(compiled, SQLCompiler):
        return None
    if (compiled.insert_prefetch or compiled.update_prefetch or compiled.returning
            or compiled.literal_execute_params or compiled.post_compile_params
            or compiled.schema_translate_map
            or any(b.callable is not None for b in compiled.bind_names)):
        return None
    if compiled.positional:
        if dialect.paramstyle not in ("qmark", "format") or compiled.positiontup is None:
            return None
        sql, order = compiled.string, list(compiled.positiontup)
    else:  # pyformat: "%(name)s" -> "%s" in order of appearance (both are psycopg's)
        unescaped = {v: k for k, v in (compiled.escaped_bind_names or {}).items()}
        order = []

        def positional(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%%"
            order.append(unescaped.get(match.group(1), match.group(1)))
            return "%s"

        sql = _PYFORMAT.sub(positional, compiled.string)
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    constants = compiled.construct_params(escape_names=False, _check=False)  # + .params()
    given = getattr(compiled, "_collected_params", None) or {}
    processors = compiled._bind_processors  # noqa: SLF001 - what _init_compiled applies
    names = set(keys)
    parts: list[str] = []
    scope: dict[str, Any] = {}
    for n, name in enumerate(order):
        bind = by_name.get(name)
        if bind is None:
            return None
        processor = processors.get(name)
        if processor is not None and not callable(processor):
            return None  # a tuple's processors, one per element
        key = bind.key if bind.key in names else name if name in names else None
        if key is None:  # a value fixed in the statement (c.status == "active")
            if bind.required and bind.key not in given and name not in given:
                return None  # SQLAlchemy raises "a value is required" for each write
            value = constants[name]
            scope[f"c{n}"] = value if processor is None else processor(value)
            parts.append(f"c{n}")
        elif processor is None:
            parts.append(f"p[{key!r}]")
        else:
            scope[f"f{n}"] = processor
            parts.append(f"f{n}(p[{key!r}])")
    source = f"def row(p):\n    return ({', '.join(parts)}{',' if len(parts) == 1 else ''})\n"
    exec(source, scope)  # noqa: S102 - names are repr()'d bind keys, values come via scope
    return _DriverForm(dialect, sql, scope["row"])


@dataclass(slots=True)
class _Write:
    statement: Executable | PreparedWrite
    params: Mapping[str, Any] | None
    future: asyncio.Future[None] | None = field(repr=False)  # None: nobody awaits it


class GroupCommitWriter:
    def __init__(self, engine: Engine, *, max_delay_s: float = 0.005,
                 idle_delay_s: float = 0.025, max_batch: int = 5_000,
                 max_pending: int = 200_000) -> None:
        self.engine = engine
        #: how long a batch may fill while someone awaits one of its writes (or a flush) ...
        self.max_delay_s = max_delay_s
        #: ... and while nobody does (meter samples): fewer, larger transactions, whose fixed
        #: cost (thread hop, BEGIN, COMMIT) was most of a small batch's
        self.idle_delay_s = max(idle_delay_s, max_delay_s)
        #: set: an awaited write or a flush is waiting in the current batch
        self._hurry = asyncio.Event()
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[_Write] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._submitted = 0  # writes submitted so far
        self._finished = 0  # writes committed or failed (batches finish in submission order)
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0  # committed transactions (for tests and benchmarks)
        self.writes = 0

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._hurry = asyncio.Event()  # events bind to the loop that first waits on them
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="group-commit")

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        if self._task is None:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        self._hurry.set()
        await self._task
        self._task = None

    # -- writing ---------------------------------------------------------------------------
    def submit(self, statement: Executable | PreparedWrite,
               params: Mapping[str, Any] | None = None) -> asyncio.Future[None]:
        """Queue a write; the future resolves when it is committed (or fails)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Write(statement, params, future))
        self._hurry.set()
        return future

    def submit_nowait(self, statement: Executable | PreparedWrite,
                      params: Mapping[str, Any] | None = None) -> None:
        """Queue a write nobody waits for (a failure is logged): no future to make and
        resolve, which counts at thousands of writes a second."""
        self._queue(_Write(statement, params, None))

    def _queue(self, write: _Write) -> None:
        if self._task is None or self._stopping:
            raise WriterStoppedError("the group-commit writer is not running")
        if len(self._pending) >= self.max_pending:
            raise WriterOverloadedError("too many writes waiting for the database")
        self._pending.append(write)
        self._submitted += 1
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed), including a batch
        already on its way to the database (batches finish in submission order)."""
        if self._finished >= self._submitted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((self._submitted, future))
        self._hurry.set()
        await future

    def _finish(self, count: int) -> None:
        self._finished += count
        if self._flushes:
            done = [f for target, f in self._flushes if target <= self._finished]
            self._flushes = [(t, f) for t, f in self._flushes if t > self._finished]
            for future in done:
                if not future.done():
                    future.set_result(None)

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError("start() sets up the writer's event")
        while True:
            await wake.wait()
            wake.clear()
            if not self._pending:
                if self._stopping:
                    return
                continue
            if not self._stopping and len(self._pending) < self.max_batch:
                await self._fill()
            batch, self._pending = (self._pending[:self.max_batch],
                                    self._pending[self.max_batch:])
            if self._pending:
                wake.set()
            await self._commit(batch)
            if self._stopping and not self._pending:
                return

    async def _fill(self) -> None:
        """Let the batch fill: ``max_delay_s`` when someone waits for it, else up to
        ``idle_delay_s``, cut short when an awaited write or a flush arrives meanwhile."""
        hurry = self._hurry
        if not hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), self.idle_delay_s)
        if hurry.is_set() and not self._stopping:
            await asyncio.sleep(self.max_delay_s)
        hurry.clear()

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            await asyncio.to_thread(self._write_batch, batch)
        except Exception:  # noqa: BLE001 - isolate the culprit below
            logger.warning("group commit of %d writes failed; retrying one by one", len(batch))
            for write in batch:
                try:
                    await asyncio.to_thread(self._write_batch, [write])
                except Exception as exc:  # noqa: BLE001 - reported to the submitter
                    if write.future is None:
                        logger.error("write failed and was dropped: %s", exc)
                    elif not write.future.done():
                        write.future.set_exception(exc)
                else:
                    if write.future is not None and not write.future.done():
                        write.future.set_result(None)
            self._finish(len(batch))
            return
        self.batches += 1
        self.writes += len(batch)
        for write in batch:
            if write.future is not None and not write.future.done():
                write.future.set_result(None)
        self._finish(len(batch))

    def _write_batch(self, batch: Sequence[_Write]) -> None:
        with write_transaction(self.engine) as conn:
            _execute_grouped(conn, batch)


def _execute_grouped(conn: Connection, batch: Sequence[_Write]) -> None:
    """Run a batch as one executemany per statement, statements in the order they first appear,
    each statement's writes in submission order. (Writes of different statements may therefore
    run in another order than submitted: a caller whose write depends on another statement's
    row awaits that row's future first.)"""
    groups: dict[int, tuple[Executable | PreparedWrite, list[Mapping[str, Any]]]] = {}
    for write in batch:
        if write.params is None:
            if isinstance(write.statement, PreparedWrite):
                write.statement.execute_many(conn, [{}])
            else:
                conn.execute(write.statement)
            continue
        group = groups.get(id(write.statement))
        if group is None:
            groups[id(write.statement)] = (write.statement, [write.params])
        else:
            group[1].append(write.params)
    for statement, params in groups.values():
        if isinstance(statement, PreparedWrite):
            statement.execute_many(conn, params)
        else:
            conn.execute(statement, params)
