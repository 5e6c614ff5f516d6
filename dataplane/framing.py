"""Request framing: strict HTTP/1.1 for every request the proxy forwards, and the headers that never leave a hop.

The proxy speaks HTTP/1.1 to agents and to upstreams. Whatever an agent sends, the upstream must read exactly
the message the proxy read, and nothing meant for the proxy (its session token, connection options) may reach
a third party. So, for every request, credentialed or not:

- the request line is `METHOD SP origin-form SP HTTP/1.1` (or HTTP/1.0): a token method, a path of visible
  ASCII starting with "/", never absolute-form inside a tunnel (a server must route by an absolute URI over
  Host, RFC 9112 §3.2.2, so the two could name different hosts) and never "*" or HTTP/2's preface;
- every field name is a token (no space before the colon, RFC 9112 §5.1) and no field value holds a control
  character (NUL, CR, LF: what obs-fold continuation lines and header injection leave behind);
- exactly one Host; at most one Content-Length, plain decimal; at most one Transfer-Encoding, exactly
  `chunked` (any case; forwarded as `chunked`), only in HTTP/1.1 and never with Content-Length
  (RFC 9112 §6.1–6.3);
- hop-by-hop fields are removed (RFC 9110 §7.6.1): Connection, Proxy-Connection, Keep-Alive, TE, Upgrade,
  HTTP2-Settings, Proxy-Authorization, Proxy-Authenticate, and every field the Connection header lists; a
  Connection header that lists Host, Content-Length or Transfer-Encoding asks to change the framing and is
  refused. Two options survive: `close`, and a WebSocket upgrade (a GET with `Upgrade: websocket`,
  `Connection: upgrade`, a Sec-WebSocket-Key and version 13: what RFC 6455 clients send), which is
  forwarded as `Upgrade: websocket` with `Connection: Upgrade`. Any other upgrade (h2c, TLS) is dropped.

Responses lose the same hop-by-hop fields; a 101 is only accepted as the answer to a WebSocket upgrade.

Chunked request bodies are read by `StrictChunkedReader` (RFC 9112 §7.1, no leniency): CRLF only, a chunk
size of at most 16 hex digits and 4 GiB, well-formed extensions, no trailer fields, nothing after the last
chunk. The proxy re-frames every body it forwards, so an upstream never parses the agent's framing; a body
that turns out malformed is never completed toward the upstream (its last chunk is never sent).

Every check is one pass over the fields: the cost grows linearly with the header count. For a credentialed
request the body length is also bounded before it is read, and method-override headers are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

import h11
from h11._receivebuffer import ReceiveBuffer
from mitmproxy import http

from dataplane import problems
from dataplane.problems import Refusal

METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


@dataclass(frozen=True, slots=True)
class Framing:
    """What the headers say about the request: the names that remain and how its body is framed."""

    names: set[bytes]  # lower-cased, hop-by-hop ones removed
    content_length: int | None
    chunked: bool
    websocket: bool  # a WebSocket upgrade: its 101 answer may switch protocols

    @property
    def length(self) -> int:
        return self.content_length or 0


def read_framing(request: http.Request) -> Framing:
    """The request's framing, its hop-by-hop fields removed; a Refusal unless it is strict HTTP/1.1."""
    try:
        found, fields = screen_request(
            method=request.data.method,
            target=request.data.path,
            version=request.http_version,
            authority=request.data.authority,
            fields=request.headers.fields,
        )
    except Malformed as exc:
        raise Refusal(problems.REQUEST_SMUGGLING, str(exc)) from None
    if fields is not None:
        request.headers.fields = fields
    return found


def refuse_method_override(framing: Framing, connector: str) -> None:
    """A connector's action is what the method says: headers that would change it are refused."""
    for override in METHOD_OVERRIDE_HEADERS:
        if override.encode() in framing.names:
            raise Refusal(problems.METHOD_OVERRIDE, f"the {override} header is refused on {connector}'s host")


def bounded_length(framing: Framing, max_body: int) -> int:
    """The body length of a credentialed request, known before reading it and within `max_body`."""
    if framing.chunked:
        raise Refusal(problems.LENGTH_REQUIRED, "a chunked body cannot be bounded before it is read")
    length = framing.length
    if length > max_body:
        raise Refusal(
            problems.BODY_TOO_LARGE,
            f"the body is {length} bytes; at most {max_body} are read",
            {"limit": max_body},
        )
    return length


MAX_CHUNK_SIZE = 2**32 - 1  # no real client sends a 4 GiB chunk; a bigger size is an overflow attempt
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # HTAB is the one control character a value may hold
_ORIGIN_FORM = re.compile(rb"/[\x21-\x22\x24-\x7e]*")  # visible ASCII without "#" (no fragment on the wire)
_CONTENT_LENGTH = re.compile(rb"0|[1-9][0-9]{0,17}")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN_TEXT = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*"
    + _TOKEN_TEXT
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_TEXT
    + rb"|"
    + _QUOTED
    + rb"))?)*)\r\n"
)

