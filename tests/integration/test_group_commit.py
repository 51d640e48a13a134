"""The group-commit writer on SQLite and PostgreSQL: one transaction per batch, flush waits for
the batch in flight, a bad write fails alone."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.group_commit import GroupCommitWriter

AUDIT = insert(s.audit_log)


def row(n: int) -> dict[str, object]:
    return {"operator_id": None, "at": dt.datetime.now(dt.UTC), "actor": f"test:{n}",
            "action": "group_commit.test", "target": None, "outcome": "success",
            "source_ip": None, "detail": None}


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(s.audit_log)).scalar_one())


def test_many_writes_commit_in_few_transactions(engine: Engine):
    async def main() -> GroupCommitWriter:
        writer = GroupCommitWriter(engine)
        writer.start()
        futures = [writer.submit(AUDIT, row(n)) for n in range(500)]
        await asyncio.gather(*futures)
        await writer.stop()
        return writer

    writer = asyncio.run(main())
    assert count(engine) == 500 and writer.writes == 500 and writer.batches <= 5


def test_flush_waits_for_the_batch_already_on_its_way(engine: Engine):
    async def main() -> tuple[bool, int]:
        writer = GroupCommitWriter(engine, max_delay_s=0)
        writer.start()
        future = writer.submit(AUDIT, row(1))
        for _ in range(10_000):  # until the writer has taken the batch (nothing pending)
            if not writer._pending:  # noqa: SLF001 - the state this test is about
                break
            await asyncio.sleep(0)
        await writer.flush()
        done = future.done()
        seen = await asyncio.to_thread(count, engine)
        await writer.stop()
        return done, seen

    done, seen = asyncio.run(main())
    assert done and seen == 1


def test_a_bad_write_fails_alone(engine: Engine):
    duplicate = {**row(0), "seq": 424242}

    async def main() -> list[BaseException | None]:
        writer = GroupCommitWriter(engine)
        writer.start()
        futures = [writer.submit(AUDIT, duplicate), writer.submit(AUDIT, row(2)),
                   writer.submit(AUDIT, duplicate)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await writer.stop()
        return [r if isinstance(r, BaseException) else None for r in results]

    results = asyncio.run(main())
    assert results[0] is None and results[1] is None
    assert isinstance(results[2], IntegrityError)
    assert count(engine) == 2


def test_a_stopped_writer_refuses_writes(engine: Engine):
    async def main() -> None:
        writer = GroupCommitWriter(engine)
        writer.submit(AUDIT, row(1))

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(main())


def test_writes_nobody_awaits_are_committed_by_flush_and_a_bad_one_fails_alone(engine: Engine):
    duplicate = {**row(0), "seq": 434343}

    async def main() -> tuple[int, int]:
        writer = GroupCommitWriter(engine, max_delay_s=0.001)
        writer.start()
        writer.submit_nowait(AUDIT, duplicate)
        for n in range(1, 300):
            writer.submit_nowait(AUDIT, row(n))
        writer.submit_nowait(AUDIT, duplicate)  # refused by the database, logged, dropped
        await writer.flush()
        seen = await asyncio.to_thread(count, engine)
        tail = writer.submit(AUDIT, row(301))  # awaited writes still resolve after them
        await tail
        await writer.stop()
        return seen, await asyncio.to_thread(count, engine)

    seen, final = asyncio.run(main())
    assert seen == 300 and final == 301


def test_writes_nobody_awaits_wait_for_a_bigger_batch_until_somebody_awaits_one(engine: Engine):
    async def main() -> tuple[int, int, float]:
        writer = GroupCommitWriter(engine, max_delay_s=0.001, idle_delay_s=30.0)
        writer.start()
        writer.submit_nowait(AUDIT, row(1))
        await asyncio.sleep(0.2)
        batches_before = writer.batches  # still filling: nobody waits for it
        loop = asyncio.get_running_loop()
        started = loop.time()
        await writer.submit(AUDIT, row(2))  # someone waits: the batch goes now, with both
        waited = loop.time() - started
        batches = writer.batches
        await writer.stop()
        return batches_before, batches, waited

    before, after, waited = asyncio.run(main())
    assert before == 0 and after == 1 and waited < 5.0
    assert count(engine) == 2
