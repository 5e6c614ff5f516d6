"""Approvals: a request the data plane holds until people with approval.decide grant or reject it.

An Approval is bound to the SHA-256 of one exact request (approvals.binding) and to the parsed action and
arguments the approver is shown. A grant is single-use: the first byte-identical request consumes it
(`consumed_at`), and nothing else ever matches it. States move one way: pending -> granted | rejected | expired
| cancelled, and granted -> expired if it is not used in time.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_scopes import ScopedManager

from tenants.models import ApiToken, Organization, Project

WINDOW_MAX_SECONDS = 3600


class ApprovalState(models.TextChoices):
    PENDING = "pending", "Waiting for a decision"
    GRANTED = "granted", "Granted"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired before it was decided (or before a grant was used)"
    CANCELLED = "cancelled", "Cancelled (by the requester, or the session ended)"


class DecisionKind(models.TextChoices):
    GRANT = "grant", "Grant"
    REJECT = "reject", "Reject"


class ApprovalRule(models.Model):
    """How an organization wants an action approved. `action` is exact, a prefix ending in `*`, or `*`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=200, help_text="stripe.create-refund, stripe.* or * (every action).")
    four_eyes = models.BooleanField(default=False, help_text="The requester may not approve their own action.")
    approvers_required = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(2)], help_text="1, or 2 distinct approvers."
    )
    window_seconds = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(1), MaxValueValidator(WINDOW_MAX_SECONDS)],
        help_text="How long the proxy holds the agent's request open for a decision.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[ApprovalRule] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "action"], name="approval_rule_unique")]

    def __str__(self) -> str:
        return f"approval rule {self.action}"


class Approval(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")

    # Who asked: derived from the session token by the control plane.
    session = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    session_uuid = models.UUIDField()
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requester_email = models.EmailField(blank=True)
    agent = models.CharField(max_length=100, blank=True)
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    # What: the parsed action shown to the approver, and the exact request the grant is bound to.
    connector = models.CharField(max_length=100)
    action = models.CharField(max_length=200)
    args = models.JSONField(default=dict, blank=True, help_text="Parsed arguments (sensitive ones redacted).")
    method = models.CharField(max_length=16)
    host = models.CharField(max_length=253)
    path = models.CharField(max_length=2048)
    query = models.TextField(blank=True, help_text="The query, its pairs sorted.")
    body_sha256 = models.CharField(max_length=64)
    body_bytes = models.PositiveIntegerField(default=0)
    credential_id = models.UUIDField(help_text="The credential a grant lets the proxy inject (never its value).")
    request_hash = models.CharField(max_length=64, help_text="SHA-256 binding (approvals.binding).")
    request_id = models.UUIDField(help_text="The data plane's id of the request that asked first.")
    held_reason = models.TextField(blank=True, help_text="Why policy asked for approval.")

    # How it must be decided (from the organization's rules when it was asked).
    four_eyes = models.BooleanField(default=False)
    approvers_required = models.PositiveSmallIntegerField(default=1)
    window_seconds = models.PositiveIntegerField(default=120)

    state = models.CharField(max_length=16, choices=ApprovalState.choices, default=ApprovalState.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(help_text="Pending: until it must be decided. Granted: until it must be used.")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, help_text="The deciding approver's reason.")
    consumed_at = models.DateTimeField(null=True, blank=True, help_text="When a request used the grant.")
    consumed_request_id = models.UUIDField(null=True, blank=True)
    outcome_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Upstream's status code.")

    objects: models.Manager[Approval] = ScopedManager(organization="organization")

    class Meta:
        indexes = [
            models.Index(fields=["organization", "state", "created_at"], name="approval_org_state"),
            models.Index(fields=["organization", "request_hash"], name="approval_org_hash"),
            models.Index(fields=["state", "expires_at"], name="approval_state_expiry"),
            models.Index(fields=["consumed_request_id"], name="approval_consumed_request"),
        ]
        constraints = [
            # One open approval per exact request: identical concurrent requests share it.
            models.UniqueConstraint(
                fields=["organization", "request_hash"],
                condition=Q(state="pending"),
                name="approval_one_pending_per_request",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} ({self.state})"


class ApprovalDecision(models.Model):
    """One approver's vote. Two are needed when approvers_required is 2; one reject decides."""

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    user_email = models.EmailField()
    decision = models.CharField(max_length=8, choices=DecisionKind.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    # Reached only through its approval (selectors scope that), so a plain manager.
    objects: models.Manager[ApprovalDecision] = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["approval", "user"], name="approval_one_vote_per_user")]
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.user_email} {self.decision}"


# --- notifications ---------------------------------------------------------------------------------------------


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "A signed JSON webhook (HMAC-SHA256 over the body)"
    SLACK = "slack", "A Slack incoming webhook"
    EMAIL = "email", "Email through the configured SMTP server"


# What a channel may be told about: the approval events people act on (not "voted", "used" or "completed"),
# and a credential that expires or is due for replacement soon (vaults.services.credentials_due_warn).
NOTIFY_EVENTS = ("created", "decided", "expired", "cancelled", "credential_due")


def default_notify_events() -> list[str]:
    return list(NOTIFY_EVENTS)


class DeliveryStatus(models.TextChoices):
    NONE = "", "Nothing sent yet"
    OK = "ok", "Delivered"
    RETRYING = "retrying", "Failed; a retry is scheduled"
    FAILED = "failed", "Failed after every attempt (or for good)"


class NotificationChannel(models.Model):
    """Where an organization's approvals are announced to people who are not watching the page.

    The worker calls `target` (a URL for webhook and Slack, comma-separated addresses for email), so only those
    with notify.manage set channels up; in production a target may resolve to public addresses only
    (AILERON_NOTIFY_ALLOW_PRIVATE). A webhook's `secret` signs each body; the control plane keeps it to sign and
    shows it once, when the channel is created.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=60)
    kind = models.CharField(max_length=8, choices=ChannelKind.choices)
    target = models.TextField(max_length=2000)
    secret = models.CharField(max_length=100, blank=True, help_text="Webhook signing secret (never shown again).")
    events = models.JSONField(default=default_notify_events)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=8, choices=DeliveryStatus.choices, default="", blank=True)
    last_error = models.TextField(blank=True)

    objects: models.Manager[NotificationChannel] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="notification_channel_name")]

    def __str__(self) -> str:
        return f"{self.kind} channel {self.name}"


class ApprovalLink(models.Model):
    """A one-time link that lets one person decide one approval from a notification, without signing in.

    Stored as an HMAC like a token (`ail_apl_…`, aileron_shared.tokens); it opens and decides only its approval,
    once, as `user` (approval_decide's rules apply to them), until the approval stops being pending.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    lookup = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    objects: models.Manager[ApprovalLink] = ScopedManager(organization="organization")

    def __str__(self) -> str:
        return f"approval link {self.lookup} for {self.approval_id}"
