"""Run many simulated chargers for a stretch of simulated time, with a live display.

``run_simulation(config)`` connects ``config.chargers`` chargers to ``config.url`` (each at
``{url}/{identity}``), boots them and lets each run back-to-back charging sessions for
``config.minutes`` of *simulated* time: a car arrives after a random gap (or when the central
system starts a session remotely), charges along a seeded curve, idles, leaves. Time is
compressed by ``config.speedup`` (wall time = simulated time / speedup; timestamps sent are
simulated time). A session still running when the simulated time is up is stopped with reason
``Local``. The result keeps every charger, so a test can read each one's :class:`ChargerLog`.

Identities: the ones given (``ID`` or ``ID@1.6`` / ``ID@2.0.1``), else the demo chargers of
``evbilling demo seed`` that speak the requested version, then ``SIM-00001``, ``SIM-00002`` ...
(those must exist on the central system with ``config.password``). Tokens: the demo RFID tokens
unless given.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from evbilling.simulator.client import (
    OCPP_VERSIONS,
    ChargerSpec,
    OcppVersion,
    SimClock,
    SimulatedCharger,
    SimulatorError,
    simulated_charger,
)
from evbilling.simulator.curves import AC_22KW, arrival_gap_s, random_connector, random_session

#: The demo data of ``evbilling demo seed`` (services/demo.py; an e2e test keeps them equal).
DEMO_CHARGERS: tuple[tuple[str, OcppVersion], ...] = (
    ("DEMO-CP16-001", "1.6"), ("DEMO-CP201-001", "2.0.1"), ("DEMO-CP16-AMS", "1.6"))
DEMO_CHARGER_PASSWORD = "demo-charger-secret-16"  # noqa: S105 - documented demo password
DEMO_TOKENS = ("04A1B2C3D4E5F6", "04B0B0B0B0B0B0", "04C4C4C4C4C4C4")
DEFAULT_URL = "ws://127.0.0.1:8000/ocpp"
OCPP_CHOICES = ("1.6", "2.0.1", "mixed")

CHARGERS_MAX = 20_000
MINUTES_MAX = 7 * 24 * 60
SPEEDUP_MAX = 100_000
GRACE_WALL_S = 30  # after the simulated end: time for the last stops before tasks are cancelled


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    chargers: int = 3
    minutes: float = 60
    ocpp: str = "mixed"  # "1.6", "2.0.1" or "mixed"
    speedup: float = 60
    url: str = DEFAULT_URL
    password: str = DEMO_CHARGER_PASSWORD
    seed: int = 0
    tokens: tuple[str, ...] = DEMO_TOKENS
    identities: tuple[str, ...] = ()  # "ID" or "ID@1.6"; empty: demo chargers, then SIM-nnnnn
    sample_interval_s: int = 60
    arrival_gap_s_mean: int = 20 * 60
    connect_concurrency: int = 100
    start_at: dt.datetime | None = None  # simulated time at the start; default: now

    def __post_init__(self) -> None:
        if not 1 <= self.chargers <= CHARGERS_MAX:
            raise ValueError(f"--chargers must be 1..{CHARGERS_MAX}")
        if not 0 < self.minutes <= MINUTES_MAX:
            raise ValueError(f"--minutes must be above 0 and at most {MINUTES_MAX}")
        if not 0 < self.speedup <= SPEEDUP_MAX:
            raise ValueError(f"--speedup must be above 0 and at most {SPEEDUP_MAX}")
        if self.ocpp not in OCPP_CHOICES:
            raise ValueError(f"--ocpp must be one of {', '.join(OCPP_CHOICES)}")
        if not self.tokens:
            raise ValueError("at least one token is needed")
        if self.sample_interval_s <= 0 or self.arrival_gap_s_mean <= 0:
            raise ValueError("intervals must be positive")
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError("--url must be a ws:// or wss:// URL")
        for identity in self.identities:
            _parse_identity(identity, "1.6")


def _parse_identity(text: str, default: OcppVersion) -> tuple[str, OcppVersion]:
    identity, _, version = text.partition("@")
    if not identity:
        raise ValueError(f"empty charger identity in {text!r}")
    if not version:
        return identity, default
    for known in OCPP_VERSIONS:
        if version == known:
            return identity, known
    raise ValueError(f"{text!r}: OCPP version must be 1.6 or 2.0.1")


def _version_for(config: SimulationConfig, index: int) -> OcppVersion:
    if config.ocpp == "1.6":
        return "1.6"
    if config.ocpp == "2.0.1":
        return "2.0.1"
    return OCPP_VERSIONS[index % 2]


def charger_specs(config: SimulationConfig) -> list[ChargerSpec]:
    """Who the simulated chargers are: given identities, demo chargers, then SIM-nnnnn."""
    specs: list[ChargerSpec] = []
    for index, text in enumerate(config.identities[:config.chargers]):
        identity, version = _parse_identity(text, _version_for(config, index))
        specs.append(ChargerSpec(identity, version, config.password, AC_22KW))
    if not config.identities:
        for identity, version in DEMO_CHARGERS:
            if len(specs) < config.chargers and config.ocpp in ("mixed", version):
                specs.append(ChargerSpec(identity, version, config.password, AC_22KW))
    number = 0
    while len(specs) < config.chargers:
        number += 1
        identity = f"SIM-{number:05d}"
        connector = random_connector(random.Random(f"{config.seed}:connector:{identity}"))  # noqa: S311
        specs.append(ChargerSpec(identity, _version_for(config, len(specs)), config.password,
                                 connector))
    return specs


@dataclass(frozen=True, slots=True)
class SimulationStats:
    chargers: int
    connected: int
    booted: int
    sessions_started: int
    sessions_stopped: int
    sessions_rejected: int  # the token was not accepted
    messages_sent: int
    errors: int
    remote_stops: int
    display_costs: int
    energy_wh: int
    sim_elapsed_s: float
    sim_total_s: float
    stop_reasons: dict[str, int] = field(default_factory=dict)


def snapshot(chargers: list[SimulatedCharger], sim_elapsed_s: float,
             sim_total_s: float) -> SimulationStats:
    reasons: Counter[str] = Counter()
    started = stopped = rejected = energy_wh = 0
    for charger in chargers:
        for record in charger.log.transactions:
            if record.started_at is not None:
                started += 1
                if record.finished:
                    stopped += 1
                    reasons[record.stop_reason or "?"] += 1
                    energy_wh += record.energy_wh or 0
            elif record.stop_reason == "NotAuthorized":
                rejected += 1
    logs = [charger.log for charger in chargers]
    return SimulationStats(
        chargers=len(chargers), connected=sum(1 for log in logs if log.connected),
        booted=sum(1 for log in logs if log.boot_status == "Accepted"),
        sessions_started=started, sessions_stopped=stopped, sessions_rejected=rejected,
        messages_sent=sum(log.messages_sent for log in logs),
        errors=sum(log.error_count for log in logs),
        remote_stops=sum(1 for log in logs for r in log.remote_stops if r.status == "Accepted"),
        display_costs=sum(len(log.display_costs) for log in logs), energy_wh=energy_wh,
        sim_elapsed_s=min(sim_elapsed_s, sim_total_s), sim_total_s=sim_total_s,
        stop_reasons=dict(reasons))


@dataclass(frozen=True, slots=True)
class SimulationResult:
    config: SimulationConfig
    chargers: list[SimulatedCharger]
    stats: SimulationStats
    wall_s: float

    def charger(self, identity: str) -> SimulatedCharger:
        for charger in self.chargers:
            if charger.spec.identity == identity:
                return charger
        raise KeyError(identity)


async def run_simulation(config: SimulationConfig, *,
                         on_progress: Callable[[SimulationStats], None] | None = None,
                         refresh_wall_s: float = 0.25) -> SimulationResult:
    """Run the whole simulation; ``on_progress`` gets a snapshot every ``refresh_wall_s``."""
    clock = SimClock(config.speedup, config.start_at)
    end_s = config.minutes * 60
    chargers: list[SimulatedCharger] = []
    rngs: list[random.Random] = []
    for spec in charger_specs(config):
        rng = random.Random(f"{config.seed}:{spec.identity}")  # noqa: S311 - simulation
        rngs.append(rng)
        chargers.append(simulated_charger(
            spec, config.url, clock, sample_interval_s=config.sample_interval_s,
            register_wh_start=rng.randint(100_000, 5_000_000)))
    connect_slots = asyncio.Semaphore(config.connect_concurrency)
    wall_start = time.monotonic()
    tasks = [asyncio.create_task(_run_charger(charger, rng, config, clock, end_s, connect_slots))
             for charger, rng in zip(chargers, rngs, strict=True)]
    deadline = wall_start + clock.wall_s(end_s) + GRACE_WALL_S
    pending: set[asyncio.Task[None]] = set(tasks)
    try:
        while pending:
            if on_progress is not None:
                on_progress(snapshot(chargers, clock.elapsed_s(), end_s))
            timeout = min(refresh_wall_s, max(deadline - time.monotonic(), 0))
            _done, pending = await asyncio.wait(pending, timeout=timeout)
            if pending and time.monotonic() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                for charger in chargers:
                    if charger.active_transaction is not None:
                        charger.record_error("cancelled: the simulation ran out of time")
                pending = set()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats = snapshot(chargers, clock.elapsed_s(), end_s)
    if on_progress is not None:
        on_progress(stats)
    return SimulationResult(config, chargers, stats, time.monotonic() - wall_start)


async def _run_charger(charger: SimulatedCharger, rng: random.Random, config: SimulationConfig,
                       clock: SimClock, end_s: float, connect_slots: asyncio.Semaphore) -> None:
    try:
        async with connect_slots:
            await charger.connect()
            await charger.boot()
        await charger.send_status("Available")
        gap_s = rng.randint(0, config.arrival_gap_s_mean)  # stagger the first arrivals
        while clock.elapsed_s() < end_s:
            arrival_s = min(clock.elapsed_s() + gap_s, end_s)
            remote = await _next_arrival(charger, clock, arrival_s)
            if clock.elapsed_s() >= end_s:
                break
            curve = random_session(rng, charger.spec.connector)
            id_tag = rng.choice(config.tokens) if remote is None else remote.id_tag
            await charger.charge(curve, id_tag, remote=remote is not None,
                                 remote_start_id=None if remote is None else
                                 remote.remote_start_id, stop_at_s=end_s)
            gap_s = arrival_gap_s(rng, config.arrival_gap_s_mean)
    except SimulatorError as exc:
        charger.record_error(str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # keep the others running; the summary shows it
        charger.record_error(f"unexpected: {exc!r}")
    finally:
        await charger.close()


async def _next_arrival(charger: SimulatedCharger, clock: SimClock, until_s: float) -> Any:
    """Wait for the next car: a remote start (returned) or simulated ``until_s`` (None)."""
    while True:
        if charger.closed:
            raise SimulatorError(f"{charger.spec.identity}: connection closed")
        wall_s = clock.wall_s(until_s - clock.elapsed_s())
        if wall_s <= 0:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(charger.remote_starts.get(), timeout=min(wall_s, 1.0))


# -- display ---------------------------------------------------------------------------------


def _counters(stats: SimulationStats) -> str:
    return (f"booted {stats.booted}/{stats.chargers} · sessions {stats.sessions_started} "
            f"started {stats.sessions_stopped} stopped · msgs {stats.messages_sent} · "
            f"errors {stats.errors}")


def summary_table(result: SimulationResult) -> Table:
    stats, config = result.stats, result.config
    table = Table(title=f"Simulation: {config.chargers} chargers, {config.minutes:g} simulated "
                  f"minutes at x{config.speedup:g} ({result.wall_s:.1f} s wall), OCPP "
                  f"{config.ocpp}, seed {config.seed}", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("chargers booted", f"{stats.booted} / {stats.chargers}"),
        ("sessions started", str(stats.sessions_started)),
        ("sessions stopped", str(stats.sessions_stopped)),
        ("  by reason", ", ".join(f"{k} {v}" for k, v in sorted(stats.stop_reasons.items()))
         or "-"),
        ("sessions refused (token not accepted)", str(stats.sessions_rejected)),
        ("energy delivered (stopped sessions)", f"{stats.energy_wh / 1000:.1f} kWh"),
        ("messages sent", str(stats.messages_sent)),
        ("messages per wall second", f"{stats.messages_sent / max(result.wall_s, 1e-9):.1f}"),
        ("remote stops obeyed", str(stats.remote_stops)),
        ("costs shown on displays", str(stats.display_costs)),
        ("errors", str(stats.errors)),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def first_errors(result: SimulationResult, limit: int = 10) -> list[str]:
    errors = [e if e.startswith(f"{c.spec.identity}:") else f"{c.spec.identity}: {e}"
              for c in result.chargers for e in c.log.errors]
    return errors[:limit]


def run_with_display(config: SimulationConfig, console: Console) -> SimulationResult:
    """Run the simulation with a Rich progress bar, then print the summary."""
    progress = Progress(BarColumn(bar_width=24), TextColumn("{task.fields[clock]}"),
                        TextColumn("{task.fields[counters]}"), console=console)
    total_s = config.minutes * 60
    with progress:
        task = progress.add_task("simulate", total=total_s, clock="", counters="")

        def update(stats: SimulationStats) -> None:
            progress.update(task, completed=stats.sim_elapsed_s,
                            clock=f"{stats.sim_elapsed_s / 60:.0f}/{config.minutes:g} sim min",
                            counters=_counters(stats))

        result = asyncio.run(run_simulation(config, on_progress=update))
    console.print(summary_table(result))
    errors = first_errors(result)
    if errors:
        console.print("[red]first errors:[/red]")
        for line in errors:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
    return result
