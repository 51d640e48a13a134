"""Notifications: the event sink of the charging service (``ports.EventSink``), and delivery.

``NotificationService.publish(event)`` never blocks and never touches the database:

1. the event goes to the live hub at once (every event, running costs included);
2. it is queued (bounded) for rule evaluation by one background task, in publication order.
   The rules of each operator are cached for ``rules_ttl_s`` (``rules_changed`` drops them at
   once after a write in this process). ``domain.notification_rules.evaluate`` decides; most
   running-cost updates produce nothing and cost a few dictionary look-ups. Events it derives
   (cost threshold, cap approaching, idle fee soon) go to the live hub too;
3. the notifications it plans go through a second bounded queue to a writer task that stores
   them with their deliveries in batches: one transaction per batch, duplicates (replays)
   dropped by primary key;
4. idle-fee reminders wait on timers (``Scheduler``) and are evaluated when due, unless
   charging resumed or the session ended.

When the evaluation queue is full (the database is down for long), new running-cost updates
are dropped first (the next one supersedes them: thresholds and caps compare totals), other
events only past a reserve; every drop is counted in ``dropped``.

``DeliveryWorker`` sends what the store says is due: e-mails and webhooks, each delivery
claimed with a lease (so two processes never send the same one at once), retried with
exponential back-off and jitter (``notification_rules.RETRY_DELAYS_S``, about 3 days), then
``failed``. Delivery is at least once; webhook receivers deduplicate by the event id.

Per-session memory (thresholds told, pending reminders) lives in this process: the charging
service of a session runs where its charger is connected. After a restart a replayed fact gets
the same notification id, so nothing is stored twice; idle-fee reminders are armed again by the
charging service, which republishes ``charging_completed`` (same id) for sessions it finds idle
when it rebuilds them after a start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from evbilling.domain.events import CostUpdated, Event, IdleFeeSoon, SessionEnded, SessionEvent
from evbilling.domain.notification_rules import (
    NO_RULES,
    RETRY_JITTER_PERMILLE_MAX,
    IdleFeeTimer,
    PlannedNotification,
    Rule,
    RuleSet,
    SessionState,
    evaluate,
    retry_delay_ms,
)

if TYPE_CHECKING:
    from evbilling.services.ports import EventSink

logger = logging.getLogger(__name__)

INBOX_MAX = 100_000  # events waiting for evaluation
INBOX_RESERVE = 10_000  # room kept for events other than running-cost updates
WRITES_MAX = 10_000  # planned notifications waiting for the writer
BATCH_MAX = 500  # notifications per transaction
SESSIONS_MAX = 200_000  # sessions remembered (thresholds told, pending reminders)
RECENT_IDS_MAX = 50_000  # ids of recent events (other than running costs): replays skip
RULES_TTL_S = 5.0
OPERATORS_CACHED_MAX = 10_000


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- ports --------------------------------------------------------------------------------------
class LiveSubscription(Protocol):
    session_id: str
    dropped: int

    async def get(self) -> Any: ...

    def close(self) -> None: ...


class LiveHubPort(Protocol):
    """The live stream (``adapters/notify/hub.py`` in process, ``redis_hub.py`` across)."""

    def publish(self, event: Event) -> None: ...

    async def subscribe(self, session_id: str) -> Any: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for sending, with what it sends."""

    delivery_id: str
    operator_id: str
    notification_id: str
    channel: str  # email | webhook
    target: str  # e-mail address | webhook endpoint id
    attempts: int  # attempts made before this one
    title: str
    body: str
    envelope: Mapping[str, Any]  # the webhook body: id, type, created, data
    webhook_url: str | None = None  # None: the endpoint was deleted or switched off
    webhook_secret: str | None = None


class NotificationStore(Protocol):
    def load_rules(self, operator_id: str) -> list[Rule]: ...

    def save(self, batch: Sequence[PlannedNotification], now: dt.datetime) -> int:
        """Store the notifications and their deliveries in ONE transaction, skipping those
        already stored. Returns the number of deliveries created."""
        ...


class DeliveryStore(Protocol):
    def claim_due(self, now: dt.datetime, limit: int,
                  lease_until: dt.datetime) -> list[DueDelivery]: ...

    def finish(self, delivery_id: str, *, status: str, attempts: int,
               next_attempt_at: dt.datetime | None, last_error: str | None,
               delivered_at: dt.datetime | None) -> None: ...


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    error: str | None = None
    permanent: bool = False  # retrying cannot help (e.g. SMTP 5xx, endpoint gone)


class EmailSender(Protocol):
    async def send(self, *, to: str, subject: str, body: str, message_id: str) -> SendResult: ...


