"""Short garbage-collector pauses for a server holding many long-lived objects.

CPython's cyclic collector walks every tracked object on a full (generation 2) pass. A gateway
with thousands of live sessions and connections tracks hundreds of thousands of objects: here a
full pass took ~70 ms for the started app alone (~180 000 objects: modules, schemas, the
compiled validators) and ~250 ms with 5 000 charging sessions on top, and such passes come every
few seconds under load: every message arriving meanwhile waits, which is what a p99 sees.

``HeapFreezer`` moves what has survived so far into the permanent generation (``gc.freeze``,
O(1)), which full passes skip: once shortly after the start (the app's own objects), then every
``every_s`` (``evbilling serve``: 10 s; sessions and connections live for hours, so what a pass
walks is only what was made since). Measured with 5 000 chargers at 1 000 MeterValues/s
(``bench/ocpp_load.py``): p99 round trip 764 ms without it, 49–63 ms with it. Collections that
still take ``slow_pause_ms`` or more are logged (a warning each).

It also raises the young generation's threshold (``YOUNG_THRESHOLD``: a collection every 50 000
net allocations instead of 700). A young pass walks only what is alive at that moment (the
in-flight messages; what died meanwhile was freed by reference counting), so its cost barely
depends on the threshold, but with 700 a message's short-lived objects (its frame, its event,
its queued write) were often alive at a pass and were promoted, filling the older generations
that the long passes walk. Measured with 5 000 chargers: generation-1 passes of 20-59 ms and
generation-2 passes of 24-180 ms with the default; none over 20 ms but a few young passes of
20-50 ms with 50 000 (p99 round trip at 1 000 msg/s 4 ms, live cost 5 ms). The thresholds are
restored when stopped.

Frozen objects are still freed by reference counting; only reference *cycles* among
them wait for the hourly ``full_every_s`` pass (``gc.unfreeze`` + a full collection + freeze
again), one pause an hour instead of many a minute. ``evbilling serve`` runs it; tests and
embedded uses of ``create_app`` do not, unless asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

logger = logging.getLogger("evbilling.heap")

#: Net allocations between young collections while a ``HeapFreezer`` runs (CPython: 700).
YOUNG_THRESHOLD = 50_000
#: Young (resp. middle) collections between middle (resp. full) ones (CPython: 10, 10).
OLDER_THRESHOLDS = (20, 20)


class HeapFreezer:
    def __init__(self, *, first_after_s: float = 10.0, every_s: float = 10.0,
                 full_every_s: float = 3600.0, collector: Any = gc,
                 slow_pause_ms: float | None = 20.0) -> None:
        self.first_after_s = first_after_s
        self.every_s = every_s
        self.full_every_s = full_every_s
        self.gc = collector
        self.freezes = 0
        self.full_passes = 0
        self._task: asyncio.Task[None] | None = None
        #: log collections that take longer than this (None: do not watch)
        self.slow_pause_ms = slow_pause_ms
        self.slow_pauses = 0
        self._started_at = 0.0
        self._thresholds: tuple[int, int, int] | None = None  # the collector's, while we run

    async def start(self) -> None:
        if self.slow_pause_ms is not None and self._watch not in self.gc.callbacks:
            self.gc.callbacks.append(self._watch)
        if self._task is None:
            self._thresholds = self.gc.get_threshold()
            self.gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heap-freezer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.gc.unfreeze()  # what is garbage by now can be collected again
        if self._thresholds is not None:
            self.gc.set_threshold(*self._thresholds)
            self._thresholds = None
        if self._watch in self.gc.callbacks:
            self.gc.callbacks.remove(self._watch)

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        self.freeze()
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.every_s)
            if time.monotonic() - last_full >= self.full_every_s:
                self.full_pass()
                last_full = time.monotonic()
            self.freeze()

    def _watch(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._started_at) * 1000
        if self.slow_pause_ms is not None and pause_ms >= self.slow_pause_ms:
            self.slow_pauses += 1
            logger.warning("garbage collection of generation %d took %.0f ms",
                           info.get("generation", -1), pause_ms)

    def freeze(self) -> None:
        self.gc.freeze()
        self.freezes += 1

    def full_pass(self) -> None:
        """Unfreeze, collect everything (cycles among formerly frozen objects included)."""
        started = time.perf_counter()
        self.gc.unfreeze()
        found = self.gc.collect()
        self.full_passes += 1
        logger.info("full garbage collection: %d unreachable objects in %.0f ms", found,
                    (time.perf_counter() - started) * 1000)
