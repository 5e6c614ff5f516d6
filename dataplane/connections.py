"""Client connections as a resource: how many are open, and how long one may stay open without a request.

mitmproxy closes a connection only after `tcp_timeout` (10 minutes) without any activity, and accepts as many
as the process has file descriptors. So a client that opens connections and sends nothing (or only a CONNECT,
or half a TLS handshake) could hold every descriptor, and the proxy would stop accepting anyone's connections.
This addon bounds both:

- at most `max_connections` client connections are open at once; one more is closed as it is accepted (and a
  warning logged at most once a minute, never a traceback);
- a connection must deliver its first request head (inside the tunnel, after TLS, for HTTPS) within
  `first_request_timeout` seconds of opening, or it is closed;
- a connection idle between requests (none in flight, no WebSocket open) for `idle_timeout` seconds is closed,
  as servers close idle keep-alive connections (clients reconnect);
- when the table is full, the connection doing least is closed to make room: the oldest one still waiting for
  its first request, else the one idle the longest. Only a table full of connections with requests in flight
  refuses a new one.

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
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy import flow as mflow

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


@dataclass
class _Conn:
    """A client connection as the guard sees it."""

    opened: float
    deadline: asyncio.TimerHandle | None = None  # for its first request
    served: bool = False  # it has sent a request
    busy: int = 0  # requests (and WebSockets) in flight on it
    idle_since: float = 0.0  # when its last one ended (while busy == 0 and served)


class ConnectionGuard:
    """Bounds client connections (see the module); its hooks are called by the proxy addon's own."""

    def __init__(self, *, max_connections: int, first_request_timeout: float, idle_timeout: float = 60.0) -> None:
        self.max_connections = max_connections
        self.first_request_timeout = first_request_timeout
        self.idle_timeout = idle_timeout
        self.conns: dict[str, _Conn] = {}  # open ones, oldest first
        self.refused = 0
        self.closed_idle = 0
        self._full = _Throttled()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open(self) -> set[str]:
        return set(self.conns)

    def client_connected(self, client: connection.Client) -> None:
        if len(self.conns) >= self.max_connections:
            # Full: make room by closing the connection that does least: one that has sent no request yet (a
            # client in earnest sends at once), else the one idle the longest between requests.
            victim = self._least_useful()
            if victim is not None:
                self._close(victim, why="to make room for a new one")
        if len(self.conns) >= self.max_connections:
            self.refused += 1
            client.error = "aileron: too many connections"
            self._full.warn(
                f"{len(self.conns)} client connections are open and busy, the limit (AILERON_MAX_CONNECTIONS); "
                "new connections are closed as they arrive"
            )
            return
        loop = asyncio.get_running_loop()
        conn = self.conns[client.id] = _Conn(opened=time.monotonic())
        conn.deadline = loop.call_later(self.first_request_timeout, self._first_request_late, client.id)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def requestheaders(self, flow: mflow.Flow) -> None:
        conn = self.conns.get(flow.client_conn.id)
        if conn is None:
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        conn.served = True
        conn.busy += 1

    def flow_done(self, flow: mflow.Flow) -> None:
        """A request's answer was sent (or it failed), or a WebSocket or raw TCP relay ended: it may be idle now."""
        conn = self.conns.get(flow.client_conn.id)
        if conn is not None and conn.busy > 0:
            conn.busy -= 1
            if conn.busy == 0:
                conn.idle_since = time.monotonic()

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        conn = self.conns.get(flow.client_conn.id)
        if conn is not None:
            conn.busy += 1

    def client_disconnected(self, client: connection.Client) -> None:
        conn = self.conns.pop(client.id, None)
        if conn is not None and conn.deadline is not None:
            conn.deadline.cancel()

    @property
    def _sweep_every(self) -> float:
        return max(0.5, min(5.0, self.idle_timeout / 4))

    def _least_useful(self) -> str | None:
        idle: tuple[float, str] | None = None
        for cid, conn in self.conns.items():
            if not conn.served:
                return cid  # the oldest that has sent nothing
            if conn.busy == 0 and (idle is None or conn.idle_since < idle[0]):
                idle = (conn.idle_since, cid)
        return idle[1] if idle is not None else None

    def _sweep(self) -> None:
        """Close connections idle between requests for longer than idle_timeout; again later while any is open."""
        self._sweeper = None
        horizon = time.monotonic() - self.idle_timeout
        for cid in [
            c for c, conn in self.conns.items() if conn.served and conn.busy == 0 and conn.idle_since < horizon
        ]:
            self._close(cid, why=f"idle for {self.idle_timeout:g} s")
        if self.conns:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    def _first_request_late(self, client_id: str) -> None:
        conn = self.conns.get(client_id)
        if conn is not None and not conn.served:
            self._close(client_id, why=f"that sent no request within {self.first_request_timeout:g} s")

    def _close(self, client_id: str, *, why: str) -> None:
        conn = self.conns.pop(client_id, None)  # counted as closed now: its handler finishes closing it shortly
        if conn is None:
            return
        if conn.deadline is not None:
            conn.deadline.cancel()
        if close_client(client_id, why=why):
            self.closed_idle += 1


def close_client(client_id: str, *, why: str) -> bool:
    """Have mitmproxy close a client connection (its handler finishes the close); False if it has none."""
    handler = _handler(client_id)
    if handler is None:
        return False
    with contextlib.suppress(Exception):  # a connection closing at this moment: nothing left to close
        handler.log(f"closing a connection {why}", logging.DEBUG)
        io = handler.transports[handler.client]
        if io.handler is not None:
            io.handler.cancel("idle")
    return True


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
