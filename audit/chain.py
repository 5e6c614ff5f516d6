"""The audit hash chain: tamper evidence for each organization's audit log. Pure: no ORM, no Django.

Every change to an organization's audit log (a request's attempt, its outcome, an attempt closed as unknown, an
admin change) appends one *link*, in ingest order:

    link.digest = sha256(canonical content of what was written)
    link.hash   = sha256(link.prev | seq | kind | record id | link.digest),   link.prev = the previous link's hash

so a row edited after the fact no longer matches its link's digest, and a link removed, reordered or inserted
breaks the `prev` of the link after it. Someone who can write the database can rebuild the whole chain, which is
why the control plane signs *checkpoints* (head hash, count, time) with a key it keeps outside the database and
exports them: a rebuilt or truncated chain no longer reaches an exported checkpoint's head.

`verify` walks links in order and names the first break: `edited`, `deleted`, `reordered` or `inserted`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = "0" * 64  # the `prev` of an organization's first link

Why = Literal["edited", "deleted", "reordered", "inserted"]


def _plain(value: Any) -> Any:
    """A value as it goes into the canonical form: what the database gives back must give the same bytes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("audit times must be timezone-aware")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no canonical form")


def canonical(content: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8; times in UTC to the microsecond; ids as text."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain).encode()


def digest(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(content)).hexdigest()


def link_hash(*, prev: str, seq: int, kind: str, record_id: str, digest: str) -> str:
    return hashlib.sha256(f"{prev}|{seq}|{kind}|{record_id}|{digest}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    kind: str  # "attempt", "outcome", "closed" (an attempt the data plane never finished), "admin"
    record_id: str
    digest: str
    prev: str
    hash: str

    def consistent(self) -> bool:
        """Whether this link's own fields give its hash (a link edited in place does not)."""
        return self.hash == link_hash(
            prev=self.prev, seq=self.seq, kind=self.kind, record_id=self.record_id, digest=self.digest
        )


def chain(previous: str, start_seq: int, entries: Iterable[tuple[str, str, str]]) -> list[Link]:
    """Links for (kind, record_id, digest) entries appended after a head hash whose seq is start_seq - 1."""
    links = []
    prev = previous
    for offset, (kind, record_id, content_digest) in enumerate(entries):
        seq = start_seq + offset
        value = link_hash(prev=prev, seq=seq, kind=kind, record_id=record_id, digest=content_digest)
        links.append(Link(seq, kind, record_id, content_digest, prev, value))
        prev = value
    return links


@dataclass(frozen=True, slots=True)
class Break:
    seq: int
    record_id: str
    why: Why
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "record_id": self.record_id, "why": self.why, "detail": self.detail}


_REORDER_WINDOW = 256  # how far from its position a moved link's original seq is looked for


def _moved_from(link: Link) -> int | None:
    """The seq a link was chained at, if it now sits at another (its hash holds its original seq)."""
    low = max(0, link.seq - _REORDER_WINDOW)
    for seq in range(low, link.seq + _REORDER_WINDOW + 1):
        if seq != link.seq and link.hash == link_hash(
            prev=link.prev, seq=seq, kind=link.kind, record_id=link.record_id, digest=link.digest
        ):
            return seq
    return None


def verify_links(
    links: list[Link], *, start_prev: str, start_seq: int, current: Mapping[tuple[str, str], str | None]
) -> Break | None:
    """The first break in LINKS (read in seq order), after a known head: start_prev at seq start_seq - 1.

    `current` maps (kind, record_id) to the digest of what the database holds now for that link, or None where
    the row is gone.
    """
    position = {link.hash: link.seq for link in links}
    by_seq = {link.seq: link for link in links}
    seen = {start_prev}
    prev, expected = start_prev, start_seq
    for link in links:
        if not link.consistent():
            moved = _moved_from(link)
            if moved is None:
                return Break(link.seq, link.record_id, "edited", "the chain's own link was changed in place")
            if moved < link.seq:  # pushed later: something now sits where it was
                intruder = by_seq.get(moved)
                record_id = intruder.record_id if intruder is not None else link.record_id
                return Break(moved, record_id, "inserted", f"it was put in the chain at seq {moved}, moving the rest")
            if position.get(link.prev, -1) >= link.seq:
                return Break(link.seq, link.record_id, "reordered", f"it was chained at seq {moved}, after a later one")
            return Break(link.seq, link.record_id, "deleted", f"chained at seq {moved}: links before it are gone")
        if link.seq > expected:
            gap = link.seq - expected
            return Break(link.seq, link.record_id, "deleted", f"{gap} link(s) before this one are missing")
        if link.seq < expected:
            return Break(link.seq, link.record_id, "inserted", f"a second link at seq {link.seq}")
        if link.prev != prev:
            if link.prev in seen:
                return Break(link.seq, link.record_id, "inserted", "a link that was never chained sits before it")
            if link.prev in position:
                return Break(link.seq, link.record_id, "reordered", "it was chained after a link that now follows it")
            return Break(link.seq, link.record_id, "deleted", "the link it was chained after is missing")
        now = current.get((link.kind, link.record_id))
        if now is None:
            return Break(link.seq, link.record_id, "deleted", f"the record's {link.kind} is no longer stored")
        if now != link.digest:
            return Break(link.seq, link.record_id, "edited", f"the record's {link.kind} differs from what was chained")
        seen.add(link.hash)
        prev, expected = link.hash, link.seq + 1
    return None


# --- checkpoints -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of an organization's chain head: everything up to `seq` hashes to `head`."""

    organization: str
    seq: int
    head: str
    at: datetime
    key_id: str
    signature: str = ""

    def payload(self) -> bytes:
        return canonical({"organization": self.organization, "seq": self.seq, "head": self.head, "at": self.at})

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "seq": self.seq,
            "head": self.head,
            "at": _plain(self.at),
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """An exported checkpoint read back; ValueError naming what is wrong with it."""
        try:
            at = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            seq = data["seq"]
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise ValueError("seq must be a non-negative integer")
            checkpoint = cls(
                str(uuid.UUID(str(data["organization"]))),
                seq,
                str(data["head"]),
                at,
                str(data["key_id"]),
                str(data["signature"]),
            )
        except KeyError as exc:
            raise ValueError(f"a checkpoint needs {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from None
        if at.tzinfo is None:
            raise ValueError("not a checkpoint: its time has no timezone")
        return checkpoint


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> Checkpoint:
    signature = base64.b64encode(key.sign(checkpoint.payload())).decode()
    return Checkpoint(
        checkpoint.organization, checkpoint.seq, checkpoint.head, checkpoint.at, key_id(key.public_key()), signature
    )


def checkpoint_valid(checkpoint: Checkpoint, public: Ed25519PublicKey) -> bool:
    if checkpoint.key_id != key_id(public):
        return False
    try:
        public.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.payload())
    except (InvalidSignature, ValueError):
        return False
    return True
