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

Neither thread ever stops on an error (a full disk, a cursor that cannot be saved, a control plane that answers
nonsense): each failure is counted, kept as the last error and retried with backoff, and `health()` reports it
for the data plane's health endpoint. A write that fails is cut back to the last whole line, so a torn record
never glues itself to the next one; records nobody waited for are kept in memory (bounded) and written with the
next commit that succeeds.

Each start of a spool is a new *run* (an id kept in the spool folder). Attempt records carry it, and the first
record of a run names the previous one: the control plane then marks that run's attempts that never got an
outcome (the process was killed mid-request) as `unknown`. The marker follows every record of the previous
run in the spool, so it is shipped after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dataplane.control import BadRequestError

log = logging.getLogger("aileron.audit")

SEGMENT_BYTES = 4 * 1024 * 1024
BATCH = 500
LINGER_SECONDS = 0.2
SYNC_EVERY = 1.0
MAX_BACKOFF_SECONDS = 5.0
HELD_RECORDS = 10_000  # records nobody waited for, kept in memory while the disk refuses them
_STOP = object()
# What a record keeps when it could not be scrubbed: identifiers and outcomes the proxy itself chose, no text.
_SCRUB_SAFE = frozenset(
    {
        "id",
        "phase",
        "session_id",
        "at",
        "kind",
        "connector",
        "decision",
        "problem_type",
        "severity",
        "credential_id",
        "upstream_status",
        "latency_ms",
        "completed_at",
        "run",
    }
)


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
        # Applied to every record before it is written: the data plane redacts credentials here, in one place.
        self.scrub: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self._threads: list[threading.Thread] = []
        self._fd = -1
        self._size = 0  # the open segment's length up to its last whole line
        self._torn = False  # a failed write left a partial line that could not be cut off
        self._reopen = False
        self._synced_at = 0.0
        self._segment = 0
        self._held: list[bytes] = []  # lines of records nobody waited for whose write failed
        self.run_id = str(uuid.uuid4())
        self.previous_run: str | None = None
        self.written = 0
        self.dropped = 0
        self.write_error: str | None = None
        self.write_failing_since: float | None = None
        self.shipped = 0
        self.rejected = 0
        self.ship_failures = 0
        self.last_ship_error: str | None = None
        self.last_ship_at: float | None = None  # wall clock of the last batch the control plane took
        self.cursor_error: str | None = None
        self.position: tuple[int, int] | None = None  # the shipper's cursor (segment, offset) while it runs

    # --- writer -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments = self._segments()
        self._segment = segments[-1] if segments else 1
        self._open_segment()
        self._begin_run()
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

    def _open_segment(self, segment: int | None = None) -> None:
        """Append to `segment` (by default the current one again); on failure the open one stays in use."""
        segment = self._segment if segment is None else segment
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._segment, self._size, self._torn = fd, segment, size, False

    def _begin_run(self) -> None:
        """Take a new run id and, if an earlier run left its id here, queue the marker that closes it."""
        path = self.folder / "run.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            self.previous_run = str(uuid.UUID(json.loads(path.read_text())["run"]))
        try:
            _replace_file(path, json.dumps({"run": self.run_id}).encode())
        except OSError as exc:
            # The disk refuses even this: the marker below still closes the previous run; only if this run is
            # killed too are its open attempts left without an outcome (the next run names the older id).
            log.error("audit spool: cannot save the run id: %s", exc.strerror)
            self.run_id = self.previous_run or self.run_id
            return
        if self.previous_run is not None:
            self.record(
                {
                    "id": str(uuid.uuid4()),
                    "phase": "restart",
                    "previous_run": self.previous_run,
                    "run": self.run_id,
                    "at": datetime.now(UTC).isoformat(),
                }
            )

    async def record_durable(self, record: dict[str, Any]) -> None:
        """Return once the record is on disk; raise SpoolError if it cannot be."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((_line(self._stamped(record)), loop, done))
        await done

    def record(self, record: dict[str, Any]) -> None:
        """Queue a record for the next group commit without waiting for it."""
        self._queue.put((_line(self._stamped(record)), None, None))

    def _stamped(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.scrub is not None:
            try:
                record = self.scrub(record)
            except Exception as exc:
                # Never write what could not be checked: keep what identifies the record, drop every text in it.
                log.error(
                    "audit record %s could not be checked for credentials: %s", record.get("id"), type(exc).__name__
                )
                record = {k: v for k, v in record.items() if k in _SCRUB_SAFE}
                record["error"] = "the record could not be checked for credentials; its details were dropped"
        if record.get("phase") == "attempt" and "run" not in record:
            record["run"] = self.run_id
        return record

    @property
    def failing(self) -> bool:
        """The last write failed: what must be recorded first cannot be, for now."""
        return self.write_error is not None

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            items = [item]
            with contextlib.suppress(queue.Empty):
                while len(items) < 4096:
                    items.append(self._queue.get_nowait())
            stop = any(i is _STOP for i in items)
            entries = [i for i in items if i is not _STOP]
            if entries or (stop and self._held):
                error = self._commit(entries, durable=stop)
                for _, loop, done in entries:
                    if done is not None:
                        loop.call_soon_threadsafe(_settle, done, error)
                with self._written:
                    self._written.notify_all()
            if stop:
                return

    def _commit(self, entries: list[Any], *, durable: bool) -> SpoolError | None:
        """Write the entries (after any held ones) in one go; the error to give their waiters, if any."""
        # Sync when someone waits for durability (an attempt record), when stopping, and at least every
        # SYNC_EVERY for the rest (outcome and refusal records: on disk, at worst, a moment later).
        durable = durable or any(done is not None for _, _, done in entries)
        held, self._held = self._held, []
        try:
            if self._reopen:
                self._open_segment()
                self._reopen = False
            self._append(b"".join(held) + b"".join(line for line, _, _ in entries))
            if durable or time.monotonic() - self._synced_at >= SYNC_EVERY:
                os.fdatasync(self._fd)
                self._synced_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - the writer outlives every failure; the waiters get it
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            if self.write_error is None:
                log.error("audit spool write failed: %s", reason)
                self.write_failing_since = time.time()
            self.write_error = reason
            self._reopen = isinstance(exc, OSError) and exc.errno in (errno.EBADF, errno.ESTALE, errno.EIO)
            self._hold(held + [line for line, _, done in entries if done is None])
            return SpoolError(f"cannot write the audit spool: {reason}")
        if self.write_error is not None:
            log.warning("audit spool writes again after: %s", self.write_error)
        self.write_error = None
        self.write_failing_since = None
        self.written += len(held) + len(entries)
        self._maybe_rotate()
        return None

    def _append(self, data: bytes) -> None:
        """Append whole lines, or nothing: a partial write (a full disk) is cut back off before raising."""
        if self._torn:
            data = b"\n" + data  # the partial line left by an earlier failure becomes a line of its own
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
                self._torn = False
            except OSError:
                self._torn = True
            raise
        self._size += len(data)
        self._torn = False

    def _hold(self, lines: list[bytes]) -> None:
        if len(lines) > HELD_RECORDS:
            self.dropped += len(lines) - HELD_RECORDS
            log.error("audit spool: %d record(s) dropped while the disk refuses writes", len(lines) - HELD_RECORDS)
            lines = lines[-HELD_RECORDS:]
        self._held = lines

    def _maybe_rotate(self) -> None:
        if self._size < self.segment_bytes:
            return
        try:
            os.fdatasync(self._fd)
            self._open_segment(self._segment + 1)
        except OSError as exc:
            # Keep appending to the current segment; rotation is tried again after the next write.
            log.warning("audit spool: cannot start a new segment: %s", exc.strerror)

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
        """Keep the cursor for the next process; failing that, go on (it re-ships, and ingest is idempotent)."""
        try:
            _replace_file(self._cursor_path(), json.dumps({"segment": segment, "offset": offset}).encode())
        except OSError as exc:
            if self.cursor_error is None:
                log.error("audit spool: cannot save the shipping cursor: %s", exc.strerror)
            self.cursor_error = exc.strerror or str(exc)
        else:
            self.cursor_error = None

    def pending_bytes(self) -> int:
        return self._pending()[0]

    def _pending(self, *, count_records: bool = False) -> tuple[int, int]:
        """Bytes (and, if asked, records) written but not yet shipped."""
        segment, offset = self.position or self._cursor()
        total = records = 0
        for s in self._segments():
            if s < segment:
                continue
            start = offset if s == segment else 0
            with contextlib.suppress(OSError):
                total += self._path(s).stat().st_size - start
                if count_records:
                    with open(self._path(s), "rb") as handle:
                        handle.seek(start)
                        while chunk := handle.read(1 << 20):
                            records += chunk.count(b"\n")
        return total, records

    def health(self) -> dict[str, Any]:
        """The spool's state for the health endpoint: is every record still reaching the control plane?"""
        writer_alive = bool(self._threads) and self._threads[0].is_alive()
        shipper_alive = len(self._threads) > 1 and self._threads[1].is_alive()
        queued_bytes, queued_records = self._pending(count_records=True)
        if not shipper_alive:
            shipper = "stopped"
        elif self.ship_failures:
            shipper = "retrying"
        else:
            shipper = "shipping" if queued_records else "idle"
        writer = "stopped" if not writer_alive else "failing" if self.write_error else "ok"
        healthy = writer == "ok" and shipper in ("idle", "shipping") and self.cursor_error is None
        return {
            "status": "ok" if healthy else "degraded",
            "writer": {
                "state": writer,
                "last_error": self.write_error,
                "failing_since": _iso(self.write_failing_since),
                "held_records": len(self._held),
                "dropped_records": self.dropped,
            },
            "shipper": {
                "state": shipper,
                "last_error": self.last_ship_error,
                "consecutive_failures": self.ship_failures,
                "last_success_at": _iso(self.last_ship_at),
                "cursor_error": self.cursor_error,
                "shipped": self.shipped,
                "rejected": self.rejected,
            },
            "queued_records": queued_records,
            "queued_bytes": queued_bytes,
            "run": self.run_id,
        }

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
                record = json.loads(line, parse_constant=str)  # a NaN written by an older version: as text
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                log.error("audit spool: dropping an unreadable line in segment %s", segment)
        return records

    def _ship_loop(self) -> None:
        backoff = 0.25
        self.position = self._cursor()  # on disk only for the next process; kept in memory here
        while not self._stopping.is_set():
            try:
                pause = self._ship_once()
            except Exception as exc:  # noqa: BLE001 - any failure to ship means: keep it, retry later
                self.ship_failures += 1
                reason = str(exc) or exc.__class__.__name__
                if self.last_ship_error != reason:
                    log.warning("audit: cannot ship the spool (will retry): %s", reason)
                self.last_ship_error = reason
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.25
            if pause:
                self._stopping.wait(pause)

    def _ship_once(self) -> float:
        """Ship the next batch (or move past a finished segment); how long to pause before the next one."""
        assert self.position is not None  # noqa: S101 - set by _ship_loop
        segment, offset = self.position
        lines, new_offset = self._read_batch(segment, offset)
        if not lines:
            if segment < self._segment:
                with contextlib.suppress(FileNotFoundError):
                    self._path(segment).unlink()
                self.position = (segment + 1, 0)
                self._save_cursor(*self.position)
                return 0.0
            with self._written:
                self._written.wait(timeout=1.0)
            return 0.0
        stripped = [line.rstrip(b"\n") for line in lines]
        try:
            answer: dict[str, Any] = self.ship_lines(stripped)
        except BadRequestError:
            # A damaged line spoils the whole array: send the lines that still parse, drop the others.
            parsed = self._parsed(stripped, segment)
            answer = self.ship(parsed) if parsed else {}
        self.ship_failures = 0
        self.last_ship_error = None
        self.last_ship_at = time.time()
        raw = answer.get("rejected") if isinstance(answer, dict) else None
        rejected: list[Any] = raw if isinstance(raw, list) else []
        if rejected:
            self.rejected += len(rejected)
            log.error("audit: the control plane rejected %d record(s): %s", len(rejected), rejected[:3])
        self.shipped += len(lines) - len(rejected)
        self.position = (segment, new_offset)
        self._save_cursor(*self.position)
        # Caught up: let records gather for a moment so a busy proxy ships a few large batches, not many tiny
        # ones (the records are already durable; only their arrival upstream waits).
        return self.linger if len(lines) < self.batch else 0.0


def _line(record: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(record, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a NaN or an infinity: JSON has none, and the control plane would refuse the whole batch
        text = json.dumps(_finite(record), separators=(",", ":"), default=str, allow_nan=False)
    return text.encode() + b"\n"


def _finite(value: Any) -> Any:
    """VALUE with every non-finite float replaced by its text ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _replace_file(path: Path, data: bytes) -> None:
    """Write a small file whole or not at all (a full disk leaves the old one in place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
