"""Live-cost benchmark: microseconds per meter sample through the charging service, in process.

Prints ONE JSON object. Each sample goes through what a MeterValues frame costs the gateway
after parsing: the period builder, the incremental rater, the pricing pipeline (plan,
promotions, loyalty, VAT), the event, and the group-committed write of the sample.

    .venv/bin/python bench/live_cost.py            # 3 000 samples per driver kind
    .venv/bin/python bench/live_cost.py --quick    # 300
    .venv/bin/python bench/live_cost.py --split    # also: how much of it is rating + pricing

``--split`` adds, per driver kind, the microseconds per sample spent in the rater's preview of
the open period (``SessionRater.snapshot_with``) and in the pricing pipeline
(``session_pricing.price``), timed around those calls; the rest is the service around them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.engine import make_engine, migrate
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain.events import Event
from evbilling.domain.metering import MeterSample
from evbilling.domain.rating import SessionRater
from evbilling.services import charging
from evbilling.services.charging import ChargingService
from evbilling.services.demo import seed_demo
from evbilling.services.ports import ChargerRef, RawFrame, RecordMeterValues, StartTransaction

DRIVERS = {"list_price": "04C4C4C4C4C4C4", "subscription": "04A1B2C3D4E5F6",
           "fleet_gold": "04B0B0B0B0B0B0"}


class CountingSink:
    def __init__(self) -> None:
        self.events = 0

    def publish(self, event: Event) -> None:
        self.events += 1


async def per_sample_us(engine: object, charger: ChargerRef, token: str, samples: int,
                        day: int) -> float:
    service = ChargingService(engine, CountingSink())  # type: ignore[arg-type]
    await service.start(sweep_every_s=3600)
    start = int(dt.datetime(2026, 11, 10 + day, 9, 0, tzinfo=dt.UTC).timestamp() * 1000)
    started = await service.start_transaction(StartTransaction(
        charger, 1, None, token, 1_000_000, start, RawFrame("1", "StartTransaction", "[]")))
    register = 1_000_000
    t0 = time.perf_counter()
    for k in range(1, samples + 1):
        register += 11_000 * 10_000 // 3_600  # 11 kW for 10 s, in mWh
        await service.record_meter_values(RecordMeterValues(
            charger, started.ocpp_transaction_id, 1,
            (MeterSample(start + k * 10_000, register, 11_000, 48_000, True),),
            RawFrame(str(k), "MeterValues", "[]")))
    elapsed = time.perf_counter() - t0
    await service.stop()
    if service.writer.writes < samples:
        raise SystemExit(f"only {service.writer.writes} of {samples} samples were written")
    return elapsed / samples * 1e6


class SplitTimer:
    """Seconds spent in the rater's preview and in the pricing pipeline (``--split``)."""

    def __init__(self) -> None:
        self.seconds = {"snapshot": 0.0, "pricing": 0.0}
        snapshot_with, price = SessionRater.snapshot_with, charging.price

        def timed_snapshot(rater: SessionRater, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return snapshot_with(rater, *args, **kwargs)
            finally:
                self.seconds["snapshot"] += time.perf_counter() - t0

        def timed_price(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return price(*args, **kwargs)
            finally:
                self.seconds["pricing"] += time.perf_counter() - t0

        SessionRater.snapshot_with = timed_snapshot  # type: ignore[method-assign]
        charging.price = timed_price

    def take(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, {"snapshot": 0.0, "pricing": 0.0}
        return taken


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--split", action="store_true",
                        help="also time the rater's preview and the pricing pipeline")
    args = parser.parse_args()
    split = SplitTimer() if args.split else None
    samples = 300 if args.quick else 3_000
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'live.sqlite3'}")
        migrate(engine)
        with write_transaction(engine) as conn:
            seed_demo(conn)
        with engine.connect() as conn:
            row = conn.execute(select(s.chargers).where(
                s.chargers.c.ocpp_identity == "DEMO-CP16-001")).one()
        charger = ChargerRef(row.id, row.operator_id, row.ocpp_identity, row.site_id, "1.6")
        out: dict[str, object] = {"samples_per_driver": samples}
        for day, (name, token) in enumerate(DRIVERS.items()):
            print(f"{name} ...", file=sys.stderr)
            if split is not None:
                split.take()
            us = asyncio.run(per_sample_us(engine, charger, token, samples, day))
            out[f"{name}_us_per_sample"] = round(us, 1)
            out[f"{name}_samples_per_s"] = round(1e6 / us, 1)
            if split is not None:
                for part, seconds in split.take().items():
                    out[f"{name}_{part}_us_per_sample"] = round(seconds / samples * 1e6, 1)
        engine.dispose()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
