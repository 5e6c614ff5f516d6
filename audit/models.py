"""Audit records: one row per request an agent made through the data plane, attributed by the control plane.

A row is written in two halves that may arrive in either order: the attempt (what was asked and decided,
before any credential was injected) and the outcome (what upstream answered). Each half is written once; a
re-sent half changes nothing, so a row, once both halves are in, does not change again. That is what a later
hash chain over (organization, ingested order) needs: it can be added as columns without rewriting rows.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_scopes import ScopedManager

from audit.records import LENGTHS
from tenants.models import ApiToken, Organization, Project, Team


class AuditKind(models.TextChoices):
    CREDENTIALED = "credentialed", "Credentialed (a credential was injected)"
    EGRESS = "egress", "Egress (allowed without a credential)"
    REFUSED = "refused", "Refused by the proxy"
    SHELL = "shell", "A command the sandbox's mediated shell ran or refused"
    TCP = "tcp", "Raw TCP (SSH, a database) carried under the organization's host:port rules"


class AuditDecision(models.TextChoices):
    ALLOW = "allow", "Allowed"
    DENY = "deny", "Denied"
    APPROVAL_REQUIRED = "approval_required", "Held for approval"
    ERROR = "error", "Error"


class AuditOutcome(models.TextChoices):
    COMPLETED = "completed", "The data plane saw how the request ended"
    UNKNOWN = "unknown", "The data plane restarted before the request ended (killed mid-request)"


class AuditSeverity(models.TextChoices):
    NORMAL = "", "Normal"
    CRITICAL = "critical", "Critical (the agent sent a credential it should never hold)"


class AuditRecord(models.Model):
    # The data plane's request id: the same id in the attempt and the outcome makes ingest idempotent.
    id = models.UUIDField(primary_key=True, editable=False)
    # Empty only for a refusal the proxy could tie to no session at all (plain HTTP without a token, say):
    # kept for operators, seen by no organization.
    # Records outlive their organization (retention is an explicit setting, never a side effect of deletion):
    # the foreign key goes, organization_uuid stays, and so does the organization's hash chain.
    organization = models.ForeignKey(Organization, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    organization_uuid = models.UUIDField(null=True, blank=True, editable=False)

    # Who: derived by the control plane from the session token, never taken from the data plane's word.
    session = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    session_uuid = models.UUIDField(
        null=True, blank=True, help_text="The session token's id, kept after the token row is purged."
    )
    session_verified = models.BooleanField(
        default=True,
        help_text="False when the session was named only by its token's lookup part, unchecked (a refusal while "
        "the control plane was unreachable, or of a request whose token was never verified).",
    )
    token_lookup = models.CharField(
        max_length=16, blank=True, help_text="The lookup part of the token a refused request carried (never more)."
    )
    client_address = models.CharField(max_length=64, blank=True, help_text="The agent's address, as the proxy saw it.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    agent = models.CharField(max_length=100, blank=True, help_text="The session token's name.")
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    # The attempt (blank until it arrives, if the outcome came first).
    at = models.DateTimeField(help_text="When the request was attempted.")
    kind = models.CharField(max_length=16, choices=AuditKind.choices, blank=True)
    connector = models.CharField(max_length=LENGTHS["connector"], blank=True)
    action = models.CharField(max_length=LENGTHS["action"], blank=True)
    method = models.CharField(max_length=LENGTHS["method"], blank=True)
    host = models.CharField(max_length=LENGTHS["host"], blank=True)
    path = models.CharField(max_length=LENGTHS["path"], blank=True)
    args = models.JSONField(default=dict, blank=True, help_text="Arguments, already redacted by the data plane.")
    decision = models.CharField(max_length=20, choices=AuditDecision.choices, blank=True)
    reason = models.TextField(max_length=LENGTHS["reason"], blank=True)
    problem_type = models.CharField(max_length=LENGTHS["problem_type"], blank=True)
    credential_id = models.UUIDField(
        null=True, blank=True, help_text="Which credential was injected (never its value)."
    )
    approval_id = models.UUIDField(null=True, blank=True, help_text="The approval whose grant this request used.")
    approvers = models.JSONField(default=list, blank=True, help_text="Who granted (or rejected) it, by email.")
    severity = models.CharField(max_length=16, choices=AuditSeverity.choices, blank=True, default="")
    has_attempt = models.BooleanField(default=False)

    # The outcome.
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    request_bytes = models.BigIntegerField(null=True, blank=True)
    response_bytes = models.BigIntegerField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True, help_text="LLM token usage and cost, when the call had any.")
    credential_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="Which version of the credential was injected (each `secret update` adds one)."
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(
        max_length=LENGTHS["error"],
        blank=True,
        help_text="Why no complete answer came back (upstream-timeout, a connection or TLS failure), if so.",
    )
    has_outcome = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices, blank=True)
    dataplane_run = models.UUIDField(
        null=True, blank=True, help_text="The data plane run that sent the attempt; closed when the next run starts."
    )

    ingested_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[AuditRecord] = ScopedManager(organization="organization")

    class Meta:
        indexes = [
            models.Index(fields=["organization", "at"], name="audit_org_at"),
            models.Index(fields=["organization", "action"], name="audit_org_action"),
            models.Index(fields=["dataplane_run"], name="audit_open_attempts", condition=models.Q(has_outcome=False)),
            models.Index(
                fields=["organization", "at"], name="audit_org_critical", condition=models.Q(severity="critical")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action or self.host} {self.decision} at {self.at:%Y-%m-%dT%H:%M:%S}"


class LinkKind(models.TextChoices):
    ATTEMPT = "attempt", "A request's attempt"
    OUTCOME = "outcome", "A request's outcome"
    CLOSED = "closed", "An attempt closed as unknown (its data plane restarted)"
    ADMIN = "admin", "An admin change (audit.models.AdminEvent)"


class AuditLink(models.Model):
    """One link of an organization's audit hash chain (audit.chain), in the order records were ingested."""

    organization_uuid = models.UUIDField()
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=LinkKind.choices)
    record_id = models.UUIDField()
    digest = models.CharField(max_length=64)
    prev = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization_uuid", "seq"], name="audit_link_org_seq")]
        indexes = [models.Index(fields=["organization_uuid", "record_id"], name="audit_link_org_record")]

    def __str__(self) -> str:
        return f"{self.organization_uuid} #{self.seq} {self.kind} {self.record_id}"


