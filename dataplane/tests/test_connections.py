"""The connection table's rules: a bounded number open, idle ones closed first, accept errors one line."""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import pytest
from mitmproxy import connection
from mitmproxy.test import tflow

from dataplane import connections
from dataplane.connections import ConnectionGuard, quiet_accept_errors, raise_open_files


def _client() -> connection.Client:
    return connection.Client(peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 8480), timestamp_start=0.0)


def _flow(client: connection.Client) -> Any:
    flow = tflow.tflow()
    flow.client_conn = client
    return flow


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


def test_a_full_table_closes_the_connection_doing_least_and_refuses_only_when_all_are_busy(closed: _Closed) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=2, first_request_timeout=60)
        a, b, c, d, e = (_client() for _ in range(5))
        guard.client_connected(a)
        guard.client_connected(b)
        guard.client_connected(c)  # full: a, the oldest waiting for a request, is closed for it
        assert closed == [a.id] and guard.open == {b.id, c.id} and c.error is None
        guard.requestheaders(_flow(b))  # b has a request in flight
        guard.requestheaders(_flow(c))
        guard.flow_done(_flow(c))  # c answered, idle since
        guard.client_connected(d)  # full: c, idle between requests, is closed; b is busy
        assert closed == [a.id, c.id] and guard.open == {b.id, d.id}
        guard.requestheaders(_flow(d))
        guard.client_connected(e)  # full, and every connection has a request in flight: refused
        assert e.error is not None and guard.refused == 1 and e.id not in guard.open

    asyncio.run(scenario())


def test_of_idle_connections_the_one_idle_longest_is_closed_first(closed: _Closed) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=3, first_request_timeout=60)
        old, recent, busy = _client(), _client(), _client()
        for client in (old, recent, busy):
            guard.client_connected(client)
            guard.requestheaders(_flow(client))
        guard.flow_done(_flow(old))
        await asyncio.sleep(0.01)
        guard.flow_done(_flow(recent))
        guard.client_connected(_client())
        assert closed == [old.id]

    asyncio.run(scenario())


def test_a_connection_without_a_request_in_time_is_closed_and_one_with_a_request_is_not(closed: _Closed) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=10, first_request_timeout=0.05)
        idle, busy = _client(), _client()
        guard.client_connected(idle)
        guard.client_connected(busy)
        guard.requestheaders(_flow(busy))
        await asyncio.sleep(0.15)
        assert closed == [idle.id] and guard.closed_idle == 1 and guard.open == {busy.id}

    asyncio.run(scenario())


def test_a_connection_idle_between_requests_is_closed_but_never_one_with_a_request_or_websocket_open(
    closed: _Closed,
) -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_connections=10, first_request_timeout=60, idle_timeout=0.2)
        idle, held, socket = _client(), _client(), _client()
        for client in (idle, held, socket):
            guard.client_connected(client)
            guard.requestheaders(_flow(client))
        guard.flow_done(_flow(idle))  # answered, then nothing
        guard.flow_done(_flow(socket))  # the 101 answer...
        guard.websocket_start(_flow(socket))  # ...and its WebSocket stays open
        await asyncio.sleep(1.2)
        assert closed == [idle.id]
        assert guard.open == {held.id, socket.id}  # a held approval, a long answer, an open WebSocket

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
