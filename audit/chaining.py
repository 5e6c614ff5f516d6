"""The audit hash chain in the database: appending links as records are ingested, checkpoints, verification.

The chain itself (hashes, checkpoints, how a break is named) is pure and lives in audit.chain; this module
decides what content each link covers and reads and writes the rows.

What a link covers (`ATTEMPT_CONTENT`, `OUTCOME_CONTENT`): every column the data plane's record set, plus the
attribution the control plane derived that never changes afterwards (the session's id, the user, the agent
name). Not covered: the team and project columns, which are emptied when that team or project is deleted, and
the organization column, emptied when the organization is deleted (the chain is kept per organization id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_scopes import scopes_disabled

from audit import chain
from audit.bulk import insert_many
from audit.models import (
    AdminEvent,
    AuditChainHead,
    AuditCheckpoint,
    AuditLink,
    AuditOutcome,
    AuditRecord,
    AuditRetention,
    LinkKind,
)
from audit.records import ATTEMPT_FIELDS, OUTCOME_FIELDS
from audit.signing import link_key, signing_key
from tenants.models import Organization

log = logging.getLogger("aileron.audit")

# Everything the data plane sent for that half, and the attribution the control plane fixed when it arrived.
ATTEMPT_CONTENT = ("session_uuid", "session_verified", "user_id", "agent", "at", *ATTEMPT_FIELDS)
ADMIN_CONTENT = (
    "actor_id",
    "actor_email",
    "actor_role",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "before",
    "after",
    "created_at",
)
OUTCOME_CONTENT = (*OUTCOME_FIELDS, "outcome")


# The JSON columns: PostgreSQL's jsonb gives numbers back in its own form (1e16 comes back as 10000000000000000).
_JSON_CONTENT = frozenset({"args", "usage", "approvers", "before", "after"})


def _stable(value: Any) -> Any:
    """A JSON value with its integral floats as integers, as every database gives them back."""
    if isinstance(value, float):
        return int(Decimal(repr(value))) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _content(kind: str) -> tuple[str, ...]:
    if kind == LinkKind.ATTEMPT:
        return ATTEMPT_CONTENT
    return ADMIN_CONTENT if kind == LinkKind.ADMIN else OUTCOME_CONTENT


def half_digest(row: Any, kind: str) -> str:
    """The digest of what a link of KIND covers in ROW (a model instance or ingest's plain row)."""
    names = _content(kind)
    return half_digest_of({name: getattr(row, name) for name in names})


def half_digest_of(values: dict[str, Any]) -> str:
    """half_digest over the content's columns given by name."""
    for name in _JSON_CONTENT.intersection(values):
        if values[name]:
            values[name] = _stable(values[name])
    return chain.digest(values)


Entry = tuple[str, str, str]  # (kind, record id, digest)


@dataclass(slots=True)
class _LinkRow:
    """An AuditLink's columns for insert_many (a model instance per link cost more than the INSERT)."""

    organization_uuid: uuid.UUID
    seq: int
    kind: str
    record_id: str
    digest: str
    prev: str
    hash: str
    at: datetime


def _head_locked(organization_uuid: uuid.UUID) -> AuditChainHead:
    """The organization's chain head, made if need be, locked until the transaction ends."""
    start = chain.genesis(str(organization_uuid))
    AuditChainHead.objects.bulk_create(
        [AuditChainHead(organization_uuid=organization_uuid, hash=start, first_prev=start)], ignore_conflicts=True
    )
    return AuditChainHead.objects.select_for_update().get(pk=organization_uuid)


def heads_lock(organization_uuids: Iterable[uuid.UUID]) -> None:
    """Lock these organizations' chains (in a fixed order) for the rest of the transaction: ingest takes them
    before it reads the rows it will change, so a pruning cannot delete a row between its read and its write."""
    for organization_uuid in sorted(set(organization_uuids)):
        _head_locked(organization_uuid)


def links_append(entries: dict[uuid.UUID, list[Entry]]) -> None:
    """Append each organization's entries to its chain, in order. Call inside the transaction that wrote them.

    Organizations are locked in a fixed order, so two batches touching the same two cannot deadlock.
    """
    for organization_uuid in sorted(entries):
        todo = entries[organization_uuid]
        if not todo:
            continue
        head = _head_locked(organization_uuid)
        now = timezone.now()
        made = chain.chain(link_key(), head.hash, head.next_seq, todo, at=now)
        insert_many(
            AuditLink,
            [
                _LinkRow(organization_uuid, link.seq, link.kind, link.record_id, link.digest, link.prev, link.hash, now)
                for link in made
            ],
        )
        AuditChainHead.objects.filter(pk=organization_uuid).update(next_seq=made[-1].seq + 1, hash=made[-1].hash)


# --- checkpoints -------------------------------------------------------------------------------------------


def _checkpoint_store(signed: chain.Checkpoint, *, reason: str) -> None:
    AuditCheckpoint.objects.create(
        organization_uuid=uuid.UUID(signed.organization),
        seq=signed.seq,
        head=signed.head,
        at=signed.at,
        key_id=signed.key_id,
        signature=signed.signature,
        reason=reason,
    )


def checkpoint_make(*, organization_uuid: uuid.UUID, reason: str = "periodic") -> chain.Checkpoint | None:
    """Sign the organization's current head and keep the checkpoint; None for a chain with no link yet."""
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().filter(pk=organization_uuid).first()
        if head is None or head.next_seq == head.first_seq:
            return None
        unsigned = chain.Checkpoint(str(organization_uuid), head.next_seq - 1, head.hash, timezone.now(), "")
        signed = chain.checkpoint_sign(unsigned, signing_key())
        _checkpoint_store(signed, reason=reason)
    return signed


def checkpoints_make_due() -> int:
    """A checkpoint for every chain that moved since its last one (the periodic task)."""
    made = 0
    latest: dict[uuid.UUID, int] = {}
    for organization_uuid, seq in AuditCheckpoint.objects.order_by("organization_uuid", "seq").values_list(
        "organization_uuid", "seq"
    ):
        latest[organization_uuid] = seq
    for head in AuditChainHead.objects.all():
        if head.next_seq > head.first_seq and latest.get(head.organization_uuid, -1) < head.next_seq - 1:
            made += checkpoint_make(organization_uuid=head.organization_uuid) is not None
    return made


def _as_checkpoint(row: AuditCheckpoint) -> chain.Checkpoint:
    purpose = "prune-start" if row.reason == "prune-start" else "head"
    return chain.Checkpoint(str(row.organization_uuid), row.seq, row.head, row.at, row.key_id, row.signature, purpose)


def checkpoint_latest(*, organization_uuid: uuid.UUID) -> chain.Checkpoint | None:
    row = AuditCheckpoint.objects.filter(organization_uuid=organization_uuid).order_by("-seq", "-at").first()
    return _as_checkpoint(row) if row is not None else None


# --- verification ------------------------------------------------------------------------------------------


@dataclass
class Verification:
    organization: str
    intact: bool
    checked: int  # links walked
    first_seq: int
    head_seq: int | None
    broken: chain.Break | None = None
    checkpoints: int = 0  # stored checkpoints that were checked
    against: dict[str, Any] | None = None  # the exported checkpoint given to check against, if any
    note: str = ""  # what could not be checked, and why
    against_checked: bool = False  # whether the exported checkpoint given could be checked at all

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "intact": self.intact,
            "checked": self.checked,
            "first_seq": self.first_seq,
            "head_seq": self.head_seq,
            "broken": self.broken.as_dict() if self.broken is not None else None,
            "checkpoints": self.checkpoints,
            "against": self.against,
            "note": self.note,
            "against_checked": self.against_checked,
        }


