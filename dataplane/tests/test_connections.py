"""The connection table's rules: a bounded number open, idle ones closed first, accept errors one line."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest
from mitmproxy import connection

from dataplane import connections
from dataplane.connections import ConnectionGuard, quiet_accept_errors, raise_open_files


def _client() -> connection.Client:
    return connection.Client(peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 8480), timestamp_start=0.0)


class _Closed(list[str]):
    def __call__(self, client_id: str) -> None:
        self.append(client_id)


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> _Closed:
    """Which connections the guard closed (mitmproxy's handler is not there in a unit test)."""
    seen = _Closed()

    class Handler:
        def __init__(self, client_id: str) -> None:
            self.client_id = client_id
            self.client = client_id
            self.transports: dict[str, object] = {}

        def log(self, message: str, level: int) -> None:
            seen(self.client_id)

    monkeypatch.setattr(connections, "_handler", Handler)
    return seen


def test_a_full_table_closes_the_oldest_idle_connection_then_refuses_when_none_is_idle(closed: _Closed) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=2, first_request_timeout=60)
        a, b, c, d = _client(), _client(), _client(), _client()
        guard.client_connected(a)
        guard.client_connected(b)
        guard.client_connected(c)  # full: a, the oldest waiting for a request, is closed for it
        assert closed == [a.id] and guard.open == {b.id, c.id} and c.error is None
        guard._served(b.id)
        guard._served(c.id)
        guard.client_connected(d)  # full, and nobody idle: the new one is refused
        assert d.error is not None and guard.refused == 1 and d.id not in guard.open
        guard.client_disconnected(b)
        e = _client()
        guard.client_connected(e)
        assert e.error is None and guard.open == {c.id, e.id}

    asyncio.run(scenario())


def test_a_connection_without_a_request_in_time_is_closed_and_one_with_a_request_is_not(closed: _Closed) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=10, first_request_timeout=0.05)
        idle, busy = _client(), _client()
        guard.client_connected(idle)
        guard.client_connected(busy)
        guard._served(busy.id)
        await asyncio.sleep(0.15)
        assert closed == [idle.id] and guard.closed_idle == 1 and guard.open == {busy.id}

    asyncio.run(scenario())


def test_accept_errors_are_one_throttled_line_and_other_errors_pass_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    passed_on: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
    try:
        quiet_accept_errors(loop)
        with caplog.at_level(logging.WARNING, logger="aileron.connections"):
            emfile = OSError(24, "Too many open files")
            for _ in range(500):
                loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": emfile})
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "aileron.connections"]
    assert lines == ["cannot accept connections: Too many open files (file descriptors or memory exhausted)"]
    assert not any(r.exc_info for r in caplog.records)
    assert [c["message"] for c in passed_on] == ["something else"]


def test_the_open_files_limit_is_raised_within_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        got = raise_open_files(soft + 1)
        assert got == (soft + 1 if hard == resource.RLIM_INFINITY or soft < hard else soft)
        assert raise_open_files(10) == got  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
