"""Bounds the proxy keeps below mitmproxy's hooks: request heads, body memory, slow clients, slow upstreams.

mitmproxy 12 has no option for most of these, so `install()` wraps four of its internals, each at the one
place where the bound can hold:

- the HTTP/1 reader (`Http1Server`): a request head larger than `max_head_bytes` or with more than
  `max_header_fields` lines is answered 431 before it is parsed (mitmproxy would buffer a head without end and
  parse every header of it); a head not complete within `header_timeout` seconds of the connection opening
  (or of its first byte, for a later request on a kept-alive connection) is answered 408 and the connection
  closed (slowloris);
- the request stream (`HttpStream`): a response an addon set in `requestheaders` is sent at once, with
  `Connection: close`, and the rest of the body is dropped as it arrives, never buffered (mitmproxy would read
  the whole body into memory first, and answer `Expect: 100-continue` before it);
- the HTTP/1 upstream connection (`Http1Client`): a request sent gets `response_timeout` seconds for the head
  of its answer, then the flow fails with an `upstream-timeout` error (a 504 to the agent); an answer head
  over `max_response_head_bytes` or `max_response_header_fields` closes the connection and fails the flow
  (a 502, `upstream-unavailable`) before mitmproxy buffers more of it;
- a failed upstream carries TIMEOUT_MARK in its error when it timed out: dataplane.http1_strict (which makes
  mitmproxy's own error answers RFC 9457 problems) answers those 504;
- the upstream connect (`asyncio.open_connection` as mitmproxy's proxy server sees it) gets `connect_timeout`;
- TLS sends (`TLSLayer.send_data`) are encrypted 64 KiB at a time, so OpenSSL's buffers stay small.

`BodyBudget` bounds the memory of every buffered request body together (not only each one), and has it given
back to the system once its flows are done (dataplane.reclaim). Imports no Django.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import types
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from h11._receivebuffer import ReceiveBuffer
from mitmproxy import connection, http
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy import server as proxy_server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import tls as tls_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestEndOfMessage,
    RequestProtocolError,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._hooks import HttpRequestHeadersHook, HttpResponseHeadersHook

from dataplane import problems
from dataplane.problems import Refusal
from dataplane.reclaim import Reclaimer, allocate_large_blocks_apart

log = logging.getLogger("aileron.limits")

MIB = 1024 * 1024
TIMEOUT_MARK = "upstream-timeout"  # starts every message of a timed-out upstream, so the answer is a 504
BODY_TIMEOUT_MARK = "body-timeout"  # starts the flow error of a request body cut for being too slow


def body_timeout_error(request_id: str, detail: str) -> str:
    """The flow error of a body cut for slowness: names the request id its problem answer carried."""
    return f"{BODY_TIMEOUT_MARK} {request_id}: {detail}"


def parse_body_timeout(message: str) -> tuple[str, str] | None:
    """(request id, detail) of a flow error made by `body_timeout_error`, else None."""
    if not message.startswith(BODY_TIMEOUT_MARK + " "):
        return None
    request_id, _, detail = message[len(BODY_TIMEOUT_MARK) + 1 :].partition(": ")
    return request_id, detail


def body_too_slow(*, now: float, started: float, last: float, received: int, limits: Limits) -> str | None:
    """Why a request body still arriving is cut, or None: a gap longer than body_timeout, or, once the body is
    older than body_timeout, fewer than min_body_rate bytes a second on average since then."""
    if now - last >= limits.body_timeout:
        return f"no byte of the request body arrived for {limits.body_timeout:g} s"
    late = now - started - limits.body_timeout
    if late > 0 and received <= limits.min_body_rate * late:
        return f"the request body arrived slower than {limits.min_body_rate} bytes a second"
    return None


def body_next_check(*, started: float, last: float, received: int, limits: Limits) -> float:
    """When `body_too_slow` may first say yes, if no more bytes arrive."""
    return min(last + limits.body_timeout, started + limits.body_timeout + received / limits.min_body_rate)


@dataclass(frozen=True)
class Limits:
    """The bounds, with defaults that suit LLM calls (a long first token, big prompts) and API clients."""

    max_head_bytes: int = 64 * 1024  # request line and headers together
    max_header_fields: int = 128  # SDKs send 10-30; Envoy refuses at 100, Node at 2,000
    max_response_head_bytes: int = 64 * 1024  # an upstream's status line and headers together
    max_response_header_fields: int = 256
    header_timeout: float = 30.0  # to receive a whole request head
    connect_timeout: float = 10.0  # to open the TCP connection upstream
    response_timeout: float = 300.0  # from the end of the request to the first byte of the answer
    body_budget: int = 64 * MIB  # every buffered request body together
    session_body_share: int = 16 * MIB  # what one session's bodies may hold of it at once
    body_timeout: float = 30.0  # the longest wait for the next byte of a request body (nginx: 60)
    min_body_rate: int = 16 * 1024  # bytes/s a body must average once it is older than body_timeout
    max_connections: int = 4096  # client connections open at once (each may hold one upstream connection too)
    idle_timeout: float = 60.0  # a client connection with no request in flight this long is closed
    session_connections: int = 256  # tunnels one session may hold open at once


# --- pure rules ---------------------------------------------------------------------------------------------

_BLANK_LINE = re.compile(rb"\n\r?\n")


def head_problem(buffered: bytes | bytearray | memoryview, limits: Limits) -> str | None:
    """Why the request head starting `buffered` is refused, or None (within bounds, complete or not yet).

    Looks at no more than `max_head_bytes` + 2 bytes, whatever is buffered: cost bounded per call.
    """
    return _head_problem(buffered, limits.max_head_bytes, limits.max_header_fields, "request")


def response_head_problem(buffered: bytes | bytearray | memoryview, limits: Limits) -> str | None:
    """Why the response head an upstream is sending is refused, or None (within bounds, complete or not yet)."""
    return _head_problem(buffered, limits.max_response_head_bytes, limits.max_response_header_fields, "response")


def _head_problem(buffered: bytes | bytearray | memoryview, max_bytes: int, max_fields: int, what: str) -> str | None:
    window = bytes(buffered[: max_bytes + 2]).lstrip(b"\r\n")
    end = _BLANK_LINE.search(window)
    if end is None:
        if len(window) > max_bytes:
            return f"the {what} head exceeds {max_bytes} bytes"
        head = window
    else:
        head = window[: end.start()]
    fields = head.count(b"\n")  # lines after the first line, folded ones included
    if fields > max_fields:
        return f"the {what} has more than {max_fields} header fields"
    return None


def request_line(buffered: bytes | bytearray | memoryview) -> tuple[str, str]:
    """The method and target of a (possibly partial) request head, for the audit record; ("", "") if none."""
    first = bytes(buffered[:2048]).lstrip(b"\r\n").split(b"\n", 1)[0]
    parts = first.split(b" ")
    if len(parts) < 2 or not parts[0].isalpha():
        return "", ""
    return parts[0].decode("ascii", "replace")[:16], parts[1].decode("ascii", "replace")[:2048]


class BodyBudget:
    """Bytes of request bodies buffered at once, for all flows together; a reservation is held until release.

    No session may hold more than `share` of it at once, nor the sessions of one user together more than
    `user_share` (twice a session's, by default): one agent's stalled uploads, or one user's many sessions,
    cannot refuse every other session's bodies. Stalled uploads are also cut by the body timeouts.

    A body held for people's approval (minutes, up to an hour) moves to a pool of its own (`hold`), as large as
    this one by default, where one user's held bodies may take a quarter (or a session's share, if larger): held
    bodies never starve the bodies being sent, and one or two users cannot fill the pool for everyone else's. A
    held body is given back when its agent disconnects or the hold ends.
    """

    def __init__(
        self,
        capacity: int,
        *,
        share: int | None = None,
        user_share: int | None = None,
        held: int | None = None,
        reclaimer: Reclaimer | None = None,
    ) -> None:
        self.capacity = capacity
        self.share = min(capacity, share) if share else capacity
        self.user_share = min(capacity, user_share or 2 * self.share)
        self.in_use = 0
        self._held: dict[str, tuple[str, str, int]] = {}  # flow -> (session, user, bytes)
        self._by_owner: dict[str, int] = {}  # by session and by user ("user:" keys)
        self.reclaimer = reclaimer or Reclaimer()
        self.waiting: BodyBudget | None = None  # the pool of bodies held for approval
        if held != 0:
            size = held or capacity
            each = min(size, max(size // 4, self.share))  # one user's: a quarter, or a session's share if larger
            self.waiting = BodyBudget(size, share=each, user_share=each, held=0, reclaimer=self.reclaimer)

    def admit(self, key: str, size: int, *, owner: str = "", user: str = "") -> str | None:
        """Hold `size` bytes for `key` (of session `owner`, of `user`); None when held, else why it cannot be."""
        if size <= 0:
            return None
        owned = self._by_owner.get(owner, 0)
        if owned + size > self.share:
            return f"this session has {owned} of its {self.share} bytes of bodies in flight; this one has {size}"
        users = self._by_owner.get("user:" + user, 0) if user else 0
        if user and users + size > self.user_share:
            return (
                f"your sessions have {users} of their {self.user_share} bytes of bodies in flight; this one has {size}"
            )
        if self.in_use + size > self.capacity:
            return f"{self.in_use} of {self.capacity} bytes of bodies are in flight; this one has {size}"
        held_owner, held_user, held = self._held.get(key, (owner, user, 0))
        self._held[key] = (held_owner, held_user, held + size)
        self._add(held_owner, size)
        if held_user:
            self._add("user:" + held_user, size)
        self.in_use += size
        return None

    def reserve(self, key: str, size: int, *, owner: str = "", user: str = "") -> bool:
        """Hold `size` bytes for `key`; False when the budget (or a share of it) cannot hold them now."""
        return self.admit(key, size, owner=owner, user=user) is None

    def hold(self, key: str) -> str | None:
        """Move `key`'s reservation to the pool of bodies held for approval; None when moved (or nothing was
        reserved), else why the pool cannot take it (the reservation then stays here)."""
        owner, user, size = self._held.get(key, ("", "", 0))
        if not size or self.waiting is None:
            return None
        reason = self.waiting.admit(key, size, owner=owner, user=user)
        if reason is not None:
            return reason.replace("in flight", "held for approval")
        self._drop(key, freed=False)
        return None

    def owned(self, owner: str) -> int:
        return self._by_owner.get(owner, 0)

    def release(self, key: str) -> None:
        self._drop(key, freed=True)
        if self.waiting is not None:
            self.waiting.release(key)

    def _drop(self, key: str, *, freed: bool) -> None:
        owner, user, size = self._held.pop(key, ("", "", 0))
        if not size:
            return
        self.in_use -= size
        self._add(owner, -size)
        if user:
            self._add("user:" + user, -size)
        if freed:
            # Its flow ends soon but is freed only by a cyclic collection (see dataplane.reclaim), even under load.
            self.reclaimer.note_freed(size)

    def _add(self, owner: str, size: int) -> None:
        left = self._by_owner.get(owner, 0) + size
        if left > 0:
            self._by_owner[owner] = left
        else:
            self._by_owner.pop(owner, None)


# --- mitmproxy internals, wrapped ---------------------------------------------------------------------------

HeadRefused = Callable[[connection.Client, http.Request, Refusal], http.Response]


@dataclass
class _Installed:
    limits: Limits
    on_refused: HeadRefused | None


_state: _Installed | None = None
_install_lock = threading.Lock()


def install(limits: Limits, *, on_refused: HeadRefused | None = None) -> None:
    """Apply `limits` to every connection of this process's mitmproxy (once per process; later calls update).

    `on_refused(client, request, refusal)` answers (and audits) a request refused while its head was read.
    """
    global _state
    with _install_lock:
        first = _state is None
        _state = _Installed(limits, on_refused)
        if not first:
            return
        allocate_large_blocks_apart()
        _wrap_http1_server()
        _wrap_http_stream()
        _wrap_http1_client()
        _wrap_tls_send()
        setattr(proxy_server, "asyncio", _AsyncioWithConnectTimeout())  # noqa: B010 (not exported: typed as such)


def _limits() -> Limits:
    return _state.limits if _state is not None else Limits()


def _problem_bytes(response: http.Response) -> bytes:
    response.headers["connection"] = "close"
    return bytes(http1.assemble_response(response))  # type: ignore[no-untyped-call]


class _AsyncioWithConnectTimeout(types.ModuleType):
    """asyncio as mitmproxy's proxy server sees it: the same, with a deadline on opening a connection."""

    def __init__(self) -> None:
        super().__init__("asyncio")

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def open_connection(self, *args: Any, **kwargs: Any) -> Any:
        seconds = _limits().connect_timeout
        try:
            return await asyncio.wait_for(asyncio.open_connection(*args, **kwargs), seconds)
        except TimeoutError:
            raise TimeoutError(f"{TIMEOUT_MARK}: no connection within {seconds:g} s") from None