_BATCH = 2000


def _links(organization_uuid: uuid.UUID, first_seq: int) -> Iterator[list[chain.Link]]:
    after = first_seq - 1
    while True:
        rows = list(
            AuditLink.objects.filter(organization_uuid=organization_uuid, seq__gt=after)
            .order_by("seq", "id")
            .values_list("seq", "kind", "record_id", "digest", "prev", "hash", "at")[:_BATCH]
        )
        if not rows:
            return
        yield [
            chain.Link(seq, kind, str(rid), dig, prev, value, chain.stamp(at))
            for seq, kind, rid, dig, prev, value, at in rows
        ]
        after = rows[-1][0]
        if len(rows) < _BATCH:
            return


def _current(organization_uuid: uuid.UUID, links: list[chain.Link]) -> dict[tuple[str, str], str | None]:
    """The digest of what each link's record holds now (None: the row or its half is gone)."""
    ids = {link.record_id for link in links if link.kind != LinkKind.ADMIN}
    columns = ("id", "has_attempt", "has_outcome", "outcome", *ATTEMPT_CONTENT, *OUTCOME_CONTENT)
    found = AuditRecord.objects.filter(pk__in=ids, organization_uuid=organization_uuid).values(*set(columns))
    rows = {str(r["id"]): r for r in found}
    event_ids = {link.record_id for link in links if link.kind == LinkKind.ADMIN}
    events = AdminEvent.objects.filter(pk__in=event_ids, organization_uuid=organization_uuid).values(
        "id", *ADMIN_CONTENT
    )
    admin = {str(e["id"]): e for e in events}
    current: dict[tuple[str, str], str | None] = {}
    for link in links:
        key = (link.kind, link.record_id)
        if link.kind == LinkKind.ADMIN:
            event = admin.get(link.record_id)
            current[key] = half_digest_of({n: event[n] for n in ADMIN_CONTENT}) if event is not None else None
            continue
        row = rows.get(link.record_id)
        if row is None:
            current[key] = None
        elif link.kind == LinkKind.ATTEMPT:
            present = row["has_attempt"]
            current[key] = half_digest_of({n: row[n] for n in ATTEMPT_CONTENT}) if present else None
        else:
            present = row["has_outcome"] and (row["outcome"] == AuditOutcome.UNKNOWN) == (link.kind == LinkKind.CLOSED)
            current[key] = half_digest_of({n: row[n] for n in OUTCOME_CONTENT}) if present else None
    return current


