"""Approvals: asking (the data plane), deciding (people), using a grant once, expiring, cancelling.

Every state change publishes an event after its transaction commits (approvals.events).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_scopes import scopes_disabled

from aileron_site.problems import Conflict, Forbidden, InvalidInput, NotFound
from approvals import binding, events
from approvals.models import Approval, ApprovalDecision, ApprovalRule, ApprovalState, DecisionKind
from audit import snapshots
from audit.services import admin_event_record
from connectors.services import catalog_pattern_validate
from tenants.models import ApiToken, Membership, Organization, User
from tenants.permissions import Perm, role_has

DEFAULT_PENDING_TTL = 24 * 3600  # long enough for a night's run to be decided in the morning
DEFAULT_GRANT_TTL = 3600  # a grant must be used (the agent's identical retry) within this
REASON_MAX = 1000


def pending_ttl() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "AILERON_APPROVAL_TTL_SECONDS", DEFAULT_PENDING_TTL)))


def grant_ttl() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "AILERON_APPROVAL_GRANT_TTL_SECONDS", DEFAULT_GRANT_TTL)))


# --- rules -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleValues:
    four_eyes: bool = False
    approvers_required: int = 1
    window_seconds: int = 120
    rule_id: uuid.UUID | None = None


def approval_rule_for(*, organization: Organization, action: str) -> RuleValues:
    """The most specific rule for an action: exact, then the longest matching `prefix*`, then `*`."""
    best: ApprovalRule | None = None
    best_rank = -1
    for rule in ApprovalRule.objects.filter(organization=organization):
        pattern = rule.action
        if pattern == action:
            rank = 10_000
        elif pattern.endswith("*") and action.startswith(pattern[:-1]):
            rank = len(pattern)
        else:
            continue
        if rank > best_rank:
            best, best_rank = rule, rank
    if best is None:
        return RuleValues()
    return RuleValues(best.four_eyes, best.approvers_required, best.window_seconds, best.id)


def approval_rule_validate_pattern(action: str) -> str:
    """The pattern, if it is well formed and matches an installed action (a rule matching none never applies)."""
    text = action.strip()
    if not text or len(text) > 200 or any(c.isspace() for c in text) or "*" in text[:-1]:
        raise InvalidInput("An action is exact (stripe.create-refund), a prefix ending in * (stripe.*), or *.")
    catalog_pattern_validate(pattern=text, pointer="/action")
    return text


def _rule_event(*, acting: Membership, action: str, rule: ApprovalRule, before: snapshots.Snapshot | None) -> None:
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="approval_rule",
        target_id=rule.pk,
        target_label=rule.action,
        before=before,
        after=None if action == "approval_rule.delete" else snapshots.approval_rule_snapshot(rule),
    )


@transaction.atomic
def approval_rule_create(
    *,
    acting: Membership,
    action: str,
    four_eyes: bool = False,
    approvers_required: int = 1,
    window_seconds: int = 120,
) -> ApprovalRule:
    rule = ApprovalRule(
        organization=acting.organization,
        action=approval_rule_validate_pattern(action),
        four_eyes=four_eyes,
        approvers_required=approvers_required,
        window_seconds=window_seconds,
    )
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise Conflict(f"A rule for {rule.action} exists already; change that one.") from None
    _rule_event(acting=acting, action="approval_rule.create", rule=rule, before=None)
    return rule


@transaction.atomic
def approval_rule_update(*, acting: Membership, rule: ApprovalRule, **changes: Any) -> ApprovalRule:
    before = snapshots.approval_rule_snapshot(rule)
    if "action" in changes:
        changes["action"] = approval_rule_validate_pattern(changes["action"])
    for name, value in changes.items():
        setattr(rule, name, value)
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise Conflict(f"A rule for {rule.action} exists already.") from None
    _rule_event(acting=acting, action="approval_rule.update", rule=rule, before=before)
    return rule


@transaction.atomic
def approval_rule_delete(*, acting: Membership, rule: ApprovalRule) -> None:
    _rule_event(acting=acting, action="approval_rule.delete", rule=rule, before=snapshots.approval_rule_snapshot(rule))
    rule.delete()


# --- the data plane asks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldRequest:
    """What the data plane sends when policy says a request needs approval."""

    session_id: uuid.UUID
    request_id: uuid.UUID
    connector: str
    action: str
    args: dict[str, Any]
    method: str
    host: str
    path: str
    query: str
    body_sha256: str
    body_bytes: int
    credential_id: uuid.UUID
    reason: str = ""


@dataclass(slots=True)
class Claim:
    """The answer to the data plane: go (a grant, used now), wait (pending), or stop (rejected)."""

    approval: Approval
    state: str
    used_now: bool = False
    approvers: list[str] = field(default_factory=list)


def _live_session(session_id: uuid.UUID) -> ApiToken:
    with scopes_disabled():
        session = ApiToken.objects.filter(pk=session_id, kind="ses").select_related("user", "organization").first()
        if (
            session is None
            or not session.is_active
            or session.user is None
            or session.organization is None
            or not session.user.is_active
            or not Membership.objects.filter(organization=session.organization, user=session.user).exists()
        ):
            raise NotFound("No live session.")
    return session


def approval_claim(*, held: HeldRequest) -> Claim:
    """Match the exact request to its approval, creating a pending one if there is none to use.

    A granted, unused, unexpired approval is consumed by this call (single use). A pending one is shared by
    identical requests. A rejected one keeps refusing that exact request in that session. Anything else
    (expired, cancelled, used) asks anew."""
    if len(held.body_sha256) != 64 or any(c not in "0123456789abcdef" for c in held.body_sha256.lower()):
        raise InvalidInput("body_sha256 must be 64 hex digits.")
    session = _live_session(held.session_id)
    organization = session.organization
    assert organization is not None and session.user is not None  # noqa: S101 (checked by _live_session)
    digest = binding.request_hash(
        organization_id=str(organization.pk),
        session_id=str(session.pk),
        method=held.method,
        host=held.host,
        path=held.path,
        query=held.query,
        body_sha256=held.body_sha256,
        credential_id=str(held.credential_id),
    )
    now = timezone.now()
    with scopes_disabled():
        for _attempt in range(3):
            try:
                with transaction.atomic():
                    latest = (
                        Approval.objects.select_for_update()
                        .filter(organization=organization, request_hash=digest)
                        .order_by("-created_at")
                        .first()
                    )
                    if latest is not None:
                        claim = _claim_existing(latest, now=now, request_id=held.request_id)
                        if claim is not None:
                            return claim
                    rule = approval_rule_for(organization=organization, action=held.action)
                    approval = Approval.objects.create(
                        organization=organization,
                        session=session,
                        session_uuid=session.pk,
                        requester=session.user,
                        requester_email=session.user.email,
                        agent=session.name[:100],
                        project_id=session.project_id,
                        connector=held.connector[:100],
                        action=held.action[:200],
                        args=held.args,
                        method=held.method.upper()[:16],
                        host=held.host.lower()[:253],
                        path=held.path[:2048],
                        query=binding.sorted_query(held.query),
                        body_sha256=held.body_sha256.lower(),
                        body_bytes=held.body_bytes,
                        credential_id=held.credential_id,
                        request_hash=digest,
                        request_id=held.request_id,
                        held_reason=held.reason[:REASON_MAX],
                        four_eyes=rule.four_eyes,
                        approvers_required=rule.approvers_required,
                        window_seconds=rule.window_seconds,
                        created_at=now,
                        expires_at=now + pending_ttl(),
                    )
                    events.publish(approval, "created")
                    return Claim(approval=approval, state=ApprovalState.PENDING)
            except IntegrityError:
                continue  # an identical request created the pending approval first: share it
    raise Conflict("Could not record the approval request; retry.")


def _claim_existing(approval: Approval, *, now: datetime, request_id: uuid.UUID) -> Claim | None:
    if approval.state == ApprovalState.PENDING and approval.expires_at > now:
        return Claim(approval=approval, state=ApprovalState.PENDING)
    if approval.state == ApprovalState.REJECTED:
        return Claim(approval=approval, state=ApprovalState.REJECTED, approvers=_voters(approval))
    if approval.state == ApprovalState.GRANTED and approval.consumed_at is None and approval.expires_at > now:
        if _consume(approval, now=now, request_id=request_id):
            approval.refresh_from_db()
            events.publish(approval, "used")
            return Claim(approval=approval, state=ApprovalState.GRANTED, used_now=True, approvers=_voters(approval))
    if approval.state in (ApprovalState.PENDING, ApprovalState.GRANTED) and approval.expires_at <= now:
        _expire(approval)
    return None


def _consume(approval: Approval, *, now: datetime, request_id: uuid.UUID) -> bool:
    """Use a grant once: a conditional UPDATE, so two requests racing for it cannot both win."""
    used = Approval.objects.filter(
        pk=approval.pk, state=ApprovalState.GRANTED, consumed_at__isnull=True, expires_at__gt=now
    ).update(consumed_at=now, consumed_request_id=request_id)
    return used == 1


def _voters(approval: Approval) -> list[str]:
    return [d.user_email for d in approval.decisions.all()]


def approval_peek(*, approval_id: uuid.UUID) -> Claim:
    """The approval's state, for the data plane's wait (expiring it if due). Uses nothing: the data plane then
    claims the grant with the exact request, if its agent is still there to receive the answer."""
    with scopes_disabled():
        approval = Approval.objects.filter(pk=approval_id).prefetch_related("decisions").first()
        if approval is None:
            raise NotFound("No such approval.")
        if approval.state in (ApprovalState.PENDING, ApprovalState.GRANTED) and approval.expires_at <= timezone.now():
            _expire(approval)
        return Claim(approval=approval, state=approval.state, approvers=_voters(approval))


def approval_use(*, approval_id: uuid.UUID, request_id: uuid.UUID, announce: bool = True) -> Claim:
    """After a wait: use the grant for the request that asked for this approval (whose exact-request hash
    matched it at claim time), or say the state. A grant another identical request took first reads "used".

    `announce=False` leaves the "used" event to the caller (the wait view pushes it after it has answered)."""
    now = timezone.now()
    with scopes_disabled():
        approval = Approval.objects.filter(pk=approval_id).prefetch_related("decisions").first()
        if approval is None:
            raise NotFound("No such approval.")
        if approval.state == ApprovalState.GRANTED and approval.consumed_at is None:
            with transaction.atomic():
                if _consume(approval, now=now, request_id=request_id):
                    approval.refresh_from_db()
                    if announce:
                        events.publish(approval, "used")
                    return Claim(approval, ApprovalState.GRANTED, used_now=True, approvers=_voters(approval))
            approval.refresh_from_db()
        if approval.state in (ApprovalState.PENDING, ApprovalState.GRANTED) and approval.expires_at <= now:
            _expire(approval)
        state = "used" if approval.state == ApprovalState.GRANTED and approval.consumed_at else approval.state
        return Claim(approval=approval, state=state, approvers=_voters(approval))


def approval_release(*, approval_id: uuid.UUID, request_id: uuid.UUID) -> bool:
    """Give back a grant the data plane used for a request whose agent went away before it was sent."""
    with scopes_disabled():
        released = Approval.objects.filter(
            pk=approval_id, state=ApprovalState.GRANTED, consumed_request_id=request_id, outcome_status__isnull=True
        ).update(consumed_at=None, consumed_request_id=None)
    return released == 1


def approval_record_outcomes(*, statuses: dict[uuid.UUID, int]) -> None:
    """Requests that used a grant have completed (request id -> upstream status): the morning view shows it.

    One indexed query per audit batch; an UPDATE only for the few requests that used a grant."""
    with scopes_disabled():
        used = Approval.objects.filter(consumed_request_id__in=list(statuses), outcome_status__isnull=True)
        for approval_id, request_id in used.values_list("pk", "consumed_request_id"):
            if request_id is None:
                continue
            Approval.objects.filter(pk=approval_id).update(outcome_status=statuses[request_id])
            events.publish_after(approval_id, "completed")


# --- people decide ---------------------------------------------------------------------------------------------


def approval_decide(*, approval: Approval, membership: Membership, decision: str, reason: str = "") -> Approval:
    """One approver's grant or reject. Refused: without approval.decide, four eyes, twice, or once decided."""
    if decision not in DecisionKind.values:
        raise InvalidInput("decision is grant or reject.")
    if approval.organization_id != membership.organization_id:
        raise NotFound("No such approval.")  # never reached through the selectors; belt and braces
    if not role_has(membership.role, Perm.APPROVAL_DECIDE):
        raise Forbidden(f"Your role ({membership.role}) lacks {Perm.APPROVAL_DECIDE.value}.")
    reason = reason.strip()
    if len(reason) > REASON_MAX:
        raise InvalidInput(f"A reason is at most {REASON_MAX} characters.")
    if decision == DecisionKind.REJECT and not reason:
        raise InvalidInput("A rejection needs a reason: the agent and the requester are shown it.")
    user: User = membership.user
    now = timezone.now()
    if approval.state == ApprovalState.PENDING and approval.expires_at <= now:
        _expire(approval)
        raise Conflict("The approval expired before this decision.", state="expired")
    with transaction.atomic():
        locked = Approval.objects.select_for_update().get(pk=approval.pk)
        if locked.state != ApprovalState.PENDING or locked.expires_at <= now:
            state = locked.state if locked.state != ApprovalState.PENDING else "expired"
            raise Conflict(f"The approval is {state} already.", state=state)
        if locked.four_eyes and locked.requester_id == user.pk:
            raise Forbidden("Four eyes: someone other than the requester must decide this action.")
        if locked.decisions.filter(user=user).exists():
            raise Conflict("You have decided this approval already; another approver must agree.")
        ApprovalDecision.objects.create(
            approval=locked, user=user, user_email=user.email, decision=decision, reason=reason, at=now
        )
        if decision == DecisionKind.REJECT:
            locked.state = ApprovalState.REJECTED
            locked.decided_at = now
            locked.decision_reason = reason
            locked.save(update_fields=["state", "decided_at", "decision_reason"])
            events.publish(locked, "decided")
        elif locked.decisions.filter(decision=DecisionKind.GRANT).count() >= locked.approvers_required:
            locked.state = ApprovalState.GRANTED
            locked.decided_at = now
            locked.decision_reason = reason
            locked.expires_at = now + grant_ttl()
            locked.save(update_fields=["state", "decided_at", "decision_reason", "expires_at"])
            events.publish(locked, "decided")
        else:
            events.publish(locked, "voted")  # one of two approvals is in
    return locked


