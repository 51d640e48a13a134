"""Rate limits for guessable secrets (log-in passwords, promo codes): failed attempts in a
sliding window, per key and per client address; in-process (one node). Exceeding answers 429.

The counting is the domain's ``SlidingWindowLimiter`` (bounded memory); this adapter adds the two
keys per attempt, a lock for the server's threads, and the HTTP answer.
"""

from __future__ import annotations

import threading
import time

from evbilling.domain.promotions import SlidingWindowLimiter, TooManyAttemptsError
from evbilling.entrypoints.api.errors import ApiError


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class FailureLimiter:
    def __init__(self, name: str, max_failures: int, window_s: float) -> None:
        self.name = name
        self.max_failures = max_failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._limiter = self._new()

    def _new(self) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(_monotonic_ms, max_failures=self.max_failures,
                                    window_ms=int(self.window_s * 1000))

    @staticmethod
    def _keys(key: str, source: str | None) -> tuple[str, str]:
        return f"k:{key}", f"ip:{source}"

    def check(self, key: str, source: str | None) -> None:
        try:
            with self._lock:
                for k in self._keys(key, source):
                    self._limiter.ensure_allowed(k)
        except TooManyAttemptsError as exc:
            retry = max(1, -(-exc.retry_after_ms // 1000))
            raise ApiError("rate_limited",
                           f"too many failed {self.name} attempts; retry in {retry} s",
                           headers={"Retry-After": str(retry)}) from exc

    def failed(self, key: str, source: str | None) -> None:
        with self._lock:
            for k in self._keys(key, source):
                self._limiter.record_failure(k)

    def reset(self) -> None:
        with self._lock:
            self._limiter = self._new()


login_limiter = FailureLimiter("log-in", max_failures=10, window_s=15 * 60)
promo_limiter = FailureLimiter("promotion code", max_failures=5, window_s=15 * 60)