# A half's columns hold nothing until that half arrives (what ingest's rows start with).
_NO_OUTCOME = (
    Q(upstream_status__isnull=True, latency_ms__isnull=True, request_bytes__isnull=True)
    & Q(response_bytes__isnull=True, usage__isnull=True, credential_version__isnull=True, completed_at__isnull=True)
    & Q(error="", outcome="")
)
_NO_ATTEMPT = Q(kind="", connector="", action="", method="", host="", path="", decision="", reason="") & Q(
    problem_type="", credential_id__isnull=True, approval_id__isnull=True, dataplane_run__isnull=True
)


def _linked(organization_uuid: uuid.UUID, kind: str, record_id: uuid.UUID) -> bool:
    return AuditLink.objects.filter(organization_uuid=organization_uuid, kind=kind, record_id=record_id).exists()


def _unaccounted(
    organization_uuid: uuid.UUID, chained: set[tuple[str, str]], since: datetime | None
) -> chain.Break | None:
    """A row the organization's log shows that the chain does not vouch for: put in behind its back, moved in or
    out of the organization, or given columns of a half it never received. (A pruning chains again the halves
    it must keep, so every half of every row has its link.)"""
    org_exists = Organization.objects.filter(pk=organization_uuid).exists()
    rows = AuditRecord.objects.filter(Q(organization_uuid=organization_uuid) | Q(organization_id=organization_uuid))
    if since is not None:  # either time may be forged on a row put in behind the chain's back: either counts
        rows = rows.filter(Q(ingested_at__gte=since) | Q(at__gte=since))
    columns = rows.values_list("id", "organization_id", "organization_uuid", "has_attempt", "has_outcome", "outcome")
    for rid, org_id, org_uuid, has_attempt, has_outcome, outcome in columns.iterator():
        record_id = str(rid)
        if org_uuid != organization_uuid:
            return chain.Break(-1, record_id, "inserted", "a record moved into the organization's log")
        if org_id != organization_uuid and (org_exists or org_id is not None):
            return chain.Break(-1, record_id, "edited", "a record moved out of the organization's log")
        if not has_attempt and not has_outcome:
            return chain.Break(-1, record_id, "inserted", "a record with neither an attempt nor an outcome")
        closed = LinkKind.CLOSED if outcome == AuditOutcome.UNKNOWN else LinkKind.OUTCOME
        attempt_chained = has_attempt and (LinkKind.ATTEMPT, record_id) in chained
        outcome_chained = has_outcome and (closed, record_id) in chained
        missing = [k for k, need, have in ((LinkKind.ATTEMPT, has_attempt, attempt_chained),
                                           (closed, has_outcome, outcome_chained)) if need and not have]  # fmt: skip
        if since is not None:  # a half chained before this walk began (clocks differ between hosts) is covered
            missing = [k for k in missing if not _linked(organization_uuid, k, rid)]
        if missing:
            return chain.Break(-1, record_id, "inserted", "a record that no link of the chain covers")
    for bare, half in (
        (~_NO_OUTCOME & Q(has_outcome=False), "outcome"),
        (~_NO_ATTEMPT & Q(has_attempt=False), "attempt"),
    ):
        found = rows.filter(bare).values_list("id", flat=True).first()
        if found is not None:
            return chain.Break(-1, str(found), "edited", f"{half} columns written without an {half}")
    events = AdminEvent.objects.filter(organization_uuid=organization_uuid)
    if since is not None:
        events = events.filter(created_at__gte=since)
    for event_id in events.values_list("id", flat=True).iterator():
        if (LinkKind.ADMIN, str(event_id)) not in chained:
            return chain.Break(-1, str(event_id), "inserted", "an admin event that no link of the chain covers")
    return None


