"""Client connections as a resource: how many are open, and how long one may stay open without a request.

mitmproxy closes a connection only after `tcp_timeout` (10 minutes) without any activity, and accepts as many
as the process has file descriptors. So a client that opens connections and sends nothing (or only a CONNECT,
or half a TLS handshake) could hold every descriptor, and the proxy would stop accepting anyone's connections.
This addon bounds both:

- at most `max_connections` client connections are open at once; one more is closed as it is accepted (and a
  warning logged at most once a minute, never a traceback);
- a connection must deliver its first request head (inside the tunnel, after TLS, for HTTPS) within
  `first_request_timeout` seconds of opening, or it is closed; when the table is full, the oldest connection
  still waiting for its first request is closed to make room (a client in earnest sends at once).

Each session's number of tunnels is bounded by the proxy addon itself (it knows the session). The process
also raises its own descriptor limit (`raise_open_files`) and answers an accept error with one log line
(`quiet_accept_errors`). Imports no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, ctx, http

log = logging.getLogger("aileron.connections")

WARN_EVERY = 60.0  # seconds between two warnings of the same kind


class _Throttled:
    """A log line at most once every WARN_EVERY seconds, saying how many were held back."""

    def __init__(self) -> None:
        self.last = -WARN_EVERY
        self.held = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last < WARN_EVERY:
            self.held += 1
            return
        more = f" ({self.held} more since the last warning)" if self.held else ""
        self.last, self.held = now, 0
        log.warning("%s%s", message, more)


class ConnectionGuard:
    """Bounds client connections (see the module); its hooks are called by the proxy addon's own."""

    def __init__(self, *, max_connections: int, first_request_timeout: float) -> None:
        self.max_connections = max_connections
        self.first_request_timeout = first_request_timeout
        self.open: set[str] = set()
        self.waiting: dict[str, asyncio.TimerHandle] = {}  # connections that have not sent a request yet
        self.refused = 0
        self.closed_idle = 0
        self._full = _Throttled()

    def client_connected(self, client: connection.Client) -> None:
        if len(self.open) >= self.max_connections and self.waiting:
            # Full: make room by closing the oldest connection that has not sent a request yet (a client in
            # earnest sends its request at once; idle ones are what fills the table).
            self._expire(next(iter(self.waiting)), why="to make room for a new one")
        if len(self.open) >= self.max_connections:
            self.refused += 1
            client.error = "aileron: too many connections"
            self._full.warn(
                f"{len(self.open)} client connections are open, the limit (AILERON_MAX_CONNECTIONS); "
                "new connections are closed as they arrive"
            )
            return
        self.open.add(client.id)
        loop = asyncio.get_running_loop()
        self.waiting[client.id] = loop.call_later(self.first_request_timeout, self._expire, client.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._served(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self.open.discard(client.id)
        self._served(client.id)

    def _served(self, client_id: str) -> None:
        timer = self.waiting.pop(client_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client_id: str, *, why: str = "") -> None:
        timer = self.waiting.pop(client_id, None)
        if timer is not None:
            timer.cancel()
        if client_id not in self.open:
            return
        self.open.discard(client_id)  # counted as closed now: its handler finishes closing it shortly
        handler = _handler(client_id)
        if handler is None:
            return
        self.closed_idle += 1
        why = why or f"within {self.first_request_timeout:g} s"
        with contextlib.suppress(Exception):  # a connection closing at this moment: nothing left to close
            handler.log(f"closing a connection that sent no request {why}", logging.DEBUG)
            io = handler.transports[handler.client]
            if io.handler is not None:
                io.handler.cancel("no request in time")


def _handler(client_id: str) -> Any:
    """mitmproxy's handler of a client connection (its proxyserver addon keeps them by client id)."""
    proxyserver = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    return getattr(proxyserver, "connections", {}).get(client_id)


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit on open files toward `wanted` (within the hard limit); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """An accept that fails for want of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM) is one throttled warning,
    not a traceback per attempt; asyncio retries the accept by itself."""
    throttled = _Throttled()
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            throttled.warn(f"cannot accept connections: {exc.strerror or exc} (file descriptors or memory exhausted)")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
