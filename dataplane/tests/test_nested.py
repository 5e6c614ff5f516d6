"""Compressed data inside an answer is read for credentials before the agent gets it, in every format with a
signature, nested, split into any chunks; everything else passes unchanged."""

from __future__ import annotations

import base64
import bz2
import gzip
import lzma
import os
import zlib
from collections.abc import Callable

import pytest
from backports import zstd

from dataplane.credscan import matcher_for
from dataplane.nested import NestedCredential, NestedScan

SECRET = b"ghp_" + b"A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
MATCHER = matcher_for([SECRET])
FORMATS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zlib": zlib.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstd.compress,
}


def _pass(body: bytes, size: int = 4096) -> bytes:
    scan = NestedScan(MATCHER)
    out = b""
    for start in range(0, len(body), size):
        out += b"".join(scan(body[start : start + size]))
    return out + b"".join(scan(b""))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize(
    "form", [SECRET, base64.b64encode(SECRET), SECRET.hex().encode()], ids=["plain", "base64", "hex"]
)
def test_a_credential_in_compressed_data_ends_the_answer(name: str, form: bytes) -> None:
    body = FORMATS[name](b'{"echo": "' + form + b'"}' + os.urandom(2000).hex().encode())
    with pytest.raises(NestedCredential):
        _pass(body)


@pytest.mark.parametrize("name", FORMATS)
def test_compressed_data_without_a_credential_passes_unchanged(name: str) -> None:
    body = FORMATS[name](os.urandom(20_000).hex().encode())
    assert _pass(body) == body
    assert _pass(body, size=1) == body


def test_gzip_inside_gzip_inside_gzip_is_read_through() -> None:
    body = gzip.compress(gzip.compress(gzip.compress(b"token=" + SECRET)))
    with pytest.raises(NestedCredential):
        _pass(body)


def test_deeper_nesting_is_refused_whatever_it_holds() -> None:
    body = b"harmless"
    for _ in range(4):
        body = gzip.compress(body)
    with pytest.raises(NestedCredential, match="nested more than"):
        _pass(body)


def test_a_credential_in_a_later_gzip_member_is_found() -> None:
    body = gzip.compress(b"first member, nothing here " * 100) + gzip.compress(b"then " + SECRET)
    with pytest.raises(NestedCredential):
        _pass(body)


def test_a_credential_split_across_one_byte_chunks_is_found_and_its_end_never_released() -> None:
    body = gzip.compress(b"x" * 50_000 + SECRET + b"y" * 10)
    scan = NestedScan(MATCHER)
    released = b""
    with pytest.raises(NestedCredential):
        for byte in body:
            released += b"".join(scan(bytes([byte])))
        scan(b"")
    decoder = zlib.decompressobj(wbits=31)
    assert SECRET not in decoder.decompress(released) + decoder.flush()


def test_unreadable_compressed_data_is_refused() -> None:
    body = gzip.compress(b"a" * 10_000)
    corrupt = body[:20] + bytes(b ^ 0xFF for b in body[20:40]) + body[40:]
    with pytest.raises(NestedCredential, match="cannot be read"):
        _pass(corrupt)


def test_an_uncompressed_answer_is_not_held() -> None:
    scan = NestedScan(MATCHER)
    assert scan(b'{"id": 1, "name": "acme"}') == [b'{"id": 1, "name": "acme"}']
    assert scan(b"") == []


def test_text_that_merely_starts_like_a_signature_passes() -> None:
    assert _pass(b"BZh is not bzip2 without its block size digit") == b"BZh is not bzip2 without its block size digit"
