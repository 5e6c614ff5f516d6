"""A compressed answer is decoded for redaction in bounded pieces, and cut off past a total bound (bombs)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
from mitmproxy.test import tflow

from dataplane import exfil
from dataplane.credscan import MARK, matcher_for

SECRET = b"ghp_Zq8xYkL0pQrsT9vWuN2mB7cD"
MIB = 1024 * 1024


def streamed(encoding: str, body: bytes, *, limit: int, chunk: int = 4096) -> Callable[[], list[bytes]]:
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.headers["content-encoding"] = encoding
    exfil.redact_response(flow, matcher_for({SECRET: "c1"}), None, max_decoded=limit)
    stream = flow.response.stream
    assert callable(stream)

    def run() -> list[bytes]:
        out: list[bytes] = []
        for at in range(0, len(body), chunk):
            pieces = stream(body[at : at + chunk])
            out.extend([pieces] if isinstance(pieces, bytes) else list(pieces))
        end = stream(b"")
        out.extend([end] if isinstance(end, bytes) else list(end))
        return out

    return run


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", deflate), ("br", brotli.compress)])
def test_a_body_within_the_bound_is_decoded_and_redacted(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    plain = b"x" * (3 * MIB) + SECRET + b"y" * 1000
    out = streamed(encoding, compress(plain), limit=4 * MIB)()
    assert b"".join(out) == b"x" * (3 * MIB) + MARK + b"y" * 1000
    assert max(len(piece) for piece in out) <= 3 * exfil.DECODE_PIECE


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", deflate), ("br", brotli.compress)])
def test_a_bomb_is_cut_off_with_bounded_memory(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    bomb = compress(b"\0" * (96 * MIB))
    assert len(bomb) < 200_000
    run = streamed(encoding, bomb, limit=8 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(exfil.DecodedTooLarge, match="more than 8388608 bytes"):
            run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * MIB


def test_the_default_bound() -> None:
    assert exfil.MAX_DECODED_RESPONSE == 64 * MIB
