"""The configured backends really work: the channel layer carries a message, the health view names them."""

from __future__ import annotations

import os

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from conftest import client_for
from runtime.services import WORKER, heartbeat_record


def test_the_channel_layer_delivers_a_group_message() -> None:
    layer = get_channel_layer()
    assert layer is not None
    expected = "RedisChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected

    async def roundtrip() -> dict[str, str]:
        channel = await layer.new_channel()
        await layer.group_add("aileron-test", channel)
        await layer.group_send("aileron-test", {"type": "ping", "text": "hello"})
        message = await layer.receive(channel)
        await layer.group_discard("aileron-test", channel)
        return dict(message)

    assert async_to_sync(roundtrip)() == {"type": "ping", "text": "hello"}


@pytest.mark.django_db
def test_health_reports_the_real_backends_and_a_fresh_worker() -> None:
    body = client_for(None).get("/api/v1/health/").json()
    assert body["status"] == "degraded" and body["worker_age_seconds"] is None
    heartbeat_record(component=WORKER)
    body = client_for(None).get("/api/v1/health/").json()
    assert body["status"] == "ok" and body["worker_age_seconds"] < 5
    assert body["database"] == connection.vendor
    assert body["broker"] == ("redis" if os.environ.get("REDIS_URL") else "filesystem")
    assert body["mode"] == settings.AILERON_MODE
