"""Compressed data inside an answer's body: read it for credentials before the agent can.

`exfil.redact_response` decodes the answer's Content-Encoding and redacts what it reads. A body can still carry
compressed bytes of its own (gzip inside gzip, `application/gzip` with no Content-Encoding, a zip archive): the
redactor sees only the compressed form, and the agent decompresses the echo of a credential by itself.
`NestedScan` sits after the redactor on a credentialed answer: when the body begins with a compression format's
signature (gzip, zstd, bzip2, xz, zip), it decompresses a shadow copy as the bytes pass, nested formats
too (a few levels; each member of a zip archive from its own start, the archive read only if its central
directory lists exactly the members read), and looks for every form of every
credential the session can reach. The compressed bytes are passed on unchanged, but only once everything they
decompress to has been read and holds no part of a credential; a credential found ends the answer
(`NestedCredential`), as does a shadow that cannot be read. Compressed data that does not start the body, or is
itself encoded (base64 of gzip), or a format without a signature that text cannot have (zlib's two bytes, raw
deflate, brotli) is not recognized: an
upstream that hides its own credential on purpose can still hand it over. Imports no Django.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from dataplane.credscan import Matcher, StreamRedactor

MAX_DEPTH = 3  # compressed inside compressed inside compressed: deeper is refused
MAX_SHADOW = 256 * 1024 * 1024  # bytes decompressed for reading, all levels together
PIECE = 1024 * 1024
SNIFF = 10  # bytes needed to recognize every signature below
MAX_HELD = 4 * 1024 * 1024  # compressed bytes held back while a credential's beginning may be pending


class NestedCredential(Exception):
    """Compressed data inside the answer decompresses to a credential (or cannot be read to say it does not)."""


Decoder = Callable[[bytes], Iterator[bytes]]  # b"" flushes


def zlib_decoder(wbits: int) -> Decoder:
    """gzip (31), zlib (15) or either (47), member after member; b"" flushes; raises zlib.error when corrupt."""
    state = {"obj": zlib.decompressobj(wbits=wbits)}

    def decode(chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while True:
            obj: Any = state["obj"]
            data = obj.unconsumed_tail + data
            while data and not obj.eof:
                piece = obj.decompress(data, PIECE)
                data = obj.unconsumed_tail
                if piece:
                    yield piece
                elif not data:
                    break
            if obj.eof and obj.unused_data:  # another member follows (gzip allows several): read it too
                data = obj.unused_data
                state["obj"] = zlib.decompressobj(wbits=wbits)
                continue
            break
        if not chunk:
            tail = state["obj"].flush()
            if tail:
                yield tail

    return decode


def _incremental(make: Callable[[], Any]) -> Decoder:
    state = {"obj": make()}

    def decode(chunk: bytes) -> Iterator[bytes]:
        data = chunk
        while data:
            obj = state["obj"]
            piece = obj.decompress(data, PIECE)
            if piece:
                yield piece
            if obj.eof:
                data = obj.unused_data
                if data:
                    state["obj"] = make()
                continue
            if obj.needs_input:
                break
            data = b""  # more output is waiting inside: drain it with empty input
            while not obj.needs_input and not obj.eof:
                piece = obj.decompress(b"", PIECE)
                if not piece:
                    break
                yield piece

    return decode


def _zstd() -> Decoder | None:
    try:
        from backports import zstd  # what mitmproxy decodes zstd with (the standard library's from 3.14)
    except ImportError:  # pragma: no cover
        return None
    return _incremental(zstd.ZstdDecompressor)


MEMBER_END = object()  # what the zip decoder yields between two members of an archive


MAX_ZIP_DIRECTORY = 4 * 1024 * 1024  # bytes of central directory (and end record) read to check the members


class _Zip:
    """A zip archive read as it streams: each member's content (stored or deflated, sizes in the local header or
    in a data descriptor after a deflated member), MEMBER_END after each; the central directory ends it.

    Readers such as zipfile, unzip and libarchive (seeking) go by the central directory, not the local headers: a
    directory that names a member at an offset where no local header was read, or another method than its local
    header, or that its end record does not describe exactly, would hide a member from this reading (an outside
    attack did both). The archive is read only if its directory lists exactly the members read, in order, with
    their methods; until then (`holding`) nothing after its first member is passed on."""

    def __init__(self) -> None:
        self.buf = b""
        self.state = "header"
        self.remaining = 0
        self.method = 0
        self.descriptor = False
        self.inflater: Any = None
        self.done = False
        self.offset = 0  # of buf[0] in the archive
        self.members: list[tuple[int, int]] = []  # (local header offset, method), as read
        self.directory_at = -1
        self.tail = b""  # the central directory and end record, as they arrive
        self.checked = False

    @property
    def holding(self) -> bool:
        return bool(self.members) and not self.checked

    def _consume(self, count: int) -> bytes:
        taken, self.buf = self.buf[:count], self.buf[count:]
        self.offset += len(taken)
        return taken

    def __call__(self, chunk: bytes) -> Iterator[Any]:
        if self.done:
            self.tail += chunk
            if len(self.tail) > MAX_ZIP_DIRECTORY:
                raise ValueError("the zip archive's central directory is too large to check")
            if not chunk:
                self._check_directory()
            return
        yield from self._members(chunk)
        if self.done:
            self.tail, self.buf = self.buf, b""
            if not chunk:
                self._check_directory()

    def _check_directory(self) -> None:
        listed: list[tuple[int, int]] = []
        at = 0
        tail = self.tail
        while tail[at : at + 4] == b"PK\x01\x02":
            if len(tail) < at + 46:
                raise ValueError("the zip archive's central directory is cut short")
            method, name_length, extra_length, comment_length, offset = struct.unpack(
                "<10xH16xHHH8xI", tail[at : at + 46]
            )
            listed.append((offset, method))
            at += 46 + name_length + extra_length + comment_length
        if tail[at : at + 4] != b"PK\x05\x06" or len(tail) < at + 22:
            raise ValueError("the zip archive's central directory is not followed by its end record (or is zip64)")
        disk, directory_disk, here, entries, size, start, comment_length = struct.unpack(
            "<4xHHHHIIH", tail[at : at + 22]
        )
        if (
            disk != 0
            or directory_disk != 0
            or here != entries
            or entries != len(listed)
            or size != at
            or start != self.directory_at
            or len(tail) != at + 22 + comment_length
        ):
            raise ValueError("the zip archive's end record does not describe its central directory")
        if listed != self.members:
            raise ValueError("the zip archive's central directory lists other members than its local headers")
        self.checked = True

    def _members(self, chunk: bytes) -> Iterator[Any]:
        self.buf += chunk
        while not self.done:
            if self.state == "header":
                if len(self.buf) < 30:
                    if self.buf[:4] in (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06"):
                        self.done, self.directory_at = True, self.offset
                    break
                signature = self.buf[:4]
                if signature in (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06"):
                    self.done, self.directory_at = True, self.offset  # the central directory: members all read
                    break
                if signature != b"PK\x03\x04":
                    raise ValueError("a zip member does not start with a local header")
                flags, method, size, name_length, extra_length = struct.unpack("<2xHH8xI4xHH", self.buf[4:30])
                end = 30 + name_length + extra_length
                if len(self.buf) < end:
                    break
                if size == 0xFFFFFFFF:
                    size = _zip64_size(self.buf[30 + name_length : end])
                self.members.append((self.offset, method))
                self._consume(end)
                if method not in (0, 8):
                    raise ValueError(f"zip compression method {method}")
                self.descriptor = bool(flags & 0x08)
                if method == 0 and self.descriptor:
                    raise ValueError("a stored zip member of unknown size")
                self.method, self.remaining = method, size
                self.inflater = zlib.decompressobj(-15) if method == 8 else None
                self.state = "data"
            elif self.state == "data":
                if self.method == 8 and self.descriptor:  # a deflate stream of unknown length: to its end
                    yield from self._inflate(self.buf)
                    if not self.inflater.eof:
                        self._consume(len(self.buf))
                        break
                    self._consume(len(self.buf) - len(self.inflater.unused_data))
                    self.state = "descriptor"
                    yield MEMBER_END
                    continue
                take = self._consume(self.remaining)
                self.remaining -= len(take)
                if self.method == 8:
                    yield from self._inflate(take)
                elif take:
                    yield take
                if self.remaining:
                    break
                self.state = "descriptor" if self.descriptor else "header"
                yield MEMBER_END
            else:  # a data descriptor: its signature is optional
                need = 16 if self.buf[:4] == b"PK\x07\x08" else 12
                if len(self.buf) < need:
                    break
                self._consume(need)
                self.state = "header"
        if not chunk and not self.done and (self.state != "header" or self.buf):
            raise ValueError("the zip archive ends inside a member")

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while data and not self.inflater.eof:
            piece = self.inflater.decompress(data, PIECE)
            data = self.inflater.unconsumed_tail
            if piece:
                yield piece
            elif not data:
                break


def _zip64_size(extra: bytes) -> int:
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[at : at + 4])
        if tag == 0x0001 and length >= 16:
            return int(struct.unpack("<Q", extra[at + 12 : at + 20])[0])  # after the uncompressed size
        at += 4 + length
    raise ValueError("a zip64 member without its sizes")


def decoder_for(start: bytes) -> tuple[str, Decoder] | None:
    """The format whose signature `start` begins with, and a decoder for it; None for anything else."""
    if start.startswith(b"PK\x03\x04"):
        return "zip", _Zip()
    if start.startswith(b"\x1f\x8b"):
        return "gzip", zlib_decoder(31)
    if start.startswith(b"\x28\xb5\x2f\xfd"):
        zstd = _zstd()
        return ("zstd", zstd) if zstd is not None else None
    if start.startswith(b"BZh") and start[3:4] in b"123456789" and start[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bzip2", _incremental(bz2.BZ2Decompressor)
    if start.startswith(b"\xfd7zXZ\x00"):
        return "xz", _incremental(lzma.LZMADecompressor)
    # zlib's two-byte header is not sniffed: one text in about 500 starts like one ("80…", "x^…")
    return None


class _Level:
    """One compressed layer: decodes what it is given and reads the result (and layers inside it)."""

    def __init__(self, matcher: Matcher, depth: int, budget: list[int]) -> None:
        self.matcher = matcher
        self.depth = depth
        self.budget = budget
        self.head = b""
        self.decoder: Decoder | None = None
        self.format = ""
        self.plain = False  # not compressed: read as it is
        self.reader = StreamRedactor(matcher)
        self.inner: _Level | None = None

    @property
    def holding(self) -> bool:
        """Whether a part of what was read may still begin a credential (or the signature is not known yet)."""
        if not self.plain and self.decoder is None:
            return bool(self.head)
        if self.plain:
            return bool(self.reader.carry)
        if getattr(self.decoder, "holding", False):
            return True  # an archive whose directory is not checked yet
        return self.inner is not None and self.inner.holding

    def feed(self, data: bytes) -> None:
        """Read `data` (b"": the end); raises NestedCredential on a credential or an unreadable layer."""
        if not self.plain and self.decoder is None:
            self.head += data
            if len(self.head) < SNIFF and data:
                return
            found = decoder_for(self.head)
            data, self.head = self.head, b""
            if found is None:
                self.plain = True
            else:
                if self.depth >= MAX_DEPTH:
                    raise NestedCredential(f"compressed data nested more than {MAX_DEPTH} levels deep")
                self.format, self.decoder = found
                self.inner = _Level(self.matcher, self.depth + 1, self.budget)
        if self.plain:
            self._read(data)
            return
        assert self.decoder is not None and self.inner is not None  # noqa: S101
        try:
            for piece in self.decoder(data):
                if piece is MEMBER_END:  # the next member of an archive is read from its own start
                    self.inner.feed(b"")
                    self.inner = _Level(self.matcher, self.depth + 1, self.budget)
                    continue
                self.budget[0] -= len(piece)
                if self.budget[0] < 0:
                    raise NestedCredential(
                        f"compressed data inside the answer decompresses to more than {MAX_SHADOW} bytes"
                    )
                self.inner.feed(piece)
        except NestedCredential:
            raise
        except Exception as exc:  # zlib.error, OSError, EOFError, LZMAError, ZstdError: unreadable is refused
            raise NestedCredential(f"{self.format} data inside the answer cannot be read ({exc})") from None
        if not data:
            self.inner.feed(b"")

    def _read(self, data: bytes) -> None:
        if self.depth == 0:
            return  # the answer itself: the redactor before this reads it
        before = self.reader.count
        self.reader(data)
        if self.reader.count > before:
            raise NestedCredential(f"a credential inside {self.depth}-level compressed data in the answer")


class NestedScan:
    """A `stream` stage (chunk in, chunks out) for the body the agent gets: passes every chunk on unchanged once
    what it decompresses to has been read (see the module); raises NestedCredential to end the answer."""

    def __init__(self, matcher: Matcher) -> None:
        self.top = _Level(matcher, 0, [MAX_SHADOW])
        self.queue: list[bytes] = []
        self.queued = 0

    def __call__(self, chunk: bytes) -> list[bytes]:
        self.top.feed(chunk)
        if chunk:
            self.queue.append(chunk)
            self.queued += len(chunk)
            if self.top.holding:
                # What it decompresses to may still begin a credential: hold it, within MAX_HELD bytes (a
                # credential is far shorter than what that decompresses to, but for a crafted stream).
                out = []
                while self.queued > MAX_HELD and len(self.queue) > 1:
                    out.append(self.queue.pop(0))
                    self.queued -= len(out[-1])
                return out
        out, self.queue, self.queued = self.queue, [], 0
        return out
