"""Request framing, read in one pass over the headers: one unambiguous body length, bounded before it is read."""

from __future__ import annotations

from dataclasses import dataclass

from mitmproxy import http

from dataplane import problems
from dataplane.problems import Refusal

METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


@dataclass(frozen=True)
class Framing:
    """What the headers say about the request: their lower-cased names and the body's declared length."""

    names: set[bytes]
    content_length: bytes | None  # digits only, when present

    @property
    def chunked(self) -> bool:
        return b"transfer-encoding" in self.names

    @property
    def length(self) -> int:
        return int(self.content_length or b"0")


def read_framing(request: http.Request) -> Framing:
    """The request's framing, or a Refusal when its body length is ambiguous (this runs for every request)."""
    names: set[bytes] = set()
    lengths: set[bytes] = set()
    for name, value in request.headers.fields:
        lowered = name.lower()
        names.add(lowered)
        if lowered == b"content-length":
            lengths.add(value.strip())
    if b"content-length" in names and b"transfer-encoding" in names:
        raise Refusal(problems.REQUEST_SMUGGLING, "the request has both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
        raise Refusal(problems.REQUEST_SMUGGLING, "the request's Content-Length is repeated or not a number")
    return Framing(names, next(iter(lengths), None))


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
