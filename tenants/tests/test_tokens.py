"""Tokens: format, storage as digests, and every way a token must be refused."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_scopes import scope

from aileron_shared import tokens
from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken
from tenants.selectors import token_key

pytestmark = pytest.mark.django_db


def test_generated_tokens_parse_back_to_their_kind_and_lookup() -> None:
    new = tokens.generate("pat", b"k" * 32)
    parsed = tokens.parse(new.plaintext)
    assert new.plaintext.startswith("ail_pat_")
    assert (parsed.kind, parsed.lookup) == ("pat", new.lookup)
    assert tokens.verify(b"k" * 32, new.plaintext, new.digest)
    assert not tokens.verify(b"j" * 32, new.plaintext, new.digest)


@pytest.mark.parametrize(
    "raw", ["", "ail_xyz_" + "a" * 44, "ghp_" + "a" * 48, "ail_pat_" + "a" * 43 + "!", "ail_pat_" + "a" * 45]
)
def test_malformed_tokens_are_rejected_by_the_parser(raw: str) -> None:
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(raw)


def test_only_a_digest_of_the_token_is_stored(cast: Cast) -> None:
    row = ApiToken.objects.get(user=cast.alice.user, kind="pat")
    assert cast.alice.token not in (row.digest, row.lookup)
    assert row.digest == tokens.digest(token_key(), cast.alice.token)


def test_a_valid_personal_token_is_accepted_and_its_use_recorded(cast: Cast) -> None:
    response = client_for(cast.alice.token).get("/api/v1/orgs/")
    assert response.status_code == 200
    assert ApiToken.objects.get(user=cast.alice.user, kind="pat").last_used_at is not None


def test_no_token_gets_401_with_a_bearer_challenge(cast: Cast) -> None:
    response = client_for(None).get("/api/v1/orgs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"


def test_an_expired_token_is_refused(cast: Cast) -> None:
    ApiToken.objects.filter(user=cast.alice.user).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client_for(cast.alice.token).get("/api/v1/orgs/").status_code == 401


def test_a_revoked_token_is_refused_right_away(cast: Cast) -> None:
    row = ApiToken.objects.get(user=cast.alice.user, kind="pat")
    response = client_for(cast.alice.token).delete(f"/api/v1/tokens/{row.pk}/")
    assert response.status_code == 204
    assert client_for(cast.alice.token).get("/api/v1/orgs/").status_code == 401


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "ail_svc_" + t[len("ail_pat_") :],  # right secret, wrong prefix
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # right lookup, wrong secret
        lambda t: t.replace("ail_", "ail-"),
        lambda t: t + "x",
    ],
)
def test_a_tampered_token_is_refused(cast: Cast, mangle: object) -> None:
    assert callable(mangle)
    assert client_for(mangle(cast.alice.token)).get("/api/v1/orgs/").status_code == 401


def test_a_non_bearer_scheme_is_refused(cast: Cast) -> None:
    client = client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {cast.alice.token}")
    assert client.get("/api/v1/orgs/").status_code == 401


def test_a_deactivated_users_token_is_refused(cast: Cast) -> None:
    cast.alice.user.is_active = False
    cast.alice.user.save()
    assert client_for(cast.alice.token).get("/api/v1/orgs/").status_code == 401


def test_session_tokens_may_not_use_user_endpoints(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        issued = services.session_token_create(membership=cast.alice.membership, name="agent")
    agent = client_for(issued.plaintext)
    org = cast.alice.org.pk
    for path in [
        "/api/v1/orgs/",
        f"/api/v1/orgs/{org}/",
        f"/api/v1/orgs/{org}/members/",
        "/api/v1/tokens/",
        f"/api/v1/orgs/{org}/session-tokens/",
    ]:
        response = agent.get(path)
        assert response.status_code == 403, path
    assert agent.post(f"/api/v1/orgs/{org}/session-tokens/", {"name": "more"}, format="json").status_code == 403
    who = agent.get("/api/v1/whoami/").json()
    assert (who["kind"], who["organization"]) == ("ses", str(org))


def test_service_tokens_may_not_use_user_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("aileron_service_token", "--name", "dp")
    raw = capsys.readouterr().out.strip()
    assert raw.startswith("ail_svc_")
    service = client_for(raw)
    assert service.get("/api/v1/orgs/").status_code == 403
    assert service.get("/api/v1/whoami/").json()["kind"] == "svc"


def test_session_tokens_are_short_lived_and_bounded(cast: Cast) -> None:
    client = client_for(cast.alice.token)
    org = cast.alice.org.pk
    created = client.post(f"/api/v1/orgs/{org}/session-tokens/", {"name": "a"}, format="json").json()
    assert datetime.fromisoformat(created["expires_at"]) <= timezone.now() + timedelta(hours=24)
    too_long = client.post(
        f"/api/v1/orgs/{org}/session-tokens/", {"name": "a", "expires_in_minutes": 100000}, format="json"
    )
    assert too_long.status_code == 400


def test_removing_a_member_revokes_their_session_tokens(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        issued = services.session_token_create(membership=cast.bob.membership, name="bob's agent")
    assert client_for(issued.plaintext).get("/api/v1/whoami/").status_code == 200
    response = client_for(cast.alice.token).delete(
        f"/api/v1/orgs/{cast.alice.org.pk}/members/{cast.bob.membership.pk}/"
    )
    assert response.status_code == 204
    assert client_for(issued.plaintext).get("/api/v1/whoami/").status_code == 401


def test_purge_deletes_long_expired_tokens_only(cast: Cast) -> None:
    old = timezone.now() - timedelta(days=31)
    ApiToken.objects.filter(user=cast.bob.user).update(expires_at=old)
    assert services.tokens_purge_expired() == 1
    assert not ApiToken.objects.filter(user=cast.bob.user).exists()
    assert ApiToken.objects.filter(user=cast.alice.user).exists()
