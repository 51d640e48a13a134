"""Rating benchmark: sessions per second, one call at a time, in bulk, and through a peer engine.

Prints ONE JSON object on stdout (progress goes to stderr). See ``bench/README.md``.

    .venv/bin/python bench/rating.py                # full run (about a minute)
    .venv/bin/python bench/rating.py --quick        # smoke test (a few seconds)
    .venv/bin/python bench/rating.py --write-workload   # rewrite bench/workloads/rating/*.json

Figures:

* ``single_sessions_per_s``: ``rate(compiled_tariff, session_facts)`` one session at a time,
  cycling over a pool of prebuilt ``SessionFacts`` (building them is not timed).
* ``bulk_sessions_per_s``: ``rate_bulk(compiled_tariff, batch)`` over ``--sessions-bulk``
  sessions; building the ``SessionBatch`` from the arrays is timed apart
  (``bulk_batch_build_s``).
* ``peer_sessions_per_s``: ``ocpi_tariffs``' ``calculate_cdr_cost(cdr, tariff)`` over the
  single pool; its pydantic models are built before timing. Only if ``ocpi_tariffs`` is
  installed in the venv (we do not ship it; see the README).

Each figure: a warm-up, then ``RUNS`` runs of at least ``--min-seconds`` each
(``time.perf_counter``); the best run is the headline, the median is reported next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import simplejson

import _workload as wl
from evbilling.domain.cdrs import parse_cdr
from evbilling.domain.periods import ChargingPeriod, SessionFacts
from evbilling.domain.rating import MONEY_DENOMINATOR, CompiledTariff, compile_tariff, rate
from evbilling.domain.tariffs import parse_tariff

RUNS = 3
GOAL_SINGLE_SESSIONS_PER_S = 5_000
GOAL_BULK_SESSIONS_PER_S = 100_000
REPO = Path(__file__).resolve().parent.parent
WORKLOAD_DIR = REPO / "bench" / "workloads" / "rating"
TARIFF_FILE = WORKLOAD_DIR / "tariff.json"
CDR_FILE = WORKLOAD_DIR / "cdr.json"
#: CDR totals that rating computes (written into cdr.json; every engine ignores them as input).
_CDR_PRICE_TOTALS = ("total_cost", "total_fixed_cost", "total_energy_cost", "total_time_cost",
                     "total_parking_cost")
_CDR_QUANTITY_TOTALS = ("total_energy", "total_time", "total_parking_time")


def log(message: str) -> None:
    print(f"[rating-bench] {message}", file=sys.stderr, flush=True)


# -- workload ----------------------------------------------------------------------------------


def compiled_tariff() -> CompiledTariff:
    return compile_tariff(parse_tariff(wl.TARIFF_OCPI))


def session_facts(w: wl.Workload, i: int) -> SessionFacts:
    start, end, rows = wl.session_columns(w, i)
    periods = tuple(ChargingPeriod(start_epoch_ms=t, energy_milliwh=e, time_ms=tm, parking_ms=pk)
                    for t, e, tm, pk in rows)
    return SessionFacts(periods=periods, time_zone=wl.TIME_ZONE, start_epoch_ms=start,
                        end_epoch_ms=end)


def price_json(price: Any) -> dict[str, str]:
    return {"excl_vat": str(price.excl_vat), "incl_vat": str(price.incl_vat)}


def _plain(value: Decimal) -> Decimal:
    return Decimal(format(value.normalize(), "f"))


def workload_cdr(ct: CompiledTariff, w: wl.Workload) -> dict[str, Any]:
    """The CDR of the workload session ``CDR_SESSION_INDEX``, totals from our engine."""
    rated = rate(ct, session_facts(w, wl.CDR_SESSION_INDEX))
    totals: dict[str, Any] = {}
    for name in _CDR_PRICE_TOTALS:
        price = getattr(rated, name)
        totals[name] = {"excl_vat": _plain(price.excl_vat), "incl_vat": _plain(price.incl_vat)}
    cdr = wl.cdr_ocpi(w, wl.CDR_SESSION_INDEX, totals=totals)
    for name in _CDR_QUANTITY_TOTALS:  # the generator's quantity totals are ours too
        require_equal(cdr[name], _plain(getattr(rated, name)), name)
    return cdr


def require_equal(a: Any, b: Any, what: str) -> None:
    if a != b:
        raise SystemExit(f"workload CDR {what}: generator says {a}, rating says {b}")


def dumps(obj: Any) -> str:
    return simplejson.dumps(obj, use_decimal=True, indent=2, ensure_ascii=False) + "\n"


def write_workload(ct: CompiledTariff, w: wl.Workload) -> None:
    WORKLOAD_DIR.mkdir(parents=True, exist_ok=True)
    TARIFF_FILE.write_text(dumps(wl.TARIFF_OCPI), encoding="utf-8")
    CDR_FILE.write_text(dumps(workload_cdr(ct, w)), encoding="utf-8")
    log(f"wrote {TARIFF_FILE} and {CDR_FILE}")


def check_workload_files(ct: CompiledTariff, w: wl.Workload) -> dict[str, Any]:
    """Do the files on disk hold what the generator makes, and what do we charge for the CDR?"""
    out: dict[str, Any] = {"tariff_file": str(TARIFF_FILE.relative_to(REPO)),
                           "cdr_file": str(CDR_FILE.relative_to(REPO)),
                           "cdr_session_index": wl.CDR_SESSION_INDEX}
    if not (TARIFF_FILE.exists() and CDR_FILE.exists()):
        out["files_match_generator"] = False
        out["note"] = "workload files missing: run bench/rating.py --write-workload"
        return out
    tariff_text = TARIFF_FILE.read_text(encoding="utf-8")
    cdr_text = CDR_FILE.read_text(encoding="utf-8")
    out["files_match_generator"] = (tariff_text == dumps(wl.TARIFF_OCPI)
                                    and cdr_text == dumps(workload_cdr(ct, w)))
    # Rate the files as any engine would: parse both, Europe/Berlin.
    tariff = parse_tariff(json.loads(tariff_text, parse_float=Decimal))
    facts = parse_cdr(json.loads(cdr_text, parse_float=Decimal), time_zone=wl.TIME_ZONE)
    rated = rate(tariff, facts)
    out["cdr_total_cost"] = price_json(rated.total_cost)
    out["cdr_total_cost_equals_generated_session"] = (
        rated.total_cost == rate(ct, session_facts(w, wl.CDR_SESSION_INDEX)).total_cost)
    return out


# -- timing -------------------------------------------------------------------------------------


def timed_runs(run_once: Callable[[float], tuple[int, float]], min_seconds: float
               ) -> dict[str, Any]:
    """``run_once(min_seconds) -> (sessions, seconds)``, RUNS times; best and median rate."""
    rates: list[float] = []
    sessions: list[int] = []
    for k in range(RUNS):
        n, seconds = run_once(min_seconds)
        rates.append(n / seconds)
        sessions.append(n)
        log(f"  run {k + 1}/{RUNS}: {n} sessions in {seconds:.3f} s = {n / seconds:,.0f}/s")
    return {"best": round(max(rates), 1), "median": round(statistics.median(rates), 1),
            "runs": [round(r, 1) for r in rates], "sessions_per_run": sessions,
            "sessions_measured": sum(sessions),
            "periods_measured": sum(sessions) * wl.PERIODS_PER_SESSION}


def cycle_runner(rate_one: Callable[[Any], Any], pool: list[Any], chunk: int
                 ) -> Callable[[float], tuple[int, float]]:
    """Rate the pool's items one call at a time, cyclically, until ``min_seconds`` passed."""
    chunks = [pool[i:i + chunk] for i in range(0, len(pool), chunk)]

    def run_once(min_seconds: float) -> tuple[int, float]:
        n = 0
        k = 0
        t0 = time.perf_counter()
        while True:
            items = chunks[k % len(chunks)]
            for item in items:
                rate_one(item)
            n += len(items)
            k += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return n, elapsed

    return run_once


