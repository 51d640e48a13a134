"""The notification service on fakes: hot path, batching, idle-fee timers on a fake clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from evbilling.adapters.notify.hub import LiveHub
from evbilling.domain import events as ev
from evbilling.domain.notification_rules import PlannedNotification, Rule
from evbilling.services.notifications import NotificationService

T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)


# -- fakes ---------------------------------------------------------------------------------------
@dataclass
class FakeClock:
    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class FakeTimer:
    when: dt.datetime
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeScheduler:
    clock: FakeClock
    timers: list[FakeTimer] = field(default_factory=list)

    def call_at(self, when: dt.datetime, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, to: dt.datetime) -> None:
        self.clock.now = to
        for timer in sorted(self.timers, key=lambda t: t.when):
            if timer.when <= to and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


@dataclass
class FakeStore:
    rules: list[Rule] = field(default_factory=list)
    batches: list[list[PlannedNotification]] = field(default_factory=list)
    rule_loads: int = 0
    stored: dict[str, PlannedNotification] = field(default_factory=dict)

    def load_rules(self, operator_id: str) -> list[Rule]:
        self.rule_loads += 1
        return [r for r in self.rules if r.operator_id == operator_id]

    def save(self, batch: Sequence[PlannedNotification], now: dt.datetime) -> int:
        self.batches.append(list(batch))
        for planned in batch:
            self.stored.setdefault(planned.notification_id, planned)
        return 0

    def events(self) -> list[str]:
        return [p.event.name for batch in self.batches for p in batch]


def rule(event: str, rule_id: str = "nr_1", **fields: Any) -> Rule:
    return Rule(rule_id=rule_id, operator_id="op", driver_id=fields.pop("driver_id", None),
                event=event, channels=frozenset(fields.pop("channels", ("in_app",))), **fields)


COMMON: dict[str, Any] = {"operator_id": "op", "session_id": "cs_1", "driver_id": "drv",
                          "charger_id": "chg", "currency": "EUR"}


def cost(n: int, *, charging: bool = True, minor: int | None = None) -> ev.CostUpdated:
    return ev.CostUpdated(
        event_id=f"evt_cost_{n}", at=T0 + dt.timedelta(seconds=n), sample_at_ms=n,
        energy_milliwh=n, charging_ms=n, parking_ms=0, total_excl=Decimal(n),
        total_incl=Decimal(n), amount_minor_incl=n if minor is None else minor,
        charging=charging, **COMMON)


def completed(at: dt.datetime, idle_fee_starts_at: dt.datetime) -> ev.ChargingCompleted:
    return ev.ChargingCompleted(event_id=f"evt_done_{at.isoformat()}", at=at,
                                idle_fee_starts_at=idle_fee_starts_at, **COMMON)


def ended() -> ev.SessionEnded:
    return ev.SessionEnded(event_id="evt_end", at=T0, energy_milliwh=1, total_excl=Decimal(1),
                           total_incl=Decimal(1), amount_minor_excl=1, amount_minor_incl=1,
                           stop_reason=None, billed=True, **COMMON)


def started(event_id: str = "evt_start") -> ev.SessionStarted:
    return ev.SessionStarted(event_id=event_id, at=T0, token_uid=None, **COMMON)


def service(store: FakeStore, clock: FakeClock | None = None,
            scheduler: FakeScheduler | None = None, **kwargs: Any) -> NotificationService:
    clock = clock or FakeClock()
    return NotificationService(store, LiveHub(), clock=clock,
                               scheduler=scheduler or FakeScheduler(clock), **kwargs)


# -- the hot path --------------------------------------------------------------------------------
def test_every_event_reaches_the_live_hub_at_once_even_before_start():
    async def scenario() -> list[str]:
        sink = service(FakeStore())
        watcher = sink.hub.open("cs_1")  # type: ignore[attr-defined]
        for n in range(3):
            sink.publish(cost(n))
        return [(await watcher.get()).event_id for _ in range(watcher.pending())]

    assert asyncio.run(scenario()) == ["evt_cost_0", "evt_cost_1", "evt_cost_2"]


def test_running_costs_without_rules_write_nothing():
    store = FakeStore(rules=[rule("session.ended")])

    async def scenario() -> NotificationService:
        sink = service(store)
        await sink.start()
        for n in range(5_000):
            sink.publish(cost(n))
        await sink.flush()
        await sink.stop()
        return sink

    sink = asyncio.run(scenario())

    assert (sink.evaluated, store.batches, store.rule_loads) == (5_000, [], 1)


def test_notifications_are_stored_in_batches_not_one_transaction_each():
    store = FakeStore(rules=[rule("session.cost_threshold", amount_minor=1)])

    async def scenario() -> None:
        sink = service(store, batch_max=100, batch_delay_s=0.01)
        await sink.start()
        for n in range(1, 301):
            sink.publish(cost(n))
        await sink.flush()
        await sink.stop()

    asyncio.run(scenario())

    assert len(store.stored) == 300
    assert len(store.batches) <= 6 and max(len(b) for b in store.batches) <= 100


def test_a_replayed_event_is_not_evaluated_again():
    store = FakeStore(rules=[rule("session.started")])

    async def scenario() -> None:
        sink = service(store)
        await sink.start()
        sink.publish(started())
        sink.publish(started())
        await sink.flush()
        await sink.stop()

    asyncio.run(scenario())

    assert store.events() == ["session.started"]


def test_publish_is_safe_from_another_thread():
    store = FakeStore(rules=[rule("session.started")])

    async def scenario() -> None:
        sink = service(store)
        await sink.start()
        threads = [threading.Thread(target=sink.publish, args=(started(f"evt_{i}"),))
                   for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        await asyncio.sleep(0.01)
        await sink.flush()
        await sink.stop()

    asyncio.run(scenario())

    assert len(store.stored) == 20


def test_when_the_queue_is_full_running_costs_are_dropped_first():
    store = FakeStore(rules=[rule("session.started")])
    sink = service(store, inbox_max=10)  # not started: events wait in the queue

    for n in range(20):
        sink.publish(cost(n))
    sink.publish(started())

    assert sink.dropped == 10
    assert sum(isinstance(e, ev.SessionStarted) for e in sink._inbox) == 1


def test_rule_changes_in_this_process_apply_at_once():
    store = FakeStore()

    async def scenario() -> None:
        sink = service(store, rules_ttl_s=3600)
        await sink.start()
        sink.publish(started("evt_a"))
        await sink.flush()
        store.rules.append(rule("session.started"))
        sink.rules_changed("op")
        sink.publish(started("evt_b"))
        await sink.flush()
        await sink.stop()

    asyncio.run(scenario())

    assert [p.event.event_id for b in store.batches for p in b] == ["evt_b"]


def test_a_failing_store_is_retried_and_then_isolates_the_bad_notification():
    class Flaky(FakeStore):
        def save(self, batch: Sequence[PlannedNotification], now: dt.datetime) -> int:
            if any(p.event.event_id == "evt_bad" for p in batch):
                raise RuntimeError("constraint")
            return super().save(batch, now)

    store = Flaky(rules=[rule("session.started")])

    async def scenario() -> NotificationService:
        sink = service(store, batch_delay_s=0.05, save_retry_pauses_s=(0.01,))
        await sink.start()
        sink.publish(started("evt_good"))
        sink.publish(started("evt_bad"))
        await sink.flush(timeout_s=10)
        await sink.stop()
        return sink

    sink = asyncio.run(scenario())

    assert [p.event.event_id for p in store.stored.values()] == ["evt_good"]
    assert sink.lost == 1


# -- idle-fee reminders on a fake clock -----------------------------------------------------------
def run_idle(steps: Callable[[NotificationService, FakeScheduler], Any],
             rules: list[Rule]) -> tuple[FakeStore, FakeScheduler, list[str]]:
    store = FakeStore(rules=rules)
    clock = FakeClock()
    scheduler = FakeScheduler(clock)
    live: list[str] = []

    async def scenario() -> None:
        sink = service(store, clock, scheduler)
        watcher = sink.hub.open("cs_1")  # type: ignore[attr-defined]
        await sink.start()
        for step in steps(sink, scheduler):
            if step is not None:
                await step
            await sink.flush()
        while watcher.pending():
            live.append((await watcher.get()).name)
        await sink.stop()

    asyncio.run(scenario())
    return store, scheduler, live


def test_the_reminder_fires_n_minutes_before_the_idle_fee_starts():
    done_at = T0 + dt.timedelta(hours=1)
    starts = done_at + dt.timedelta(minutes=30)
    seen: dict[str, int] = {}

    def steps(sink: NotificationService, clock: FakeScheduler) -> Any:
        clock.advance(done_at)
        sink.publish(completed(done_at, starts))
        yield None
        clock.advance(starts - dt.timedelta(minutes=11))
        yield None
        seen["before"] = len(clock.pending())
        clock.advance(starts - dt.timedelta(minutes=10))
        yield None

    store, scheduler, live = run_idle(steps, [rule("session.idle_fee_soon", minutes=10)])

    assert seen["before"] == 1
    assert store.events() == ["session.idle_fee_soon"]
    assert live == ["session.charging_completed", "session.idle_fee_soon"]
    [planned] = store.stored.values()
    assert planned.event.at == starts - dt.timedelta(minutes=10)


def test_a_late_completion_sends_the_reminder_at_once():
    done_at = T0 + dt.timedelta(hours=1)

    def steps(sink: NotificationService, clock: FakeScheduler) -> Any:
        clock.advance(done_at + dt.timedelta(minutes=25))  # the event arrives late
        sink.publish(completed(done_at, done_at + dt.timedelta(minutes=30)))
        yield None

    store, scheduler, _ = run_idle(steps, [rule("session.idle_fee_soon", minutes=10)])

    assert store.events() == ["session.idle_fee_soon"] and scheduler.pending() == []


def test_resumed_charging_cancels_the_reminder():
    done_at = T0 + dt.timedelta(hours=1)
    starts = done_at + dt.timedelta(minutes=30)

    def steps(sink: NotificationService, clock: FakeScheduler) -> Any:
        clock.advance(done_at)
        sink.publish(cost(3600, charging=False))
        sink.publish(completed(done_at, starts))
        yield None
        sink.publish(cost(3700, charging=True))  # the car draws power again
        yield None
        clock.advance(starts)
        yield None

    store, scheduler, _ = run_idle(steps, [rule("session.idle_fee_soon", minutes=10)])

    assert store.events() == [] and scheduler.pending() == []


def test_the_end_of_the_session_cancels_the_reminder():
    done_at = T0 + dt.timedelta(hours=1)
    starts = done_at + dt.timedelta(minutes=30)

    def steps(sink: NotificationService, clock: FakeScheduler) -> Any:
        clock.advance(done_at)
        sink.publish(completed(done_at, starts))
        yield None
        sink.publish(ended())
        yield None
        clock.advance(starts)
        yield None

    store, scheduler, _ = run_idle(steps, [rule("session.idle_fee_soon", minutes=10)])

    assert store.events() == [] and scheduler.pending() == []
