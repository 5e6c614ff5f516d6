"""Writing the audit log: ingesting the data plane's batches, idempotently and attributed by the control plane."""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import DataError, IntegrityError, transaction
from django.utils import timezone
from django_scopes import scopes_disabled

from audit.bulk import insert_many, update_many
from audit.chaining import Entry, half_digest, heads_lock, links_append
from audit.models import AdminEvent, AuditDecision, AuditOutcome, AuditRecord, AuditRetention, LinkKind
from audit.records import RecordError, ShippedRecord, raw_id, record_parse
from audit.snapshots import Snapshot
from tenants.models import ApiToken, Membership, Organization, TeamMembership, TokenKind, User

log = logging.getLogger("aileron.audit")


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Attribution:
    organization_id: uuid.UUID | None
    session: ApiToken | None
    team_id: uuid.UUID | None
    verified: bool = True


_NOBODY = _Attribution(organization_id=None, session=None, team_id=None, verified=False)


def _attributions(session_ids: set[uuid.UUID]) -> dict[uuid.UUID, _Attribution]:
    """Who each session speaks for, from its token row (revoked and expired ones too: they were live once)."""
    sessions = list(ApiToken.objects.filter(pk__in=session_ids, kind=TokenKind.SESSION).select_related("project"))
    pairs = {(s.organization_id, s.user_id) for s in sessions}
    teams: dict[tuple[uuid.UUID | None, uuid.UUID | None], list[uuid.UUID]] = defaultdict(list)
    if pairs:
        memberships = TeamMembership.objects.filter(
            organization_id__in={o for o, _ in pairs}, user_id__in={u for _, u in pairs}
        ).values_list("organization_id", "user_id", "team_id")
        for organization_id, user_id, member_of in memberships:
            teams[(organization_id, user_id)].append(member_of)
    found: dict[uuid.UUID, _Attribution] = {}
    for session in sessions:
        assert session.organization_id is not None  # noqa: S101  (token_kind_owner_shape)
        team_id = session.project.team_id if session.project is not None else None
        if team_id is None:
            only = teams.get((session.organization_id, session.user_id), [])
            team_id = only[0] if len(only) == 1 else None
        found[session.pk] = _Attribution(session.organization_id, session, team_id)
    return found


def _by_lookup(records: list[ShippedRecord]) -> dict[str, _Attribution]:
    """Refusals that named their session only by its token's lookup part: that session, marked unverified."""
    lookups = {r.fields["token_lookup"] for r in records if r.session_id is None and r.fields.get("token_lookup")}
    if not lookups:
        return {}
    ids = dict(ApiToken.objects.filter(lookup__in=lookups, kind=TokenKind.SESSION).values_list("lookup", "pk"))
    found = _attributions(set(ids.values()))
    return {
        lookup: _Attribution(who.organization_id, who.session, who.team_id, verified=False)
        for lookup, pk in ids.items()
        if (who := found.get(pk)) is not None
    }


class _NewRow:
    """A row not in the table yet: its columns as plain attributes, written by insert_many. Making a model instance
    (signals, descriptors) cost more than writing it."""


def _new_row(record: ShippedRecord, who: _Attribution, now: Any) -> Any:
    row = _NewRow()
    row.__dict__.update({f.attname: f.get_default() for f in AuditRecord._meta.concrete_fields})
    session = who.session
    row.__dict__.update(
        id=record.id,
        organization_id=who.organization_id,
        organization_uuid=who.organization_id,
        session_id=session.pk if session is not None else None,
        session_uuid=session.pk if session is not None else None,
        session_verified=who.verified,
        user_id=session.user_id if session is not None else None,
        agent=session.name if session is not None else "",
        team_id=who.team_id,
        project_id=session.project_id if session is not None else None,
        at=record.at,
        ingested_at=now,
    )
    return row


