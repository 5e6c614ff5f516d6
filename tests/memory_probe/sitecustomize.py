"""Test-only: lets a test ask a running data plane where its memory is (on PYTHONPATH of its service only).

With AILERON_TEST_MEMORY_REPORT=FILE, SIGUSR1 makes the process append to FILE: its RSS, glibc's heap
statistics (mallinfo2), every bytes/bytearray of 1 MiB or more still alive with the types that hold it, and,
when AILERON_TEST_TRACEMALLOC is set (tracemalloc started at start-up), the largest live allocations by line.
SIGUSR2 does the same after malloc_trim(0), to tell memory the heap keeps free from memory still in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import sys
import tracemalloc
from typing import Any

_REPORT = os.environ.get("AILERON_TEST_MEMORY_REPORT")
_BIG = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c"))


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _big_buffers() -> list[str]:
    found: dict[int, tuple[Any, list[str]]] = {}
    for holder in gc.get_objects():
        for ref in gc.get_referents(holder):
            if isinstance(ref, (bytes, bytearray)) and len(ref) >= _BIG:
                entry = found.setdefault(id(ref), (ref, []))
                name = type(holder).__qualname__
                if isinstance(holder, dict):
                    owners = [type(o).__qualname__ for o in gc.get_referrers(holder) if hasattr(o, "__dict__")]
                    name = f"dict of {owners[:3]}"
                entry[1].append(name)
    return [f"  {type(b).__name__} {len(b)} held by {owners[:5]}" for b, owners in found.values()]


def _chain(obj: Any, depth: int, seen: set[int]) -> list[str]:
    """Who holds `obj`, `depth` levels up (frames and the probe's own locals left out)."""
    if depth == 0:
        return []
    out = []
    for holder in gc.get_referrers(obj):
        if id(holder) in seen or type(holder).__name__ in ("frame", "list") and depth < 6:
            continue
        seen.add(id(holder))
        label = type(holder).__qualname__
        if isinstance(holder, dict):
            label += f" keys={list(holder)[:6]}"
        elif type(holder).__name__ == "cell":
            label = "cell"
        elif callable(holder) and hasattr(holder, "__qualname__"):
            label += f" {holder.__qualname__}"
        out.append(f"{'  ' * (7 - depth)}<- {label}")
        out += _chain(holder, depth - 1, seen)
    return out[:60]


def _report(trim: bool) -> None:
    lines = [f"--- pid {os.getpid()} rss_kib {_rss_kib()} (before gc.collect)"]
    big: list[Any] = []
    for holder in gc.get_objects():
        for ref in gc.get_referents(holder):
            if isinstance(ref, (bytes, bytearray)) and len(ref) >= _BIG and all(ref is not b for b in big):
                big.append(ref)
    lines.append(f"big buffers alive before collecting: {len(big)}")
    for buffer in big[:3]:
        lines.append(f"{type(buffer).__name__} {len(buffer)}:")
        lines += _chain(buffer, 6, {id(big)})
    del big
    lines.append(f"gc.collect() found {gc.collect()} unreachable objects; rss_kib {_rss_kib()}")
    libc = _libc()
    if trim:
        libc.malloc_trim(0)
        lines.append(f"after malloc_trim: rss_kib {_rss_kib()}")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    lines.append(
        "mallinfo2 MiB: "
        + " ".join(
            f"{n}={getattr(info, n) / _BIG:.1f}" for n in ("arena", "hblkhd", "uordblks", "fordblks", "keepcost")
        )
    )
    lines.append(f"big buffers alive: {len(_big_buffers())}")
    lines += _big_buffers()
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        lines.append(f"tracemalloc current {current / _BIG:.1f} MiB peak {peak / _BIG:.1f} MiB")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
            lines.append(f"  {stat}")
    with open(_REPORT or "/dev/stderr", "a") as out:
        out.write("\n".join(lines) + "\n")


def _safely(trim: bool) -> None:
    try:
        _report(trim)
    except Exception as exc:  # never take the process down
        with open(_REPORT or "/dev/stderr", "a") as out:
            out.write(f"report failed: {exc!r}\n")


if _REPORT and "dataplane.server" in " ".join(sys.orig_argv):
    if os.environ.get("AILERON_TEST_TRACEMALLOC"):
        tracemalloc.start(5)
    signal.signal(signal.SIGUSR1, lambda *_: _safely(False))
    signal.signal(signal.SIGUSR2, lambda *_: _safely(True))
