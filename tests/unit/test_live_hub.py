"""The in-process live hub: fan-out per session, bounded queues that drop the oldest."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import orjson
import pytest

from evbilling.adapters.notify.hub import LiveHub, LiveMessage, TooManySubscribersError
from evbilling.domain import events as ev

T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)


def cost(session_id: str, n: int) -> ev.CostUpdated:
    return ev.CostUpdated(
        event_id=f"evt_{session_id}_{n}", operator_id="op", at=T0, session_id=session_id,
        driver_id="drv", charger_id="chg", currency="EUR", sample_at_ms=1_000 + n,
        energy_milliwh=n * 1000, charging_ms=n, parking_ms=0, total_excl=Decimal("1.5"),
        total_incl=Decimal(n) / 100, amount_minor_incl=n)


def test_a_subscriber_gets_the_events_of_its_session_only():
    async def scenario() -> list[str]:
        hub = LiveHub()
        mine = hub.open("cs_1")
        hub.publish(cost("cs_2", 1))
        hub.publish(cost("cs_1", 2))
        hub.publish(cost("cs_1", 3))
        return [(await mine.get()).event_id for _ in range(mine.pending())]

    assert asyncio.run(scenario()) == ["evt_cs_1_2", "evt_cs_1_3"]


def test_every_subscriber_of_a_session_gets_the_same_encoded_message():
    async def scenario() -> tuple[LiveMessage, LiveMessage]:
        hub = LiveHub()
        a, b = hub.open("cs_1"), hub.open("cs_1")
        hub.publish(cost("cs_1", 7))
        return await a.get(), await b.get()

    first, second = asyncio.run(scenario())

    assert first is second  # encoded once
    data = orjson.loads(first.data)
    assert (data["total_incl"], data["sample_at_ms"]) == ("0.07", 1_007)
    assert first.sse.startswith(b"id: evt_cs_1_7\nevent: session.cost_updated\ndata: {")
    assert first.sse.endswith(b"}\n\n")
    assert orjson.loads(first.text)["data"] == data


def test_a_slow_subscriber_loses_the_oldest_messages_and_they_are_counted():
    async def scenario() -> tuple[list[str], int, int]:
        hub = LiveHub(queue_max=3)
        slow = hub.open("cs_1")
        for n in range(10):
            hub.publish(cost("cs_1", n))
        kept = [(await slow.get()).event_id for _ in range(slow.pending())]
        return kept, slow.dropped, hub.dropped

    kept, dropped, total = asyncio.run(scenario())

    assert kept == ["evt_cs_1_7", "evt_cs_1_8", "evt_cs_1_9"]
    assert (dropped, total) == (7, 7)


def test_closing_the_last_subscription_forgets_the_session():
    events: list[tuple[str, str]] = []
    hub = LiveHub(on_first=lambda s: events.append(("first", s)),
                  on_last=lambda s: events.append(("last", s)))

    a, b = hub.open("cs_1"), hub.open("cs_1")
    a.close()
    a.close()
    b.close()

    assert events == [("first", "cs_1"), ("last", "cs_1")]
    assert hub.subscribers() == 0 and hub.subscribers("cs_1") == 0


def test_subscribers_are_limited_per_session_and_per_process():
    hub = LiveHub(per_session_max=2, subscribers_max=3)
    hub.open("cs_1")
    hub.open("cs_1")

    with pytest.raises(TooManySubscribersError):
        hub.open("cs_1")
    hub.open("cs_2")
    with pytest.raises(TooManySubscribersError):
        hub.open("cs_3")


def test_publishing_to_a_session_nobody_watches_encodes_nothing():
    hub = LiveHub()
    broken = cost("cs_1", 1)
    object.__setattr__(broken, "total_incl", object())  # would fail to encode

    hub.publish(broken)  # no subscriber: returns before encoding

    assert hub.subscribers("cs_1") == 0