def warm_up(rate_one: Callable[[Any], Any], pool: list[Any], seconds: float) -> None:
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        rate_one(pool[k % len(pool)])
        k += 1


# -- the three figures ----------------------------------------------------------------------------


def bench_single(ct: CompiledTariff, pool: list[SessionFacts], min_seconds: float
                 ) -> dict[str, Any]:
    log(f"single: rate() over a pool of {len(pool)} sessions")

    def rate_one(facts: SessionFacts) -> Any:
        return rate(ct, facts)

    warm_up(rate_one, pool, min(1.0, min_seconds / 2))
    return timed_runs(cycle_runner(rate_one, pool, chunk=50), min_seconds)


def bench_bulk(ct: CompiledTariff, w: wl.Workload, min_seconds: float
               ) -> tuple[dict[str, Any], Any]:
    from evbilling.domain.rating_bulk import SessionBatch, rate_bulk

    log(f"bulk: SessionBatch of {w.size} sessions ({int(w.offsets[-1])} periods)")
    t0 = time.perf_counter()
    batch = SessionBatch(
        w.offsets, w.start_epoch_ms, w.energy_milliwh, w.time_ms, w.parking_ms,
        session_start_epoch_ms=w.session_start_epoch_ms,
        session_end_epoch_ms=w.session_end_epoch_ms, time_zone=wl.TIME_ZONE)
    build_s = time.perf_counter() - t0
    result = rate_bulk(ct, batch)  # warm-up; also the result the sample is checked against
    cpu_per_wall: list[float] = []

    def run_once(min_seconds: float) -> tuple[int, float]:
        n = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        while True:
            rate_bulk(ct, batch)
            n += batch.size
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                cpu_per_wall.append((time.process_time() - c0) / elapsed)
                return n, elapsed

    runs = timed_runs(run_once, min_seconds)
    runs["batch_build_s"] = round(build_s, 6)
    runs["cpu_time_per_wall_time"] = round(max(cpu_per_wall), 3)
    return runs, result


