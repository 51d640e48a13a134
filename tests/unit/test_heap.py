"""HeapFreezer: freezes after the start and periodically, a full pass (unfreeze, collect) at its
interval, unfreezes when stopped; and gc.freeze really takes objects out of full passes."""

from __future__ import annotations

import asyncio
import gc

from evbilling.entrypoints.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, HeapFreezer


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.callbacks: list[object] = []
        self.threshold = (700, 10, 10)

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def set_threshold(self, *threshold: int) -> None:
        self.threshold = threshold  # type: ignore[assignment]

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self) -> int:
        self.calls.append("collect")
        return 0


def test_freezes_after_the_start_then_periodically_with_a_full_pass_at_its_interval() -> None:
    fake = FakeCollector()

    async def main() -> None:
        freezer = HeapFreezer(first_after_s=0.01, every_s=0.02, full_every_s=0.05,
                              collector=fake)
        await freezer.start()
        await asyncio.sleep(0.2)
        await freezer.stop()

    asyncio.run(main())
    assert fake.calls[0] == "freeze" and fake.calls[-1] == "unfreeze"
    body = fake.calls[:-1]
    assert body.count("freeze") >= 4
    assert "collect" in body  # a full pass happened ...
    first_collect = body.index("collect")
    assert body[first_collect - 1] == "unfreeze" and body[first_collect + 1] == "freeze"
    assert body.count("collect") < body.count("freeze")  # ... but not at every freeze


def test_frozen_objects_are_not_walked_by_a_full_pass() -> None:
    keep = [[i] for i in range(50_000)]  # tracked containers
    try:
        before = len(gc.get_objects())
        gc.freeze()
        assert gc.get_freeze_count() >= len(keep)
        assert len(gc.get_objects()) < before - len(keep) // 2
    finally:
        gc.unfreeze()
    assert len(gc.get_objects()) >= len(keep)


def test_the_young_threshold_is_raised_while_it_runs_and_restored_after() -> None:
    fake = FakeCollector()
    seen: list[tuple[int, ...]] = []

    async def main() -> None:
        freezer = HeapFreezer(first_after_s=10, collector=fake)
        await freezer.start()
        seen.append(fake.threshold)
        await freezer.stop()

    asyncio.run(main())
    assert seen == [(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)] and YOUNG_THRESHOLD > 700
    assert fake.threshold == (700, 10, 10)
