"""Organizations enable installed connectors per team."""

from __future__ import annotations

import pytest
from django_scopes import scope

from conftest import Cast, client_for
from tenants import services

pytestmark = pytest.mark.django_db


def test_an_admin_enables_a_connector_for_one_team(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Support")
    alice = client_for(cast.alice.token)
    base = f"/api/v1/orgs/{cast.alice.org.pk}/connectors/"
    listed = {c["name"]: c for c in alice.get(base).json()}
    assert {"github", "stripe", "linear", "slack", "anthropic", "openai", "gemini"} <= set(listed)
    assert listed["stripe"]["teams"] == []
    assert any(a["id"] == "stripe.create-refund" and a["approval"] == "always" for a in listed["stripe"]["actions"])

    assert alice.put(f"{base}stripe/teams/{team.pk}/").status_code == 201
    assert alice.get(f"{base}stripe/").json()["teams"] == [str(team.pk)]
    assert client_for(cast.bob.token).put(f"{base}stripe/teams/{team.pk}/").status_code == 403
    assert alice.put(f"{base}no-such-thing/teams/{team.pk}/").status_code == 404
    assert alice.delete(f"{base}stripe/teams/{team.pk}/").status_code == 204
    assert alice.get(f"{base}stripe/").json()["teams"] == []
    assert alice.delete(f"{base}stripe/teams/{team.pk}/").status_code == 404
