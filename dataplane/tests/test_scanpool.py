"""The worker processes that scan large bodies: the same findings as the proxy's own scan, and fail closed."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import signal
import time
from collections.abc import Iterator

import pytest

from dataplane import credscan, scanpool
from dataplane.scanpool import ScanPool, ScanUnavailable

SECRET = b"ghp_Zq8/xY+3kL0pQ.rs~T_9vW-uN2mB7cD"
OTHER = b"sk-live-0123456789abcdefABCDEF"
FILLER = b"x" * (scanpool.OFF_LOOP_BYTES + 1)


@pytest.fixture
def pool() -> Iterator[ScanPool]:
    scans = ScanPool(workers=1)
    yield scans
    scans.close()


def _scan(scans: ScanPool, matcher: credscan.Matcher, body: bytes, encoding: str = "") -> credscan.Found | None:
    return asyncio.run(scans.scan(matcher, body, encoding))


def test_a_worker_finds_what_the_proxy_would_and_names_the_same_credential(pool: ScanPool) -> None:
    matcher = credscan.Matcher((OTHER, SECRET))
    body = FILLER + b"&token=" + base64.b64encode(b"x:" + SECRET) + FILLER
    found = _scan(pool, matcher, body)
    assert found == credscan.scan_request(matcher, body=body)
    assert found is not None and matcher.secrets[found.index] == SECRET and found.where == "body"
    assert _scan(pool, matcher, FILLER) is None


def test_a_compressed_body_is_read_decoded_and_an_unreadable_one_is_refused(pool: ScanPool) -> None:
    matcher = credscan.Matcher((SECRET,))
    found = _scan(pool, matcher, gzip.compress(FILLER + SECRET), "gzip")
    assert found is not None and found.index == 0
    with pytest.raises(credscan.Undecodable):
        _scan(pool, matcher, b"\x1f\x8b not gzip" + FILLER, "gzip")


def test_a_dead_worker_refuses_the_scan_and_the_next_scan_gets_a_new_one(pool: ScanPool) -> None:
    matcher = credscan.Matcher((SECRET,))
    heavy = b"q=" + b"%41" * (8 * 1024 * 1024 // 3)  # about a second of scanning

    async def kill_mid_scan() -> None:
        scan = asyncio.ensure_future(pool.scan(matcher, heavy, ""))
        deadline = time.monotonic() + 10
        while not pool._pool or not pool._pool._processes:  # noqa: SLF001 - the pool's own worker
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        for pid in list(pool._pool._processes):  # noqa: SLF001
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ScanUnavailable):
            await scan

    asyncio.run(kill_mid_scan())
    assert pool.restarts == 1
    found = _scan(pool, matcher, FILLER + SECRET)
    assert found is not None and found.index == 0


def test_the_number_of_workers_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILERON_SCAN_WORKERS", "3")
    assert scanpool.default_workers() == 3
    for bad in ("0", "many", "65"):
        monkeypatch.setenv("AILERON_SCAN_WORKERS", bad)
        with pytest.raises(ValueError, match="AILERON_SCAN_WORKERS"):
            scanpool.default_workers()
    monkeypatch.delenv("AILERON_SCAN_WORKERS")
    assert 1 <= scanpool.default_workers() <= 4


def test_a_scan_past_its_deadline_is_refused_and_the_next_scan_gets_new_workers() -> None:
    scans = ScanPool(workers=1, timeout=0.3)
    try:
        matcher = credscan.Matcher((SECRET,))
        heavy = b"q=" + b"%41" * (8 * 1024 * 1024 // 3)  # about a second of scanning
        started = time.monotonic()
        with pytest.raises(scanpool.ScanTooLong, match="within 0.3 s"):
            _scan(scans, matcher, heavy)
        assert time.monotonic() - started < 5 and scans.restarts == 1
        found = _scan(scans, matcher, FILLER + SECRET)
        assert found is not None and found.index == 0
    finally:
        scans.close()


def test_a_body_decoding_beyond_the_limit_is_refused_unread(pool: ScanPool) -> None:
    bomb = gzip.compress(b"%41" * (scanpool.DECODED_LIMIT // 3 + 10))
    assert len(bomb) < 256 * 1024  # small as sent
    with pytest.raises(credscan.Undecodable, match="decodes to more than"):
        _scan(pool, credscan.Matcher((SECRET,)), bomb, "gzip")


def test_the_scan_deadline_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILERON_SCAN_TIMEOUT_SECONDS", "2.5")
    assert scanpool.default_timeout() == 2.5
    for bad in ("0", "soon", "-1", "7200"):
        monkeypatch.setenv("AILERON_SCAN_TIMEOUT_SECONDS", bad)
        with pytest.raises(ValueError, match="AILERON_SCAN_TIMEOUT_SECONDS"):
            scanpool.default_timeout()
