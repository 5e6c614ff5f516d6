"""Finding a credential in any form it may be wrapped in: its encoded forms, one matcher, redactors and a scanner.

An upstream that reflects a credential, or an agent that obtained one, rarely shows it plain. The forms searched
for each credential (bytes) are:

- plain; hex (lower and upper case);
- base64, standard and URL-safe, at every alignment: a token embedded after 0, 1 or 2 other bytes (HTTP Basic's
  `user:token` and `token:` included) always encodes to one of three "cores", the characters whose six bits come
  from the token alone, whatever surrounds it; padding lies outside the cores, so padded and unpadded match;
- each of those URL-encoded (`quote`, `quote_plus`; upper and lower case hex) and JSON-escaped (`\\uXXXX` for what
  JSON must escape, and `\\/` for a slash), and the plain token with every byte percent-encoded or \\u-escaped.

One Aho-Corasick automaton (pyahocorasick) holds every form of every credential a session can reach, so a scan
costs one pass over the data whatever the number of credentials; an automaton is built once per set of
credentials and cached. Outbound, the scanner also reads the data percent-decoded and JSON-unescaped, which
catches any mix of escaped and plain bytes. Pure: imports neither Django nor mitmproxy. The plaintexts stay in
this process's memory; nothing here logs or returns them.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import ahocorasick

MARK = b"[redacted by aileron]"
# Shorter forms would match ordinary data by chance; a credential's plain form is kept from 4 bytes (as before),
# derived forms only from 8.
MIN_PLAIN = 4
MIN_DERIVED = 8
CACHE_SIZE = 256  # distinct credential sets kept compiled (sessions of one user share theirs)
MAX_DECODED_BODY = 64 * 1024 * 1024  # a compressed body is scanned decoded, up to this size

_PERCENT = re.compile(rb"%[0-9A-Fa-f]{2}")
# Only what a credential (ASCII) can be escaped as: \u0000-\u007f, \/ and \\. Ordinary JSON text (\n, \", \u00e9)
# rarely has these, so the JSON reading stays cheap on the large bodies LLM calls send.
_JSON_ESCAPE = re.compile(rb"\\u00([0-7][0-9A-Fa-f])|\\([/\\])")
CLEAN_MEMO = 4096  # small inputs remembered as clean, per matcher (then forgotten all at once)
CLEAN_MAX = 2048  # bytes: longer inputs are never remembered
# Up to this many forms, on data longer than FEW_BYTES_PER_FORM bytes per form, `in` (C's fast search, one pass
# per form) beats one automaton pass; on shorter data (headers, audit records) the automaton wins: each `in` costs
# some 0.4 us before it reads a byte (measured on CPython 3.13: 10 forms, 600 bytes: 6.5 us `in`, 2.4 us one pass).
FEW_FORMS = 24
FEW_BYTES_PER_FORM = 100


def base64_cores(secret: bytes) -> list[bytes]:
    """The base64 text (standard and URL-safe) that encodes `secret` whatever 0, 1 or 2 bytes precede it."""
    cores = []
    bits = 8 * len(secret)
    for offset in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * offset + secret + b"\0\0")
        first = -(-8 * offset // 6)  # the first character whose six bits all come from the secret
        last = (8 * offset + bits) // 6  # one past the last
        core = encoded[first:last]
        cores += [core, core.translate(_URLSAFE)]
    return cores


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _json_forms(data: bytes) -> set[bytes]:
    found = set()
    for text in _texts(data):
        ascii_form = json.dumps(text)[1:-1].encode("ascii")
        native = json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")
        found |= {ascii_form, native, ascii_form.replace(b"/", b"\\/"), native.replace(b"/", b"\\/")}
    return found


def _url_forms(data: bytes) -> set[bytes]:
    found = set()
    for text in (urllib.parse.quote(data, safe=""), urllib.parse.quote(data), urllib.parse.quote_plus(data, safe="")):
        upper = text.encode("ascii")
        found |= {upper, _PERCENT.sub(lambda m: m.group(0).lower(), upper)}
    return found


def _texts(data: bytes) -> set[str]:
    """How a JSON writer may see the bytes: one character per byte, and UTF-8 text where they are UTF-8."""
    try:
        return {data.decode("latin-1"), data.decode("utf-8")}
    except UnicodeDecodeError:
        return {data.decode("latin-1")}


def secret_forms(secret: bytes) -> frozenset[bytes]:
    """Every form of `secret` searched for (see the module's docstring), none shorter than the minimums."""
    if len(secret) < MIN_PLAIN:
        return frozenset()
    bases = {secret, secret.hex().encode(), secret.hex().upper().encode(), *base64_cores(secret)}
    forms: set[bytes] = set()
    for base in bases:
        forms.add(base)
        forms |= _url_forms(base)
        forms |= _json_forms(base)
    forms.add("".join(f"%{b:02X}" for b in secret).encode())
    forms.add("".join(f"%{b:02x}" for b in secret).encode())
    for text in _texts(secret):
        forms.add("".join(f"\\u{ord(c):04x}" for c in text).encode())
        forms.add("".join(f"\\u{ord(c):04X}" for c in text).encode())
    return frozenset(f for f in forms if f == secret or len(f) >= MIN_DERIVED)


class Matcher:
    """One automaton over every form of every credential of a set; which credential matched, where, and redaction."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        self._secrets = tuple(dict.fromkeys(secrets))
        self._automaton = ahocorasick.Automaton()
        self.longest = 0
        self._starts: set[str] = set()
        self._few: list[tuple[bytes, int]] = []
        self._few_forms: tuple[bytes, ...] = ()
        for index, secret in enumerate(self._secrets):
            for form in secret_forms(secret):
                key = form.decode("latin-1")  # bytes <-> str one to one: the automaton is built for str
                self._automaton.add_word(key, (len(key), index))
                self.longest = max(self.longest, len(key))
                self._starts.add(key[0])
        if self.longest:
            self._automaton.make_automaton()
        if len(self._automaton) <= FEW_FORMS:
            self._few = [(key.encode("latin-1"), int(value[1])) for key, value in self._automaton.items()]
            self._few_forms = tuple(form for form, _ in self._few)
        # Inputs read whole (every reading of them) and found clean: the same header blocks, hosts and audit
        # fields come back request after request. Keyed by the bytes themselves (equality, not a hash alone).
        self._clean: dict[bytes, None] = {}

    def known_clean(self, data: bytes) -> bool:
        """Whether `data` was found, read every way, to hold no form of any credential of this set."""
        return data in self._clean

    def note_clean(self, data: bytes) -> None:
        if len(data) > CLEAN_MAX:
            return
        if len(self._clean) >= CLEAN_MEMO:
            self._clean.clear()
        self._clean[data] = None

    def __bool__(self) -> bool:
        return self.longest > 0

    def __len__(self) -> int:
        return len(self._secrets)

    def __contains__(self, secret: object) -> bool:
        return secret in self._secrets

    def __repr__(self) -> str:
        return f"Matcher({len(self._secrets)} credentials)"  # never the plaintexts

    @property
    def secrets(self) -> tuple[bytes, ...]:
        return self._secrets

    def first(self, data: bytes) -> int | None:
        """The index (in the set) of a credential found in `data`, or None."""
        if not self.longest or not data:
            return None
        if self._few and len(data) > FEW_BYTES_PER_FORM * len(self._few):
            if not any(map(data.__contains__, self._few_forms)):  # the usual answer, without a Python loop
                return None
            return next((index for form, index in self._few if form in data), None)
        for _end, (_length, index) in self._automaton.iter(data.decode("latin-1")):
            return int(index)
        return None

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """Where forms occur in `data`: [start, end) ranges, merged where they overlap or touch."""
        if not self.longest or not data:
            return []
        found = sorted(
            (end + 1 - length, end + 1) for end, (length, _index) in self._automaton.iter(data.decode("latin-1"))
        )
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """`data` with every form replaced by MARK, and how many places were replaced."""
        spans = self.spans(data)
        return _replace(data, spans), len(spans)

    def pending_tail(self, data: bytes, limit: int) -> int:
        """The length of the longest suffix of `data` (at most `limit`) that begins some form but is not one."""
        size = min(limit, self.longest - 1, len(data))
        if size <= 0:
            return 0
        text = data[-size:].decode("latin-1")
        for start in range(size):
            if text[start] in self._starts and self._automaton.match(text[start:]):
                return size - start
        return 0


def _replace(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    if not spans:
        return data
    out = []
    at = 0
    for start, end in spans:
        out += [data[at:start], MARK]
        at = end
    out.append(data[at:])
    return b"".join(out)


_cache: OrderedDict[frozenset[bytes], Matcher] = OrderedDict()
_cache_lock = threading.Lock()


def matcher_for(secrets: Iterable[bytes]) -> Matcher:
    """The matcher for this set of credentials, compiled once and kept (least recently used ones dropped)."""
    key = frozenset(secrets)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    built = Matcher(sorted(key))
    with _cache_lock:
        _cache[key] = built
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return built


class StreamRedactor:
    """Redacts a streamed body chunk by chunk (a mitmproxy `stream` callable): forms split across chunks too.

    Only a tail that could still begin a form is held back, so a streamed answer (server-sent events) is not
    delayed otherwise; an empty chunk marks the end and releases what was held.
    """

    def __init__(self, matcher: Matcher, on_chunk: Callable[[bytes], None] | None = None) -> None:
        self.matcher = matcher
        self.on_chunk = on_chunk
        self.carry = b""
        self.count = 0

    def __call__(self, chunk: bytes) -> bytes:
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        window = self.carry + chunk
        spans = self.matcher.spans(window)
        if not chunk:  # the end
            self.carry = b""
            self.count += len(spans)
            return _replace(window, spans)
        cut = len(window) - self.matcher.pending_tail(window, len(window))
        crossing = [end for start, end in spans if start < cut < end]
        while crossing:  # a complete form crosses the cut: release it (redacted) whole, hold what may follow
            cut = len(window) - self.matcher.pending_tail(window, len(window) - crossing[0])
            crossing = [end for start, end in spans if start < cut < end]
        done = [(s, e) for s, e in spans if e <= cut]
        self.count += len(done)
        self.carry = window[cut:]
        return _replace(window[:cut], done)


def redact_headers(
    matcher: Matcher, fields: Iterable[tuple[bytes, bytes]]
) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """Every header's name and value redacted; the fields and how many places were replaced."""
    out = []
    count = 0
    for name, value in fields:
        name, n = matcher.redact(name)
        value, v = matcher.redact(value)
        out.append((name, value))
        count += n + v
    return tuple(out), count


def _decoded(data: bytes) -> Iterable[bytes]:
    """`data` and the readings of it an upstream may decode: percent-decoded, JSON-unescaped, both."""
    yield data
    unquoted = data
    if b"%" in data and _PERCENT.search(data):
        unquoted = urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))
        yield unquoted
        yield urllib.parse.unquote_to_bytes(data)  # a `+` that was a plus
    if b"\\" in data:
        for text in (data, unquoted) if unquoted is not data else (data,):
            for _ in range(3):  # JSON inside JSON (a tool call's arguments): a few levels, each a reading
                if not _JSON_ESCAPE.search(text):
                    break
                text = _json_unescape(text)
                yield text