def bench_peer(pool_cdrs: list[dict[str, Any]], min_seconds: float,
               cdr_file_obj: dict[str, Any] | None, ours_on_cdr: Any,
               ours_on_pool: list[Any]) -> dict[str, Any]:
    try:
        import ocpi_tariffs  # noqa: F401  (benchmark-only peer; never a dependency of src/)
        from ocpi_tariffs.v2_2_1.models import Cdr, Tariff
        from ocpi_tariffs.v2_2_1.tariff_calculator import calculate_cdr_cost
    except ImportError as exc:
        return {"sessions_per_s": None,
                "note": f"ocpi_tariffs is not installed in this environment ({exc}); install it "
                        "from a checkout of github.com/Hamza-nabil/ocpi-tariffs-py into the "
                        "venv to measure it (bench/README.md)"}
    from importlib.metadata import PackageNotFoundError, version

    try:
        peer_version = version("ocpi-tariffs")
    except PackageNotFoundError:
        peer_version = None
    log(f"peer: ocpi_tariffs {peer_version}, building {len(pool_cdrs)} pydantic Cdr models")
    tariff = Tariff.model_validate(wl.TARIFF_OCPI)
    t0 = time.perf_counter()
    cdrs = [Cdr.model_validate(c) for c in pool_cdrs]
    parse_s = time.perf_counter() - t0

    def rate_one(cdr: Any) -> Any:
        return calculate_cdr_cost(cdr, tariff)

    warm_up(rate_one, cdrs, min(1.0, min_seconds / 2))
    runs = timed_runs(cycle_runner(rate_one, cdrs, chunk=5), min_seconds)
    runs["model_build_s_per_session"] = round(parse_s / len(cdrs), 9)
    runs["version"] = peer_version

    # Totals, reported side by side without judging (the peer rounds to 4 decimals).
    q4 = Decimal("0.0001")
    agree = 0
    for cdr, ours in zip(cdrs, ours_on_pool, strict=True):
        theirs = calculate_cdr_cost(cdr, tariff)
        agree += (theirs.excl_vat == ours.total_cost.excl_vat.quantize(q4)
                  and theirs.incl_vat == ours.total_cost.incl_vat.quantize(q4))
    runs["total_cost_equal_to_ours_at_4_decimals"] = {"sessions": len(cdrs), "equal": agree}
    if cdr_file_obj is not None:
        theirs = calculate_cdr_cost(Cdr.model_validate(cdr_file_obj),
                                    Tariff.model_validate(
                                        json.loads(TARIFF_FILE.read_text(encoding="utf-8"),
                                                   parse_float=Decimal)))
        runs["total_cost_on_workload_cdr"] = {
            "peer": price_json(theirs), "ours": price_json(ours_on_cdr),
            "equal": theirs.excl_vat == ours_on_cdr.excl_vat
            and theirs.incl_vat == ours_on_cdr.incl_vat,
        }
    return runs


