"""Benchmark: one OCPP 1.6 MeterValues through the whole gateway with full billing, in process.

The same app ``evbilling serve`` runs (``create_app`` on a fresh SQLite file with the demo data,
its background services started: group commit, notifications), chargers connected as
``Connection`` objects of the real gateway, without the socket: each charger sends MeterValues
with 9 sampled values (energy register, power, current x3, voltage x3, SoC) for one transaction
of the demo driver without a plan (the load benchmark's driver). Per message: orjson parse,
schema check, conversion, the charging service (period builder, incremental rating, pricing
pipeline with the operator's automatic promotions, events to the notification service, the
group-committed sample and live-cost writes), the CALLRESULT, and the running-cost
DataTransfer to the charger, which answers at once (its answer goes through the gateway too).

What it leaves out is the WebSocket framing and the socket writes, which ``bench/ocpp_load.py``
measures end to end; this one is for finding where the CPU goes (``--profile``).

    .venv/bin/python bench/ocpp_billing.py                 # 200 chargers x 25 messages
    .venv/bin/python bench/ocpp_billing.py --profile 30    # cProfile, 30 hottest functions

Prints ONE JSON object: microseconds of CPU per MeterValues (best of 3 rounds), and per
message the frames the charger received.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.entrypoints.api.app import create_app
from evbilling.entrypoints.ocpp import v16
from evbilling.entrypoints.ocpp.connection import Connection
from evbilling.services.demo import seed_demo
from evbilling.services.ports import ChargerRef

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ocpp_dispatch import SAMPLED_16  # noqa: E402
from ocpp_load import BENCH_PASSWORD, provision_chargers  # noqa: E402


def sampled(register_wh: int) -> list[dict[str, str]]:
    """``ocpp_dispatch``'s 9 sampled values with this register."""
    return [{**SAMPLED_16[0], "value": str(register_wh)}, *SAMPLED_16[1:]]


def iso(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[
        :-3] + "Z"


class Charger:
    """The charger's side of a ``Connection``: keeps the frames it gets, answers our CALLs."""

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.results: list[Any] = []
        self.calls = 0

    async def send(self, text: str) -> None:
        frame = orjson.loads(text)
        if frame[0] == 2:  # our CALL (a running cost): the charger accepts it
            self.calls += 1
            answer = orjson.dumps([3, frame[1], {"status": "Accepted"}]).decode()
            assert self.connection is not None  # noqa: S101 - set right after creation
            asyncio.get_running_loop().call_soon(
                asyncio.ensure_future, self.connection.on_frame(answer))
        else:
            self.results.append(frame)

    async def close(self, code: int = 1000) -> None:
        return None


async def run(chargers: int, messages: int, rounds: int, profile: int | None
              ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'billing.sqlite3'}"
        app = create_app(url)
        with write_transaction(app.state.engine) as conn:
            seed_demo(conn)
        identities, tokens = provision_chargers(url, chargers, BENCH_PASSWORD, "1.6")
        with app.state.engine.connect() as conn:
            rows = {r.ocpp_identity: r for r in conn.execute(select(s.chargers).where(
                s.chargers.c.ocpp_identity.in_(identities)))}
        async with app.router.lifespan_context(app):
            service = app.state.charging
            side = []
            start_ms = int(dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)
            for n, identity in enumerate(identities):
                row = rows[identity]
                ref = ChargerRef(str(row.id), str(row.operator_id), identity, str(row.site_id),
                                 "1.6")
                charger = Charger()
                charger.connection = Connection(ref, v16.DIALECT, charger, service)
                await charger.connection.on_frame(orjson.dumps([2, f"s{n}", "StartTransaction", {
                    "connectorId": 1, "idTag": tokens[n], "meterStart": 1000,
                    "timestamp": iso(start_ms)}]).decode())
                tx = charger.results[-1][2]["transactionId"]
                side.append((charger, tx))
            register = [1000] * chargers
            sent = 0
            best = float("inf")
            profiler = cProfile.Profile() if profile else None
            for r in range(rounds):
                frames = []
                for k in range(messages):
                    at_ms = start_ms + (r * messages + k + 1) * 10_000
                    for n, (_, tx) in enumerate(side):
                        register[n] += 30  # 10.8 kW for 10 s
                        frames.append((n, orjson.dumps([2, f"m{r}-{k}-{n}", "MeterValues", {
                            "connectorId": 1, "transactionId": tx, "meterValue": [{
                                "timestamp": iso(at_ms),
                                "sampledValue": sampled(register[n])}]}]).decode()))
                if profiler is not None:
                    profiler.enable()
                t0 = time.process_time()
                for n, frame in frames:
                    await side[n][0].connection.on_frame(frame)  # type: ignore[union-attr]
                    await asyncio.sleep(0)  # the charger's answer to the running cost
                await service.writer.flush()
                cpu = time.process_time() - t0
                if profiler is not None:
                    profiler.disable()
                sent += len(frames)
                best = min(best, cpu / len(frames) * 1e6)
            calls = sum(c.calls for c, _ in side)
            errors = sum(1 for c, _ in side for f in c.results if f[0] == 4)
        app.state.engine.dispose()
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)
    return {"benchmark": "ocpp_billing", "chargers": chargers, "messages": sent,
            "cpu_us_per_meter_values": round(best, 1),
            "meter_values_per_s_one_core": round(1e6 / best),
            "running_cost_calls_per_message": round(calls / sent, 3), "call_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=25, help="per charger and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="cProfile the rounds; print the N hottest functions to stderr")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.chargers, args.messages, args.rounds, args.profile)),
                     indent=1))


if __name__ == "__main__":
    main()