class AuditChainHead(models.Model):
    """Where an organization's chain ends: the next link's seq and `prev`. Locked by each append."""

    organization_uuid = models.UUIDField(primary_key=True)
    next_seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    # Pruning (retention) removes the chain's start; verification starts from here, vouched for by a checkpoint.
    first_seq = models.BigIntegerField(default=0)
    first_prev = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.organization_uuid} at #{self.next_seq}"


class AuditCheckpoint(models.Model):
    """A signed statement of a chain's head (audit.chain.Checkpoint), kept here and exported with the SIEM stream."""

    organization_uuid = models.UUIDField()
    seq = models.BigIntegerField()
    head = models.CharField(max_length=64)
    at = models.DateTimeField()
    key_id = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)
    reason = models.CharField(max_length=16, default="periodic")

    class Meta:
        indexes = [models.Index(fields=["organization_uuid", "seq"], name="audit_checkpoint_org_seq")]

    def __str__(self) -> str:
        return f"{self.organization_uuid} checkpoint #{self.seq}"


class AuditRetention(models.Model):
    """How long an organization keeps its audit records; none of these rows, or days empty: for ever."""

    organization_uuid = models.UUIDField(primary_key=True)
    days = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.CharField(max_length=254, blank=True, help_text="Who set it, by email.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(days__isnull=True) | models.Q(days__gte=1, days__lte=36500),
                name="audit_retention_days_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_uuid} keeps {self.days or 'every'} day(s)"


class AdminEvent(models.Model):
    """A change someone made to an organization's configuration: who, when, what, and the target before and after.

    Written by audit.services.admin_event_record in the same transaction as the change, and never updated or
    deleted afterwards (no service does either). The organization and the actor are kept as snapshots next to
    their foreign keys so that an event outlives both: deleting an organization nulls the key and keeps the row,
    which is what an auditor (and a SIEM export) needs to answer "who deleted it".
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    organization_uuid = models.UUIDField(
        null=True,
        blank=True,
        help_text="The organization's id, kept after it is deleted; empty for installation-wide changes.",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_email = models.CharField(
        max_length=254, blank=True, help_text="Who acted, as they were then; empty for the system."
    )
    actor_role = models.CharField(max_length=16, blank=True, help_text="Their role in the organization then, if any.")
    action = models.CharField(
        max_length=64, help_text="What was done, as a dotted slug: member.role_change, team.create."
    )
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True, help_text="The target's human name when it changed.")
    before = models.JSONField(null=True, blank=True, help_text="The target's plain fields before (null on create).")
    after = models.JSONField(null=True, blank=True, help_text="The target's plain fields after (null on delete).")
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[AdminEvent] = ScopedManager(organization="organization")

    class Meta:
        indexes = [
            models.Index(fields=["organization_uuid", "created_at"], name="admin_event_org_at"),
            models.Index(fields=["organization_uuid", "action"], name="admin_event_org_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id} by {self.actor_email or 'system'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Append-only: an event is written once. (Deleting its organization nulls the key with a queryset update,
        # which is the one change a row may see.)
        if not self._state.adding:
            raise TypeError("Admin events are append-only: they are never changed once written.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Admin events are append-only: they are never deleted.")
