"""Reading approvals: approvers (approval.decide) and auditors see the organization's; others their own."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from aileron_site.problems import NotFound
from approvals.models import Approval, ApprovalRule, NotificationChannel
from tenants.models import Membership
from tenants.permissions import Perm, role_has


def approval_sees_all(*, membership: Membership) -> bool:
    return role_has(membership.role, Perm.APPROVAL_DECIDE) or role_has(membership.role, Perm.AUDIT_READ)


def approval_list(*, membership: Membership) -> QuerySet[Approval]:
    qs = Approval.objects.filter(organization=membership.organization).prefetch_related("decisions")
    return qs if approval_sees_all(membership=membership) else qs.filter(requester_id=membership.user_id)


def approval_get(*, membership: Membership, approval_id: uuid.UUID) -> Approval:
    """The one access function: 404 alike for missing, another organization's, or not yours to see."""
    approval = approval_list(membership=membership).filter(pk=approval_id).first()
    if approval is None:
        raise NotFound("No such approval.")
    return approval


def approval_rule_list(*, membership: Membership) -> QuerySet[ApprovalRule]:
    return ApprovalRule.objects.filter(organization=membership.organization)


def approval_rule_get(*, membership: Membership, rule_id: uuid.UUID) -> ApprovalRule:
    rule = approval_rule_list(membership=membership).filter(pk=rule_id).first()
    if rule is None:
        raise NotFound("No such approval rule.")
    return rule


def notification_channel_list(*, membership: Membership) -> QuerySet[NotificationChannel]:
    return NotificationChannel.objects.filter(organization=membership.organization).select_related("created_by")


def notification_channel_get(*, membership: Membership, channel_id: uuid.UUID) -> NotificationChannel:
    """The one access function: 404 alike for missing and another organization's channel."""
    channel = notification_channel_list(membership=membership).filter(pk=channel_id).first()
    if channel is None:
        raise NotFound("No such notification channel.")
    return channel
