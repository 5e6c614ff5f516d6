"""The health report says where agents reach the data plane's proxy (what `aileron launch` uses)."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_health_names_the_public_proxy_when_the_service_knows_it(settings: pytest.FixtureRequest) -> None:
    settings.AILERON_PUBLIC_PROXY = ""  # type: ignore[attr-defined]
    assert Client().get("/api/v1/health/").json()["proxy"] is None
    settings.AILERON_PUBLIC_PROXY = "10.0.0.7:9480"  # type: ignore[attr-defined]
    assert Client().get("/api/v1/health/").json()["proxy"] == "10.0.0.7:9480"