class WebhookSender(Protocol):
    async def send(self, *, url: str, secret: str,
                   envelope: Mapping[str, Any]) -> SendResult: ...

    async def aclose(self) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_at(self, when: dt.datetime, callback: Callable[[], None]) -> Timer: ...


class LoopScheduler:
    """Timers on the running event loop, measured against ``clock``."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock

    def call_at(self, when: dt.datetime, callback: Callable[[], None]) -> Timer:
        delay_s = max(0.0, (when - self.clock()).total_seconds())
        return asyncio.get_running_loop().call_later(delay_s, callback)


@dataclass(frozen=True, slots=True)
class _Due:
    """An idle-fee reminder whose time has come."""

    timer: IdleFeeTimer


_STOP = object()


# -- the sink -----------------------------------------------------------------------------------
class NotificationService:
    """Implements ``ports.EventSink``. ``start()`` / ``stop()`` run its tasks (and those of the
    hub and the delivery worker, when given) on the running loop; ``publish`` may be called
    from any thread, before start too (events wait in the bounded queue)."""

    def __init__(self, store: NotificationStore, hub: LiveHubPort, *,
                 worker: DeliveryWorker | None = None,
                 clock: Callable[[], dt.datetime] = _utc_now,
                 scheduler: Scheduler | None = None,
                 rules_ttl_s: float = RULES_TTL_S, inbox_max: int = INBOX_MAX,
                 writes_max: int = WRITES_MAX, batch_max: int = BATCH_MAX,
                 batch_delay_s: float = 0.02, sessions_max: int = SESSIONS_MAX,
                 save_retry_pauses_s: Sequence[float] = (0.1, 0.5, 2.0)) -> None:
        self.store = store
        self.hub = hub
        self.worker = worker
        self.clock = clock
        self.scheduler: Scheduler = scheduler or LoopScheduler(clock)
        self.rules_ttl_s = rules_ttl_s
        self.inbox_max = inbox_max
        self.writes_max = writes_max
        self.batch_max = batch_max
        self.batch_delay_s = batch_delay_s
        self.sessions_max = sessions_max
        self.save_retry_pauses_s = tuple(save_retry_pauses_s)
        self._inbox: deque[Event | _Due] = deque()
        self._rules: dict[str, tuple[float, RuleSet]] = {}
        self._generation: dict[str, int] = {}
        self._sessions: dict[str, SessionState] = {}
        self._timers: dict[str, list[Timer]] = {}
        self._recent: dict[str, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._writes: asyncio.Queue[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._busy = False
        self._saving = False
        self._drop_logged_at = -1e9
        # counters (tests, metrics)
        self.published = 0
        self.dropped = 0
        self.evaluated = 0
        self.planned = 0
        self.batches = 0
        self.lost = 0  # notifications a batch could not store, even one by one

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._writes = asyncio.Queue(self.writes_max)
        self._stopping = False
        await self.hub.start()
        self._tasks = [self._loop.create_task(self._evaluate_loop(), name="notify-rules"),
                       self._loop.create_task(self._write_loop(), name="notify-writer")]
        if self._inbox:
            self._wake.set()
        if self.worker is not None:
            await self.worker.start()

    async def stop(self) -> None:
        """Evaluate and store what was published, then stop (pending reminders are dropped)."""
        if not self._tasks:
            return
        evaluator, writer = self._tasks
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        await evaluator
        if self._writes is not None:
            await self._writes.put(_STOP)
        await writer
        self._tasks = []
        for timers in self._timers.values():
            for timer in timers:
                timer.cancel()
        self._timers.clear()
        if self.worker is not None:
            await self.worker.stop()
        await self.hub.stop()
        self._loop = self._loop_thread = None
        self._wake = None

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything published so far is evaluated and stored (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        await asyncio.sleep(0)
        while self._inbox or self._busy or self._saving or \
                (self._writes is not None and not self._writes.empty()):
            if time.monotonic() > deadline:
                raise TimeoutError("notifications were not stored in time")
            await asyncio.sleep(0.005)

    # -- the hot path --------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._accept, event)
            return
        self._accept(event)

    def _accept(self, event: Event) -> None:
        self.published += 1
        self.hub.publish(event)
        inbox = self._inbox
        if len(inbox) >= self.inbox_max:
            if type(event) is CostUpdated or len(inbox) >= self.inbox_max + INBOX_RESERVE:
                self.dropped += 1
                if time.monotonic() >= self._drop_logged_at + 10:  # at most every 10 s
                    self._drop_logged_at = time.monotonic()
                    logger.warning("notification queue full: %d events dropped so far",
                                   self.dropped)
                return
        inbox.append(event)
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def rules_changed(self, operator_id: str) -> None:
        """Forget the cached rules of ``operator_id`` (call after writing its rules)."""
        self._generation[operator_id] = self._generation.get(operator_id, 0) + 1
        self._rules.pop(operator_id, None)

    # -- evaluation ----------------------------------------------------------------------------
    async def _evaluate_loop(self) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError("start() creates the wake-up event")
        handled = 0
        while True:
            if not self._inbox:
                if self._stopping:
                    return
                wake.clear()
                await wake.wait()
                continue
            item = self._inbox.popleft()
            self._busy = True
            try:
                await self._evaluate(item)
            except Exception:  # a bug in one event must not stop the stream
                logger.exception("evaluating notification rules failed")
            finally:
                self._busy = False
            handled += 1
            if handled % 256 == 0:
                await asyncio.sleep(0)  # let the loop breathe during a burst

    async def _evaluate(self, item: Event | _Due) -> None:
        from_timer = isinstance(item, _Due)
        event: Event = item.timer.event if isinstance(item, _Due) else item
        if not from_timer and type(event) is not CostUpdated:
            if event.event_id in self._recent:
                return  # a replay: everything it produces exists already
            self._recent[event.event_id] = None
            if len(self._recent) > RECENT_IDS_MAX:
                del self._recent[next(iter(self._recent))]
        rules = await self._rules_for(event.operator_id)
        state = self._state(event)
        outcome = evaluate(event, rules, state, self.clock())
        self.evaluated += 1
        for derived in outcome.derived:
            if from_timer or derived is not event:
                self.hub.publish(derived)
        if isinstance(event, SessionEvent):
            if outcome.cancel_timers:
                for timer in self._timers.pop(event.session_id, ()):
                    timer.cancel()
            for due in outcome.timers:
                self._schedule(due)
            if isinstance(event, SessionEnded):
                self._sessions.pop(event.session_id, None)
        if outcome.notifications:
            writes = self._writes
            if writes is None:
                raise RuntimeError("start() creates the write queue")
            for planned in outcome.notifications:
                self.planned += 1
                await writes.put(planned)

    def _state(self, event: Event) -> SessionState | None:
        if not isinstance(event, SessionEvent):
            return None
        state = self._sessions.get(event.session_id)
        if state is None:
            if isinstance(event, SessionEnded | IdleFeeSoon):
                return None
            if len(self._sessions) >= self.sessions_max:  # forget the oldest session
                oldest = next(iter(self._sessions))
                del self._sessions[oldest]
                for timer in self._timers.pop(oldest, ()):
                    timer.cancel()
            state = self._sessions[event.session_id] = SessionState()
        return state

    def _schedule(self, due: IdleFeeTimer) -> None:
        def fire() -> None:
            self._inbox.append(_Due(due))
            if self._wake is not None:
                self._wake.set()

        timer = self.scheduler.call_at(due.event.at, fire)
        self._timers.setdefault(due.session_id, []).append(timer)

    async def _rules_for(self, operator_id: str) -> RuleSet:
        cached = self._rules.get(operator_id)
        now_s = time.monotonic()
        if cached is not None and cached[0] > now_s:
            return cached[1]
        generation = self._generation.get(operator_id, 0)
        try:
            rules = RuleSet(await asyncio.to_thread(self.store.load_rules, operator_id))
        except Exception:
            logger.exception("loading the notification rules of %s failed", operator_id)
            return cached[1] if cached is not None else NO_RULES
        if self._generation.get(operator_id, 0) == generation:  # not changed meanwhile
            if len(self._rules) >= OPERATORS_CACHED_MAX:
                self._rules.clear()
            self._rules[operator_id] = (now_s + self.rules_ttl_s, rules)
        return rules

    # -- storing -------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        writes = self._writes
        if writes is None:
            raise RuntimeError("start() creates the write queue")
        while True:
            first = await writes.get()
            if first is _STOP:
                return
            self._saving = True
            try:
                if self.batch_delay_s and not self._stopping:
                    await asyncio.sleep(self.batch_delay_s)  # let the batch fill
                batch: list[PlannedNotification] = [first]
                stop = False
                while len(batch) < self.batch_max and not writes.empty():
                    item = writes.get_nowait()
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                await self._save(batch)
            finally:
                self._saving = False
            if stop:
                return

    async def _save(self, batch: list[PlannedNotification]) -> None:
        for pause_s in (*self.save_retry_pauses_s, None):
            try:
                await asyncio.to_thread(self.store.save, batch, self.clock())
            except Exception:
                if pause_s is None:
                    break
                logger.warning("storing %d notifications failed; retrying", len(batch),
                               exc_info=True)
                await asyncio.sleep(pause_s)
            else:
                self.batches += 1
                self._wake_worker()
                return
        for planned in batch:  # isolate the culprit: each in its own transaction
            try:
                await asyncio.to_thread(self.store.save, [planned], self.clock())
            except Exception:
                self.lost += 1
                logger.exception("notification %s could not be stored",
                                 planned.notification_id)
        self._wake_worker()

    def _wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()


# -- delivery -----------------------------------------------------------------------------------
def random_jitter() -> int:
    return secrets.randbelow(2 * RETRY_JITTER_PERMILLE_MAX + 1) - RETRY_JITTER_PERMILLE_MAX


class DeliveryWorker:
    """Sends due deliveries: ``run_once`` claims up to ``batch_max`` (each with a lease, so
    another process skips them), sends ``concurrency`` at a time and records each outcome."""

    def __init__(self, store: DeliveryStore, *, email: EmailSender | None = None,
                 webhooks: WebhookSender | None = None,
                 clock: Callable[[], dt.datetime] = _utc_now, poll_interval_s: float = 5.0,
                 batch_max: int = 50, concurrency: int = 8,
                 lease: dt.timedelta = dt.timedelta(minutes=5),
                 jitter: Callable[[], int] = random_jitter) -> None:
        self.store = store
        self.email = email
        self.webhooks = webhooks
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.batch_max = batch_max
        self.concurrency = concurrency
        self.lease = lease
        self.jitter = jitter
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0
        self.failed = 0
        self.retried = 0

    async def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._stopping = False
            self._task = self._loop.create_task(self._run(), name="notify-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self.wake()
            await self._task
            self._task = None
        if self.webhooks is not None:
            await self.webhooks.aclose()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were stored)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        wake = self._wake
        if wake is None:
            raise RuntimeError("start() creates the wake-up event")
        while not self._stopping:
            wake.clear()
            try:
                handled = await self.run_once()
            except Exception:
                logger.exception("the delivery worker failed; trying again")
                handled = 0
            if handled >= self.batch_max:
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll_interval_s)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Send what is due now; returns how many deliveries were attempted."""
        now = self.clock()
        due = await asyncio.to_thread(self.store.claim_due, now, self.batch_max,
                                      now + self.lease)
        if not due:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(delivery: DueDelivery) -> None:
            async with gate:
                await self._deliver(delivery)

        await asyncio.gather(*(one(d) for d in due))
        return len(due)

    async def _deliver(self, delivery: DueDelivery) -> None:
        try:
            result = await self._send(delivery)
        except Exception as exc:  # an adapter bug: retry later like any failure
            logger.exception("sending delivery %s failed", delivery.delivery_id)
            result = SendResult(False, f"{type(exc).__name__}: {exc}")
        attempts = delivery.attempts + 1
        now = self.clock()
        if result.ok:
            self.sent += 1
            await asyncio.to_thread(self.store.finish, delivery.delivery_id, status="delivered",
                                    attempts=attempts, next_attempt_at=None, last_error=None,
                                    delivered_at=now)
            return
        delay_ms = None if result.permanent else retry_delay_ms(attempts, self.jitter())
        if delay_ms is None:
            self.failed += 1
            logger.warning("delivery %s failed for good after %d attempts: %s",
                           delivery.delivery_id, attempts, result.error)
            await asyncio.to_thread(self.store.finish, delivery.delivery_id, status="failed",
                                    attempts=attempts, next_attempt_at=None,
                                    last_error=result.error, delivered_at=None)
            return
        self.retried += 1
        await asyncio.to_thread(self.store.finish, delivery.delivery_id, status="pending",
                                attempts=attempts,
                                next_attempt_at=now + dt.timedelta(milliseconds=delay_ms),
                                last_error=result.error, delivered_at=None)

    async def _send(self, delivery: DueDelivery) -> SendResult:
        if delivery.channel == "email":
            if self.email is None:
                return SendResult(False, "e-mail is not configured (EVBILLING_SMTP_URL)",
                                  permanent=True)
            return await self.email.send(to=delivery.target, subject=delivery.title,
                                         body=delivery.body,
                                         message_id=delivery.notification_id)
        if delivery.channel == "webhook":
            if self.webhooks is None:
                return SendResult(False, "webhooks are not configured", permanent=True)
            if delivery.webhook_url is None or delivery.webhook_secret is None:
                return SendResult(False, "the webhook endpoint was deleted or switched off",
                                  permanent=True)
            return await self.webhooks.send(url=delivery.webhook_url,
                                            secret=delivery.webhook_secret,
                                            envelope=delivery.envelope)
        return SendResult(False, f"unknown channel {delivery.channel!r}", permanent=True)


if TYPE_CHECKING:
    def _is_an_event_sink(service: NotificationService) -> EventSink:
        return service  # mypy checks that NotificationService implements ports.EventSink
