"""The audit hash chain: tamper evidence for each organization's audit log. Pure: no ORM, no Django.

Every change to an organization's audit log (a request's attempt, its outcome, an attempt closed as unknown, an
admin change) appends one *link*, in ingest order:

    link.digest = sha256(canonical content of what was written)
    link.hash   = HMAC-SHA256(link key, prev | seq | kind | record id | digest | link time)
    link.prev   = the previous link's hash; the first link's is genesis(organization)

so a row edited after the fact no longer matches its link's digest, and a link removed, reordered or inserted
breaks the `prev` of the link after it. The link key is kept outside the database (audit.signing), so someone who
can only write the database cannot compute a link: not to rebuild the chain, nor to append one. Someone who also
has the key can; against them, the control plane signs *checkpoints* (head hash, seq, time) with an Ed25519 key
and exports them: a rebuilt or truncated chain no longer reaches an exported checkpoint's head.

`verify` walks links in order and names the first break: `edited`, `deleted`, `reordered` or `inserted`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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


def genesis(organization: str) -> str:
    """The `prev` of an organization's first link: chains of two organizations cannot be swapped."""
    return hashlib.sha256(f"aileron-audit-chain|{organization}".encode()).hexdigest()


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
    """Sorted keys, no spaces, ASCII (any text, even a lone surrogate, has one form); times in UTC to the
    microsecond; ids as text."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=_plain).encode()


def digest(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(content)).hexdigest()


def stamp(at: datetime) -> str:
    """A link's time as it is hashed."""
    return str(_plain(at))


def link_hash(*, key: bytes, prev: str, seq: int, kind: str, record_id: str, digest: str, at: str) -> str:
    message = f"{prev}|{seq}|{kind}|{record_id}|{digest}|{at}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    kind: str  # "attempt", "outcome", "closed" (an attempt the data plane never finished), "admin"
    record_id: str
    digest: str
    prev: str
    hash: str
    at: str  # stamp(when the link was made): `--since` starts from it

    def consistent(self, key: bytes, *, seq: int | None = None) -> bool:
        """Whether this link's own fields give its hash (a link edited in place does not), at SEQ if given."""
        return hmac.compare_digest(
            self.hash,
            link_hash(
                key=key,
                prev=self.prev,
                seq=self.seq if seq is None else seq,
                kind=self.kind,
                record_id=self.record_id,
                digest=self.digest,
                at=self.at,
            ),
        )


def chain(
    key: bytes, previous: str, start_seq: int, entries: Iterable[tuple[str, str, str]], *, at: datetime
) -> list[Link]:
    """Links for (kind, record_id, digest) entries appended at AT after a head hash whose seq is start_seq - 1."""
    links = []
    prev = previous
    when = stamp(at)
    for offset, (kind, record_id, content_digest) in enumerate(entries):
        seq = start_seq + offset
        value = link_hash(key=key, prev=prev, seq=seq, kind=kind, record_id=record_id, digest=content_digest, at=when)
        links.append(Link(seq, kind, record_id, content_digest, prev, value, when))
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


def _moved_from(link: Link, key: bytes) -> int | None:
    """The seq a link was chained at, if it now sits at another (its hash holds its original seq)."""
    low = max(0, link.seq - _REORDER_WINDOW)
    for seq in range(low, link.seq + _REORDER_WINDOW + 1):
        if seq != link.seq and link.consistent(key, seq=seq):
            return seq
    return None


def verify_links(
    links: list[Link],
    *,
    key: bytes,
    start_prev: str,
    start_seq: int,
    current: Mapping[tuple[str, str], str | None],
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
        if not link.consistent(key):
            moved = _moved_from(link, key)
            if moved is None:
                return Break(link.seq, link.record_id, "edited", "the chain's own link was changed or forged")
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


PURPOSES = ("head", "prune-start")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of an organization's chain: everything up to `seq` hashes to `head`.

    `purpose` is signed too: "head" (the chain's head when it was taken) or "prune-start" (the last link pruned
    by retention, from which verification of what is left begins; nothing else may serve as that)."""

    organization: str
    seq: int
    head: str
    at: datetime
    key_id: str
    signature: str = ""
    purpose: str = "head"

    def payload(self) -> bytes:
        return canonical(
            {"organization": self.organization, "seq": self.seq, "head": self.head, "at": self.at,
             "purpose": self.purpose}
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "seq": self.seq,
            "head": self.head,
            "at": _plain(self.at),
            "purpose": self.purpose,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """An exported checkpoint read back; ValueError naming what is wrong with it."""
        try:
            at = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            seq = data["seq"]
            if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
                raise ValueError("seq must be a non-negative integer")
            purpose = str(data.get("purpose", "head"))
            if purpose not in PURPOSES:
                raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
            checkpoint = cls(
                str(uuid.UUID(str(data["organization"]))),
                seq,
                str(data["head"]),
                at,
                str(data["key_id"]),
                str(data["signature"]),
                purpose,
            )
            if at.tzinfo is None:
                raise ValueError("its time has no timezone")
            _plain(at)  # a time that cannot be put in UTC (year 1 with an offset) is not one we signed
        except KeyError as exc:
            raise ValueError(f"a checkpoint needs {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from None
        return checkpoint


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> Checkpoint:
    signature = base64.b64encode(key.sign(checkpoint.payload())).decode()
    return Checkpoint(
        checkpoint.organization,
        checkpoint.seq,
        checkpoint.head,
        checkpoint.at,
        key_id(key.public_key()),
        signature,
        checkpoint.purpose,
    )


def checkpoint_valid(checkpoint: Checkpoint, public: Ed25519PublicKey) -> bool:
    if checkpoint.key_id != key_id(public):
        return False
    try:
        public.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.payload())
    except (InvalidSignature, ValueError):
        return False
    return True
