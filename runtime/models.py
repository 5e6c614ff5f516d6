"""Liveness of the runtime's background parts, written by the parts themselves."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Heartbeat(models.Model):
    """The last time a component proved it works end to end (beat -> broker -> worker -> database)."""

    component = models.CharField(max_length=40, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.component}@{self.hostname}"
