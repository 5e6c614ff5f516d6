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
from typing import Any

import pytest
from backports import zstd

from dataplane.credscan import matcher_for
from dataplane.nested import NestedCredential, NestedScan

SECRET = b"ghp_" + b"A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
MATCHER = matcher_for([SECRET])
FORMATS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
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


def _zip(members: dict[str, bytes], *, method: int, streamed: bool) -> bytes:
    import io
    import zipfile

    class Unseekable(io.RawIOBase):  # zipfile then writes data descriptors, as a streaming server does
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.data += bytes(b)
            return len(b)

    out: Any = Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return bytes(out.data) if streamed else out.getvalue()


@pytest.mark.parametrize(
    ("method", "streamed"),
    [(0, False), (8, False), (8, True)],  # a stored member always has its size before its data
    ids=["stored", "deflated", "deflated-data-descriptor"],
)
def test_a_credential_in_any_member_of_a_zip_archive_ends_the_answer(method: int, streamed: bool) -> None:
    clean = os.urandom(5000).hex().encode()
    members = {"README.md": b"nothing here", "src/config.py": b"TOKEN = '" + SECRET + b"'", "z.bin": clean}
    with pytest.raises(NestedCredential):
        _pass(_zip(members, method=method, streamed=streamed))
    archive = _zip({"a.txt": clean, "b/c.txt": clean[::-1]}, method=method, streamed=streamed)
    assert _pass(archive) == archive
    assert _pass(archive, size=7) == archive


def test_a_gzip_inside_a_zip_member_is_read_too() -> None:
    with pytest.raises(NestedCredential):
        _pass(_zip({"logs.gz": gzip.compress(b"auth: " + SECRET)}, method=8, streamed=False))


@pytest.mark.parametrize("start", [b"80 items", b"x^2 + 1", b"BZh9 is a prefix", b"PK is a name"])
def test_text_that_starts_like_a_weak_signature_is_passed_as_it_is(start: bytes) -> None:
    body = start + b" and more text " * 100
    assert _pass(body) == body and _pass(body, size=1) == body


def test_a_body_of_random_hex_is_never_taken_for_compressed_data() -> None:
    for _ in range(300):
        body = gzip.compress(os.urandom(64).hex().encode())
        assert _pass(body) == body


@pytest.mark.parametrize("streaming", [False, True], ids=["sizes-in-headers", "data-descriptors"])
def test_a_zip_archive_whose_directory_lists_its_members_passes_unchanged(streaming: bool) -> None:
    body = _zip({"a.txt": os.urandom(5000).hex().encode(), "b.json": b'{"ok": true}'}, method=8, streamed=streaming)
    assert _pass(body) == body
    assert _pass(body, size=7) == body


def test_a_zip_whose_directory_names_another_method_than_its_local_header_is_refused() -> None:
    """Outside attack: the local header said stored (its bytes: raw deflate, no credential to this reading), the
    central directory said deflate; zipfile reads the directory and inflates the credential."""
    import struct

    body = bytearray(_zip({"t.txt": b'{"echo": "' + SECRET + b'"}'}, method=8, streamed=False))
    assert body[8:10] == struct.pack("<H", 8)
    body[8:10] = struct.pack("<H", 0)  # the local header: stored
    with pytest.raises(NestedCredential, match="central directory"):
        _pass(bytes(body))


def test_a_zip_member_only_its_directory_names_is_refused() -> None:
    """Outside attack: a stored decoy whose data holds a second, deflated member that only the central directory
    names: read by local headers, the archive held only the decoy."""
    import io
    import zipfile

    hidden = _zip({"t.txt": b'{"echo": "' + SECRET + b'"}'}, method=8, streamed=False)
    hidden_local = hidden[: hidden.index(b"PK\x01\x02")]
    decoy_data = b"pad!" + hidden_local
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("decoy.txt", decoy_data)
        info = archive.infolist()[0]
    first = buf.getvalue()
    local_end = first.index(b"PK\x01\x02")
    directory = first[local_end:]
    # append a directory entry for the hidden member at its offset inside the decoy's data
    hidden_dir = hidden[hidden.index(b"PK\x01\x02") : hidden.index(b"PK\x05\x06")]
    offset = 30 + len(info.filename) + 4
    hidden_dir = hidden_dir[:42] + offset.to_bytes(4, "little") + hidden_dir[46:]
    first_dir = directory[: directory.index(b"PK\x05\x06")]
    end = bytearray(directory[directory.index(b"PK\x05\x06") :])
    end[8:10] = (2).to_bytes(2, "little")
    end[10:12] = (2).to_bytes(2, "little")
    end[12:16] = (len(first_dir) + len(hidden_dir)).to_bytes(4, "little")
    body = first[:local_end] + first_dir + hidden_dir + bytes(end)
    assert zipfile.ZipFile(io.BytesIO(body)).read("t.txt") == b'{"echo": "' + SECRET + b'"}'  # what zipfile reads
    with pytest.raises(NestedCredential, match="central directory"):
        _pass(body)


def test_nothing_after_a_zips_first_member_passes_before_its_directory_is_checked() -> None:
    body = _zip({"a.txt": os.urandom(3000).hex().encode(), "b.txt": b"second"}, method=8, streamed=False)
    scan = NestedScan(MATCHER)
    passed = b"".join(scan(body[:-1]))
    assert len(passed) < body.index(b"PK\x01\x02")  # the directory's bytes are held
    assert passed + b"".join(scan(body[-1:])) + b"".join(scan(b"")) == body
