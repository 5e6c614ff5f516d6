"""Credential exfiltration: what a session's agent sends is scanned for every credential the session can reach,
and what comes back to it is redacted of them.

The plaintexts a session can reach are decrypted by the credential service, held here (in the data plane's
memory only, as one compiled matcher per set, see dataplane.credscan) for `ttl` seconds, and never logged,
audited or returned. A request carrying any of them, in any form, in its host, path, query, headers or body, to
any host, is refused (`credential-in-request`, a critical finding) before anything reaches the upstream and before
any credential is injected. Egress bodies of such sessions are therefore read (bounded) before they are forwarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from dataplane import credscan, nested, problems
from dataplane.control import SessionContext
from dataplane.credscan import Matcher
from dataplane.problems import Refusal
from vaults import crypto

log = logging.getLogger("aileron.proxy")

DEFAULT_TTL = 60.0  # how long a session's set of plaintexts is reused before it is decrypted afresh
MAX_DECODED_RESPONSE = 64 * 1024 * 1024  # a compressed answer decoding to more is cut off (a decompression bomb)
DECODE_PIECE = 1024 * 1024  # a compressed answer is decoded (and redacted) at most this much at a time
EMPTY = Matcher(())

Decrypt = Callable[[str, str, str], Awaitable[bytearray]]  # (session_id, vault_id, credential_id) -> plaintext


@dataclass
class _Entry:
    refs: tuple[tuple[str, str], ...]
    matcher: Matcher
    credential_ids: dict[bytes, str] = field(repr=False)
    built_at: float


class Reach:
    """Per session: the matcher over every credential it can reach, rebuilt when its references change."""

    def __init__(self, decrypt: Decrypt, *, ttl: float = DEFAULT_TTL) -> None:
        self.decrypt = decrypt
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def matcher(self, context: SessionContext) -> Matcher:
        """The session's matcher; a Refusal (fail closed) when its credentials cannot be read."""
        refs = context.credential_refs or tuple(
            sorted({(r.vault_id, r.credential_id) for group in context.credentials.values() for r in group})
        )  # (a context built without its precomputed refs is still scanned: never fail open)
        if not refs:
            return EMPTY
        entry = self._entries.get(context.session_id)
        if entry is not None and entry.refs == refs and time.monotonic() - entry.built_at < self.ttl:
            return entry.matcher
        lock = self._locks.setdefault(context.session_id, asyncio.Lock())
        async with lock:
            entry = self._entries.get(context.session_id)
            if entry is not None and entry.refs == refs and time.monotonic() - entry.built_at < self.ttl:
                return entry.matcher
            try:
                ids = await self._read(context.session_id, refs)
            except Refusal:
                if entry is not None and entry.refs == refs:
                    return entry.matcher  # the same credentials as a moment ago: still scanned for those
                raise
            entry = _Entry(refs, credscan.matcher_for(ids), ids, time.monotonic())
            self._entries[context.session_id] = entry
            if len(self._entries) > 10_000:
                self._evict()
            return entry.matcher

    async def _read(self, session_id: str, refs: tuple[tuple[str, str], ...]) -> dict[bytes, str]:
        ids: dict[bytes, str] = {}
        for vault_id, credential_id in refs:
            plaintext = await self.decrypt(session_id, vault_id, credential_id)
            try:
                ids[bytes(plaintext)] = credential_id
            finally:
                crypto.wipe(plaintext)
        return ids

    def injected(self, session_id: str, credential_id: str, secret: bytes) -> Matcher:
        """The matcher once `secret` is injected: rebuilt with it if its value changed since the last read."""
        entry = self._entries.get(session_id)
        if entry is not None and secret in entry.matcher:
            return entry.matcher
        ids = {**(entry.credential_ids if entry is not None else {}), secret: credential_id}
        matcher = credscan.matcher_for(ids)
        if entry is not None:
            entry.matcher, entry.credential_ids = matcher, ids
        else:  # kept, so what is audited of this session is redacted of it (its refs differ: rebuilt when asked)
            self._entries[session_id] = _Entry((), matcher, ids, time.monotonic())
        return matcher

    def credential_id(self, session_id: str, matcher: Matcher, index: int) -> str | None:
        entry = self._entries.get(session_id)
        if entry is None or not 0 <= index < len(matcher.secrets):
            return None
        return entry.credential_ids.get(matcher.secrets[index])

    def scrub(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` redacted with its session's matcher (the one its requests were scanned and injected with)."""
        entry = self._entries.get(str(record.get("session_id") or ""))
        return scrub_record(entry.matcher, record) if entry is not None else record

    def forget(self, session_id: str) -> None:
        self._entries.pop(session_id, None)
        self._locks.pop(session_id, None)

    def _evict(self) -> None:
        horizon = time.monotonic() - self.ttl
        for key in [k for k, e in self._entries.items() if e.built_at < horizon]:
            self.forget(key)


def leak(reach: Reach, session_id: str, matcher: Matcher, found: credscan.Found) -> Refusal:
    credential_id = reach.credential_id(session_id, matcher, found.index)
    return Refusal(
        problems.CREDENTIAL_IN_REQUEST,
        f"the request carries one of your organization's credentials (in its {found.where}); nothing was sent",
        {"_credential_id": credential_id},
    )


def check_head(reach: Reach, session_id: str, matcher: Matcher, request: http.Request, host: str) -> None:
    """Refuse a request whose host, path, query or headers carry a credential (before any is injected)."""
    if not matcher:
        return
    found = credscan.scan_request(
        matcher,
        host=host.encode("idna") if host.isascii() else host.encode("utf-8"),
        target=request.data.path,
        fields=request.headers.fields,
    )
    if found is not None:
        raise leak(reach, session_id, matcher, found)


def check_body(reach: Reach, session_id: str, matcher: Matcher, request: http.Request) -> None:
    """Refuse a read body that carries a credential, read as the upstream will (decoded from its encoding)."""
    body = request.raw_content or b""
    if not matcher or not body:
        return
    try:
        found = credscan.scan_body(matcher, body, request.headers.get("content-encoding", ""))
    except credscan.Undecodable as exc:
        raise Refusal(problems.UNSCANNABLE_BODY, str(exc)) from None
    if found is not None:
        raise leak(reach, session_id, matcher, found)


def hold_body(request: http.Request, max_body: int) -> int:
    """The length of an egress request's body, read before forwarding (0: none to read); a Refusal when it
    cannot be bounded: a chunked body or one over `max_body`."""
    names = {name.lower() for name, _ in request.headers.fields}
    if b"transfer-encoding" in names:
        raise Refusal(
            problems.LENGTH_REQUIRED,
            "your session holds credentials, so a body is scanned before it is sent; send it with a Content-Length",
        )
    length = int(request.headers.get("content-length", "0") or 0)
    if length > max_body:
        raise Refusal(
            problems.BODY_TOO_LARGE,
            f"the body is {length} bytes; at most {max_body} are scanned before sending",
            {"limit": max_body},
        )
    return length


def audit_fields(matcher: Matcher, record: dict[str, object]) -> None:
    """Redact what an audit record repeats of the request (host, path, reason) so it never holds the value."""
    for name in ("host", "path", "reason"):
        value = record.get(name)
        if isinstance(value, str) and value:
            record[name] = _redact_text(matcher, value, host=name == "host")


def scrub_record(matcher: Matcher, record: dict[str, Any]) -> dict[str, Any]:
    """A copy of an audit record with every text in it (values and keys, nested ones too) redacted of every form
    of every credential of `matcher`: no field, present or future, can carry one to the spool."""
    if not matcher:
        return record
    if _clean_whole(matcher, record):
        return record
    return {_redact_text(matcher, str(k)): _scrub(matcher, v, key=str(k)) for k, v in record.items()}


def _clean_whole(matcher: Matcher, record: dict[str, Any]) -> bool:
    """Whether the record, read whole, holds no form of a credential: one pass instead of one per text in it.

    Its JSON text holds every key and text of it verbatim when no character in them needed escaping (no
    backslash in the line), so every form a field-by-field read would find, plain or decoded, is found here;
    and the line lowered, with and without dots, is what a field-by-field read checks a host as. A form found
    across two fields only sends the record the field-by-field way."""
    try:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        data = line.encode("utf-8", errors="surrogateescape")
    except (TypeError, ValueError, RecursionError, UnicodeError):
        return False
    if b"\\" in data:
        return False
    return credscan.scan_request(matcher, host=data, body=data) is None


def _scrub(matcher: Matcher, value: Any, *, key: str, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _redact_text(matcher, value, host=key == "host") if value else value
    if depth > 8:
        return value if isinstance(value, int | float | bool | None) else credscan.MARK.decode()
    if isinstance(value, dict):
        return {
            _redact_text(matcher, str(k)): _scrub(matcher, v, key=str(k), depth=depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(matcher, v, key=key, depth=depth + 1) for v in value]
    if isinstance(value, int | float | bool | None):
        return value
    return _redact_text(matcher, str(value))  # written as its text: checked as its text


def _redact_text(matcher: Matcher, text: str, *, host: bool = False) -> str:
    raw = text.encode("utf-8", errors="surrogateescape")
    redacted, count = redact_value(matcher, raw, host=host)
    return redacted.decode("utf-8", errors="replace") if count else text


def redact_value(matcher: Matcher, data: bytes, *, host: bool = False) -> tuple[bytes, int]:
    """`data` with every form of every credential replaced; all of it replaced when a credential is still there
    once the rest is read decoded (a mix of escaped and plain characters) or, for a host, across labels."""
    # The same header values and audit fields come back request after request: each is read once.
    if matcher.known_clean(data) and (not host or matcher.known_clean(data.lower().replace(b".", b""))):
        return data, 0
    redacted, count = matcher.redact(data)
    if credscan.scan_request(matcher, host=redacted if host else b"", body=redacted) is not None:
        return credscan.MARK, count + 1
    if not count:
        matcher.note_clean(data)  # read plain, decoded, and (for a host) across labels: nothing
    return redacted, count


def _redact_fields(
    matcher: Matcher, fields: Iterable[tuple[bytes, bytes]]
) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    fields = tuple(fields)
    # Read together first (the usual answer: nothing): no escape reads across the NUL between two of them.
    if credscan.scan_request(matcher, body=b"\0".join(part for field in fields for part in field)) is None:
        return fields, 0
    out = []
    count = 0
    for name, value in fields:
        name, n = redact_value(matcher, name)
        value, v = redact_value(matcher, value)
        out.append((name, value))
        count += n + v
    return tuple(out), count


def redact_trailers(response: http.Response, matcher: Matcher) -> int:
    """Redact a response's trailer fields (sent to the agent after the body); how many places were replaced."""
    if not matcher or not response.trailers:
        return 0
    try:
        fields, count = _redact_fields(matcher, response.trailers.fields)
    except Exception as exc:  # never sent unread: dropped (the message may quote them, so only its type is logged)
        log.error("response: its trailers could not be redacted (%s); dropped", type(exc).__name__)
        response.trailers = None
        return 0
    if count:
        response.trailers.fields = fields
        log.warning("response: a credential in its trailers was redacted")
    return count


class DecodedTooLarge(Exception):
    """A compressed answer decodes to more than the proxy reads of one: the rest of it is not passed on."""


def redact_response(
    flow: http.HTTPFlow,
    matcher: Matcher,
    on_chunk: Callable[[bytes], None] | None,
    *,
    max_decoded: int = MAX_DECODED_RESPONSE,
) -> credscan.StreamRedactor:
    """Redact the status line's reason phrase and every response header (names and values) now, and stream the
    body through a redactor (trailers are redacted by `redact_trailers` once they arrived).

    A body in a content encoding is decoded on the way (the agent gets it as identity), so a compressed echo is
    redacted too; an encoding that cannot be decoded here is withheld. Decoding stops with DecodedTooLarge past
    `max_decoded` bytes (the caller ends the flow as broken).
    """
    response = flow.response
    assert response is not None  # noqa: S101
    reason, in_reason = redact_value(matcher, response.data.reason)
    if in_reason:
        response.data.reason = reason
    fields, count = _redact_fields(matcher, response.headers.fields)
    if count:
        response.headers.fields = fields
    if count or in_reason:
        log.warning("response to %s: a credential in its status line or headers was redacted", flow.id)
    redactor = credscan.StreamRedactor(matcher, on_chunk)
    has_body = flow.request.method != "HEAD" and response.status_code >= 200 and response.status_code not in (204, 304)
    if not has_body:
        response.stream = lambda chunk: _nonempty(redactor(chunk))  # none expected; anything that comes is read
        return redactor
    if "content-length" in response.headers:
        # Redaction may change the body's length: frame it with chunks instead.
        del response.headers["content-length"]
        response.headers["transfer-encoding"] = "chunked"
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        del response.headers["content-encoding"]
        decoder = _stream_decoder(encoding)
        total = 0

        def decoded(chunk: bytes) -> list[bytes]:
            nonlocal total
            if decoder is None:
                return []  # withheld: it cannot be read for credentials here
            out: list[bytes] = []
            for data in decoder(chunk):
                total += len(data)
                if total > max_decoded:
                    raise DecodedTooLarge(f"the answer decodes to more than {max_decoded} bytes; it was cut off")
                out += _nonempty(redactor(data))  # never an empty chunk: it would end the redactor's stream
            if not chunk:
                out += _nonempty(redactor(b""))
            return out

        response.stream = decoded
        return redactor
    response.stream = lambda chunk: _nonempty(redactor(chunk))
    return redactor


def _nonempty(data: bytes) -> list[bytes]:
    # An empty chunk sent to the agent would read as the end of a chunked body: send none instead.
    return [data] if data else []


def _stream_decoder(encoding: str) -> Callable[[bytes], Iterator[bytes]] | None:
    """A chunk-by-chunk decoder for a response's Content-Encoding (b"" flushes), yielding pieces of about
    DECODE_PIECE bytes (two at most; never empty ones); None for an encoding it cannot read."""
    if encoding in ("gzip", "x-gzip", "deflate"):
        decode = nested.zlib_decoder(47 if encoding != "deflate" else 15)

        def inflate(chunk: bytes) -> Iterator[bytes]:
            try:
                yield from decode(chunk)
            except zlib.error:
                return  # corrupt: nothing more of it reaches the agent

        return inflate
    if encoding == "br":
        import brotli

        unbrotli_state = brotli.Decompressor()

        def unbrotli(chunk: bytes) -> Iterator[bytes]:
            # The output limit is approximate (a buffer stops growing once past it), and what is left over is only
            # given back by later calls with no input: drain those until one gives nothing.
            try:
                piece = bytes(unbrotli_state.process(chunk, output_buffer_limit=DECODE_PIECE)) if chunk else b""
                while piece:
                    yield piece
                    if unbrotli_state.is_finished():
                        break
                    piece = bytes(unbrotli_state.process(b"", output_buffer_limit=DECODE_PIECE))
            except brotli.error:
                return

        return unbrotli
    return None
