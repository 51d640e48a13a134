"""When the idle fee starts, read from the tariff's PARKING_TIME elements (domain/idle.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from evbilling.domain.idle import idle_fee_starts_ms
from evbilling.domain.periods import epoch_ms
from evbilling.domain.rating import compile_tariff
from evbilling.domain.tariffs import Tariff, parse_tariff

BERLIN = "Europe/Berlin"


def tariff(*elements: dict[str, Any]) -> Tariff:
    return parse_tariff({"id": "T-1", "currency": "EUR", "elements": list(elements)})


def element(component: dict[str, Any], **restrictions: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"price_components": [component]}
    if restrictions:
        out["restrictions"] = restrictions
    return out


def energy(price: str) -> dict[str, Any]:
    return {"type": "ENERGY", "price": price, "step_size": 1}


def parking(price: str) -> dict[str, Any]:
    return {"type": "PARKING_TIME", "price": price, "step_size": 60}


def at(wall_clock: str, tz: str) -> int:
    return epoch_ms(dt.datetime.fromisoformat(wall_clock).replace(tzinfo=ZoneInfo(tz)))


def starts(t, *, start: str, end: str, kwh_milliwh: int = 10_000_000) -> int | None:
    return idle_fee_starts_ms(compile_tariff(t), BERLIN, session_start_ms=at(start, BERLIN),
                              energy_milliwh=kwh_milliwh, charging_end_ms=at(end, BERLIN))


def test_an_unrestricted_idle_fee_starts_when_charging_ends():
    t = tariff(element(energy("0.30")), element(parking("6.00")))
    assert starts(t, start="2026-11-20 10:00", end="2026-11-20 10:37") == \
        at("2026-11-20 10:37", BERLIN)


def test_a_tariff_without_an_idle_fee_has_no_start():
    assert starts(tariff(element(energy("0.30"))), start="2026-11-20 10:00",
                  end="2026-11-20 11:00") is None
    free = tariff(element(energy("0.30")), element(parking("0.00")))
    assert starts(free, start="2026-11-20 10:00", end="2026-11-20 11:00") is None


def test_a_daytime_idle_fee_starts_at_the_next_morning():
    t = tariff(element(energy("0.30")),
               element(parking("6.00"), start_time="08:00", end_time="20:00"),
               element(parking("0.00")))
    assert starts(t, start="2026-11-20 19:00", end="2026-11-20 21:10") == \
        at("2026-11-21 08:00", BERLIN)


def test_a_grace_period_on_the_session_duration_delays_the_fee():
    t = tariff(element(energy("0.30")),
               element(parking("6.00"), min_duration=2 * 3600),
               element(parking("0.00")))
    assert starts(t, start="2026-11-20 10:00", end="2026-11-20 11:00") == \
        at("2026-11-20 12:00", BERLIN)