CommandGenerator = Generator[commands.Command, Any, None]
TICK = 1.0  # a deadline is checked at least this often: a pending wakeup keeps its layer (and what it holds) alive


class _Ticker:
    """The wakeups a layer has asked for and not yet received, with when each comes.

    One pending wakeup (at most TICK away) serves every deadline of the layer: each wakeup checks them all and
    asks for the next one only while one is still running. A connection serving request after request asks for
    one wakeup a second, not one per request (each is an asyncio task in mitmproxy).
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[commands.RequestWakeup, float] = {}


def _tick(conn: Any, at: float) -> CommandGenerator:
    """Have `conn` woken by `at`, or within TICK if that is sooner, unless a pending wakeup comes by then."""
    ticker: _Ticker | None = getattr(conn, "_aileron_ticker", None)
    if ticker is None:
        ticker = conn._aileron_ticker = _Ticker()
    now = time.monotonic()
    due = now + max(0.0, min(TICK, at - now))
    if ticker.pending and min(ticker.pending.values()) <= due + 0.01:
        return
    wakeup = commands.RequestWakeup(due - now)
    ticker.pending[wakeup] = due
    yield wakeup


def _ours(conn: Any, event: events.Wakeup) -> bool:
    """Whether `event` answers a wakeup `_tick` asked for (and it is no longer pending)."""
    ticker: _Ticker | None = getattr(conn, "_aileron_ticker", None)
    return ticker is not None and ticker.pending.pop(event.command, None) is not None


@dataclass
class _BodyClock:
    """How a request body is arriving: when it started, its last byte, and how many bytes so far."""

    started: float
    last: float
    received: int = 0


def _wrap_http1_server() -> None:
    server = _http1.Http1Server
    original = server._handle_event

    def handle_event(self: Any, event: events.Event) -> CommandGenerator:
        limits = _limits()
        if isinstance(event, events.Wakeup):
            if _ours(self, event):
                yield from _check_server(self, limits)
            else:
                yield from original(self, event)
            return
        if isinstance(event, events.Start):
            yield from original(self, event)
            yield from _start_head_timer(self, limits)
            return
        reading_head = self.state == self.read_headers
        if reading_head and isinstance(event, events.DataReceived):
            self.buf += event.data
            reason = head_problem(self.buf._data, limits)
            if reason is not None:
                yield from _refuse_head(self, Refusal(problems.HEADERS_TOO_LARGE, reason))
                return
            event = events.DataReceived(event.connection, b"")  # already in the buffer
        elif self.state == self.read_body and isinstance(event, events.DataReceived) and event.data:
            clock: _BodyClock | None = getattr(self, "_aileron_body_clock", None)
            if clock is not None:
                clock.last = time.monotonic()
                clock.received += len(event.data)
        if reading_head:
            head = bytes(self.buf._data[:2048])
            yield from original(self, event)
            if _unparsed_head_refused(self, event):
                # mitmproxy answered 400 to a request line or header it could not parse, before any hook ran:
                # the refusal is audited in its tunnel's session like one refused here.
                _audit_unparsed(self, head)
        else:
            yield from original(self, event)
        if self.state == self.read_headers:
            if reading_head and getattr(self, "_aileron_head_at", None) is None:
                # A later request's head on a kept-alive connection, begun and not complete: its timer starts
                # now (a head that arrives whole, the usual case, needs none).
                yield from _start_head_timer(self, limits)
        else:
            self._aileron_head_at = None
        if self.state == self.read_body:
            if getattr(self, "_aileron_body_clock", None) is None:
                now = time.monotonic()
                clock = self._aileron_body_clock = _BodyClock(started=now, last=now, received=len(self.buf))
                yield from _tick(self, body_next_check(started=now, last=now, received=clock.received, limits=limits))
        else:
            self._aileron_body_clock = None

    server._handle_event = handle_event  # type: ignore[method-assign]


def _unparsed_head_refused(conn: Any, event: events.Event) -> bool:
    """After a head was read: whether mitmproxy answered it with a 400 of its own and passed no request on.

    Its read_headers ends in `done` on a DataReceived only there (a parsed head moves on to the body), and it
    passes the request on, for its UI, only when the head itself parsed (a request every mark_done clears).
    Read from the state, not from the commands: the commands go straight through, with no loop of ours."""
    return isinstance(event, events.DataReceived) and conn.state == conn.done and conn.request is None


def _audit_unparsed(conn: Any, head: bytes) -> None:
    if _state is None or _state.on_refused is None:
        return
    method, target = request_line(head)
    request = http.Request.make(method or "GET", "http://unknown/")
    request.path = target or "/"
    request.host = ""
    refusal = Refusal(problems.REQUEST_SMUGGLING, "the request line or a header line could not be parsed")
    try:
        _state.on_refused(conn.conn, request, refusal)
    except Exception:  # the answer is already out; the audit is best effort here
        log.exception("auditing an unparsable request head")


def _check_server(conn: Any, limits: Limits) -> CommandGenerator:
    """A wakeup: the head timer and the body clock, each cut when passed; the next wakeup while one runs."""
    now = time.monotonic()
    next_at: float | None = None
    head_at: float | None = getattr(conn, "_aileron_head_at", None)
    if head_at is not None and conn.state == conn.read_headers:
        if now >= head_at:
            yield from _head_timed_out(conn, limits)
            return
        next_at = head_at
    clock: _BodyClock | None = getattr(conn, "_aileron_body_clock", None)
    if clock is not None and conn.state == conn.read_body:
        reason = body_too_slow(now=now, started=clock.started, last=clock.last, received=clock.received, limits=limits)
        if reason is not None:
            yield from _cut_body(conn, reason)
            return
        at = body_next_check(started=clock.started, last=clock.last, received=clock.received, limits=limits)
        next_at = at if next_at is None else min(next_at, at)
    if next_at is not None:
        yield from _tick(conn, next_at)


def _cut_body(conn: Any, reason: str) -> CommandGenerator:
    """A request body too slow: answer 408 (unless an answer has begun), close, and fail its flow (audited)."""
    request_id = str(uuid.uuid4())
    conn._aileron_body_clock = None
    conn.buf = ReceiveBuffer()
    conn.state = conn.done
    if conn.response is None and conn.conn.state & connection.ConnectionState.CAN_WRITE:
        refusal = Refusal(problems.BODY_TIMEOUT, reason)
        yield commands.SendData(conn.conn, _problem_bytes(problems.response(refusal, request_id=request_id)))
    yield commands.CloseConnection(conn.conn)
    yield ReceiveHttp(
        RequestProtocolError(conn.stream_id, body_timeout_error(request_id, reason), ErrorCode.GENERIC_CLIENT_ERROR)
    )


def _start_head_timer(conn: Any, limits: Limits) -> CommandGenerator:
    conn._aileron_head_at = time.monotonic() + limits.header_timeout
    yield from _tick(conn, conn._aileron_head_at)


def _head_timed_out(conn: Any, limits: Limits) -> CommandGenerator:
    if conn.state != conn.read_headers or not (conn.conn.state & connection.ConnectionState.CAN_WRITE):
        return
    detail = f"the request head did not arrive within {limits.header_timeout:g} s"
    yield from _refuse_head(conn, Refusal(problems.HEADER_TIMEOUT, detail))


def _refuse_head(conn: Any, refusal: Refusal) -> CommandGenerator:
    """Answer a request refused while its head was read, close the connection, and stop reading it."""
    method, target = request_line(conn.buf._data)
    request = http.Request.make(method or "GET", "http://unknown/")
    request.path = target or "/"
    request.host = ""
    response: http.Response | None = None
    if _state is not None and _state.on_refused is not None:
        try:
            response = _state.on_refused(conn.conn, request, refusal)
        except Exception:  # an answer must go out whatever happened while auditing it
            log.exception("refusing a request head")
    if response is None:
        response = problems.response(refusal, request_id="")
    conn.buf = ReceiveBuffer()
    conn.state = conn.done
    conn._aileron_head_at = None
    yield commands.SendData(conn.conn, _problem_bytes(response))
    yield commands.CloseConnection(conn.conn)


def _wrap_http_stream() -> None:
    stream = http_layers.HttpStream
    wait_for_request_headers = stream.state_wait_for_request_headers

    def state_wait_for_request_headers(self: Any, event: Any) -> CommandGenerator:
        inner = wait_for_request_headers(self, event)
        send: Any = None
        while True:
            try:
                command = inner.send(send)
            except StopIteration:
                break
            send = yield command
            if isinstance(command, HttpRequestHeadersHook) and self.flow.response is not None:
                # Refused: no "100 Continue" invites the body.
                self.flow.request.headers.pop("expect", None)
        if (
            not event.end_stream
            and self.flow.response is not None
            and self.client_state == self.state_consume_request_body
        ):
            yield from _answer_before_body(self)

    stream.state_wait_for_request_headers = state_wait_for_request_headers  # type: ignore[method-assign]


def _answer_before_body(stream: Any) -> CommandGenerator:
    """Send the response an addon set in `requestheaders` now; the body that follows is dropped unread."""
    response = stream.flow.response
    response.headers["connection"] = "close"
    stream.client_state = stream.state_done  # so that sending the response ends the stream (and drops it)
    response.timestamp_start = time.time()
    yield HttpResponseHeadersHook(stream.flow)
    if (yield from stream.check_killed(True)):
        return
    yield from stream.send_response()
    # Body data that arrived while the hooks ran is still queued for this stream; later data, for a dropped
    # stream, is discarded by the HTTP layer. Either way: nothing is kept.
    stream.client_state = _discard_body


def _discard_body(event: events.Event) -> CommandGenerator:
    yield from ()


def _wrap_http1_client() -> None:
    """The upstream side: from the end of the request, `response_timeout` seconds for the answer's head.

    The timer belongs to the upstream connection, not to the flow: a pending wakeup keeps its owner alive, and
    a flow would keep its whole body alive with it.
    """
    client = _http1.Http1Client
    original = client._handle_event

    def handle_event(self: Any, event: events.Event) -> CommandGenerator:
        if isinstance(event, events.Wakeup):
            if not _ours(self, event):
                yield from original(self, event)
                return
            timer: tuple[int, float] | None = getattr(self, "_aileron_response_timer", None)
            if timer is None:
                return
            stream_id, at = timer
            if self.stream_id != stream_id or self.response is not None or self.state != self.read_headers:
                self._aileron_response_timer = None  # answered: the deadline is over
            elif time.monotonic() >= at:
                yield from _upstream_timed_out(self)
            else:
                yield from _tick(self, at)
            return
        if (
            isinstance(event, events.DataReceived)
            and self.state == self.read_headers
            and self.request is not None
            and self.stream_id is not None
        ):
            self.buf += event.data
            if self.buf._data.startswith(_INTERIM_STARTS):
                _drop_interim_heads(self)
            reason = response_head_problem(self.buf._data, _limits())
            if reason is not None:
                yield from _refuse_response_head(self, reason)
                return
            event = events.DataReceived(event.connection, b"")  # already in the buffer
        yield from original(self, event)
        if isinstance(event, RequestEndOfMessage) and self.response is None and self.stream_id is not None:
            at = time.monotonic() + _limits().response_timeout
            self._aileron_response_timer = (self.stream_id, at)
            yield from _tick(self, at)

    client._handle_event = handle_event  # type: ignore[method-assign]


_INTERIM_STARTS = (b"HTTP/1.1 1", b"HTTP/1.0 1")
_INTERIM = re.compile(rb"HTTP/1\.[01] 1(?!01)[0-9]{2}[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n")


def _drop_interim_heads(conn: Any) -> None:
    """Drop the complete interim (1xx, not 101) answers at the start of the buffer: mitmproxy would take the first
    for the answer and the agent would never get the final one. Interim answers are hints; none is passed on."""
    data = bytes(conn.buf._data[: 2 * _limits().max_response_head_bytes])
    at = 0
    while (found := _INTERIM.match(data, at)) is not None:
        at = found.end()
    if at:
        rest = bytes(conn.buf._data[at:])
        conn.buf = ReceiveBuffer()
        conn.buf += rest


def _refuse_response_head(conn: Any, reason: str) -> CommandGenerator:
    """An upstream's answer head is too large: drop it, close the connection, fail the flow (a 502 to the agent)."""
    conn._aileron_response_timer = None
    stream_id = conn.stream_id
    conn.buf = ReceiveBuffer()
    conn.state = conn.done
    yield commands.CloseConnection(conn.conn)
    yield ReceiveHttp(
        ResponseProtocolError(stream_id, f"the upstream's answer was refused: {reason}", ErrorCode.GENERIC_SERVER_ERROR)
    )


