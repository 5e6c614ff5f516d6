"""The audit spool outlives a full disk and a failing control plane, reports its state, and closes crashed runs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dataplane import spool as spool_module
from dataplane.spool import AuditSpool, SpoolError


class ControlPlane:
    """Takes batches while `up`; otherwise fails the way it is told to."""

    def __init__(self, *, up: bool = True, failure: Exception | None = None) -> None:
        self.up = up
        self.failure = failure or ConnectionError("control plane down")
        self.received: list[dict[str, Any]] = []

    def ship(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.up:
            raise self.failure
        self.received.extend(records)
        return {"accepted": len(records), "rejected": []}

    def ids(self, phase: str | None = None) -> list[str]:
        return [r["id"] for r in self.received if phase is None or r.get("phase") == phase]


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs), so a full disk is a real ENOSPC; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],  # noqa: S607
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("mounting a small filesystem needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # noqa: S603, S607


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte; the file to delete to free it again."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"x" * 4096)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"x")
    return filler


def test_the_shipper_and_writer_survive_a_full_disk_and_ship_everything_once_space_is_back(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control = ControlPlane()
    spool = AuditSpool(tiny_disk / "spool", control.ship, linger=0.01)
    spool.start()
    asyncio.run(spool.record_durable({"id": "before", "phase": "attempt"}))
    wait_for(lambda: "before" in control.ids())
    filler = fill(tiny_disk)

    durable: list[str] = []

    async def during() -> None:
        for i in range(40):
            spool.record({"id": f"outcome-{i}", "phase": "outcome"})
            with contextlib.suppress(SpoolError):
                await spool.record_durable({"id": f"attempt-{i}", "phase": "attempt"})
                durable.append(f"attempt-{i}")
            await asyncio.sleep(0.005)

    asyncio.run(during())
    # The disk refuses the cursor file (and, once the last page is used, the records): the spool says so.
    wait_for(lambda: spool.health()["status"] == "degraded")
    health = spool.health()
    assert health["writer"]["state"] == "failing" or health["shipper"]["cursor_error"]
    assert "No space left on device" in json.dumps(health)

    filler.unlink()  # space is back: no restart
    asyncio.run(spool.record_durable({"id": "after", "phase": "attempt"}))
    expected = {"before", "after", *durable, *(f"outcome-{i}" for i in range(40))}
    wait_for(lambda: expected <= set(control.ids()))
    wait_for(lambda: spool.health()["status"] == "ok")
    health = spool.health()
    assert health["writer"] == {
        "state": "ok",
        "last_error": None,
        "failing_since": None,
        "held_records": 0,
        "dropped_records": 0,
    }
    assert health["shipper"]["state"] == "idle"
    assert health["shipper"]["cursor_error"] is None
    assert health["queued_records"] == 0
    spool.stop()
    # A write cut short by the full disk was cut back: no torn line reached the control plane.
    assert "unreadable" not in caplog.text
    assert len(control.ids()) == len(set(control.ids()))


def test_a_cursor_that_cannot_be_saved_does_not_stop_shipping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    control = ControlPlane()
    spool = AuditSpool(tmp_path / "spool", control.ship, linger=0.01)
    spool.start()
    real = spool_module._replace_file

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(spool_module, "_replace_file", full)
    spool.record({"id": "one", "phase": "outcome"})
    wait_for(lambda: control.ids() == ["one"])
    assert spool.health()["shipper"]["cursor_error"] == "No space left on device"
    assert spool.health()["status"] == "degraded"
    spool.record({"id": "two", "phase": "outcome"})
    wait_for(lambda: control.ids() == ["one", "two"])
    monkeypatch.setattr(spool_module, "_replace_file", real)
    spool.record({"id": "three", "phase": "outcome"})
    wait_for(lambda: control.ids() == ["one", "two", "three"])
    wait_for(lambda: spool.health()["status"] == "ok")
    spool.stop()


def test_the_shipper_retries_any_error_with_backoff_and_reports_it_meanwhile(tmp_path: Path) -> None:
    control = ControlPlane(up=False, failure=RuntimeError("the answer was not JSON"))
    spool = AuditSpool(tmp_path / "spool", control.ship, linger=0.01)
    spool.start()
    spool.record({"id": "r", "phase": "outcome"})
    wait_for(lambda: spool.health()["shipper"]["consecutive_failures"] >= 2)
    health = spool.health()
    assert health["status"] == "degraded"
    assert health["shipper"]["state"] == "retrying"
    assert health["shipper"]["last_error"] == "the answer was not JSON"
    assert health["shipper"]["last_success_at"] is None
    assert health["queued_records"] == 1
    assert health["queued_bytes"] > 0
    control.up = True
    wait_for(lambda: control.ids() == ["r"])
    health = spool.health()
    assert health["status"] == "ok"
    assert health["shipper"]["last_success_at"] is not None
    assert health["queued_records"] == 0
    spool.stop()


def test_the_writer_survives_an_unexpected_error_and_the_next_record_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = ControlPlane()
    spool = AuditSpool(tmp_path / "spool", control.ship, linger=0.01)
    spool.start()
    real = os.fdatasync
    calls = {"n": 0}

    def broken(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug, not an OSError")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(SpoolError):
        asyncio.run(spool.record_durable({"id": "lost", "phase": "attempt"}))
    assert spool.health()["writer"]["state"] == "failing"
    asyncio.run(spool.record_durable({"id": "kept", "phase": "attempt"}))
    assert spool.health()["writer"]["state"] == "ok"
    wait_for(lambda: "kept" in control.ids())
    spool.stop()


def test_records_nobody_waits_for_are_held_while_writes_fail_and_written_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = ControlPlane()
    spool = AuditSpool(tmp_path / "spool", control.ship, linger=0.01)
    spool.start()
    real = os.write
    full = {"on": True}

    def write(fd: int, data: Any) -> int:
        if full["on"] and fd == spool._fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    spool.record({"id": "outcome", "phase": "outcome"})
    wait_for(lambda: spool.health()["writer"]["held_records"] == 1)
    with pytest.raises(SpoolError):
        asyncio.run(spool.record_durable({"id": "refused", "phase": "attempt"}))
    assert spool.failing
    full["on"] = False
    asyncio.run(spool.record_durable({"id": "next", "phase": "attempt"}))
    wait_for(lambda: control.ids() == ["outcome", "next"])  # the held record first, the refused one never
    assert not spool.failing
    spool.stop()


def test_attempts_carry_the_run_and_the_next_run_names_the_previous_one_after_its_records(tmp_path: Path) -> None:
    down = ControlPlane(up=False)
    first = AuditSpool(tmp_path / "spool", down.ship)
    first.start()
    asyncio.run(first.record_durable({"id": "open", "phase": "attempt"}))
    first.stop(ship_timeout=0.2)  # as good as killed: no outcome for "open"
    up = ControlPlane()
    second = AuditSpool(tmp_path / "spool", up.ship)
    second.start()
    wait_for(lambda: len(up.received) == 2)
    attempt, restart = up.received
    assert attempt == {"id": "open", "phase": "attempt", "run": first.run_id}
    assert restart["phase"] == "restart"
    assert restart["previous_run"] == first.run_id
    assert restart["run"] == second.run_id != first.run_id
    uuid.UUID(restart["id"])
    second.stop()
    assert json.loads((tmp_path / "spool" / "run.json").read_text()) == {"run": second.run_id}


def test_a_first_run_sends_no_restart_marker(tmp_path: Path) -> None:
    control = ControlPlane()
    spool = AuditSpool(tmp_path / "spool", control.ship, linger=0.01)
    spool.start()
    spool.record({"id": "x", "phase": "outcome"})
    wait_for(lambda: control.ids() == ["x"])
    spool.stop()
    assert all(r["phase"] != "restart" for r in control.received)


def test_health_says_stopped_when_a_thread_is_gone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    spool = AuditSpool(tmp_path / "spool", ControlPlane().ship)
    spool.start()
    spool.stop()
    health = spool.health()
    assert health["status"] == "degraded"
    assert health["shipper"]["state"] == "stopped"
    assert health["writer"]["state"] == "stopped"


def test_spool_lines_are_strict_json_even_when_a_record_holds_a_nan() -> None:
    """The control plane's parser refuses NaN, and a refused batch would hold up every record behind it."""

    def strict(text: bytes) -> Any:
        def refuse(constant: str) -> Any:
            raise ValueError(f"not JSON: {constant}")

        return json.loads(text, parse_constant=refuse)

    line = spool_module._line({"id": "r", "args": {"t": float("nan"), "u": [float("inf"), 1.5]}})
    assert strict(line) == {"id": "r", "args": {"t": "nan", "u": ["inf", 1.5]}}
    ordinary = spool_module._line({"id": "r", "args": {"t": 0.5}})
    assert strict(ordinary) == {"id": "r", "args": {"t": 0.5}}
    # A line an older version wrote with a NaN in it is read back with the NaN as text, so it can be sent.
    assert AuditSpool._parsed([b'{"id":"r","args":{"t":NaN}}'], 0) == [{"id": "r", "args": {"t": "NaN"}}]
