"""Benchmark: the group-commit writer with the OCPP gateway's hot writes, without the gateway.

Per MeterValues the charging service submits one meter sample (INSERT .. ON CONFLICT DO
NOTHING into ``meter_samples``) and, every third message (a 30 s checkpoint at 10 s samples),
the session row's running state (UPDATE ``charging_sessions`` .. WHERE status = 'active', with
a datetime and a JSON document). This submits the same statements the service does
(``ChargingService._insert_sample`` / ``_update_live``) to a started ``GroupCommitWriter`` from
the event loop, ``submit_nowait`` as the service does, then ``flush``es, and reports CPU
microseconds (the writer thread included) per MeterValues' worth of writes, best of the rounds.

    .venv/bin/python bench/group_commit.py                       # SQLite file in a temp dir
    .venv/bin/python bench/group_commit.py --postgres postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/group_commit.py --profile 25          # cProfile to stderr

``--postgres`` takes an admin URL: the benchmark creates a throw-away database, migrates it,
and drops it at the end. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, func, insert, make_url, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.engine import make_engine, migrate
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.periods import from_epoch_ms
from evbilling.services.charging import ChargingService
from evbilling.services.demo import seed_demo

CHECKPOINT_EVERY = 3  # messages per session-row checkpoint (30 s of 10 s samples)


@contextlib.contextmanager
def database(postgres_admin_url: str | None) -> Iterator[str]:
    if postgres_admin_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'writer.sqlite3'}"
        return
    admin = make_url(postgres_admin_url).set(drivername="postgresql")
    name = f"evb_bench_{secrets.token_hex(6)}"
    libpq = admin.render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def active_sessions(engine: Engine, count: int) -> tuple[str, list[str]]:
    """``count`` active OCPP sessions of the demo operator (the rows the samples refer to)."""
    now = dt.datetime.now(dt.UTC)
    with write_transaction(engine) as conn:
        operator_id = seed_demo(conn)
        site_id = conn.execute(select(s.sites.c.id).where(
            s.sites.c.operator_id == operator_id)).scalars().first()
        ids = [f"ses_bench{n:06d}{secrets.token_hex(4)}" for n in range(count)]
        conn.execute(insert(s.charging_sessions), [{
            "id": session_id, "operator_id": operator_id, "site_id": site_id,
            "started_at": now, "energy_milliwh": 0, "periods": [], "currency": "EUR",
            "status": "active", "created_at": now} for session_id in ids])
    return operator_id, ids


async def run(engine: Engine, sessions: int, messages: int, rounds: int, per_batch: int,
              profile: int | None) -> dict[str, Any]:
    operator_id, ids = active_sessions(engine, sessions)
    service = ChargingService(engine, events=None)  # type: ignore[arg-type] - only its writer
    writer = service.writer
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:  # the writer thread's side (cProfile sees one thread at a time)
        write_batch = writer._write_batch  # noqa: SLF001

        def profiled(batch: Any) -> None:
            profiler.enable()
            try:
                write_batch(batch)
            finally:
                profiler.disable()

        writer._write_batch = profiled  # type: ignore[method-assign]  # noqa: SLF001
    writer.start()
    start_ms = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp() * 1000)
    best = float("inf")
    rows = 0
    for r in range(rounds):
        t0 = time.process_time()
        for k in range(messages):  # ``sessions`` MeterValues per k
            at_ms = start_ms + (r * messages + k + 1) * 10_000
            energy = (r * messages + k) * 30_000
            for session_id in ids:
                writer.submit_nowait(service._insert_sample, {  # noqa: SLF001 - the hot write
                    "session_id": session_id, "at_ms": at_ms, "operator_id": operator_id,
                    "energy_milliwh": energy, "power_w": 10_800, "current_ma": 15_650,
                    "soc_percent": None, "charging": True})
                if k % CHECKPOINT_EVERY == 0:
                    writer.submit_nowait(service._update_live, {  # noqa: SLF001
                        "b_id": session_id, "b_energy": energy, "b_at": from_epoch_ms(at_ms),
                        "b_seq": None, "b_live": {
                            "amount_minor_incl": energy // 1000, "total_excl": "1.234567",
                            "total_incl": "1.469135", "energy_milliwh": energy,
                            "at_ms": at_ms}})
                    rows += 1
                rows += 1
            if (k + 1) % per_batch == 0:
                await writer.flush()  # one transaction per ``per_batch`` messages
        await writer.flush()
        cpu = time.process_time() - t0
        best = min(best, cpu / (messages * sessions) * 1e6)
    await writer.stop()
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(s.meter_samples)).scalar_one()
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(profile)
    return {"benchmark": "group_commit", "dialect": engine.dialect.name,
            "meter_values": messages * sessions * rounds, "rows": rows,
            "samples_stored": stored, "batches": writer.batches,
            "meter_values_per_batch": per_batch * sessions,
            "cpu_us_per_meter_values": round(best, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=25, help="per session and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=200,
                        help="MeterValues per transaction (rounded to whole --sessions)")
    parser.add_argument("--profile", type=int, default=None, metavar="N")
    args = parser.parse_args()
    with database(args.postgres) as url:
        engine = make_engine(url)
        migrate(engine)
        try:
            result = asyncio.run(run(engine, args.sessions, args.messages, args.rounds,
                                     max(1, args.batch // args.sessions), args.profile))
        finally:
            engine.dispose()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
