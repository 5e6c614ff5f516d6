"""Rate limits on the endpoints that make accounts or take a secret: a 429 problem with Retry-After once over,
counted per address (a client cannot rename itself with X-Forwarded-For) or per person, and nothing else slowed."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from aileron_site.config import ConfigError, load
from conftest import Cast, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    tight = {"signup": "2/hour", "invitation-accept": "2/hour", "token-create": "2/hour", "approval-link": "2/minute"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", tight)
    return tight


def signup(client: APIClient, n: int, **extra: Any) -> Any:
    body = {"organization": f"Org {n}", "email": f"o{n}@example.com"}
    return client.post("/api/v1/signup/", body, format="json", **extra)


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/problem+json"
    wait = int(response["Retry-After"])
    assert 0 < wait <= 3600 and response.json()["retry_after"] == wait
    assert response.json()["type"] == "urn:aileron:problem:rate-limited"


def test_signup_is_throttled_per_address_whatever_x_forwarded_for_says(rates: dict[str, str]) -> None:
    client = APIClient()
    assert [signup(client, n).status_code for n in range(2)] == [201, 201]
    assert_throttled(signup(client, 2, HTTP_X_FORWARDED_FOR="203.0.113.9"))
    assert_throttled(signup(client, 3, HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.10"))
    assert signup(client, 4, REMOTE_ADDR="192.0.2.44").status_code == 201  # another address counts apart


def test_invitation_guesses_are_throttled(cast: Cast, rates: dict[str, str]) -> None:
    client = APIClient()
    for _ in range(2):
        response = client.post("/api/v1/invitations/accept/", {"token": "ail_inv_" + "x" * 44}, format="json")
        assert response.status_code == 404
    assert_throttled(client.post("/api/v1/invitations/accept/", {"token": "ail_inv_" + "y" * 44}, format="json"))


def test_minting_tokens_is_throttled_per_person_and_listing_them_is_not(cast: Cast, rates: dict[str, str]) -> None:
    alice, bob = client_for(cast.alice.token), client_for(cast.bob.token)
    for n in range(2):
        assert alice.post("/api/v1/tokens/", {"name": f"t{n}"}, format="json").status_code == 201
    assert_throttled(alice.post("/api/v1/tokens/", {"name": "t3"}, format="json"))
    assert all(alice.get("/api/v1/tokens/").status_code == 200 for _ in range(5))
    assert bob.post("/api/v1/tokens/", {"name": "his"}, format="json").status_code == 201


def test_approval_link_guesses_are_throttled(rates: dict[str, str]) -> None:
    client = APIClient()
    for _ in range(2):
        assert client.post(
            "/api/v1/approval-links/open/", {"link": "ail_apl_" + "z" * 44}, format="json"
        ).status_code in (
            400,
            404,
        )
    assert_throttled(client.post("/api/v1/approval-links/open/", {"link": "ail_apl_" + "z" * 44}, format="json"))


def test_rates_come_from_the_environment_and_a_bad_one_is_refused(tmp_path: Any) -> None:
    assert load({"AILERON_HOME": str(tmp_path), "AILERON_THROTTLE_SIGNUP": "5/minute"}).throttle_rates["signup"] == (
        "5/minute"
    )
    assert load({"AILERON_HOME": str(tmp_path)}).throttle_rates["token-create"] == "60/hour"
    with pytest.raises(ConfigError, match=r"AILERON_THROTTLE_APPROVAL_LINK='lots' is not a rate like 20/hour"):
        load({"AILERON_HOME": str(tmp_path), "AILERON_THROTTLE_APPROVAL_LINK": "lots"})
