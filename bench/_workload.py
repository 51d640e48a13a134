"""The rating benchmark's workload: one OCPI tariff and seeded, deterministic charging sessions.

Shared by ``bench/rating.py`` and whoever needs the same input (the files under
``bench/workloads/rating/`` are written from here with ``python bench/rating.py
--write-workload``).

Sessions: 96 periods of 15 minutes (24 h), each starting at a random quarter hour of the year
2025 in Europe/Berlin (so about one session in 180 crosses a DST change). The first 8-40 periods
charge (ENERGY and TIME), the rest park (PARKING_TIME). Charging stops inside its last period:
that period has TIME = k x 36 s (k = 1..25, i.e. 0.01-0.25 h, exact in OCPI hours) and the rest
of the quarter hour as PARKING_TIME, so the PARKING_TIME step size has work to do. Energy per
full charging period is 0.5-5.5 kWh in whole Wh (a plateau, then a taper, with a little noise);
the last, partial period gets its share k/25.

Determinism: every random number of session ``i`` comes from row ``i`` of one
``Generator(PCG64(seed)).random((n, 44))`` draw, so session ``i`` is the same whatever ``n`` is
(``generate(10)`` is a prefix of ``generate(100_000)``), on every platform.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

SEED = 20_250_101
TIME_ZONE = "Europe/Berlin"
COUNTRY_ISO3 = "DEU"  # cdr_location.country (OCPI: ISO 3166-1 alpha-3)
PERIODS_PER_SESSION = 96
PERIOD_MS = 15 * 60 * 1000
#: 2025-01-01T00:00 in Europe/Berlin (CET, UTC+1) = 2024-12-31T23:00Z.
YEAR_START_EPOCH_MS = 1_735_686_000_000
QUARTERS_PER_YEAR = 365 * 96
CHARGING_PERIODS_MIN = 8
CHARGING_PERIODS_MAX = 40
ENERGY_WH_MIN = 500
ENERGY_WH_MAX = 5_500
#: TIME in the last charging period is k * 36 s = k / 100 h, k in 1..25.
TIME_STEP_MS = 36_000
TIME_STEPS_PER_PERIOD = PERIOD_MS // TIME_STEP_MS  # 25
_UNIFORMS_PER_SESSION = 4 + CHARGING_PERIODS_MAX
_MS_PER_HOUR = 3_600_000
_MILLIWH_PER_KWH = 1_000_000

#: The session written to ``bench/workloads/rating/cdr.json``: the first of the workload whose
#: charging crosses a DST change (starts 2025-03-30 01:45 CET, charges off-peak through the
#: 02:00 -> 03:00 jump into day time above 20 kWh, then parks by day and by night).
CDR_SESSION_INDEX = 395

#: DST changes of Europe/Berlin in 2025 (UTC): 2025-03-30T01:00Z and 2025-10-26T01:00Z.
DST_CHANGES_EPOCH_MS = (1_743_296_400_000, 1_761_440_400_000)


def _component(kind: str, price: str, step_size: int) -> dict[str, Any]:
    return {"type": kind, "price": Decimal(price), "vat": Decimal("19.0"),
            "step_size": step_size}


#: The tariff, as OCPI 2.2.1 JSON (Decimal numbers). Six elements, first match per dimension:
#: peak 17-22 h, day 07-17 h below 20 kWh, day 07-17 h from 20 kWh on, off-peak 22-07 h
#: (wraps midnight), day parking 07-22 h, and an unrestricted element with the start fee and
#: night parking. VAT 19 % everywhere.
TARIFF_OCPI: dict[str, Any] = {
    "country_code": "DE",
    "party_id": "EVB",
    "id": "BENCH-TOU-6",
    "currency": "EUR",
    "type": "REGULAR",
    "tariff_alt_text": [{
        "language": "en",
        "text": "Start fee 0.99 EUR. Energy per kWh: peak (17-22 h) 0.69; day (07-17 h) 0.59 "
                "for the first 20 kWh, then 0.49; night (22-07 h) 0.39. Charging time per "
                "hour: 2.40 peak, 1.20 day, 0.60 night. Parking per hour: 6.00 (07-22 h), "
                "1.20 (22-07 h). Per session, energy is rounded up to 0.1 kWh, charging time "
                "to the minute, parking time to 5 minutes. Prices excl. 19 % VAT.",
    }],
    "elements": [
        {"price_components": [_component("ENERGY", "0.69", 100),
                              _component("TIME", "2.40", 60)],
         "restrictions": {"start_time": "17:00", "end_time": "22:00"}},
        {"price_components": [_component("ENERGY", "0.59", 100),
                              _component("TIME", "1.20", 60)],
         "restrictions": {"start_time": "07:00", "end_time": "17:00",
                          "max_kwh": Decimal("20.00")}},
        {"price_components": [_component("ENERGY", "0.49", 100),
                              _component("TIME", "1.20", 60)],
         "restrictions": {"start_time": "07:00", "end_time": "17:00",
                          "min_kwh": Decimal("20.00")}},
        {"price_components": [_component("ENERGY", "0.39", 100),
                              _component("TIME", "0.60", 60)],
         "restrictions": {"start_time": "22:00", "end_time": "07:00"}},
        {"price_components": [_component("PARKING_TIME", "6.00", 300)],
         "restrictions": {"start_time": "07:00", "end_time": "22:00"}},
        {"price_components": [_component("FLAT", "0.99", 1),
                              _component("PARKING_TIME", "1.20", 300)]},
    ],
    "last_updated": "2025-01-01T00:00:00Z",
}


@dataclass(frozen=True, slots=True)
class Workload:
    """``n`` sessions as CSR columns (int64), ready for ``SessionBatch``."""

    offsets: np.ndarray  # n + 1
    start_epoch_ms: np.ndarray  # per period
    energy_milliwh: np.ndarray
    time_ms: np.ndarray
    parking_ms: np.ndarray
    session_start_epoch_ms: np.ndarray  # per session
    session_end_epoch_ms: np.ndarray
    charging_periods: np.ndarray  # per session: how many periods charge (8..40)

    @property
    def size(self) -> int:
        return len(self.offsets) - 1

    def crosses_dst(self) -> np.ndarray:
        """Per session: does a DST change fall inside [start, end)?"""
        hit = np.zeros(self.size, dtype=bool)
        for change in DST_CHANGES_EPOCH_MS:
            hit |= (self.session_start_epoch_ms <= change) & (change < self.session_end_epoch_ms)
        return hit


def generate(n: int, seed: int = SEED) -> Workload:
    """``n`` sessions, vectorised. Session ``i`` does not depend on ``n``."""
    if n < 1:
        raise ValueError("n must be at least 1")
    u = np.random.Generator(np.random.PCG64(seed)).random((n, _UNIFORMS_PER_SESSION))
    quarter = np.minimum((u[:, 0] * QUARTERS_PER_YEAR).astype(np.int64), QUARTERS_PER_YEAR - 1)
    start = YEAR_START_EPOCH_MS + quarter * PERIOD_MS
    span = CHARGING_PERIODS_MAX - CHARGING_PERIODS_MIN + 1
    charging = CHARGING_PERIODS_MIN + np.minimum((u[:, 1] * span).astype(np.int64), span - 1)
    wh_span = ENERGY_WH_MAX - ENERGY_WH_MIN + 1
    base_wh = ENERGY_WH_MIN + np.minimum((u[:, 2] * wh_span).astype(np.int64), wh_span - 1)
    k = 1 + np.minimum((u[:, 3] * TIME_STEPS_PER_PERIOD).astype(np.int64),
                       TIME_STEPS_PER_PERIOD - 1)

    j = np.arange(PERIODS_PER_SESSION, dtype=np.int64)[None, :]  # (1, 96)
    c = charging[:, None]
    # Energy of full charging periods: plateau for 60 % of the charge, then a linear taper to
    # 40 %, times 1 +/- 5 % noise, clipped to [0.5, 5.5] kWh, whole Wh.
    jc = np.arange(CHARGING_PERIODS_MAX, dtype=np.float64)[None, :]  # (1, 40)
    cf = charging[:, None].astype(np.float64)
    taper_from = np.ceil(0.6 * cf)
    fraction = np.clip((jc - taper_from) / np.maximum(cf - 1 - taper_from, 1.0), 0.0, 1.0)
    shape = 1.0 - 0.6 * fraction
    noise = 1.0 + 0.1 * (u[:, 4:] - 0.5)
    wh = np.clip(np.rint(base_wh[:, None] * shape * noise), ENERGY_WH_MIN, ENERGY_WH_MAX)
    wh = wh.astype(np.int64)
    energy_wh = np.zeros((n, PERIODS_PER_SESSION), dtype=np.int64)
    energy_wh[:, :CHARGING_PERIODS_MAX] = wh
    last = c - 1
    partial = np.maximum(energy_wh[np.arange(n), charging - 1] * k // TIME_STEPS_PER_PERIOD, 1)
    energy_wh[np.arange(n), charging - 1] = partial
    energy_wh[j >= c] = 0

    time_ms = np.where(j < last, PERIOD_MS, np.where(j == last, (k * TIME_STEP_MS)[:, None], 0))
    parking_ms = PERIOD_MS - time_ms
    starts = start[:, None] + j * PERIOD_MS

    return Workload(
        offsets=np.arange(0, n * PERIODS_PER_SESSION + 1, PERIODS_PER_SESSION, dtype=np.int64),
        start_epoch_ms=starts.ravel(),
        energy_milliwh=(energy_wh * 1_000).ravel(),
        time_ms=time_ms.astype(np.int64).ravel(),
        parking_ms=parking_ms.astype(np.int64).ravel(),
        session_start_epoch_ms=start,
        session_end_epoch_ms=start + PERIODS_PER_SESSION * PERIOD_MS,
        charging_periods=charging,
    )


def session_columns(w: Workload, i: int) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(start, end, [(start_epoch_ms, energy_milliwh, time_ms, parking_ms), ...]) of session i."""
    lo, hi = int(w.offsets[i]), int(w.offsets[i + 1])
    rows = list(zip(w.start_epoch_ms[lo:hi].tolist(), w.energy_milliwh[lo:hi].tolist(),
                    w.time_ms[lo:hi].tolist(), w.parking_ms[lo:hi].tolist(), strict=True))
    return int(w.session_start_epoch_ms[i]), int(w.session_end_epoch_ms[i]), rows