def approval_cancel(*, approval: Approval, membership: Membership) -> Approval:
    """The requester (or an approver) withdraws a pending request."""
    if approval.requester_id != membership.user_id and not role_has(membership.role, Perm.APPROVAL_DECIDE):
        raise Forbidden("Only the requester or an approver may cancel it.")
    with transaction.atomic():
        updated = Approval.objects.filter(pk=approval.pk, state=ApprovalState.PENDING).update(
            state=ApprovalState.CANCELLED,
            decided_at=timezone.now(),
            decision_reason=f"cancelled by {membership.user.email}",
        )
        approval.refresh_from_db()
        if not updated:
            raise Conflict(f"The approval is {approval.state} already.", state=approval.state)
        events.publish(approval, "cancelled")
    return approval


def approvals_cancel_for_session(*, session_id: uuid.UUID, why: str = "the session ended") -> int:
    """Withdraw a session's pending approvals and unused grants (called when a session ends or is revoked)."""
    now = timezone.now()
    with scopes_disabled(), transaction.atomic():
        open_ = list(
            Approval.objects.select_for_update().filter(
                Q(state=ApprovalState.PENDING) | Q(state=ApprovalState.GRANTED, consumed_at__isnull=True),
                session_uuid=session_id,
            )
        )
        for approval in open_:
            approval.state = ApprovalState.CANCELLED
            approval.decided_at = approval.decided_at or now
            approval.decision_reason = approval.decision_reason or why
            approval.save(update_fields=["state", "decided_at", "decision_reason"])
            events.publish(approval, "cancelled")
    return len(open_)


def _expire(approval: Approval) -> None:
    changed = Approval.objects.filter(
        Q(state=ApprovalState.PENDING) | Q(state=ApprovalState.GRANTED, consumed_at__isnull=True),
        pk=approval.pk,
        expires_at__lte=timezone.now(),
    ).update(state=ApprovalState.EXPIRED)
    if changed:
        approval.state = ApprovalState.EXPIRED
        events.publish(approval, "expired")


def approvals_expire_due(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Expire pending approvals nobody decided in time and grants nobody used in time (Celery beat)."""
    now = now or timezone.now()
    expired = 0
    with scopes_disabled():
        due = list(
            Approval.objects.filter(
                Q(state=ApprovalState.PENDING) | Q(state=ApprovalState.GRANTED, consumed_at__isnull=True),
                expires_at__lte=now,
            ).order_by("expires_at")[:limit]
        )
        for approval in due:
            with transaction.atomic():
                before = approval.state
                _expire(approval)
                expired += approval.state != before
    return expired