def _close_runs(restarts: list[ShippedRecord], chained: dict[uuid.UUID, list[Entry]]) -> None:
    """A data plane's spool started again: the previous run's attempts that never got an outcome never will.

    The restart record follows every record of the previous run in its spool, so they are all in by now; a
    re-sent restart record finds nothing left to close. Each closed attempt is a link of its chain.
    """
    for restart in restarts:
        rows = AuditRecord.objects.filter(
            dataplane_run=restart.fields["previous_run"],
            has_attempt=True,
            has_outcome=False,
            decision=AuditDecision.ALLOW,
        ).order_by("ingested_at", "id")
        for row in rows:
            row.has_outcome, row.outcome, row.completed_at = True, AuditOutcome.UNKNOWN, restart.at
            if row.organization_uuid is not None:
                chained[row.organization_uuid].append((LinkKind.CLOSED, str(row.pk), half_digest(row, "outcome")))
        AuditRecord.objects.filter(pk__in=[row.pk for row in rows]).update(
            has_outcome=True, outcome=AuditOutcome.UNKNOWN, completed_at=restart.at
        )


def _apply(row: Any, record: ShippedRecord) -> dict[str, Any]:
    """Write the record's half into the row unless that half is already there; the columns it changed."""
    changes: dict[str, Any] = dict(record.fields)
    if record.phase == "attempt":
        if row.has_attempt:
            return {}
        changes.update(at=record.at, has_attempt=True)  # the attempt's time wins over an outcome's provisional one
    else:
        if row.has_outcome:
            return {}
        changes.update(has_outcome=True, outcome=AuditOutcome.COMPLETED)
    for name, value in changes.items():
        setattr(row, name, value)
    return changes


def _approval_outcomes(outcomes: list[ShippedRecord]) -> None:
    """A request that used a grant has completed: the approval shows its upstream status (the morning view)."""
    from approvals.services import approval_record_outcomes

    statuses = {r.id: r.fields["upstream_status"] for r in outcomes if r.fields.get("upstream_status") is not None}
    if statuses:
        approval_record_outcomes(statuses=statuses)


def audit_ingest(*, records: list[Any]) -> IngestResult:
    """Store a batch from the data plane: each record's half once, every bad record reported, none dropped.

    Re-sending a record is a no-op, so the data plane's spool may retry a whole batch after any failure. Should
    the database refuse the batch for what one record holds, each record is stored on its own and the ones it
    refuses are reported as rejected: one record must never hold up every record shipped after it.
    """
    try:
        return _ingest(records)
    except (DataError, IntegrityError):
        log.warning("audit ingest: the database refused a batch of %d; storing its records one by one", len(records))
    result = IngestResult()
    for index, raw in enumerate(records):
        try:
            one = _ingest([raw])
        except (DataError, IntegrityError) as exc:
            reason = f"the database cannot store this record: {str(exc).splitlines()[0][:200]}"
            result.rejected.append({"index": index, "id": raw_id(raw), "reason": reason})
            continue
        result.accepted += one.accepted
        result.rejected += [{**r, "index": index} for r in one.rejected]
    return result


