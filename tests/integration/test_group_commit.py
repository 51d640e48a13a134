"""The group-commit writer on SQLite and PostgreSQL: one transaction per batch, flush waits for
the batch in flight, a bad write fails alone; prepared (driver-level) writes store what the
SQLAlchemy path stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets

import pytest
from sqlalchemy import Engine, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.group_commit import GroupCommitWriter, PreparedWrite
from evbilling.adapters.db.uow import write_transaction
from evbilling.services.charging import ChargingService
from evbilling.services.demo import seed_demo

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


# -- prepared writes: the OCPP gateway's hot statements at the driver level ----------------------
def active_sessions(engine: Engine, count: int, status: str = "active") -> tuple[str, list[str]]:
    now = dt.datetime.now(dt.UTC)
    with write_transaction(engine) as conn:
        operator_id = seed_demo(conn)
        site_id = conn.execute(select(s.sites.c.id).where(
            s.sites.c.operator_id == operator_id)).scalars().first()
        ids = [f"ses_gc{secrets.token_hex(8)}" for _ in range(count)]
        conn.execute(insert(s.charging_sessions), [{
            "id": session_id, "operator_id": operator_id, "site_id": site_id,
            "started_at": now, "energy_milliwh": 0, "periods": [], "currency": "EUR",
            "status": status, "created_at": now} for session_id in ids])
    return operator_id, ids


def hot_statements(engine: Engine) -> tuple[PreparedWrite, PreparedWrite]:
    service = ChargingService(engine, events=None)  # type: ignore[arg-type] - statements only
    return service._insert_sample, service._update_live  # noqa: SLF001 - what it submits


def samples(operator_id: str) -> list[dict[str, object]]:
    """Meter samples with every kind of value the columns take (big registers, nulls, both
    booleans, zero)."""
    return [{"at_ms": 1_764_000_000_000 + n * 10_000, "operator_id": operator_id,
             "energy_milliwh": [0, 2**40 + n, None, 123_456_789][n % 4],
             "power_w": [None, 0, 22_000, -5][n % 4], "current_ma": [32_000, None, 1, 0][n % 4],
             "soc_percent": [None, 0, 57, 100][n % 4], "charging": [True, False, None][n % 3]}
            for n in range(24)]


def stored_samples(engine: Engine, session_id: str, *, raw: bool) -> list[tuple[object, ...]]:
    """The session's samples as the database holds them (``raw``: the driver's values, no
    SQLAlchemy type processing) or through the table's types, by time."""
    columns = "at_ms, operator_id, energy_milliwh, power_w, current_ma, soc_percent, charging"
    with engine.connect() as conn:
        if raw:
            return [tuple(r) for r in conn.execute(text(
                f"SELECT {columns} FROM meter_samples WHERE session_id = :id ORDER BY at_ms"  # noqa: S608
            ), {"id": session_id})]
        t = s.meter_samples.c
        return [tuple(r) for r in conn.execute(select(
            t.at_ms, t.operator_id, t.energy_milliwh, t.power_w, t.current_ma, t.soc_percent,
            t.charging).where(t.session_id == session_id).order_by(t.at_ms))]


def stored_checkpoint(engine: Engine, session_id: str, *, raw: bool) -> tuple[object, ...]:
    columns = "energy_milliwh, last_sample_at, live, last_seq_no, status"
    with engine.connect() as conn:
        if raw:
            return tuple(conn.execute(text(
                f"SELECT {columns} FROM charging_sessions WHERE id = :id"  # noqa: S608
            ), {"id": session_id}).one())
        c = s.charging_sessions.c
        return tuple(conn.execute(select(
            c.energy_milliwh, c.last_sample_at, c.live, c.last_seq_no, c.status).where(
            c.id == session_id)).one())