def _json_unescape(data: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        return bytes((int(match.group(1), 16),)) if match.group(1) is not None else match.group(2)

    return _JSON_ESCAPE.sub(one, data)


@dataclass(frozen=True, slots=True)
class Found:
    """A credential found in a request: which one (its index in the matcher's set) and where (never the value)."""

    index: int
    where: str  # "host", "path", "query", "body" or "header <name>"


def scan_request(
    matcher: Matcher,
    *,
    host: bytes = b"",
    target: bytes = b"",
    fields: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> Found | None:
    """The first credential of `matcher` found anywhere in a request (each part also read decoded), or None.

    `target` is the request target (path and query); `fields` the headers; `body` the body as the upstream will
    read it (decoded from its Content-Encoding). The common case, nothing found, is one pass per reading.
    """
    if not matcher:
        return None
    fields = tuple(fields)
    headers = b"\n".join(name + b": " + value for name, value in fields)
    path, _, query = target.partition(b"?")
    host = host.lower()
    parts = (
        (host, "host"),
        (host.replace(b".", b""), "host"),  # one value split over several labels
        (path, "path"),
        (query, "query"),
        (headers, "headers"),
        (body, "body"),
    )
    for data, where in parts:
        if not data or matcher.known_clean(data):
            continue
        for reading in _decoded(data):
            index = matcher.first(reading)
            if index is None:
                continue
            if where == "headers":
                where = _which_header(matcher, fields)
            return Found(index, where)
        matcher.note_clean(data)
    return None


def _which_header(matcher: Matcher, fields: tuple[tuple[bytes, bytes], ...]) -> str:
    for name, value in fields:
        if any(matcher.first(r) is not None for r in _decoded(name)):
            return "a header's name"
        if any(matcher.first(r) is not None for r in _decoded(value)):
            return "header " + name.decode("latin-1")[:100]
    return "headers"  # across two headers: still a finding


def scan_body(matcher: Matcher, body: bytes, encoding: str, *, limit: int = MAX_DECODED_BODY) -> Found | None:
    """The first credential of `matcher` in a request body: in its bytes as sent (a container's header fields,
    padding and skippable frames carry bytes no decoder returns), then decoded from `encoding` as the upstream
    reads it. Undecodable for a body in an encoding that cannot be read, or that decodes beyond `limit`."""
    found = scan_request(matcher, body=body)
    if found is not None or encoding.strip().lower() in ("", "identity"):
        return found
    return scan_request(matcher, body=decode_body(body, encoding, limit=limit))


class Undecodable(ValueError):
    """A body in a content encoding this module cannot read (or one that decodes beyond the limit)."""


def decode_body(data: bytes, encoding: str, *, limit: int = MAX_DECODED_BODY) -> bytes:
    """A request body decoded from its Content-Encoding (gzip, deflate, br, zstd, identity), at most `limit` bytes."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        data = _decode_one(data, coding, limit)
    return data


def _inflate_all(data: bytes, wbits: int, limit: int) -> bytes:
    """Every member of a gzip (or zlib, or raw deflate) body, one after the other, as a multi-member reader (Python's
    gzip, Go's default, zcat) reads it: never only the first. Trailing bytes that are no member are undecodable,
    except zero padding (which those readers skip)."""
    out = bytearray()
    rest = data
    while rest:
        decoder = zlib.decompressobj(wbits=wbits)
        out += decoder.decompress(rest, limit + 1 - len(out))
        if len(out) > limit or decoder.unconsumed_tail:
            raise Undecodable(f"the body decodes to more than {limit} bytes")
        if not decoder.eof:
            break  # truncated: what it holds so far is what a reader gets
        rest = decoder.unused_data
        if not rest.strip(b"\0"):
            break  # zeros after the last member are padding
        if wbits < 0:
            # Raw deflate has no member boundary a reader would cross: bytes after its end are no part of what
            # the upstream reads, and nothing should ride there unread.
            raise Undecodable("the deflate body has bytes after its end")
    return bytes(out)


def _decode_one(data: bytes, coding: str, limit: int) -> bytes:
    if coding == "identity":
        return data
    if coding in ("gzip", "x-gzip", "deflate"):
        try:
            return _inflate_all(data, 47 if coding != "deflate" else 15, limit)
        except zlib.error:
            try:
                return _inflate_all(data, -15, limit)  # raw deflate, as some clients send it
            except zlib.error:
                raise Undecodable(f"the {coding} body does not decode") from None
    if coding == "br":
        import brotli

        try:
            brotli_decoder = brotli.Decompressor()
            out = brotli_decoder.process(data, output_buffer_limit=limit + 1)
        except brotli.error:
            raise Undecodable("the br body does not decode") from None
        if len(out) > limit or not brotli_decoder.is_finished():
            raise Undecodable(f"the body decodes to more than {limit} bytes")
        return bytes(out)
    if coding == "zstd":
        from backports import zstd

        # Every frame, as zstd's own readers decode them (skippable frames give nothing): never only the first.
        frames = bytearray()
        rest = data
        try:
            while rest:
                zstd_decoder = zstd.ZstdDecompressor()
                frames += zstd_decoder.decompress(rest, max_length=limit + 1 - len(frames))
                if len(frames) > limit or (not zstd_decoder.eof and zstd_decoder.needs_input is False):
                    raise Undecodable(f"the body decodes to more than {limit} bytes")
                if not zstd_decoder.eof:
                    raise Undecodable("the zstd body is cut short")
                rest = zstd_decoder.unused_data
        except zstd.ZstdError:
            raise Undecodable("the zstd body does not decode") from None
        return bytes(frames)
    raise Undecodable(f"the {coding} content encoding cannot be scanned")
