"""Organization and team policies (Cedar text, checked by policies.engine) and each organization's egress mode."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_scopes import ScopedManager

from tenants.models import Organization, Project, Team

CEDAR_MAX_CHARS = 20_000
EGRESS_MAX_PATTERNS = 500


class Policy(models.Model):
    """A Cedar policy of an organization, or of one of its teams (team set): see policies.engine."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="policies")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, max_length=2000)
    cedar = models.TextField(max_length=CEDAR_MAX_CHARS)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Policy] = ScopedManager(organization="organization")

    class Meta:
        constraints = [
            # NULL teams are distinct in a plain unique constraint, hence two partial ones
            models.UniqueConstraint(
                fields=["organization", "name"], condition=Q(team__isnull=True), name="policy_org_name_unique"
            ),
            models.UniqueConstraint(
                fields=["organization", "team", "name"], condition=Q(team__isnull=False), name="policy_team_name_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class EgressMode(models.TextChoices):
    OPEN = "open", "Uncredentialed HTTPS to other hosts is forwarded and logged"
    ALLOWLIST = "allowlist", "Only hosts matching the allow list (and connector hosts) are reachable"


class EgressPolicy(models.Model):
    """Where an organization's agents may go besides connector hosts. One row per organization, made on first
    change; until then the mode is open."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=16, choices=EgressMode.choices, default=EgressMode.OPEN)
    allow = models.JSONField(default=list, blank=True)
    # Hosts reachable over plain HTTP (package mirrors: apt's default sources are http://), uncredentialed and
    # audited; none by default. Patterns as in `allow`; never a connector's host.
    plain_http = models.JSONField(default=list, blank=True)
    # Raw TCP (SSH to a git host, a database port) as "host:port" rules, carried by the sandbox relay through the
    # proxy and audited; denied by default. Never ports 80 or 443, never a connector's host.
    tcp = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[EgressPolicy] = ScopedManager(organization="organization")

    def __str__(self) -> str:
        return f"{self.mode} for {self.organization_id}"


class ProjectEgress(models.Model):
    """Raw TCP rules of one project, added to the organization's for sessions started for that project (a
    project's database port, say, that the rest of the organization has no business reaching). One row per
    project, made on first change. Rules as in EgressPolicy.tcp."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")
    tcp = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[ProjectEgress] = ScopedManager(organization="organization")

    def __str__(self) -> str:
        return f"TCP rules of {self.project_id}"


class ShellMode(models.TextChoices):
    ENFORCE = "enforce", "Commands matching the rules are blocked (and recorded)"
    AUDIT = "audit", "Nothing is blocked; commands that would be are recorded"


class ShellPolicy(models.Model):
    """Which commands the mediated shell in an organization's agent sandboxes may run (see policies.shell_rules
    and runtime/sandbox/shell). One row per organization, made on first change; until then nothing is listed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="+")
    mode = models.CharField(max_length=16, choices=ShellMode.choices, default=ShellMode.ENFORCE)
    deny = models.JSONField(default=list, blank=True, help_text="Bash glob patterns of commands that may not run.")
    allow = models.JSONField(
        default=list, blank=True, help_text="When not empty, only commands matching one of these run."
    )
    record_allowed = models.BooleanField(
        default=False, help_text="Record every command that runs in the audit log, not only refused ones."
    )
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[ShellPolicy] = ScopedManager(organization="organization")

    def __str__(self) -> str:
        return f"shell {self.mode} for {self.organization_id}"
