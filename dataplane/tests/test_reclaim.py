"""The reclaimer collects cyclic garbage once enough body bytes were freed, after their flows have ended."""

from __future__ import annotations

import asyncio
import gc
import weakref

from dataplane.limits import BodyBudget
from dataplane.reclaim import Reclaimer


class _Flow:
    def __init__(self) -> None:
        self.body = bytes(1024)
        self.me = self  # a cycle, as mitmproxy's streams make: only a collection frees it


def test_released_bodies_have_their_cyclic_flows_collected_shortly_after() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        gc.disable()  # only the reclaimer may collect here
        try:
            reclaimer = Reclaimer(threshold=100, delay=0.05, interval=0.05)
            budget = BodyBudget(1000, reclaimer=reclaimer)
            flow = _Flow()
            gone = weakref.ref(flow)
            assert budget.reserve("a", 60) and budget.reserve("b", 60)
            budget.release("a")
            budget.release("b")
            del flow
            alive_at_once = gone() is not None
            await asyncio.sleep(0.3)
            return alive_at_once, gone() is None, reclaimer.runs
        finally:
            gc.enable()

    alive_at_once, collected, runs = asyncio.run(scenario())
    assert alive_at_once and collected
    assert 1 <= runs <= 3


def test_below_the_threshold_nothing_runs() -> None:
    reclaimer = Reclaimer(threshold=100)
    reclaimer.note_freed(99)
    assert reclaimer.runs == 0
    reclaimer.note_freed(1)  # no event loop: at once
    assert reclaimer.runs == 1