# Fields that end at the next hop (RFC 9110 §7.6.1, RFC 9113 §3.2.1 for HTTP2-Settings); Transfer-Encoding is
# hop-by-hop too, but the proxy re-frames the body itself and keeps the field consistent with that framing.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"http2-settings",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# A Connection header may not make the proxy drop the fields that frame the message or name its destination.
FRAMING_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding"})
VERSIONS = ("HTTP/1.1", "HTTP/1.0")
BODY_ERROR = "malformed chunked body: "  # how a refused body shows in mitmproxy's flow error


class Malformed(ValueError):
    """The message cannot be forwarded as it is; the text says why (safe to show: it quotes no value)."""


def screen_request(
    *, method: bytes, target: bytes, version: str, authority: bytes, fields: tuple[tuple[bytes, bytes], ...]
) -> tuple[Framing, tuple[tuple[bytes, bytes], ...] | None]:
    """Check a request head; the framing it declares and its fields without hop-by-hop ones (None: unchanged).

    Raises Malformed for anything a strict HTTP/1.1 server would refuse with 400.
    """
    if not _TOKEN.fullmatch(method):
        raise Malformed("the method is not a token")
    if version not in VERSIONS:
        raise Malformed(f"{version[:16]!r} is not HTTP/1.1")
    if authority:
        raise Malformed("absolute-form request targets are refused inside a tunnel; send the path only")
    if not _ORIGIN_FORM.fullmatch(target):
        raise Malformed("the request target is not a path of visible ASCII characters")
    names: set[bytes] = set()
    hosts = 0
    lengths: list[bytes] = []
    codings: list[bytes] = []
    upgrades: list[bytes] = []
    connection: list[bytes] = []
    ws_key = ws_version = False
    hop = False
    for name, value in fields:
        if not _TOKEN.fullmatch(name):
            raise Malformed("a field name is not a token (a space before the colon, or an empty name)")
        if _CONTROL.search(value):
            raise Malformed(f"the {_shown(name)} field holds a control character (CR, LF, NUL or a folded line)")
        lowered = name.lower()
        names.add(lowered)
        if lowered in HOP_BY_HOP:
            hop = True
            if lowered == b"connection":
                connection.append(value)
            elif lowered == b"upgrade":
                upgrades.append(value)
        elif lowered == b"host":
            hosts += 1
        elif lowered == b"content-length":
            lengths.append(value.strip())
        elif lowered == b"transfer-encoding":
            codings.append(value)
        elif lowered == b"sec-websocket-key":
            ws_key = True
        elif lowered == b"sec-websocket-version":
            ws_version = value.strip() == b"13"
    if hosts != 1:
        raise Malformed("the request must carry exactly one Host field" if hosts else "the request has no Host")
    content_length: int | None = None
    if lengths:
        if len(lengths) > 1:
            raise Malformed("the request repeats Content-Length")
        if not _CONTENT_LENGTH.fullmatch(lengths[0]):
            raise Malformed("the Content-Length is not a plain decimal number")
        content_length = int(lengths[0])
    chunked = False
    if codings:
        if lengths:
            raise Malformed("the request has both Content-Length and Transfer-Encoding")
        if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
            raise Malformed("Transfer-Encoding must be exactly one `chunked` (no other codings)")
        if version != "HTTP/1.1":
            raise Malformed("Transfer-Encoding needs HTTP/1.1")
        chunked = True
    tokens = _connection_tokens(connection)
    websocket = (
        method == b"GET"
        and version == "HTTP/1.1"
        and len(upgrades) == 1
        and upgrades[0].strip().lower() == b"websocket"
        and b"upgrade" in tokens
        and ws_key
        and ws_version
    )
    listed = tokens - {b"close", b"upgrade", b"keep-alive"}
    if listed & FRAMING_FIELDS:
        raise Malformed("the Connection field lists a field that frames the message (Host, Content-Length, ...)")
    normalize = chunked and codings[0] != b"chunked"
    if not (hop or listed or normalize):
        return Framing(names, content_length, chunked, False), None
    kept: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in listed:
            names.discard(lowered)
            continue
        kept.append((name, b"chunked") if lowered == b"transfer-encoding" else (name, value))
    if websocket:
        kept += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
        names.update((b"upgrade", b"connection"))
    elif b"close" in tokens:
        kept.append((b"Connection", b"close"))
        names.add(b"connection")
    return Framing(names, content_length, chunked, websocket), tuple(kept)


