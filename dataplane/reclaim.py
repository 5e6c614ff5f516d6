"""Gives the memory of finished request bodies back to the system: a cyclic collection, then malloc_trim.

Why a collection is needed: a finished flow is not freed when its last request ends. mitmproxy's HTTP stream
keeps its state as a bound method of itself (`self.client_state = self.state_done`), so the stream, its flow
and the flow's bodies form a reference cycle that only Python's cyclic collector frees. Bodies are few large
buffers, not many objects, so they never trigger a collection: measured through the real proxy, eight 9 MiB
bodies per round kept about 27 MiB each until a full collection happened to run (102 -> 304 -> 522 MiB over two
rounds, and held). Then glibc keeps the smaller freed blocks in its arenas: `malloc_trim` returns those pages.

So once enough body bytes have been released, a reclaim runs shortly afterwards (when the flows have ended),
at most once per `interval` seconds, on the event loop. Imports no Django.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from typing import Any

log = logging.getLogger("aileron.reclaim")

MIB = 1024 * 1024
M_MMAP_THRESHOLD = -3

_libc: Any = None


def _c_library() -> Any:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
        if _libc and not (hasattr(_libc, "malloc_trim") and hasattr(_libc, "mallopt")):
            _libc = False  # not glibc
    return _libc


def allocate_large_blocks_apart(threshold: int = MIB) -> None:
    """Have glibc map every block of `threshold` bytes or more on its own, so freeing one returns it at once.

    (glibc raises this threshold after each large free, up to 32 MiB: bodies then land in the heap and stay.)
    """
    libc = _c_library()
    if libc:
        libc.mallopt(M_MMAP_THRESHOLD, threshold)


def give_back_memory() -> None:
    """Return the heap's free pages, in every arena, to the system (glibc's malloc_trim); nothing elsewhere."""
    libc = _c_library()
    if libc:
        libc.malloc_trim(0)


class Reclaimer:
    """Collects garbage and trims the heap after `threshold` bytes were freed: `delay` s later, at most once per
    `interval` s (a full collection of the data plane takes milliseconds; it is not run per request)."""

    def __init__(self, *, threshold: int = 16 * MIB, delay: float = 0.5, interval: float = 1.0) -> None:
        self.threshold = threshold
        self.delay = delay
        self.interval = interval
        self.freed = 0
        self.runs = 0
        self._scheduled: asyncio.TimerHandle | None = None
        self._last = -interval
        self._last_freed = -delay

    def note_freed(self, size: int) -> None:
        """`size` bytes that will be garbage once their flow has ended."""
        self.freed += size
        self._last_freed = time.monotonic()
        if self.freed < self.threshold or self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool, a test): now
            self.reclaim()
            return
        wait = max(self.delay, self._last + self.interval - time.monotonic())
        self._scheduled = loop.call_later(wait, self.reclaim)

    def reclaim(self) -> None:
        self._scheduled = None
        self._last = time.monotonic()
        # Bytes freed within `delay` may belong to flows still ending: they are reclaimed by the next run.
        recent = self._last - self._last_freed < self.delay
        started = time.perf_counter()
        found = gc.collect()
        give_back_memory()
        self.runs += 1
        log.debug("reclaimed: %d unreachable objects, %.1f ms", found, (time.perf_counter() - started) * 1000)
        if not recent:
            self.freed = 0
            return
        try:
            self._scheduled = asyncio.get_running_loop().call_later(self.interval, self.reclaim)
        except RuntimeError:
            self.freed = 0
