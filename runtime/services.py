"""Writes and reads of runtime health."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from aileron_site import __version__
from runtime.models import Heartbeat

WORKER = "worker"
WORKER_STALE_AFTER_SECONDS = 30


def heartbeat_record(*, component: str) -> Heartbeat:
    beat, _ = Heartbeat.objects.update_or_create(
        component=component,
        defaults={"hostname": socket.gethostname(), "pid": os.getpid(), "seen_at": timezone.now()},
    )
    return beat


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    version: str
    mode: str
    database: str
    channel_layer: str
    broker: str
    worker_seen_at: datetime | None
    worker_age_seconds: float | None
    proxy: str | None = None  # HOST:PORT of the data plane's proxy for agents, when this service knows it

    @property
    def worker_ok(self) -> bool:
        return self.worker_age_seconds is not None and self.worker_age_seconds < WORKER_STALE_AFTER_SECONDS


def health_get() -> Health:
    beat = Heartbeat.objects.filter(component=WORKER).first()
    age = (timezone.now() - beat.seen_at).total_seconds() if beat else None
    broker = str(settings.CELERY_BROKER_URL).split("://", 1)[0]
    layer = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
    worker_ok = age is not None and age < WORKER_STALE_AFTER_SECONDS
    return Health(
        status="ok" if worker_ok else "degraded",
        version=__version__,
        mode=settings.AILERON_MODE,
        database=connection.vendor,
        channel_layer=layer,
        broker=broker,
        worker_seen_at=beat.seen_at if beat else None,
        worker_age_seconds=round(age, 1) if age is not None else None,
        proxy=settings.AILERON_PUBLIC_PROXY or None,
    )