@transaction.atomic
def _ingest(records: list[Any]) -> IngestResult:
    result = IngestResult()
    parsed: list[tuple[int, ShippedRecord]] = []
    for index, raw in enumerate(records):
        try:
            parsed.append((index, record_parse(raw)))
        except RecordError as exc:
            result.rejected.append({"index": index, "id": raw_id(raw), "reason": str(exc)})

    restarts = [r for _, r in parsed if r.phase == "restart"]
    parsed = [(i, r) for i, r in parsed if r.phase != "restart"]
    with scopes_disabled():  # the data plane ships every organization's records in one batch
        who = _attributions({r.session_id for _, r in parsed if r.session_id is not None})
        by_lookup = _by_lookup([r for _, r in parsed])
        # Lock the chains before reading the rows to change, so a pruning cannot delete one in between.
        heads_lock(a.organization_id for a in (*who.values(), *by_lookup.values()) if a.organization_id is not None)
        existing = AuditRecord.objects.in_bulk([r.id for _, r in parsed])
        now = timezone.now()
        created: dict[uuid.UUID, Any] = {}
        changed: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
        chained: dict[uuid.UUID, list[Entry]] = defaultdict(list)  # each organization's new links, in order
        for index, record in parsed:
            if record.session_id is not None:
                attribution = who.get(record.session_id)
            else:
                attribution = by_lookup.get(record.fields.get("token_lookup") or "", _NOBODY)
            if attribution is None:
                result.rejected.append({"index": index, "id": str(record.id), "reason": "unknown agent session"})
                continue
            session_uuid = attribution.session.pk if attribution.session is not None else None
            row = existing.get(record.id) or created.get(record.id)
            if row is None:
                row = created[record.id] = _new_row(record, attribution, now)
            elif row.organization_id != attribution.organization_id or row.session_uuid != session_uuid:
                # Never merge across tenants or sessions: the id is taken by someone else's request.
                result.rejected.append(
                    {"index": index, "id": str(record.id), "reason": "this id belongs to another session's record"}
                )
                continue
            changes = _apply(row, record)
            if changes and record.id not in created:
                changed[record.id].update(changes)
            if changes and row.organization_uuid is not None:
                chained[row.organization_uuid].append((record.phase, str(record.id), half_digest(row, record.phase)))
            result.accepted += 1
        insert_many(AuditRecord, list(created.values()))
        update_many(AuditRecord, changed)  # each row its own values, in one statement
        _approval_outcomes([r for _, r in parsed if r.phase == "outcome"])
        _close_runs(restarts, chained)
        links_append(chained)
        result.accepted += len(restarts)
    result.rejected.sort(key=lambda r: int(r["index"]))
    return result


@transaction.atomic
def audit_retention_set(*, acting: Membership, days: int | None) -> AuditRetention:
    """Keep the organization's audit records DAYS days (None: for ever). The daily task prunes older ones, each
    pruning after a signed checkpoint of the chain as it was."""
    before = audit_retention_get(organization=acting.organization).days
    setting, _ = AuditRetention.objects.update_or_create(
        organization_uuid=acting.organization_id,
        defaults={"days": days, "updated_at": timezone.now(), "updated_by": acting.user.email},
    )
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action="audit_retention.update",
        target_type="audit_retention",
        target_id=acting.organization_id,
        target_label=acting.organization.name,
        before={"days": before},
        after={"days": setting.days},
    )
    return setting


def audit_retention_get(*, organization: Organization) -> AuditRetention:
    found = AuditRetention.objects.filter(pk=organization.pk).first()
    return found or AuditRetention(organization_uuid=organization.pk, days=None, updated_by="")


# --- admin events --------------------------------------------------------------------------------------------

ADMIN_ACTION = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


def admin_event_record(
    *,
    acting: Membership | User | None,
    organization: Organization | None,
    action: str,
    target_type: str,
    target_id: object,
    target_label: str = "",
    before: Snapshot | None = None,
    after: Snapshot | None = None,
) -> AdminEvent:
    """Record that ACTING did ACTION to a target of ORGANIZATION, with the target's snapshots before and after.

    ACTING is the membership the person acted through (its role is kept), a user for what belongs to no
    organization (their personal tokens), or None for the system (a Celery task, the data plane, an operator's
    command). It must be called inside the transaction that makes the change, so the event and the change
    commit or roll back together: called outside one, it refuses rather than write an event that may describe a
    change that never happened.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("admin_event_record must run inside the transaction of the change it records")
    if not ADMIN_ACTION.match(action):
        raise ValueError(f"admin event action {action!r} is not a dotted slug like team.create")
    actor: User | None
    if isinstance(acting, Membership):
        actor, role = acting.user, acting.role
    else:
        actor, role = acting, ""
    with scopes_disabled():  # written for any organization, or none, from services that may run outside a scope
        event = AdminEvent.objects.create(
            organization=organization,
            organization_uuid=organization.pk if organization is not None else None,
            actor=actor,
            actor_email=actor.email if actor is not None else "",
            actor_role=role,
            action=action,
            target_type=target_type,
            target_id=str(target_id) if target_id is not None else "",
            target_label=target_label[:200],
            before=before,
            after=after,
        )
    if event.organization_uuid is not None:  # a link of the organization's chain, in the same transaction
        links_append({event.organization_uuid: [(LinkKind.ADMIN, str(event.pk), half_digest(event, LinkKind.ADMIN))]})
    return event
