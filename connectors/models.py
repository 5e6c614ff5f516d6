"""Which connectors each team of an organization may use (the rest of this package is pure)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_scopes import ScopedManager

from tenants.models import Organization, Team


class ConnectorEnablement(models.Model):
    """Team T of organization O may use connector C (curated per team)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="connector_enablements")
    connector = models.CharField(max_length=40)
    enabled_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[ConnectorEnablement] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "connector"], name="connector_enablement_unique")]

    def __str__(self) -> str:
        return f"{self.connector} for {self.team_id}"