def chain_verify(
    *, organization_uuid: uuid.UUID, since: datetime | None = None, against: chain.Checkpoint | None = None
) -> Verification:
    """Walk the organization's chain (from the first link ingested at or after SINCE, if given) and say whether it
    is intact, or name the first broken record and why. Every stored checkpoint on the way is checked too, and
    an exported one (AGAINST) catches a chain that was rebuilt or cut short after it was taken."""
    with scopes_disabled():  # every query below names the organization itself
        return _verify(organization_uuid, since, against)


def _verify(organization_uuid: uuid.UUID, since: datetime | None, against: chain.Checkpoint | None) -> Verification:
    public = signing_key().public_key()
    key = link_key()
    org = str(organization_uuid)
    head = AuditChainHead.objects.filter(pk=organization_uuid).first()
    first_seq = head.first_seq if head is not None else 0
    start_prev = head.first_prev if head is not None else chain.genesis(str(organization_uuid))
    if first_seq > 0 and not _start_vouched(organization_uuid, first_seq, start_prev, public):
        cut = chain.Break(first_seq, "", "deleted", "the chain's start was removed without a signed pruning")
        return Verification(org, False, 0, first_seq, None, cut, against=against.as_dict() if against else None)
    if since is not None:
        start = AuditLink.objects.filter(organization_uuid=organization_uuid, at__gte=since).order_by("seq").first()
        if start is not None and start.seq > first_seq:
            first_seq, start_prev = start.seq, start.prev  # vouched for by the walk before it, or a checkpoint
    result = Verification(org, True, 0, first_seq, None, against=against.as_dict() if against else None)
    stored = [
        _as_checkpoint(row)
        for row in AuditCheckpoint.objects.filter(organization_uuid=organization_uuid, seq__gte=first_seq)
    ]
    hashes_at: dict[int, str] = {}
    wanted = {c.seq for c in stored} | ({against.seq} if against is not None else set())
    chained: set[tuple[str, str]] = set()
    prev, expected = start_prev, first_seq
    last: chain.Link | None = None
    for batch in _links(organization_uuid, first_seq):
        broken = chain.verify_links(
            batch, key=key, start_prev=prev, start_seq=expected, current=_current(organization_uuid, batch)
        )
        for link in batch:
            if broken is not None and link.seq >= broken.seq:
                break
            chained.add((link.kind, link.record_id))
            if link.seq in wanted:
                hashes_at[link.seq] = link.hash
            result.checked += 1
            last = link
        if broken is not None:
            result.intact, result.broken = False, broken
            return result
        prev, expected = batch[-1].hash, batch[-1].seq + 1
    result.head_seq = last.seq if last is not None else None

    for checkpoint in sorted(stored, key=lambda c: c.seq):
        result.checkpoints += 1
        problem = _checkpoint_problem(checkpoint, public, hashes_at, result.head_seq)
        if problem is not None:
            why, detail = problem
            result.intact, result.broken = False, chain.Break(checkpoint.seq, "", why, f"stored checkpoint: {detail}")
            return result
    if against is not None:
        if against.organization != org:
            result.intact = False
            result.broken = chain.Break(against.seq, "", "edited", "the checkpoint is another organization's")
            return result
        result.against_checked = against.seq >= first_seq
        if not result.against_checked:
            result.note = (
                f"the checkpoint at #{against.seq} precedes where this check began (#{first_seq}: the chain was "
                "pruned there, or --since started it there), so it was not checked"
            )
        problem = _checkpoint_problem(against, public, hashes_at, result.head_seq)
        if problem is not None:
            result.intact, result.broken = False, chain.Break(against.seq, "", problem[0], problem[1])
            return result
    unaccounted = _unaccounted(organization_uuid, chained, since)
    if unaccounted is not None:
        result.intact, result.broken = False, unaccounted
    return result


