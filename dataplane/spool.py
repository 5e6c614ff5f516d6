"""The data plane's audit spool: records are durable on local disk first, then shipped to the control plane.

The proxy writes an attempt record and waits until it is on disk (fdatasync) before it injects a credential;
outcome records and uncredentialed egress records are queued without waiting, written at once and synced with
the next attempt (or within a second). One writer thread does group commit: it takes everything queued, writes
it in one go and syncs once, so a lone request pays one sync and a burst shares one (no fixed tick that would
add latency to sequential traffic).

A shipper thread reads the spool from a cursor and posts batches to the control plane; the control plane's
ingest is idempotent by record id, so a batch re-sent after a crash or a lost answer is harmless. While the
control plane is down records accumulate in segment files and are shipped, in order, once it answers again.
Shipped segments are deleted. Imports no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataplane.control import BadRequestError

log = logging.getLogger("aileron.audit")

SEGMENT_BYTES = 4 * 1024 * 1024
BATCH = 500
LINGER_SECONDS = 0.2
SYNC_EVERY = 1.0
_STOP = object()


class SpoolError(RuntimeError):
    """A record could not be made durable: the caller must not go ahead with the request."""


class AuditSpool:
    def __init__(
        self,
        folder: Path,
        ship: Callable[[list[dict[str, Any]]], dict[str, Any]],
        *,
        ship_lines: Callable[[list[bytes]], dict[str, Any]] | None = None,
        segment_bytes: int = SEGMENT_BYTES,
        batch: int = BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self.folder = folder
        self.ship = ship
        # Shipping the spool's lines as they are saves decoding and re-encoding every record.
        self.ship_lines = ship_lines or (lambda lines: ship(self._parsed(lines, self._segment)))
        self.segment_bytes = segment_bytes
        self.batch = batch
        self.linger = linger
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._written = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fd = -1
        self._synced_at = 0.0
        self._segment = 0
        self.shipped = 0
        self.rejected = 0
        self.ship_failures = 0
        self.last_ship_error: str | None = None

    # --- writer -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments = self._segments()
        self._segment = segments[-1] if segments else 1
        self._open_segment()
        for target, name in ((self._write_loop, "audit-writer"), (self._ship_loop, "audit-shipper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, ship_timeout: float = 3.0) -> None:
        """Write what is queued, try to ship it for a moment, and stop; what is not shipped stays on disk."""
        self._queue.put(_STOP)
        self._threads[0].join()
        deadline = time.monotonic() + ship_timeout
        while self.pending_bytes() and time.monotonic() < deadline and self.ship_failures == 0:
            time.sleep(0.05)
        self._stopping.set()
        with self._written:
            self._written.notify_all()
        self._threads[1].join(timeout=ship_timeout)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:012d}.jsonl"

    def _open_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._path(self._segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def record_durable(self, record: dict[str, Any]) -> None:
        """Return once the record is on disk; raise SpoolError if it cannot be."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((_line(record), loop, done))
        await done

    def record(self, record: dict[str, Any]) -> None:
        """Queue a record for the next group commit without waiting for it."""
        self._queue.put((_line(record), None, None))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            items = [item]
            with contextlib.suppress(queue.Empty):
                while len(items) < 4096:
                    items.append(self._queue.get_nowait())
            stop = any(i is _STOP for i in items)
            entries = [i for i in items if i is not _STOP]
            if entries:
                error: Exception | None = None
                # Sync when someone waits for durability (an attempt record), when stopping, and at least every
                # SYNC_EVERY for the rest (outcome and egress records: on disk, at worst, a moment later).
                durable = stop or any(done is not None for _, _, done in entries)
                try:
                    os.write(self._fd, b"".join(line for line, _, _ in entries))
                    if durable or time.monotonic() - self._synced_at >= SYNC_EVERY:
                        os.fdatasync(self._fd)
                        self._synced_at = time.monotonic()
                except OSError as exc:
                    error = SpoolError(f"cannot write the audit spool: {exc.strerror}")
                    log.error("audit spool write failed: %s", exc)
                for _, loop, done in entries:
                    if done is not None:
                        loop.call_soon_threadsafe(_settle, done, error)
                with self._written:
                    self._written.notify_all()
                if error is None:
                    self._maybe_rotate()
            if stop:
                return

    def _maybe_rotate(self) -> None:
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return
        if size >= self.segment_bytes:
            os.fdatasync(self._fd)
            self._segment += 1
            self._open_segment()

    # --- shipper ------------------------------------------------------------------------------------------

    def _cursor_path(self) -> Path:
        return self.folder / "cursor.json"

    def _cursor(self) -> tuple[int, int]:
        try:
            data = json.loads(self._cursor_path().read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            segments = self._segments()
            return (segments[0] if segments else 1), 0

    def _save_cursor(self, segment: int, offset: int) -> None:
        tmp = self.folder / ".cursor.tmp"
        tmp.write_text(json.dumps({"segment": segment, "offset": offset}))
        os.replace(tmp, self._cursor_path())

    def pending_bytes(self) -> int:
        segment, offset = self._cursor()
        total = 0
        for s in self._segments():
            if s >= segment:
                with contextlib.suppress(OSError):
                    total += self._path(s).stat().st_size - (offset if s == segment else 0)
        return total

    def _read_batch(self, segment: int, offset: int) -> tuple[list[bytes], int]:
        try:
            with open(self._path(segment), "rb") as handle:
                handle.seek(offset)
                data = handle.read(self.batch * 4096)
        except FileNotFoundError:
            return [], offset
        lines: list[bytes] = []
        consumed = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n") or len(lines) >= self.batch:
                break
            lines.append(line)
            consumed += len(line)
        return lines, offset + consumed

    @staticmethod
    def _parsed(lines: list[bytes], segment: int) -> list[dict[str, Any]]:
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                log.error("audit spool: dropping an unreadable line in segment %s", segment)
        return records

    def _ship_loop(self) -> None:
        backoff = 0.25
        segment, offset = self._cursor()  # on disk only for the next process; kept in memory here
        while not self._stopping.is_set():
            lines, new_offset = self._read_batch(segment, offset)
            if not lines:
                if segment < self._segment:
                    with contextlib.suppress(FileNotFoundError):
                        self._path(segment).unlink()
                    segment, offset = segment + 1, 0
                    self._save_cursor(segment, offset)
                    continue
                with self._written:
                    self._written.wait(timeout=1.0)
                continue
            stripped = [line.rstrip(b"\n") for line in lines]
            try:
                try:
                    answer: dict[str, Any] = self.ship_lines(stripped)
                except BadRequestError:
                    # A damaged line spoils the whole array: send the lines that still parse, drop the others.
                    parsed = self._parsed(stripped, segment)
                    answer = self.ship(parsed) if parsed else {}
            except Exception as exc:  # noqa: BLE001 - any failure to ship means: keep it, retry later
                self.ship_failures += 1
                self.last_ship_error = str(exc) or exc.__class__.__name__
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.25
            self.ship_failures = 0
            self.last_ship_error = None
            raw = answer.get("rejected")
            rejected: list[Any] = raw if isinstance(raw, list) else []
            if rejected:
                self.rejected += len(rejected)
                log.error("audit: the control plane rejected %d record(s): %s", len(rejected), rejected[:3])
            self.shipped += len(lines) - len(rejected)
            offset = new_offset
            self._save_cursor(segment, offset)
            if len(lines) < self.batch:
                # Caught up: let records gather for a moment so a busy proxy ships a few large batches, not many
                # tiny ones (the records are already durable; only their arrival upstream waits).
                self._stopping.wait(self.linger)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
