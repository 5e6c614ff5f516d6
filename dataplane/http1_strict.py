"""Where mitmproxy's HTTP/1 layer answers on its own, make it strict and make it speak RFC 9457.

mitmproxy 12 reads chunked request bodies with h11's lenient ChunkedReader (up to 20 hex digits of chunk
size, any bytes after ";", trailer lines ending in a bare LF) and answers what it cannot parse with an HTML
page of its own, before any addon hook runs. `install()` changes both, once per process:

- the client side (`Http1Server`) reads chunked bodies with `framing.StrictChunkedReader`; when it refuses a
  body the agent gets a 400 problem before the connection closes (unless a response already started), and
  the upstream connection is closed before the body's last chunk;
- `make_error_response`, mitmproxy's one way to answer a protocol error (request line or header syntax,
  its own framing validation, a failed upstream connection), builds a problem+json answer with a stable type
  instead of HTML, and never quotes the bytes it could not parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from typing import Any

import h11
from h11._readers import ChunkedReader
from mitmproxy import http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1

from dataplane import problems
from dataplane.framing import BODY_ERROR, StrictChunkedReader
from dataplane.limits import TIMEOUT_MARK

_INSTALLED = "_aileron_strict"


def install() -> None:
    """Patch mitmproxy's HTTP/1 server side (idempotent)."""
    server: Any = _http1.Http1Server
    if getattr(server.read_body, _INSTALLED, False):
        return
    original = server.read_body

    def read_body(self: Any, event: events.Event) -> Generator[commands.Command, Any, None]:
        if type(self.body_reader) is ChunkedReader:
            self.body_reader = StrictChunkedReader()
        reader = self.body_reader
        for command in original(self, event):
            if (
                isinstance(command, commands.CloseConnection)
                and isinstance(reader, StrictChunkedReader)
                and reader.error is not None
                and not reader.answered
                and self.response is None
            ):
                reader.answered = True  # the first failure answers; the close that follows adds nothing
                yield commands.SendData(self.conn, problem_bytes(400, BODY_ERROR + reader.error))
            yield command

    setattr(read_body, _INSTALLED, True)
    server.read_body = read_body
    _http1.make_error_response = problem_bytes
    _drop_response_trailers()


class _WithoutTrailers:
    """A chunked body reader whose end carries no trailer fields: mitmproxy's HTTP/1 layer does not implement
    trailers and would crash the connection on them (the agent getting headers and no body)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dropped = 0

    def __call__(self, buf: Any) -> Any:
        event = self.inner(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            self.dropped = len(event.headers)
            return h11.EndOfMessage()
        return event

    def read_eof(self) -> Any:
        return self.inner.read_eof()


def _drop_response_trailers() -> None:
    """An upstream's chunked answer may end with trailer fields: they are dropped (after the body, nothing the
    agent needs; a credential in them can no longer reach it either), and the answer completes."""
    client: Any = _http1.Http1Client
    original = client.read_body

    def read_body(self: Any, event: events.Event) -> Generator[commands.Command, Any, None]:
        if type(self.body_reader) is ChunkedReader:
            self.body_reader = _WithoutTrailers(self.body_reader)
        yield from original(self, event)

    client.read_body = read_body


def problem_bytes(status_code: int, message: str = "") -> bytes:
    """mitmproxy's protocol-error answer as RFC 9457 problem+json (status kept), closing the connection."""
    kind = {
        400: problems.REQUEST_SMUGGLING,
        413: problems.BODY_TOO_LARGE,
        502: problems.UPSTREAM_UNAVAILABLE,
    }.get(status_code, problems.PROXY_ERROR)
    if TIMEOUT_MARK in message:  # an upstream connect or answer that dataplane.limits timed out
        kind, status_code = problems.UPSTREAM_TIMEOUT, problems.UPSTREAM_TIMEOUT.status
    body = {
        "type": f"urn:aileron:problem:{kind.slug}",
        "title": kind.title,
        "status": status_code,
        "detail": _safe_detail(message),
        "next": kind.next,
    }
    response = http.Response.make(
        status_code,
        json.dumps(body).encode(),
        {
            "Server": f"aileron (mitmproxy {version.VERSION})",
            "Content-Type": problems.PROBLEM_CONTENT_TYPE,
            "Cache-Control": "no-store",
            "Connection": "close",
        },
    )
    raw: bytes = http1.assemble_response(response)  # type: ignore[no-untyped-call]
    return raw


_QUOTED_FROM = re.compile(r"""b?['"`\[{(<]""")  # where a message starts quoting what it could not parse
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_+/=.~-]{16,}")  # a run long enough to be a credential


def _safe_detail(message: str) -> str:
    """The reason without the bytes that caused it: they may hold a credential (an upstream that puts the one
    it was sent into a header it breaks). Whatever the message quotes, in any quoting, is cut; what is left may
    not hold a long token-like run either."""
    head = _QUOTED_FROM.split(message, maxsplit=1)[0]
    head = _TOKEN_LIKE.sub("…", head).rstrip(" :,")
    return (head or "the message could not be parsed")[:300]