def _upstream_timed_out(conn: Any) -> CommandGenerator:
    conn._aileron_response_timer = None
    stream_id = conn.stream_id
    message = f"{TIMEOUT_MARK}: no response from the upstream within {_limits().response_timeout:g} s"
    conn.state = conn.done
    yield commands.CloseConnection(conn.conn)
    # As when the upstream closes without an answer: the flow gets the error, the agent a problem (a 504).
    yield ReceiveHttp(ResponseProtocolError(stream_id, message, ErrorCode.GENERIC_SERVER_ERROR))


TLS_WRITE = 64 * 1024  # what OpenSSL is given at once; mitmproxy drains its output 64 KiB at a time too


def _wrap_tls_send() -> None:
    """Encrypt what a connection sends in slices of TLS_WRITE bytes, each drained before the next.

    mitmproxy hands OpenSSL a whole request body at once: OpenSSL's output buffer grows to the body's size and
    keeps that size for the connection's life (measured: ~9 MiB per kept-alive upstream connection after one
    9 MiB body, outside Python's heap, never collected).
    """
    layer = tls_layers.TLSLayer
    original = layer.send_data

    def send_data(self: Any, data: bytes) -> CommandGenerator:
        if len(data) <= TLS_WRITE:
            yield from original(self, data)
            return
        view = memoryview(data)
        for start in range(0, len(data), TLS_WRITE):
            yield from original(self, view[start : start + TLS_WRITE])  # type: ignore[arg-type]

    layer.send_data = send_data  # type: ignore[method-assign]