def _start_vouched(organization_uuid: uuid.UUID, first_seq: int, first_prev: str, public: Any) -> bool:
    """Whether a pruned chain's new start is what a signed pruning checkpoint says."""
    found = AuditCheckpoint.objects.filter(
        organization_uuid=organization_uuid, seq=first_seq - 1, head=first_prev, reason="prune-start"
    )
    return any(chain.checkpoint_valid(_as_checkpoint(row), public) for row in found)


def _checkpoint_problem(
    checkpoint: chain.Checkpoint, public: Any, hashes_at: dict[int, str], head_seq: int | None
) -> tuple[chain.Why, str] | None:
    if not chain.checkpoint_valid(checkpoint, public):
        return "edited", "its signature does not verify with this control plane's audit key"
    if head_seq is None or checkpoint.seq > head_seq:
        return "deleted", f"the chain ends at seq {head_seq}, before the checkpoint's seq {checkpoint.seq}"
    if checkpoint.seq not in hashes_at:
        return None  # before where this walk started (--since)
    if hashes_at[checkpoint.seq] != checkpoint.head:
        return "edited", f"the chain at seq {checkpoint.seq} is not what was signed: it was rebuilt"
    return None


# --- retention ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    links: int
    records: int
    first_seq: int  # where the chain now starts


def chain_prune(*, organization_uuid: uuid.UUID, before: datetime) -> Pruned:
    """Remove the organization's links made before BEFORE from the chain's start, with the records and admin
    events they leave without any link: however busy its agents, retention cuts where it was asked to.

    First the current head is signed (a checkpoint to export before anything goes), then the new start: a
    "prune-start" checkpoint of the last removed link's hash, the only kind verification accepts to begin where
    the chain now begins. What must outlive the cut is chained again after it, as it is now: the half of a
    record whose other half came after the cut, and the retention setting that the pruning applied. The pruning
    itself is an admin event.
    """
    with transaction.atomic(), scopes_disabled():
        head = AuditChainHead.objects.select_for_update().filter(pk=organization_uuid).first()
        if head is None:
            return Pruned(0, 0, 0)
        links = AuditLink.objects.filter(organization_uuid=organization_uuid)
        after = links.filter(seq__gte=head.first_seq, at__gte=before).order_by("seq").first()
        cut = after.seq if after is not None else head.next_seq
        if cut <= head.first_seq:
            return Pruned(0, 0, head.first_seq)
        checkpoint_make(organization_uuid=organization_uuid, reason="prune")
        start_prev = head.hash if cut == head.next_seq else links.get(seq=cut).prev
        start = chain.checkpoint_sign(
            chain.Checkpoint(str(organization_uuid), cut - 1, start_prev, timezone.now(), "", purpose="prune-start"),
            signing_key(),
        )
        _checkpoint_store(start, reason="prune-start")
        gone = links.filter(seq__gte=head.first_seq, seq__lt=cut)
        kept_ids = set(links.filter(seq__gte=cut).values_list("record_id", flat=True))
        carried = _carried(organization_uuid, gone, kept_ids)
        carried_ids = {uuid.UUID(record_id) for _, record_id, _ in carried}
        record_ids = set(gone.exclude(kind=LinkKind.ADMIN).values_list("record_id", flat=True)) - kept_ids
        removed_records, _ = AuditRecord.objects.filter(organization_uuid=organization_uuid, pk__in=record_ids).delete()
        event_ids = set(gone.filter(kind=LinkKind.ADMIN).values_list("record_id", flat=True)) - carried_ids
        # A queryset delete: AdminEvent.delete() refuses, as nothing but retention may remove an event.
        AdminEvent.objects.filter(organization_uuid=organization_uuid, pk__in=event_ids).delete()
        removed_links, _ = gone.delete()
        AuditChainHead.objects.filter(pk=organization_uuid).update(first_seq=cut, first_prev=start_prev)
        links_append({organization_uuid: carried})
        from audit.services import admin_event_record

        organization = Organization.objects.filter(pk=organization_uuid).first()
        if organization is not None:
            admin_event_record(
                acting=None,
                organization=organization,
                action="audit.prune",
                target_type="audit",
                target_id=organization_uuid,
                target_label=f"records before {before.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
                before={"first_seq": head.first_seq},
                after={"first_seq": cut, "links_removed": removed_links, "records_removed": removed_records},
            )
    return Pruned(removed_links, removed_records, cut)


