"""Rate limits for guessable secrets (log-in passwords, promo codes): failed attempts in a
sliding window, per key and per client address. Exceeding answers 429.

Where the failures are counted:

* **In process** (default): the domain's ``SlidingWindowLimiter`` (bounded memory) behind a lock
  for the server's threads. With several worker processes (``evbilling serve --workers N``) or
  nodes, each counts its own, so a guesser spread over them gets up to N times the attempts.
* **Redis** (``EVBILLING_REDIS_URL``, e.g. ``redis://127.0.0.1:6379/0``; ``configure`` at app
  start): one count shared by every process and node. Each key is a Redis list of failure
  times (epoch ms, newest first, at most ``max_failures``, expiring with the window), named by a
  SHA-256 of the limiter and key, so e-mail addresses and client addresses are not stored in
  Redis. The decision is the domain's (``sliding_window_decision``). A check is one round trip
  (both keys in one pipeline), a failure two. Every call has a 200 ms timeout; when Redis does
  not answer, that call falls back to the in-process count (logged) rather than failing the
  request or letting every attempt through.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import redis
from redis.exceptions import RedisError

from evbilling.domain.promotions import (
    LimitDecision,
    SlidingWindowLimiter,
    TooManyAttemptsError,
    sliding_window_decision,
)
from evbilling.entrypoints.api.errors import ApiError

logger = logging.getLogger("evbilling.api.limits")

#: Timeout of every Redis call (connect and read), seconds.
REDIS_TIMEOUT_S = 0.2
REDIS_PREFIX = "evbilling:limit:"


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000  # shared by nodes: Redis holds the times


class RedisWindows:
    """The failure times of each key in Redis, shared by every process (module doc)."""

    def __init__(self, client: Any, *, prefix: str, max_failures: int, window_ms: int) -> None:
        self._client = client
        self._prefix = prefix
        self.max_failures = max_failures
        self.window_ms = window_ms

    def _name(self, key: str) -> str:
        return self._prefix + hashlib.sha256(key.encode()).hexdigest()

    def decisions(self, keys: tuple[str, ...]) -> list[LimitDecision]:
        now = _epoch_ms()
        with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(self._name(key), 0, -1)
            stored = pipe.execute()
        return [sliding_window_decision([int(t) for t in times], now,
                                        max_failures=self.max_failures,
                                        window_ms=self.window_ms) for times in stored]

    def record(self, keys: tuple[str, ...]) -> None:
        """Count a failure for each key not locked now (a locked key's refusals are not
        counted, so hammering it does not extend its lock; as the domain's limiter)."""
        open_keys = [k for k, d in zip(keys, self.decisions(keys), strict=True) if d.allowed]
        now = _epoch_ms()
        with self._client.pipeline(transaction=True) as pipe:
            for key in open_keys:
                name = self._name(key)
                pipe.lpush(name, now)
                pipe.ltrim(name, 0, self.max_failures - 1)
                pipe.pexpire(name, self.window_ms)
            pipe.execute()

    def clear(self) -> None:
        for name in self._client.scan_iter(match=self._prefix + "*", count=1000):
            self._client.delete(name)


class FailureLimiter:
    def __init__(self, name: str, max_failures: int, window_s: float) -> None:
        self.name = name
        self.max_failures = max_failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._limiter = self._new()
        self._redis: RedisWindows | None = None
        self._redis_failed_at = 0.0

    def _new(self) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(_monotonic_ms, max_failures=self.max_failures,
                                    window_ms=int(self.window_s * 1000))

    def use_redis(self, url: str | None, *, prefix: str = REDIS_PREFIX) -> None:
        """Count in Redis at ``url`` from now on (``None``: in process again)."""
        if url is None:
            self._redis = None
            return
        client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
        self._redis = RedisWindows(client, prefix=f"{prefix}{self.name}:",
                                   max_failures=self.max_failures,
                                   window_ms=int(self.window_s * 1000))

    @staticmethod
    def _keys(key: str, source: str | None) -> tuple[str, str]:
        return f"k:{key}", f"ip:{source}"

    def _refuse(self, retry_after_ms: int) -> ApiError:
        retry = max(1, -(-retry_after_ms // 1000))
        return ApiError("rate_limited", f"too many failed {self.name} attempts; retry in "
                        f"{retry} s", headers={"Retry-After": str(retry)})

    def _redis_down(self, exc: RedisError) -> None:
        if time.monotonic() - self._redis_failed_at > 60:  # log at most once a minute
            logger.warning("rate limit %r: Redis unavailable (%s); counting in process",
                           self.name, exc)
        self._redis_failed_at = time.monotonic()

    def check(self, key: str, source: str | None) -> None:
        keys = self._keys(key, source)
        if self._redis is not None:
            try:
                decisions = self._redis.decisions(keys)
            except RedisError as exc:
                self._redis_down(exc)
            else:
                locked = [d.retry_after_ms for d in decisions if not d.allowed]
                if locked:
                    raise self._refuse(max(locked))
                return
        try:
            with self._lock:
                for k in keys:
                    self._limiter.ensure_allowed(k)
        except TooManyAttemptsError as exc:
            raise self._refuse(exc.retry_after_ms) from exc

    def failed(self, key: str, source: str | None) -> None:
        keys = self._keys(key, source)
        if self._redis is not None:
            try:
                self._redis.record(keys)
                return
            except RedisError as exc:
                self._redis_down(exc)
        with self._lock:
            for k in keys:
                self._limiter.record_failure(k)

    def reset(self) -> None:
        with self._lock:
            self._limiter = self._new()
        if self._redis is not None:
            self._redis.clear()


login_limiter = FailureLimiter("log-in", max_failures=10, window_s=15 * 60)
promo_limiter = FailureLimiter("promotion code", max_failures=5, window_s=15 * 60)


def configure(redis_url: str | None) -> None:
    """Count the app's limits in Redis at ``redis_url`` (``EVBILLING_REDIS_URL``), or in
    process when None."""
    for limiter in (login_limiter, promo_limiter):
        limiter.use_redis(redis_url)
