"""One-time approval links: a notification's way to let one person decide one approval, once.

Who is behind a link (the rule, also in the README): a link is always issued to one user who may decide the
approval right now (a member with approval.decide who is not the requester of a four-eyes action), and deciding
through it is `approval_decide` as that user, so four eyes, one vote per person and "pending only" still hold. An
email channel issues one link per address that belongs to such a member (other addresses get the message without a
link); a webhook or Slack channel issues its link on behalf of the member who created the channel or last changed
its target (approvals.notifications.notification_channel_update), if they may decide it: whoever reads that channel
decides as its creator, so point such channels only at people the creator would hand the decision to.

A link opens and decides its own approval and nothing else: it is not a bearer token (the API refuses it), it
names no other approval, it is used up by its first decision, and it expires when the approval stops being
pending. The page carries it in the URL fragment, so it never reaches a server log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_scopes import scopes_disabled

from aileron_shared import tokens
from aileron_site.problems import Forbidden, NotFound
from approvals.models import Approval, ApprovalLink, ApprovalState, NotificationChannel
from approvals.services import approval_decide
from tenants.models import Membership, User
from tenants.permissions import Perm, role_has
from tenants.selectors import token_key

LINK_NOT_FOUND = "This approval link is unknown or has expired."


@dataclass(frozen=True, slots=True)
class LinkView:
    link: ApprovalLink
    approval: Approval
    may_decide: bool


def approval_link_may_issue(*, approval: Approval, user: User) -> bool:
    """Whether USER may decide APPROVAL now (the only people a link is ever issued to)."""
    if approval.state != ApprovalState.PENDING or approval.expires_at <= timezone.now() or not user.is_active:
        return False
    with scopes_disabled():
        membership = Membership.objects.filter(organization_id=approval.organization_id, user=user).first()
    if membership is None or not role_has(membership.role, Perm.APPROVAL_DECIDE):
        return False
    return not (approval.four_eyes and approval.requester_id == user.pk)


def approval_link_issue(*, approval: Approval, user: User, channel: NotificationChannel | None = None) -> str | None:
    """A fresh link token for USER to decide APPROVAL once, or None if they may not decide it."""
    if not approval_link_may_issue(approval=approval, user=user):
        return None
    new = tokens.generate("apl", token_key())
    with scopes_disabled():
        ApprovalLink.objects.create(
            organization_id=approval.organization_id,
            approval=approval,
            user=user,
            channel=channel,
            lookup=new.lookup,
            digest=new.digest,
            expires_at=approval.expires_at,
        )
    return new.plaintext


def approval_link_find(*, raw: str) -> ApprovalLink:
    """The live link this secret is (with its approval and user), or NotFound: unknown, wrong or expired alike."""
    try:
        parsed = tokens.parse(raw.strip())
    except tokens.MalformedToken:
        raise NotFound(LINK_NOT_FOUND) from None
    if parsed.kind != "apl":
        raise NotFound(LINK_NOT_FOUND)
    with scopes_disabled():
        link = (
            ApprovalLink.objects.select_related("approval", "user", "organization").filter(lookup=parsed.lookup).first()
        )
    if link is None or not tokens.verify(token_key(), parsed.raw, link.digest):
        raise NotFound(LINK_NOT_FOUND)
    if link.expires_at <= timezone.now() or not link.user.is_active:
        raise NotFound(LINK_NOT_FOUND)
    return link


def approval_link_open(*, raw: str) -> LinkView:
    """What the page shows for a link: its approval, and whether the link can still decide it."""
    link = approval_link_find(raw=raw)
    with scopes_disabled():
        approval = Approval.objects.prefetch_related("decisions").get(pk=link.approval_id)
    may = link.used_at is None and approval_link_may_issue(approval=approval, user=link.user)
    return LinkView(link=link, approval=approval, may_decide=may)


def approval_link_decide(*, raw: str, approval_id: uuid.UUID, decision: str, reason: str = "") -> Approval:
    """Grant or reject the link's approval as the link's user, using the link up. Nothing else, never twice.

    The link is claimed and the decision made in one transaction: a decision refused (a reject without a
    reason, four eyes, decided meanwhile) leaves the link as it was."""
    link = approval_link_find(raw=raw)
    if link.approval_id != approval_id:
        raise NotFound("No such approval.")  # a link decides its own approval only
    with scopes_disabled():
        membership = (
            Membership.objects.select_related("organization", "user")
            .filter(organization_id=link.organization_id, user_id=link.user_id)
            .first()
        )
        if membership is None:
            raise Forbidden("The person this link was sent to is no longer a member of the organization.")
        with transaction.atomic():
            claimed = ApprovalLink.objects.filter(pk=link.pk, used_at__isnull=True).update(used_at=timezone.now())
            if not claimed:
                raise Forbidden("This link has been used: it decides once.", state="used")
            decided = approval_decide(approval=link.approval, membership=membership, decision=decision, reason=reason)
        return Approval.objects.prefetch_related("decisions").get(pk=decided.pk)
