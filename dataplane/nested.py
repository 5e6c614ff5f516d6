"""Compressed data inside an answer's body: read it for credentials before the agent can.

`exfil.redact_response` decodes the answer's Content-Encoding and redacts what it reads. A body can still carry
compressed bytes of its own (gzip inside gzip, or `application/gzip` with no Content-Encoding): the redactor
sees only the compressed form, and the agent decompresses the echo of a credential by itself. `NestedScan`
sits after the redactor on a credentialed answer: when the body begins with a compression format's signature
(gzip, zlib, zstd, bzip2, xz), it decompresses a shadow copy as the bytes pass, nested formats too (a few levels),
and looks for every form of every credential the session can reach. The compressed bytes are passed on
unchanged, but only once everything they decompress to has been read and holds no part of a credential; a
credential found ends the answer (`NestedCredential`), as does a shadow that cannot be read. A format with no
signature (raw deflate, brotli) cannot be told from other bytes and is not recognized. Imports no Django.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from dataplane.credscan import Matcher, StreamRedactor

MAX_DEPTH = 3  # compressed inside compressed inside compressed: deeper is refused
MAX_SHADOW = 256 * 1024 * 1024  # bytes decompressed for reading, all levels together
PIECE = 1024 * 1024
SNIFF = 6  # bytes needed to recognize every signature below
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


def decoder_for(start: bytes) -> tuple[str, Decoder] | None:
    """The format whose signature `start` begins with, and a decoder for it; None for anything else."""
    if start.startswith(b"\x1f\x8b"):
        return "gzip", zlib_decoder(31)
    if start.startswith(b"\x28\xb5\x2f\xfd"):
        zstd = _zstd()
        return ("zstd", zstd) if zstd is not None else None
    if start.startswith(b"BZh") and start[3:4] in b"123456789":
        return "bzip2", _incremental(bz2.BZ2Decompressor)
    if start.startswith(b"\xfd7zXZ\x00"):
        return "xz", _incremental(lzma.LZMADecompressor)
    if len(start) >= 2 and start[0] & 0x0F == 8 and start[0] >> 4 <= 7 and (start[0] << 8 | start[1]) % 31 == 0:
        return "zlib", zlib_decoder(15)
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