# -- bulk vs single on a sample -------------------------------------------------------------------


def sample_indices(w: wl.Workload, n: int) -> list[int]:
    """Up to n/5 DST-crossing sessions, the rest spread evenly over the batch."""
    dst = np.nonzero(w.crosses_dst())[0][: max(1, n // 5)].tolist()
    rest = np.linspace(0, w.size - 1, num=max(n - len(dst), 1)).astype(np.int64).tolist()
    return sorted(set(dst) | set(rest))


def compare_sample(ct: CompiledTariff, w: wl.Workload, result: Any, n: int) -> dict[str, Any]:
    from evbilling.domain.rating_bulk import RatedTotals

    fields = [f.name for f in dataclasses.fields(RatedTotals)]
    indices = sample_indices(w, n)
    crossing = w.crosses_dst()
    mismatches: list[dict[str, Any]] = []
    numerators = result.total_cost_excl()
    for i in indices:
        single = rate(ct, session_facts(w, i))
        bulk = result.totals(i)
        for name in fields:
            a, b = getattr(single, name), getattr(bulk, name)
            if a != b or repr(a) != repr(b):  # equal value AND equal representation
                mismatches.append({"session": i, "field": name, "single": repr(a),
                                   "bulk": repr(b)})
        if int(numerators[i]) != single.total_cost_exact.excl:
            mismatches.append({"session": i, "field": "total_cost_excl()",
                               "single": single.total_cost_exact.excl,
                               "bulk": int(numerators[i])})
    return {
        "bulk_matches_single_on_sample": not mismatches,
        "sample_sessions": len(indices),
        "sample_sessions_crossing_dst": int(crossing[indices].sum()),
        "sample_fields_compared": [*fields, "total_cost_excl() numerator"],
        "sample_mismatches": len(mismatches),
        "sample_mismatch_examples": mismatches[:5],
    }


# -- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions-bulk", type=int, default=None,
                        help="sessions in the bulk batch (default 100000; --quick 5000)")
    parser.add_argument("--quick", action="store_true",
                        help="small counts and short runs (CI smoke test; figures are rough)")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="minimum duration of each timed run (default 2.0; --quick 0.2)")
    parser.add_argument("--write-workload", action="store_true",
                        help="(re)write bench/workloads/rating/{tariff,cdr}.json and exit")
    args = parser.parse_args(argv)

    quick = args.quick
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.2 if quick else 2.0)
    n_bulk = args.sessions_bulk if args.sessions_bulk is not None else (5_000 if quick
                                                                       else 100_000)
    n_pool = 200 if quick else 1_000
    n_sample = 50 if quick else 200
    if n_bulk < 1:
        parser.error("--sessions-bulk must be at least 1")

    ct = compiled_tariff()
    n_generate = max(n_bulk, n_pool, wl.CDR_SESSION_INDEX + 1)
    t0 = time.perf_counter()
    w_all = wl.generate(n_generate, wl.SEED)
    generate_s = time.perf_counter() - t0
    if args.write_workload:
        write_workload(ct, w_all)
        return 0
    log(f"generated {n_generate} sessions in {generate_s:.2f} s")
    w_bulk = w_all if n_generate == n_bulk else wl.generate(n_bulk, wl.SEED)

    files = check_workload_files(ct, w_all)
    if not files["files_match_generator"]:
        log("WARNING: workload files differ from the generator (run --write-workload)")

    pool = [session_facts(w_all, i) for i in range(n_pool)]
    single = bench_single(ct, pool, min_seconds)

    try:
        bulk, bulk_result = bench_bulk(ct, w_bulk, min_seconds)
        check = compare_sample(ct, w_bulk, bulk_result, n_sample)
    except ImportError as exc:
        bulk = {"best": None, "median": None, "runs": [], "sessions_per_run": [],
                "batch_build_s": None, "cpu_time_per_wall_time": None,
                "note": f"evbilling.domain.rating_bulk is not available: {exc}"}
        check = {"bulk_matches_single_on_sample": False, "sample_sessions": 0}

    cdr_obj = (json.loads(CDR_FILE.read_text(encoding="utf-8"), parse_float=Decimal)
               if CDR_FILE.exists() else None)
    ours_on_cdr = rate(ct, session_facts(w_all, wl.CDR_SESSION_INDEX)).total_cost
    pool_cdrs = [wl.cdr_ocpi(w_all, i) for i in range(n_pool)]
    ours_on_pool = [rate(ct, facts) for facts in pool]
    peer = bench_peer(pool_cdrs, min_seconds, cdr_obj, ours_on_cdr, ours_on_pool)
    peer_best = peer.get("best")

    out: dict[str, Any] = {
        "benchmark": "rating",
        "quick": quick,
        "single_sessions_per_s": single["best"],
        "single_sessions_per_s_median": single["median"],
        "bulk_sessions_per_s": bulk["best"],
        "bulk_sessions_per_s_median": bulk["median"],
        "bulk_batch_build_s": bulk["batch_build_s"],
        "bulk_cpu_time_per_wall_time": bulk["cpu_time_per_wall_time"],
        "peer_sessions_per_s": peer_best,
        "peer_sessions_per_s_median": peer.get("median"),
        "ratio_single_vs_peer": round(single["best"] / peer_best, 2) if peer_best else None,
        **check,
        "goals": {
            "single_sessions_per_s": {"goal": GOAL_SINGLE_SESSIONS_PER_S,
                                      "met": single["best"] >= GOAL_SINGLE_SESSIONS_PER_S},
            "bulk_sessions_per_s": {"goal": GOAL_BULK_SESSIONS_PER_S, "one_core": True,
                                    "met": bulk["best"] is not None
                                    and bulk["best"] >= GOAL_BULK_SESSIONS_PER_S},
        },
        "runs": {"single": single, "bulk": {k: v for k, v in bulk.items()
                                            if k not in ("batch_build_s",
                                                         "cpu_time_per_wall_time")}},
        "peer_timed": None if peer_best is None else (
            "ocpi_tariffs calculate_cdr_cost(cdr, tariff) only, one session per call over the "
            "single pool; its pydantic Cdr and Tariff models are built from the same OCPI JSON "
            "before timing (cdr_location.country DEU, which it maps to Europe/Berlin)"),
        "peer_note": peer.get("note"),
        "peer_total_cost_on_workload_cdr": peer.get("total_cost_on_workload_cdr"),
        "peer": {"engine": "ocpi-tariffs-py (github.com/Hamza-nabil/ocpi-tariffs-py)",
                 **{k: v for k, v in peer.items()
                    if k not in ("best", "median", "note", "total_cost_on_workload_cdr")}},
        "workload": {
            "generator": "bench/_workload.py generate(n, seed)",
            "seed": wl.SEED,
            "time_zone": wl.TIME_ZONE,
            "tariff_elements": len(wl.TARIFF_OCPI["elements"]),
            "periods_per_session": wl.PERIODS_PER_SESSION,
            "period_minutes": wl.PERIOD_MS // 60_000,
            "sessions_single_pool": n_pool,
            "sessions_bulk": w_bulk.size,
            "periods_bulk": int(w_bulk.offsets[-1]),
            "sessions_bulk_crossing_dst": int(w_bulk.crosses_dst().sum()),
            "money_denominator": MONEY_DENOMINATOR,
            **files,
        },
        "method": {
            "clock": "time.perf_counter",
            "runs_per_figure": RUNS,
            "min_seconds_per_run": min_seconds,
            "warm_up": "single/peer: min(1 s, half a run) of calls; bulk: one full rate_bulk",
            "headline": "best of the runs; *_median is the median run",
            "single": "rate(compiled_tariff, facts) per session, cycling over the pool",
            "bulk": "rate_bulk(compiled_tariff, batch) repeated; batch built once, timed apart",
        },
        "machine": machine(),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
