"""Large request bodies are scanned for credentials in a worker process, so one session's megabytes never hold
the interpreter lock every other session's requests need.

The outbound scan of a body (decoded from its Content-Encoding, then read plain, percent-decoded and
JSON-unescaped, see `credscan`) is CPU work, much of it inside single C calls that keep the GIL for their whole
length. In the proxy's process, even on a thread of its own, several sessions' large bodies at once starved the
event loop (an outside attack: four sessions' bodies held a fifth session's small request for 0.8 s). Bodies of
`OFF_LOOP_BYTES` or more are sent instead to a pool of worker processes, started with `forkserver` (they inherit
nothing of the proxy but what they import: `credscan`), with the set of credentials to look for. A worker answers
which credential it found and where, or why the body cannot be read; never the plaintext.

The workers are part of the data plane: the credentials they are sent stay in their memory, as in the proxy's.
If a worker dies, the request it was scanning is refused (`ScanUnavailable`: fail closed, nothing is sent) and
the next scan starts a new pool. Imports neither Django nor mitmproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from dataplane import credscan

log = logging.getLogger("aileron.proxy")

OFF_LOOP_BYTES = 256 * 1024  # bodies this large are scanned in a worker process (compressed ones always)
MATCHERS_KEPT = 64  # per worker: compiled matchers kept (one per set of credentials)
DEFAULT_TIMEOUT = 10.0  # seconds one body's scan may take (AILERON_SCAN_TIMEOUT_SECONDS)
DECODED_LIMIT = 32 * 1024 * 1024  # a request body may decode to this much to be scanned (more: 415)


class ScanUnavailable(Exception):
    """The worker could not scan the body (it died, or the pool could not start): refuse, never forward."""


class ScanTooLong(Exception):
    """The body's scan took longer than the deadline: its worker is stopped, the request refused (415)."""


def default_timeout() -> float:
    raw = os.environ.get("AILERON_SCAN_TIMEOUT_SECONDS", "")
    if not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"AILERON_SCAN_TIMEOUT_SECONDS must be a number, not {raw!r}") from None
    if not 0 < value <= 3600:
        raise ValueError(f"AILERON_SCAN_TIMEOUT_SECONDS must be more than 0 and at most 3600, not {value}")
    return value


def default_workers() -> int:
    """One worker per core beyond the proxy's own (at least one, at most four); AILERON_SCAN_WORKERS overrides."""
    raw = os.environ.get("AILERON_SCAN_WORKERS", "")
    if raw.strip():
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"AILERON_SCAN_WORKERS must be a whole number, not {raw!r}") from None
        if not 1 <= value <= 64:
            raise ValueError(f"AILERON_SCAN_WORKERS must be between 1 and 64, not {value}")
        return value
    return max(1, min(4, (os.cpu_count() or 1) - 1))


class ScanPool:
    """Worker processes that scan bodies; started on first use (or `start`), restarted after a worker dies."""

    def __init__(self, *, workers: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.workers = workers
        self.timeout = timeout  # a scan longer than this stops its worker and refuses the body
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["dataplane.credscan"])  # not the proxy's __main__
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            return self._pool

    def start(self) -> None:
        """Start the workers now (in the background), so the first large body does not wait for them."""
        try:
            self._executor().submit(_warm)
        except Exception:  # noqa: BLE001 - the first scan retries and refuses if it cannot
            log.warning("the scan workers did not start; the first large body will retry", exc_info=True)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self.restarts += 1
        pool.shutdown(wait=False, cancel_futures=True)

    async def scan(self, matcher: credscan.Matcher, body: bytes, encoding: str) -> credscan.Found | None:
        """The first credential of `matcher` in `body` (read as the upstream will, decoded from `encoding`).

        Raises `credscan.Undecodable` for a body that cannot be read, `ScanUnavailable` if no worker answers.
        """
        loop = asyncio.get_running_loop()
        try:
            pool = self._executor()
        except (OSError, RuntimeError) as exc:
            raise ScanUnavailable(f"the body scan workers cannot start ({type(exc).__name__})") from None
        try:
            job = loop.run_in_executor(pool, _scan, matcher.secrets, body, encoding)
            answer = await asyncio.wait_for(job, self.timeout)
        except TimeoutError:
            # No way to stop one job of a pool: its workers are stopped (scans under way elsewhere are refused
            # as unavailable, and retried by their agents), the next scan starts a new pool.
            log.warning("a body's scan took longer than %g s; its worker is stopped and the body refused", self.timeout)
            self._kill(pool)
            raise ScanTooLong(f"the body could not be checked for credentials within {self.timeout:g} s") from None
        except BrokenProcessPool:
            log.error("a scan worker died; the request is refused and the workers are restarted")
            self._discard(pool)
            raise ScanUnavailable("the worker scanning the body stopped") from None
        except (OSError, RuntimeError) as exc:  # a worker could not be started, or the pool was shut down
            self._discard(pool)
            raise ScanUnavailable(f"the body scan workers are not available ({type(exc).__name__})") from None
        if isinstance(answer, str):
            raise credscan.Undecodable(answer)
        if answer is None:
            return None
        index, where = answer
        return credscan.Found(index, where)

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        processes = dict(getattr(pool, "_processes", None) or {})  # the pool offers no other way to stop a job
        self._discard(pool)
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.kill()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# In the worker process.

_matchers: OrderedDict[tuple[bytes, ...], credscan.Matcher] = OrderedDict()


def _warm() -> None:
    return None


def _scan(secrets: tuple[bytes, ...], body: bytes, encoding: str) -> tuple[int, str] | str | None:
    """(index, where) of the first credential found, an Undecodable's message, or None for a clean body."""
    matcher = _matchers.get(secrets)
    if matcher is None:
        matcher = _matchers[secrets] = credscan.Matcher(secrets)  # same order: the same indexes as the proxy's
        while len(_matchers) > MATCHERS_KEPT:
            _matchers.popitem(last=False)
    else:
        _matchers.move_to_end(secrets)
    try:
        found = credscan.scan_body(matcher, body, encoding, limit=DECODED_LIMIT)
    except credscan.Undecodable as exc:
        return str(exc)
    return None if found is None else (found.index, found.where)