def _carried(organization_uuid: uuid.UUID, gone: Any, kept_ids: set[uuid.UUID]) -> list[Entry]:
    """What a pruning must chain again after its cut, as it is now: the halves of records kept for their other
    half, and the latest retention setting's event (what every later pruning is checked against)."""
    entries: list[Entry] = []
    halves = gone.exclude(kind=LinkKind.ADMIN).filter(record_id__in=kept_ids).order_by("seq")
    rows = {r.pk: r for r in AuditRecord.objects.filter(pk__in=halves.values("record_id"))}
    for kind, record_id in halves.values_list("kind", "record_id"):
        row = rows.get(record_id)
        if row is not None:  # else the row is gone already: verify names it by the link that remains
            entries.append((kind, str(record_id), half_digest(row, kind)))
    setting = _retention_event(organization_uuid)
    if setting is not None and gone.filter(kind=LinkKind.ADMIN, record_id=setting.pk).exists():
        entries.append((LinkKind.ADMIN, str(setting.pk), half_digest(setting, LinkKind.ADMIN)))
    return entries


def _retention_event(organization_uuid: uuid.UUID) -> AdminEvent | None:
    events = AdminEvent.objects.filter(organization_uuid=organization_uuid, action="audit_retention.update")
    return events.order_by("-created_at", "-id").first()


def retention_apply(*, now: datetime | None = None) -> int:
    """Prune every organization that set a retention (the daily task); how many records went.

    A setting is applied only if it is what the organization's chain says was last set (its
    `audit_retention.update` event, vouched for by its link): a retention row written in the database behind
    the service's back must not be able to erase the log."""
    moment = now or timezone.now()
    removed = 0
    with scopes_disabled():
        settings = list(AuditRetention.objects.filter(days__isnull=False))
        for setting in settings:
            if not _retention_vouched(setting):
                log.error(
                    "audit retention of %s: the setting (%s days) is not what its chain says was set; not pruning",
                    setting.organization_uuid,
                    setting.days,
                )
                continue
            assert setting.days is not None  # noqa: S101 - filtered above
            before = moment - timedelta(days=setting.days)
            removed += chain_prune(organization_uuid=setting.organization_uuid, before=before).records
    return removed


def _retention_vouched(setting: AuditRetention) -> bool:
    if setting.days is None or not 1 <= setting.days <= 36500:
        return False
    event = _retention_event(setting.organization_uuid)
    if event is None or not isinstance(event.after, dict) or event.after.get("days") != setting.days:
        return False
    link = AuditLink.objects.filter(
        organization_uuid=setting.organization_uuid, kind=LinkKind.ADMIN, record_id=event.pk
    ).first()
    if link is None:
        return False
    stored = chain.Link(
        link.seq, link.kind, str(link.record_id), link.digest, link.prev, link.hash, chain.stamp(link.at)
    )
    return stored.consistent(link_key()) and link.digest == half_digest(event, LinkKind.ADMIN)
