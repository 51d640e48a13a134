"""Rate limits for guessable secrets (log-in passwords, promo codes): a sliding window of failed
attempts per key and per client address; in-process (one node). Exceeding answers 429."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from evbilling.entrypoints.api.errors import ApiError


class FailureLimiter:
    def __init__(self, name: str, max_failures: int, window_s: float) -> None:
        self.name = name
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, at: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= at - self.window_s:
            q.popleft()
        return q

    def check(self, key: str, source: str | None) -> None:
        at = time.monotonic()
        with self._lock:
            for k in (f"k:{key}", f"ip:{source}"):
                q = self._recent(k, at)
                if len(q) >= self.max_failures:
                    retry = max(1, int(q[0] + self.window_s - at))
                    raise ApiError("rate_limited",
                                   f"too many failed {self.name} attempts; retry in {retry} s",
                                   headers={"Retry-After": str(retry)})

    def failed(self, key: str, source: str | None) -> None:
        at = time.monotonic()
        with self._lock:
            for k in (f"k:{key}", f"ip:{source}"):
                self._recent(k, at).append(at)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


login_limiter = FailureLimiter("log-in", max_failures=10, window_s=15 * 60)
promo_limiter = FailureLimiter("promotion code", max_failures=5, window_s=15 * 60)
