"""The live hub across processes: Redis pub/sub (opt-in with ``EVBILLING_REDIS_URL``).

A driver's phone may hold its stream on one API node while the charger reports to another.
Each process keeps an in-process ``LiveHub`` for its own subscribers and:

* **publishes** every event to its local subscribers at once and to the Redis channel
  ``evbilling:live:<session id>``. ``publish`` never waits for Redis: messages go to a bounded
  outbox that one task sends in pipelined batches; when Redis is slow or down the oldest are
  dropped and counted (``dropped_outbound``), never the caller blocked;
* **listens** (one connection, one task) on the channels of the sessions somebody watches in
  this process: it subscribes when a session gets its first local subscriber and unsubscribes
  after the last; ``subscribe`` returns once Redis confirmed the subscription, so nothing
  published afterwards is missed. Messages this process published itself are skipped (its
  subscribers had them directly). After a lost connection it reconnects with back-off and
  subscribes again.

Wire format (bytes): ``<node id>\\n<event id>\\n<event name>\\n<JSON data>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from evbilling.adapters.notify.hub import LiveHub, LiveMessage, Subscription
from evbilling.domain.events import Event, SessionEvent

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "evbilling:live:"
OUTBOX_MAX = 10_000
PIPELINE_MAX = 500
SUBSCRIBE_TIMEOUT_S = 2.0
POLL_S = 0.02  # how often the listener looks at subscription changes while idle
RECONNECT_MAX_S = 5.0


class RedisLiveHub:
    """Same surface as ``LiveHub`` (``publish``, ``subscribe``, ``start``, ``stop``)."""

    def __init__(self, url: str, *, local: LiveHub | None = None,
                 channel_prefix: str = CHANNEL_PREFIX, outbox_max: int = OUTBOX_MAX,
                 subscribe_timeout_s: float = SUBSCRIBE_TIMEOUT_S) -> None:
        self.url = url
        self.local = local or LiveHub()
        self.local.on_first = self._want
        self.local.on_last = self._unwant
        self.prefix = channel_prefix
        self.outbox_max = outbox_max
        self.subscribe_timeout_s = subscribe_timeout_s
        self.node_id = secrets.token_hex(8).encode()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wanted: set[str] = set()  # channels with local subscribers
        self._subscribed: set[str] = set()  # channels the listener subscribed to
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._client: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox_ready: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._stopping = False
        self.sent = 0
        self.received = 0
        self.dropped_outbound = 0
        self.errors = 0

    @property
    def dropped(self) -> int:
        return self.local.dropped

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        self._client = aioredis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5,
                                         health_check_interval=30)
        self._outbox_ready = asyncio.Event()
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_loop(), name="live-redis-publish"),
                       loop.create_task(self._listen_loop(), name="live-redis-listen")]
        if self._outbox:
            self._outbox_ready.set()

    async def stop(self) -> None:
        if not self._tasks:
            return
        self._stopping = True
        if self._outbox_ready is not None:
            self._outbox_ready.set()
        if self._changed is not None:
            self._changed.set()
        sender, listener = self._tasks
        try:
            await asyncio.wait_for(sender, 5)  # send what is queued, if Redis lets us
        except TimeoutError:
            pass
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        for future in self._confirmed.values():
            future.cancel()
        self._confirmed.clear()

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        if not isinstance(event, SessionEvent):
            return
        message = LiveMessage.of(event)
        self.local.deliver(event.session_id, message)
        outbox = self._outbox
        if len(outbox) >= self.outbox_max:
            outbox.popleft()
            self.dropped_outbound += 1
        outbox.append((self.prefix + event.session_id,
                       b"\n".join((self.node_id, message.event_id.encode(),
                                   message.name.encode(), message.data))))
        ready = self._outbox_ready
        if ready is not None and not ready.is_set():
            ready.set()

    async def _send_loop(self) -> None:
        ready = self._outbox_ready
        if ready is None or self._client is None:
            raise RuntimeError("start() sets up the sender")
        pause_s = 0.1
        while True:
            if not self._outbox:
                if self._stopping:
                    return
                ready.clear()
                await ready.wait()
                continue
            batch = [self._outbox.popleft()
                     for _ in range(min(PIPELINE_MAX, len(self._outbox)))]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.errors += 1
                self.dropped_outbound += len(batch)
                if self.errors % 100 == 1:
                    logger.warning("publishing live events to Redis failed: %s", exc)
                if self._stopping:
                    return
                await asyncio.sleep(pause_s)
                pause_s = min(RECONNECT_MAX_S, pause_s * 2)
            else:
                self.sent += len(batch)
                pause_s = 0.1

    # -- subscribing ---------------------------------------------------------------------------
    async def subscribe(self, session_id: str) -> Subscription:
        sub = self.local.open(session_id)
        confirmed = self._confirmed.get(self.prefix + session_id)
        if self._tasks and confirmed is not None and not confirmed.done():
            try:
                await asyncio.wait_for(asyncio.shield(confirmed), self.subscribe_timeout_s)
            except TimeoutError:
                logger.warning("Redis did not confirm the live subscription of %s in time",
                               session_id)
        return sub

    def _want(self, session_id: str) -> None:
        channel = self.prefix + session_id
        self._wanted.add(channel)
        if channel not in self._confirmed:
            future = self._confirmed[channel] = asyncio.get_running_loop().create_future()
            if channel in self._subscribed:  # left and came back before we unsubscribed
                future.set_result(None)
        if self._changed is not None:
            self._changed.set()

    def _unwant(self, session_id: str) -> None:
        channel = self.prefix + session_id
        self._wanted.discard(channel)
        future = self._confirmed.pop(channel, None)
        if future is not None and not future.done():
            future.cancel()
        if self._changed is not None:
            self._changed.set()

    async def _listen_loop(self) -> None:
        changed = self._changed
        if changed is None or self._client is None:
            raise RuntimeError("start() sets up the listener")
        pause_s = 0.1
        while not self._stopping:
            pubsub = self._client.pubsub()
            self._subscribed = set()
            try:
                while not self._stopping:
                    wanted = set(self._wanted)
                    if wanted - self._subscribed:
                        await pubsub.subscribe(*(wanted - self._subscribed))
                    if self._subscribed - wanted:
                        await pubsub.unsubscribe(*(self._subscribed - wanted))
                    self._subscribed = wanted
                    if not wanted:
                        changed.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(changed.wait(), 1.0)
                        continue
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is not None:
                        self._handle(message)
                    pause_s = 0.1
            except (RedisError, OSError) as exc:
                self.errors += 1
                logger.warning("the Redis live listener lost its connection: %s", exc)
                await asyncio.sleep(pause_s)
                pause_s = min(RECONNECT_MAX_S, pause_s * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            future = self._confirmed.get(name)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message":
            return
        data = message.get("data")
        if not isinstance(data, bytes):
            return
        parts = data.split(b"\n", 3)
        if len(parts) != 4 or parts[0] == self.node_id:
            return  # malformed, or ours (local subscribers had it directly)
        self.received += 1
        self.local.deliver(name[len(self.prefix):],
                           LiveMessage(parts[1].decode(), parts[2].decode(), parts[3]))
