"""Organization and team policies and the egress setting, through the API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django_scopes import scope

from conftest import Cast, client_for
from policies.models import ProjectEgress
from tenants import services

pytestmark = pytest.mark.django_db
NO_REFUNDS = 'forbid(principal, action == Aileron::Action::"stripe.create-refund", resource);'


def policies_url(org: Any, policy_id: str | None = None) -> str:
    base = f"/api/v1/orgs/{org.pk}/policies/"
    return f"{base}{policy_id}/" if policy_id else base


def create(cast: Cast, **body: Any) -> Any:
    return client_for(cast.alice.token).post(
        policies_url(cast.alice.org), {"name": "No refunds", "cedar": NO_REFUNDS, **body}, format="json"
    )


def test_an_owner_creates_an_org_policy_and_members_can_read_it(cast: Cast) -> None:
    response = create(cast, description="Refunds go through finance.")
    assert response.status_code == 201, response.content
    policy = response.json()
    assert policy["team"] is None and policy["enabled"] is True
    assert policy["created_by"] == str(cast.alice.user.pk)
    listed = client_for(cast.bob.token).get(policies_url(cast.alice.org)).json()["results"]
    assert [p["id"] for p in listed] == [policy["id"]]
    assert client_for(cast.bob.token).get(policies_url(cast.alice.org, policy["id"])).json()["cedar"] == NO_REFUNDS


def test_a_member_may_not_create_change_or_delete_policies(cast: Cast) -> None:
    policy_id = create(cast).json()["id"]
    bob = client_for(cast.bob.token)
    assert bob.post(policies_url(cast.alice.org), {"name": "x", "cedar": NO_REFUNDS}, format="json").status_code == 403
    assert bob.patch(policies_url(cast.alice.org, policy_id), {"enabled": False}, format="json").status_code == 403
    assert bob.delete(policies_url(cast.alice.org, policy_id)).status_code == 403


def test_invalid_cedar_is_refused_with_the_reason(cast: Cast) -> None:
    response = create(cast, cedar="permit(principal, action, resource);")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert 'policy "No refunds"' in problem["detail"] and "waive" in problem["detail"]
    assert problem["errors"][0]["pointer"] == "/cedar"
    unparsable = create(cast, cedar="forbid(principal,")
    assert unparsable.status_code == 400 and "does not parse" in unparsable.json()["detail"]


def test_a_policy_about_an_action_that_is_not_installed_is_refused_naming_the_closest(cast: Cast) -> None:
    """It would never match: refused when written, not discovered when the forbid fails to apply."""
    typo = create(cast, cedar='forbid(principal, action == Aileron::Action::"github.create-isue", resource);')
    assert typo.status_code == 400 and typo["Content-Type"] == "application/problem+json"
    problem = typo.json()
    assert problem["detail"].startswith("policy \"No refunds\": No action 'github.create-isue' is installed")
    assert problem["detail"].endswith("Did you mean github.create-issue?")
    assert problem["suggestions"] == ["github.create-issue"]
    assert problem["errors"] == [{"pointer": "/cedar", "detail": problem["detail"]}]
    in_a_list = create(
        cast,
        cedar='forbid(principal, action in [Aileron::Action::"stripe.create-refund", Aileron::Action::"slack.post"], '
        "resource);",
    )
    assert in_a_list.status_code == 400 and "'slack.post'" in in_a_list.json()["detail"]
    in_a_condition = create(
        cast, cedar='forbid(principal, action, resource) when { action == Aileron::Action::"stripe.refund" };'
    )
    assert in_a_condition.status_code == 400 and "stripe.create-refund" in in_a_condition.json()["suggestions"]
    assert client_for(cast.alice.token).get(policies_url(cast.alice.org)).json()["results"] == []


def test_a_policy_about_a_connector_that_is_not_installed_is_refused_naming_the_closest(cast: Cast) -> None:
    typo = create(cast, cedar='forbid(principal, action, resource == Aileron::Connector::"githb");')
    assert typo.status_code == 400
    assert typo.json()["suggestions"] == ["github"]
    assert "No connector named 'githb' is installed. Did you mean github?" in typo.json()["detail"]
    unlike = create(cast, cedar='forbid(principal, action, resource) when { resource == Aileron::Connector::"zzzz" };')
    assert unlike.status_code == 400 and "Installed: anthropic, gemini, github" in unlike.json()["detail"]
    assert create(cast, cedar='forbid(principal, action, resource == Aileron::Connector::"github");').status_code == 201


@pytest.mark.parametrize(
    "cedar,suggested",
    [
        ('forbid(principal, action == Action::"stripe.create-refund", resource);', "Aileron::Action"),
        ("forbid(principal, action, resource is Aileron::Conector);", "Aileron::Connector"),
        ('forbid(principal in Aileron::Group::"x", action, resource);', "Aileron::User"),
    ],
)
def test_a_policy_about_an_entity_type_aileron_never_uses_is_refused(cast: Cast, cedar: str, suggested: str) -> None:
    response = create(cast, cedar=cedar)
    assert response.status_code == 400
    assert "is not an entity type of Aileron, so it never matches" in response.json()["detail"]
    assert suggested in response.json()["detail"]


def test_a_changed_policy_text_is_checked_against_the_catalog_too(cast: Cast) -> None:
    policy_id = create(cast).json()["id"]
    url = policies_url(cast.alice.org, policy_id)
    alice = client_for(cast.alice.token)
    typo = 'forbid(principal, action == Aileron::Action::"stripe.create-refnd", resource);'
    refused = alice.patch(url, {"cedar": typo}, format="json")
    assert refused.status_code == 400 and refused.json()["suggestions"] == ["stripe.create-refund"]
    assert alice.get(url).json()["cedar"] == NO_REFUNDS


def test_a_team_policy_needs_a_team_of_the_organization(cast: Cast) -> None:
    with scope(organization=cast.charlie.org):
        foreign = services.team_create(acting=cast.charlie.membership, name="Theirs")
    assert create(cast, team=str(foreign.pk)).status_code == 404
    with scope(organization=cast.alice.org):
        payments = services.team_create(acting=cast.alice.membership, name="Payments")
    team_policy = create(cast, team=str(payments.pk))
    assert team_policy.status_code == 201 and team_policy.json()["team"] == str(payments.pk)
    assert create(cast).status_code == 201  # the same name at organization level is another policy
    filtered = client_for(cast.alice.token).get(policies_url(cast.alice.org), {"team": str(payments.pk)})
    assert [p["id"] for p in filtered.json()["results"]] == [team_policy.json()["id"]]


def test_names_are_unique_per_level(cast: Cast) -> None:
    assert create(cast).status_code == 201
    duplicate = create(cast)
    assert duplicate.status_code == 409 and duplicate["Content-Type"] == "application/problem+json"


def test_patch_changes_fields_and_validates_cedar(cast: Cast) -> None:
    policy_id = create(cast).json()["id"]
    alice = client_for(cast.alice.token)
    url = policies_url(cast.alice.org, policy_id)
    changed = alice.patch(url, {"enabled": False, "name": "Refunds off"}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert changed.json()["name"] == "Refunds off"
    refused = alice.patch(url, {"cedar": '@outcome("later") forbid(principal, action, resource);'}, format="json")
    assert refused.status_code == 400
    assert alice.get(url).json()["cedar"] == NO_REFUNDS
    assert alice.patch(url, {"team": None}, format="json").status_code == 400


def test_delete_removes_the_policy(cast: Cast) -> None:
    policy_id = create(cast).json()["id"]
    alice = client_for(cast.alice.token)
    assert alice.delete(policies_url(cast.alice.org, policy_id)).status_code == 204
    assert alice.get(policies_url(cast.alice.org, policy_id)).status_code == 404


def test_egress_is_open_until_an_admin_sets_an_allow_list(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/egress/"
    bob, alice = client_for(cast.bob.token), client_for(cast.alice.token)
    assert bob.get(url).json()["mode"] == "open"
    body = {"mode": "allowlist", "allow": ["PyPI.org", "*.pythonhosted.org", "pypi.org"]}
    assert bob.put(url, body, format="json").status_code == 403
    saved = alice.put(url, body, format="json")
    assert saved.status_code == 200, saved.content
    assert saved.json()["allow"] == ["pypi.org", "*.pythonhosted.org"]
    assert bob.get(url).json()["mode"] == "allowlist"


def test_egress_refuses_bad_patterns_naming_them(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/egress/"
    response = client_for(cast.alice.token).put(
        url, {"mode": "allowlist", "allow": ["ok.example", "https://x.example/"]}, format="json"
    )
    assert response.status_code == 400
    problem = response.json()
    assert "https://x.example/" in problem["detail"]
    assert problem["errors"][0]["pointer"] == "/allow/1"
    too_many = {"mode": "allowlist", "allow": [f"h{i}.example" for i in range(501)]}
    assert client_for(cast.alice.token).put(url, too_many, format="json").status_code == 400


def test_a_projects_tcp_rules_are_read_by_members_and_set_by_policy_managers(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        project = services.project_create(acting=cast.alice.membership, name="Payments")
    url = f"/api/v1/orgs/{cast.alice.org.pk}/projects/{project.pk}/egress/"
    bob, alice = client_for(cast.bob.token), client_for(cast.alice.token)
    assert bob.get(url).json()["tcp"] == []
    body = {"tcp": ["DB.payments.example:5432", "db.payments.example:5432", "*.git.example:22"]}
    assert bob.put(url, body, format="json").status_code == 403
    saved = alice.put(url, body, format="json")
    assert saved.status_code == 200, saved.content
    assert saved.json()["tcp"] == ["db.payments.example:5432", "*.git.example:22"]
    assert bob.get(url).json()["tcp"] == ["db.payments.example:5432", "*.git.example:22"]
    with scope(organization=cast.alice.org):
        assert ProjectEgress.objects.get(project=project).tcp == ["db.payments.example:5432", "*.git.example:22"]
    bad = alice.put(url, {"tcp": ["db.payments.example:5432", "api.github.com:22"]}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["pointer"] == "/tcp/1", bad.content
    assert alice.put(url, {"tcp": ["x.example:443"]}, format="json").status_code == 400
    assert alice.put(url, {"rules": []}, format="json").status_code == 400  # no `tcp`: not read as "none"
    with scope(organization=cast.alice.org):  # a refused write changed nothing
        assert ProjectEgress.objects.get(project=project).tcp == ["db.payments.example:5432", "*.git.example:22"]
    other = client_for(cast.charlie.token)
    assert other.get(url.replace(str(cast.alice.org.pk), str(cast.charlie.org.pk))).status_code == 404
    assert alice.get(url.replace(str(project.pk), str(uuid.uuid4()))).status_code == 404
