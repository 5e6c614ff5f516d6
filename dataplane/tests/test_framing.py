"""dataplane.framing: strict request heads, hop-by-hop fields, and the strict chunked-body reader."""

from __future__ import annotations

import time

import h11
import pytest
from h11._receivebuffer import ReceiveBuffer

from dataplane.framing import Framing, Malformed, StrictChunkedReader, screen_request, screen_response

Fields = tuple[tuple[bytes, bytes], ...]


def screen(
    fields: Fields, *, method: bytes = b"GET", target: bytes = b"/x", version: str = "HTTP/1.1"
) -> tuple[Framing, Fields | None]:
    return screen_request(method=method, target=target, version=version, authority=b"", fields=fields)


def test_a_plain_request_passes_unchanged() -> None:
    found, fields = screen(((b"Host", b"a.example"), (b"Content-Length", b"5"), (b"Accept", b"*/*")))
    assert fields is None
    assert found.content_length == 5 and not found.chunked and not found.websocket
    assert found.names == {b"host", b"content-length", b"accept"}


def test_hop_by_hop_and_connection_listed_fields_are_removed_and_close_is_kept() -> None:
    found, fields = screen(
        (
            (b"Host", b"a.example"),
            (b"Proxy-Authorization", b"Bearer ail_ses_x"),
            (b"Connection", b"close, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"300"),
            (b"TE", b"trailers"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Upgrade", b"h2c"),
            (b"HTTP2-Settings", b"AAMA"),
            (b"X-Kept", b"yes"),
        )
    )
    assert fields == ((b"Host", b"a.example"), (b"X-Kept", b"yes"), (b"Connection", b"close"))
    assert found.names == {b"host", b"x-kept", b"connection"}


def test_a_websocket_upgrade_keeps_its_upgrade() -> None:
    found, fields = screen(
        (
            (b"Host", b"a.example"),
            (b"Upgrade", b"WebSocket"),
            (b"Connection", b"keep-alive, Upgrade"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Version", b"13"),
        )
    )
    assert found.websocket
    assert fields is not None and fields[-2:] == ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"))


def test_an_upgrade_on_a_post_is_no_websocket_and_is_dropped() -> None:
    found, fields = screen(
        ((b"Host", b"a.example"), (b"Upgrade", b"websocket"), (b"Connection", b"upgrade")), method=b"POST"
    )
    assert not found.websocket and fields == ((b"Host", b"a.example"),)


def test_chunked_in_any_case_is_forwarded_as_chunked() -> None:
    found, fields = screen(((b"Host", b"a.example"), (b"Transfer-Encoding", b" Chunked")), method=b"POST")
    assert found.chunked and fields == ((b"Host", b"a.example"), (b"Transfer-Encoding", b"chunked"))


@pytest.mark.parametrize(
    "fields",
    [
        ((b"Host", b"a"), (b"Host", b"b")),
        (),
        ((b"Host", b"a"), (b"X-A", b"1\r\n 2")),
        ((b"Host", b"a"), (b"X-A", b"a\x00b")),
        ((b"Host", b"a"), (b"X-A ", b"1")),
        ((b"Host", b"a"), (b"", b"1")),
        ((b"Host", b"a"), (b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")),
        ((b"Host", b"a"), (b"Content-Length", b"1"), (b"Content-Length", b"1")),
        ((b"Host", b"a"), (b"Content-Length", b"01")),
        ((b"Host", b"a"), (b"Content-Length", b"-1")),
        ((b"Host", b"a"), (b"Content-Length", b"9" * 19)),
        ((b"Host", b"a"), (b"Transfer-Encoding", b"gzip, chunked")),
        ((b"Host", b"a"), (b"Transfer-Encoding", b"chunked, identity")),
        ((b"Host", b"a"), (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")),
        ((b"Host", b"a"), (b"Connection", b"Content-Length"), (b"Content-Length", b"1")),
        ((b"Host", b"a"), (b"Connection", b"host")),
        ((b"Host", b"a"), (b"Connection", b"a b")),
    ],
)
def test_heads_a_strict_server_refuses_are_malformed(fields: Fields) -> None:
    with pytest.raises(Malformed):
        screen(fields)


@pytest.mark.parametrize(
    ("method", "target", "version", "authority"),
    [
        (b"GET", b"/x", "HTTP/2.0", b""),
        (b"GET", b"/x", "HTTP/0.9", b""),
        (b"PRI", b"*", "HTTP/2.0", b""),
        (b"OPTIONS", b"*", "HTTP/1.1", b""),
        (b"GET", b"/x", "HTTP/1.1", b"evil.example"),
        (b"GET", b"/x#frag", "HTTP/1.1", b""),
        (b"GET", b"/x\x7f", "HTTP/1.1", b""),
        (b"G(T", b"/x", "HTTP/1.1", b""),
    ],
)
def test_request_lines_a_strict_server_refuses_are_malformed(
    method: bytes, target: bytes, version: str, authority: bytes
) -> None:
    with pytest.raises(Malformed):
        screen_request(method=method, target=target, version=version, authority=authority, fields=((b"Host", b"a"),))


def test_chunked_needs_http_1_1() -> None:
    with pytest.raises(Malformed):
        screen(((b"Host", b"a"), (b"Transfer-Encoding", b"chunked")), version="HTTP/1.0")


def test_screening_is_linear_in_the_header_count() -> None:
    def cost(count: int) -> float:
        fields = ((b"Host", b"a"), (b"Connection", b"close, x-0"), *((b"X-%d" % i, b"v" * 90) for i in range(count)))
        started = time.perf_counter()
        screen(fields)
        return time.perf_counter() - started

    small, large = min(cost(5_000) for _ in range(3)), min(cost(50_000) for _ in range(3))
    assert large < small * 40  # ten times the headers: about ten times the time (quadratic would be a hundred)


def test_responses_lose_hop_by_hop_fields_but_keep_their_framing() -> None:
    fields = screen_response(
        status=200,
        fields=(
            (b"Connection", b"X-Up, content-length"),
            (b"X-Up", b"1"),
            (b"Keep-Alive", b"5"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Content-Length", b"2"),
        ),
        websocket=False,
    )
    assert fields == ((b"Content-Length", b"2"),)


def test_a_response_closing_its_connection_still_says_so() -> None:
    fields = screen_response(status=200, fields=((b"Connection", b"close"), (b"Keep-Alive", b"5")), websocket=False)
    assert fields == ((b"Connection", b"close"),)


def test_a_101_is_accepted_only_for_a_websocket_upgrade() -> None:
    upgrade = ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", b"x"))
    assert screen_response(status=101, fields=upgrade, websocket=True) == (
        (b"Sec-WebSocket-Accept", b"x"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
    )
    with pytest.raises(Malformed):
        screen_response(status=101, fields=upgrade, websocket=False)
    with pytest.raises(Malformed):
        screen_response(status=101, fields=((b"Upgrade", b"h2c"),), websocket=True)


def read_all(*pieces: bytes) -> tuple[bytes, bool]:
    """Feed the pieces one by one; the body read and whether the message ended."""
    reader, buf, body = StrictChunkedReader(), ReceiveBuffer(), b""
    for piece in pieces:
        buf += piece
        while (event := reader(buf)) is not None:
            if isinstance(event, h11.EndOfMessage):
                return body, True
            body += event.data
    return body, False


def test_a_well_formed_body_is_read_across_any_split() -> None:
    wire = b'5;name=value;q="a b"\r\nhello\r\n6\r\n world\r\n0\r\n\r\n'
    assert read_all(wire) == (b"hello world", True)
    assert read_all(*(wire[i : i + 1] for i in range(len(wire)))) == (b"hello world", True)


@pytest.mark.parametrize(
    "wire",
    [
        b"5\r\nhello\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"100000000\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
        b'5;a="open\r\nhello\r\n0\r\n\r\n',
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"5" * 5000,
    ],
)
def test_malformed_bodies_are_refused_and_never_end(wire: bytes) -> None:
    with pytest.raises(h11.RemoteProtocolError, match="malformed chunked body"):
        body, ended = read_all(wire)
        assert not ended
        raise AssertionError(f"not refused: read {body!r}")


def test_a_body_cut_short_is_refused_at_eof() -> None:
    reader, buf = StrictChunkedReader(), ReceiveBuffer()
    buf += b"5\r\nhel"
    assert isinstance(reader(buf), h11.Data)
    with pytest.raises(h11.RemoteProtocolError):
        reader.read_eof()


@pytest.mark.parametrize("value", [b"first\r\n second", b"a\rb", b"a\nb", b"a\x00b"])
def test_a_response_header_folded_or_holding_cr_lf_or_nul_is_malformed(value: bytes) -> None:
    with pytest.raises(Malformed):
        screen_response(status=200, fields=((b"X-Fold", value),), websocket=False)