# -- OCPI JSON ------------------------------------------------------------------------------------


def iso_utc(epoch_ms_value: int) -> str:
    at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=epoch_ms_value)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def kwh(milliwh: int) -> Decimal:
    return _exact(milliwh, _MILLIWH_PER_KWH)


def hours(ms: int) -> Decimal:
    return _exact(ms, _MS_PER_HOUR)


def _exact(numerator: int, denominator: int) -> Decimal:
    value = Decimal(numerator) / Decimal(denominator)
    if value * denominator != numerator:
        raise ValueError(f"{numerator}/{denominator} is not an exact decimal")
    return _plain(value)


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros and never in exponent notation (3E+1 -> 30)."""
    return Decimal(format(value.normalize(), "f"))


def cdr_ocpi(w: Workload, i: int, totals: dict[str, Any] | None = None) -> dict[str, Any]:
    """Session ``i`` as an OCPI 2.2.1 CDR (Decimal numbers).

    ``totals`` maps total_cost, total_fixed_cost, total_energy_cost, total_time_cost and
    total_parking_cost to OCPI Price objects; total_cost is zero and the others are left out when
    not given (the benchmark's peer input ignores them). Quantity totals are always written.
    """
    start, end, rows = session_columns(w, i)
    periods = []
    for t, energy, time_ms, parking in rows:
        dims: list[dict[str, Any]] = []
        if energy:
            dims.append({"type": "ENERGY", "volume": kwh(energy)})
        if time_ms:
            dims.append({"type": "TIME", "volume": hours(time_ms)})
        if parking:
            dims.append({"type": "PARKING_TIME", "volume": hours(parking)})
        periods.append({"start_date_time": iso_utc(t), "dimensions": dims})
    energy_total = sum(r[1] for r in rows)
    parking_total = sum(r[3] for r in rows)
    zero = {"excl_vat": Decimal(0), "incl_vat": Decimal(0)}
    totals = totals or {}
    cdr: dict[str, Any] = {
        "country_code": "DE",
        "party_id": "EVB",
        "id": f"BENCH-{SEED}-{i:06d}",
        "start_date_time": iso_utc(start),
        "end_date_time": iso_utc(end),
        "cdr_token": {"country_code": "DE", "party_id": "EVB", "uid": "BENCH0001",
                      "type": "RFID", "contract_id": "DE-EVB-C00000001-X"},
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": "LOC-BENCH-1", "name": "Benchmark site", "address": "Musterstrasse 1",
            "city": "Berlin", "postal_code": "10115", "country": COUNTRY_ISO3,
            "coordinates": {"latitude": "52.530000", "longitude": "13.385000"},
            "evse_uid": "EVSE-1", "evse_id": "DE*EVB*E0001*1", "connector_id": "1",
            "connector_standard": "IEC_62196_T2", "connector_format": "SOCKET",
            "connector_power_type": "AC_3_PHASE",
        },
        "currency": "EUR",
        "charging_periods": periods,
        # The totals a CDR must carry, in OCPI field order; rating engines ignore them as input.
        "total_cost": totals.get("total_cost", zero),
        "total_fixed_cost": totals.get("total_fixed_cost"),
        "total_energy": kwh(energy_total),
        "total_energy_cost": totals.get("total_energy_cost"),
        "total_time": hours(end - start),
        "total_time_cost": totals.get("total_time_cost"),
        "total_parking_time": hours(parking_total),
        "total_parking_cost": totals.get("total_parking_cost"),
        "last_updated": iso_utc(end),
    }
    return {k: v for k, v in cdr.items() if v is not None}
