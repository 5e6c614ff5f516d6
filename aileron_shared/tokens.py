"""Token format, generation and verification. Pure: no ORM, usable by the CLI and the data plane.

A token reads `ail_<kind>_<lookup><secret>`: the kind is visible (so a leaked token is recognisable and
secret scanners can match it), the 12-character lookup finds the row, and only an HMAC-SHA256 of the
whole token is stored, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

PREFIX = "ail_"
# apl: a one-time approval link (approvals.links), good for one decision of one approval and nothing else.
KINDS = ("pat", "ses", "svc", "inv", "apl")
LOOKUP_LENGTH = 12
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_ALLOWED = frozenset(_ALPHABET)
TOKEN_LENGTH = len(PREFIX) + 4 + LOOKUP_LENGTH + SECRET_LENGTH


class MalformedToken(ValueError):
    """The string is not an Aileron token of an expected kind."""


@dataclass(frozen=True, slots=True)
class ParsedToken:
    kind: str
    lookup: str
    raw: str


@dataclass(frozen=True, slots=True)
class NewToken:
    plaintext: str
    lookup: str
    digest: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def derive_key(secret_key: str) -> bytes:
    """A key for token digests only, so the digests say nothing about SECRET_KEY's other uses."""
    return hmac.new(secret_key.encode(), b"aileron token digest v1", hashlib.sha256).digest()


def digest(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def generate(kind: str, key: bytes) -> NewToken:
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    lookup = _random(LOOKUP_LENGTH)
    plaintext = f"{PREFIX}{kind}_{lookup}{_random(SECRET_LENGTH)}"
    return NewToken(plaintext=plaintext, lookup=lookup, digest=digest(key, plaintext))


def parse(raw: str) -> ParsedToken:
    if len(raw) != TOKEN_LENGTH or not raw.startswith(PREFIX):
        raise MalformedToken("not an Aileron token")
    kind, sep, rest = raw[len(PREFIX) :].partition("_")
    if kind not in KINDS or not sep or not set(rest) <= _ALLOWED:
        raise MalformedToken("not an Aileron token")
    return ParsedToken(kind=kind, lookup=rest[:LOOKUP_LENGTH], raw=raw)


def verify(key: bytes, token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(key, token), stored_digest)
