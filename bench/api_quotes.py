"""Benchmark: POST /api/v1/quotes under concurrent load against `evbilling serve`.

Starts the real server (`evbilling serve --demo --workers 2`, rate limits shared in Redis when
it answers) as a subprocess on SQLite and on PostgreSQL, drives it from a separate
load-generator process (wrk when installed, else asyncio + httpx; N concurrent connections
cycling through 64 quote bodies, fixed duration), and prints ONE JSON object with quotes/s,
p50/p99 latency and the server's CPU time per quote for each database.

    .venv/bin/python bench/api_quotes.py [--seconds 10] [--concurrency 8] [--workers 2] [--quick]

PostgreSQL: a throw-away database is created on EVBILLING_TEST_POSTGRES_URL's server
(default postgresql://postgres@127.0.0.1:5432/postgres) and dropped afterwards; when the server
is unreachable that part reports an error instead of a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
EVBILLING = str(Path(sys.executable).with_name("evbilling"))
API_KEY = "evbk_demo_admin_key_do_not_use_in_production"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
GOALS = {"quotes_per_s": 1000, "p99_ms": 20}


def log(message: str) -> None:
    print(f"[api-quotes] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, workers: int = 1, redis_url: str | None = None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, EVBILLING_DATABASE_URL=database_url)
    env.pop("EVBILLING_REDIS_URL", None)
    if redis_url is not None:
        env["EVBILLING_REDIS_URL"] = redis_url
    proc = subprocess.Popen([EVBILLING, "serve", "--demo", "--port", str(port),
                             "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}"
                               if proc.stderr else "server exited")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start within 60 s")


def _process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants (Linux ``/proc``; 0 elsewhere):
    the server's own cost per quote, which other load on the machine does not change much."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items() if parent == pid]
    return total


def quote_bodies(base: str) -> list[dict[str, Any]]:
    sites = httpx.get(base + "/api/v1/sites", headers=HEADERS, timeout=10).json()["data"]
    bodies = []
    for i in range(64):
        site = sites[i % len(sites)]
        bodies.append({
            "site_id": site["id"],
            "start_at": f"2026-11-{1 + i % 28:02d}T{(6 + i) % 24:02d}:15:00Z",
            "energy_kwh": str(5 + (i * 7) % 60),
            "charging_minutes": 30 + (i * 11) % 180,
            "idle_minutes": (i * 13) % 60,
        })
    return bodies


async def _drive(base: str, bodies: list[dict[str, Any]], seconds: float, concurrency: int
                 ) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits,
                                 timeout=10) as client:
        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                response = await client.post("/api/v1/quotes", json=bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "quotes_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None}


def _load_process(base: str, bodies: list[dict[str, Any]], seconds: float, concurrency: int,
                  out: Any) -> None:
    out.put(asyncio.run(_drive(base, bodies, seconds, concurrency)))


def _wrk(base: str, bodies: list[dict[str, Any]], seconds: float, concurrency: int
         ) -> dict[str, Any]:
    """Drive the server with wrk (C, epoll): the Python client tops out near 150 requests/s on
    this machine, below what the server does, so it would measure itself. Each connection
    cycles through all the bodies (different sites, days, hours, energies)."""
    lua_bodies = ",\n".join("[==[" + json.dumps(body) + "]==]" for body in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n'
                     'wrk.headers["Content-Type"] = "application/json"\n'
                     f'wrk.headers["Authorization"] = "Bearer {API_KEY}"\n'
                     f"local bodies = {{\n{lua_bodies}\n}}\n"
                     "local i = 0\n"
                     "request = function()\n"
                     "  i = i % #bodies + 1\n"
                     "  return wrk.format(nil, nil, nil, bodies[i])\n"
                     "end\n"
                     "done = function(summary, latency, requests)\n"
                     "  io.write(string.format('JSON {\"requests\": %d, \"errors\": %d, "
                     "\"seconds\": %.3f, \"p50_us\": %d, \"p99_us\": %d, \"mean_us\": %d}\\n',"
                     " summary.requests, summary.errors.status + summary.errors.connect + "
                     "summary.errors.read + summary.errors.write + summary.errors.timeout, "
                     "summary.duration / 1e6, latency:percentile(50), latency:percentile(99), "
                     "latency.mean))\n"
                     "end\n")
    wrk = shutil.which("wrk") or "wrk"
    out = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{max(1, int(seconds))}s",
                          "-s", script.name, base + "/api/v1/quotes"],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    Path(script.name).unlink()
    line = next(x for x in out.stdout.splitlines() if x.startswith("JSON "))
    raw = json.loads(line[5:])
    return {"requests": raw["requests"], "errors": raw["errors"], "seconds": raw["seconds"],
            "quotes_per_s": round(raw["requests"] / raw["seconds"], 1),
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "mean_ms": round(raw["mean_us"] / 1000, 2), "load_generator": "wrk"}


def measure(database_url: str, seconds: float, concurrency: int, workers: int = 1,
            redis_url: str | None = None) -> dict[str, Any]:
    proc, base = start_server(database_url, workers, redis_url)
    try:
        bodies = quote_bodies(base)
        first = httpx.post(base + "/api/v1/quotes", json=bodies[0], headers=HEADERS, timeout=10)
        if first.status_code != 200:
            return {"error": f"quote failed: {first.status_code} {first.text[:300]}"}
        for body in bodies:  # every body answers 200 (wrk counts only non-2xx/3xx as errors)
            response = httpx.post(base + "/api/v1/quotes", json=body, headers=HEADERS,
                                  timeout=10)
            if response.status_code != 200:
                return {"error": f"quote failed: {response.status_code} {response.text[:300]}"}
        if shutil.which("wrk"):
            _wrk(base, bodies, 1.0, concurrency)  # warm-up
            load_before = os.getloadavg()[0]
            cpu_before = _process_tree_cpu_s(proc.pid)
            result = _wrk(base, bodies, seconds, concurrency)
            cpu = _process_tree_cpu_s(proc.pid) - cpu_before
            result["server_cpu_ms_per_quote"] = round(cpu * 1000 / max(1, result["requests"]),
                                                      3)
            result["load_average_1m_before"] = round(load_before, 2)
            result["example_total"] = first.json().get("total")
            return result
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        warm = ctx.Process(target=_load_process, args=(base, bodies, 1.0, concurrency, queue))
        warm.start()
        queue.get()
        warm.join()
        loader = ctx.Process(target=_load_process,
                             args=(base, bodies, seconds, concurrency, queue))
        loader.start()
        result: dict[str, Any] = queue.get()
        loader.join()
        result["example_total"] = first.json().get("total")
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def postgres_database() -> tuple[str, str] | None:
    import psycopg

    admin = os.environ.get("EVBILLING_TEST_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"evb_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        log(f"PostgreSQL unavailable: {exc}")
        return None
    return admin, name


def drop_postgres(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reachable_redis(url: str) -> str | None:
    if url.lower() == "none":
        return None
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        log(f"Redis unavailable at {url} ({exc}): rate limits per worker")
        return None
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 s per database (smoke test)")
    parser.add_argument("--workers", type=int, default=2,
                        help="server worker processes (default 2: one per core here)")
    parser.add_argument("--redis-url", default=os.environ.get("EVBILLING_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"),
                        help="EVBILLING_REDIS_URL for the server (shared rate limits); "
                             "'none', or unreachable: rate limits per worker process")
    args = parser.parse_args()
    redis_url = reachable_redis(args.redis_url)
    seconds = 2.0 if args.quick else args.seconds
    report: dict[str, Any] = {"benchmark": "api_quotes", "endpoint": "POST /api/v1/quotes",
                              "seconds_per_database": seconds, "concurrency": args.concurrency,
                              "server": f"evbilling serve --demo --workers {args.workers}",
                              "rate_limits": "shared in Redis" if redis_url else
                              "in process (per worker)",
                              "load_generator": "wrk in a separate process when installed "
                                                "(apt-get install wrk), else asyncio + httpx",
                              "goals": GOALS}
    with tempfile.TemporaryDirectory() as tmp:
        log("SQLite ...")
        report["sqlite"] = measure(f"sqlite:///{tmp}/bench.sqlite3", seconds, args.concurrency,
                                   args.workers, redis_url)
    pg = postgres_database()
    if pg is None:
        report["postgres"] = {"error": "PostgreSQL unreachable"}
    else:
        admin, name = pg
        base = admin.rsplit("/", 1)[0]
        try:
            log("PostgreSQL ...")
            report["postgres"] = measure(f"{base}/{name}", seconds, args.concurrency,
                                         args.workers, redis_url)
        finally:
            drop_postgres(admin, name)
    for db in ("sqlite", "postgres"):
        r = report.get(db, {})
        if "quotes_per_s" in r:
            r["goal_met"] = r["quotes_per_s"] >= GOALS["quotes_per_s"] and \
                r["p99_ms"] < GOALS["p99_ms"]
    report["machine"] = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                         "platform": platform.platform()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
