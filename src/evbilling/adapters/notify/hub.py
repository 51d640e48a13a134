"""The in-process live hub: every event of a session, as it happens, to whoever watches it.

``subscribe(session_id)`` gives a ``Subscription``: a bounded queue of ``LiveMessage``s. A slow
subscriber never slows the publisher: when its queue is full the oldest message is dropped (and
counted in ``Subscription.dropped`` and ``LiveHub.dropped``); a running cost is superseded by the
next one anyway. ``publish`` costs O(1) for a session nobody watches and O(subscribers of that
session) otherwise; the event is encoded once (JSON, the server-sent-events frame and the
WebSocket text), whatever the number of subscribers.

Everything here runs on the event loop's thread (the notification service hops there first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from evbilling.domain.events import Event, SessionEvent
from evbilling.domain.notification_rules import event_data

QUEUE_MAX = 256  # messages waiting per subscriber
SUBSCRIBERS_MAX = 10_000  # per process
PER_SESSION_MAX = 20  # a driver's phone, a dashboard, a few browser tabs
_UTC_Z = orjson.OPT_UTC_Z


class TooManySubscribersError(RuntimeError):
    """The process or the session has as many live subscribers as it allows."""

    retryable = True


class LiveMessage:
    """One event, encoded once for every subscriber (each frame on first use, then kept)."""

    __slots__ = ("_sse", "_text", "data", "event_id", "name")

    def __init__(self, event_id: str, name: str, data: bytes) -> None:
        self.event_id = event_id
        self.name = name
        self.data = data  # JSON: decimals as strings, times RFC 3339
        self._sse: bytes | None = None
        self._text: str | None = None

    @staticmethod
    def of(event: Event) -> LiveMessage:
        data = event_data(event, times_as_text=False)  # orjson writes times as event_data
        return LiveMessage(event.event_id, event.name, orjson.dumps(data, option=_UTC_Z))

    @property
    def sse(self) -> bytes:
        """The server-sent-events frame (``id:``, ``event:``, ``data:``)."""
        if self._sse is None:
            self._sse = b"id: %s\nevent: %s\ndata: %s\n\n" % (
                self.event_id.encode(), self.name.encode(), self.data)
        return self._sse

    @property
    def text(self) -> str:
        """The WebSocket text message: ``{"id", "event", "data"}``."""
        if self._text is None:
            self._text = '{"id":"%s","event":"%s","data":%s}' % (  # noqa: UP031 - JSON bytes
                self.event_id, self.name, self.data.decode())
        return self._text


class Subscription:
    """A bounded queue of one session's live messages; ``close()`` when done."""

    __slots__ = ("_hub", "_queue", "closed", "dropped", "session_id")

    def __init__(self, hub: LiveHub, session_id: str, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[LiveMessage] = asyncio.Queue(maxsize)
        self.session_id = session_id
        self.dropped = 0
        self.closed = False

    def put(self, message: LiveMessage) -> None:
        queue = self._queue
        if queue.full():
            queue.get_nowait()  # drop the oldest: the newest running cost matters most
            self.dropped += 1
            self._hub.dropped += 1
        queue.put_nowait(message)

    async def get(self) -> LiveMessage:
        return await self._queue.get()

    def get_nowait(self) -> LiveMessage | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveMessage:
        return await self.get()


class LiveHub:
    """Subscribers by session, in this process. ``on_first`` / ``on_last`` are told when a
    session gains its first or loses its last subscriber (the Redis hub follows them)."""

    def __init__(self, *, queue_max: int = QUEUE_MAX, subscribers_max: int = SUBSCRIBERS_MAX,
                 per_session_max: int = PER_SESSION_MAX,
                 on_first: Callable[[str], None] | None = None,
                 on_last: Callable[[str], None] | None = None) -> None:
        self.queue_max = queue_max
        self.subscribers_max = subscribers_max
        self.per_session_max = per_session_max
        self.on_first = on_first
        self.on_last = on_last
        self._sessions: dict[str, list[Subscription]] = {}
        self._count = 0
        self.dropped = 0  # messages dropped for slow subscribers, all sessions

    # -- life cycle (nothing to do in process; the Redis hub has connections) ------------------
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- subscribing ---------------------------------------------------------------------------
    def open(self, session_id: str) -> Subscription:
        subs = self._sessions.get(session_id)
        if self._count >= self.subscribers_max or \
                (subs is not None and len(subs) >= self.per_session_max):
            raise TooManySubscribersError("too many live subscribers")
        sub = Subscription(self, session_id, self.queue_max)
        if subs is None:
            self._sessions[session_id] = [sub]
            if self.on_first is not None:
                self.on_first(session_id)
        else:
            subs.append(sub)
        self._count += 1
        return sub

    async def subscribe(self, session_id: str) -> Subscription:
        return self.open(session_id)

    def _remove(self, sub: Subscription) -> None:
        subs = self._sessions.get(sub.session_id)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        self._count -= 1
        if not subs:
            del self._sessions[sub.session_id]
            if self.on_last is not None:
                self.on_last(sub.session_id)

    def subscribers(self, session_id: str | None = None) -> int:
        if session_id is None:
            return self._count
        return len(self._sessions.get(session_id, ()))

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        if not isinstance(event, SessionEvent):
            return
        subs = self._sessions.get(event.session_id)
        if subs:
            message = LiveMessage.of(event)
            for sub in subs:
                sub.put(message)

    def deliver(self, session_id: str, message: LiveMessage) -> None:
        """Hand an already encoded message to the session's subscribers here."""
        subs = self._sessions.get(session_id)
        if subs:
            for sub in subs:
                sub.put(message)