_UNSAFE_IN_FIELD = re.compile(rb"[\r\n\x00]")


def screen_response(
    *, status: int, fields: tuple[tuple[bytes, bytes], ...], websocket: bool
) -> tuple[tuple[bytes, bytes], ...] | None:
    """A response's fields without hop-by-hop ones (None: unchanged); Malformed for a 101 nobody asked for.

    `websocket`: the request was a WebSocket upgrade (its 101 keeps `Upgrade: websocket`).
    """
    if _UNSAFE_IN_FIELD.search(b":".join(part for field in fields for part in field)):  # one search for all
        # an obs-fold (kept by the parser as CR LF SP) or a bare CR, LF or NUL: a value split so that no
        # redactor sees it whole, or a field smuggled into the agent's head; the answer is not passed on
        raise Malformed("the upstream's answer has a header folded over lines or holding CR, LF or NUL")
    connection = [value for name, value in fields if name.lower() == b"connection"]
    tokens = _connection_tokens(connection) if connection else set()
    upgrading = status == 101
    if upgrading:
        upgrades = [value.strip().lower() for name, value in fields if name.lower() == b"upgrade"]
        if not websocket or upgrades != [b"websocket"]:
            raise Malformed("the upstream switched protocols without a WebSocket upgrade being asked for")
    listed = tokens - {b"close", b"upgrade", b"keep-alive"} - FRAMING_FIELDS
    kept: list[tuple[bytes, bytes]] = []
    changed = False
    for name, value in fields:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in listed:
            changed = True
            continue
        kept.append((name, value))
    if not changed:
        return None
    if upgrading:
        kept += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    elif b"close" in tokens:
        kept.append((b"Connection", b"close"))  # the upstream closes this connection: mitmproxy must know
    return tuple(kept)


def _connection_tokens(values: list[bytes]) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in values:
        for item in value.split(b","):
            token = item.strip().lower()
            if token:
                if not _TOKEN.fullmatch(token):
                    raise Malformed("the Connection field holds something other than field names")
                tokens.add(token)
    return tokens


def _shown(name: bytes) -> str:
    return name[:64].decode("ascii", "replace")


class StrictChunkedReader:
    """h11's body-reader interface over a chunked body, refusing anything RFC 9112 §7.1 does not allow.

    Chunk data is handed on as it arrives (the proxy streams uncredentialed bodies); the end of the message is
    only reported after the last chunk, an empty trailer section and nothing else, so an upstream is never
    handed a complete message that was malformed.
    """

    def __init__(self) -> None:
        self._remaining = 0  # bytes left in the current chunk
        self._expect = b""  # the CRLF still owed after a chunk's data, or after the last chunk
        self._last = False  # the zero-size chunk was read
        self.error: str | None = None  # why the body was refused
        self.answered = False  # the agent was told (by whoever reads with this reader)

    def __call__(self, buf: ReceiveBuffer) -> h11.Data | h11.EndOfMessage | None:
        while True:
            if self._expect:
                if len(buf) == 0:
                    return None
                got = bytes(buf.maybe_extract_at_most(len(self._expect)) or b"")
                if got != self._expect[: len(got)]:
                    if self._last and got[:1] != b"\n":
                        self._fail("trailer fields are not forwarded; end the body with 0 CRLF CRLF")
                    self._fail("a chunk does not end with CRLF (bare LF, or more data than its size)")
                self._expect = self._expect[len(got) :]
                if self._expect:
                    return None
                if self._last:
                    if len(buf):
                        self._fail("data follows the last chunk")
                    return h11.EndOfMessage()
                continue
            if self._remaining == 0:
                line = buf.maybe_extract_next_line()
                if line is None:
                    if len(buf) > MAX_CHUNK_LINE:
                        self._fail("the chunk-size line is too long or does not end with CRLF")
                    return None
                match = _CHUNK_LINE.fullmatch(line)
                if match is None:
                    self._fail("the chunk-size line is malformed (hex digits, optional extensions, CRLF)")
                size = int(match.group(1), 16)
                if size > MAX_CHUNK_SIZE:
                    self._fail(f"a chunk size over {MAX_CHUNK_SIZE} bytes is refused")
                if size == 0:
                    self._last = True
                    self._expect = b"\r\n"
                    continue
                self._remaining = size
            data = buf.maybe_extract_at_most(self._remaining)
            if data is None:
                return None
            self._remaining -= len(data)
            if self._remaining == 0:
                self._expect = b"\r\n"
            return h11.Data(data=bytes(data))

    def read_eof(self) -> NoReturn:
        self._fail("the connection closed before the last chunk")

    def _fail(self, why: str) -> NoReturn:
        self.error = why
        raise h11.RemoteProtocolError(BODY_ERROR + why, error_status_hint=400)