def test_prepared_hot_writes_store_exactly_what_sqlalchemy_stores(engine: Engine):
    operator_id, (fast, plain, closed_fast, closed_plain) = active_sessions(engine, 4)
    with write_transaction(engine) as conn:
        conn.execute(update(s.charging_sessions).where(s.charging_sessions.c.id.in_(
            [closed_fast, closed_plain])).values(status="completed"))
    insert_sample, update_live = hot_statements(engine)
    written = samples(operator_id)
    at = dt.datetime(2026, 11, 24, 13, 7, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    live = {"amount_minor_incl": 1234, "total_excl": "10.370000", "total_incl": "12.340300",
            "energy_milliwh": 2**40, "at_ms": 1_764_000_000_000, "note": "Straße ⚡",
            "nested": {"list": [1, None, True], "empty": {}}}

    def checkpoint(session_id: str) -> dict[str, object]:
        return {"b_id": session_id, "b_energy": 2**40, "b_at": at, "b_seq": 7, "b_live": live}

    async def main() -> None:
        writer = GroupCommitWriter(engine)
        writer.start()
        for sample in written:
            writer.submit_nowait(insert_sample, {"session_id": fast, **sample})
            writer.submit_nowait(insert_sample.statement, {"session_id": plain, **sample})
        first = {**written[0], "energy_milliwh": 999, "charging": False}  # ON CONFLICT: kept
        writer.submit_nowait(insert_sample, {"session_id": fast, **first})
        writer.submit_nowait(insert_sample.statement, {"session_id": plain, **first})
        for session_id in (fast, closed_fast):
            writer.submit_nowait(update_live, checkpoint(session_id))
        for session_id in (plain, closed_plain):
            writer.submit_nowait(update_live.statement, checkpoint(session_id))
        await writer.stop()

    asyncio.run(main())
    keys = tuple(checkpoint(fast))
    assert insert_sample.form(engine.dialect, ("session_id", *written[0])) is not None
    assert update_live.form(engine.dialect, keys) is not None  # both ran at the driver level
    expected = [tuple(x.values()) for x in written]
    assert stored_samples(engine, fast, raw=False) == expected
    assert stored_samples(engine, fast, raw=True) == stored_samples(engine, plain, raw=True)
    assert stored_checkpoint(engine, fast, raw=False) == (2**40, at, live, 7, "active")
    assert stored_checkpoint(engine, fast, raw=True) == stored_checkpoint(engine, plain, raw=True)
    untouched = stored_checkpoint(engine, closed_fast, raw=False)
    assert untouched == (0, None, None, None, "completed")  # WHERE status = 'active' held
    assert stored_checkpoint(engine, closed_plain, raw=False) == untouched


def test_a_bad_prepared_write_fails_alone_and_the_rest_of_its_batch_is_stored(engine: Engine):
    operator_id, (session_id,) = active_sessions(engine, 1)
    insert_sample, _ = hot_statements(engine)
    written = samples(operator_id)

    async def main() -> tuple[BaseException | None, BaseException | None, int]:
        writer = GroupCommitWriter(engine, max_delay_s=0.001)
        writer.start()
        for sample in written[:12]:
            writer.submit_nowait(insert_sample, {"session_id": session_id, **sample})
        writer.submit_nowait(insert_sample, {"session_id": "ses_unknown", **written[12]})
        bad = writer.submit(insert_sample, {"session_id": session_id,
                                            **{**written[13], "operator_id": None}})
        good = writer.submit(insert_sample, {"session_id": session_id, **written[14]})
        for sample in written[15:]:
            writer.submit_nowait(insert_sample, {"session_id": session_id, **sample})
        results = await asyncio.gather(bad, good, return_exceptions=True)
        await writer.stop()
        return (*(r if isinstance(r, BaseException) else None for r in results),
                writer.batches)

    bad, good, batches = asyncio.run(main())
    assert isinstance(bad, IntegrityError) and good is None
    kept = written[:12] + written[14:]
    assert stored_samples(engine, session_id, raw=False) == [tuple(x.values()) for x in kept]
    assert batches == 0  # all in one batch, which failed: the one-by-one retry kept the rest


def test_a_prepared_write_sqlalchemy_must_expand_still_runs(engine: Engine):
    _, ids = active_sessions(engine, 3)
    c = s.charging_sessions.c
    flag = PreparedWrite(update(s.charging_sessions).where(
        c.id.in_(bindparam("ids", expanding=True))).values(flags=bindparam("b_flags")))

    async def main() -> None:
        writer = GroupCommitWriter(engine)
        writer.start()
        await writer.submit(flag, {"ids": ids[:2], "b_flags": {"timeout": True}})
        await writer.stop()

    asyncio.run(main())
    assert flag.form(engine.dialect, ("ids", "b_flags")) is None  # SQLAlchemy's execute ran it
    with engine.connect() as conn:
        flags = dict(conn.execute(select(c.id, c.flags).where(c.id.in_(ids))).all())
    assert flags == {ids[0]: {"timeout": True}, ids[1]: {"timeout": True}, ids[2]: None}
