"""The data plane's session context: the right policies, connectors and credentials for one agent session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django_scopes import scope, scopes_disabled

from conftest import Cast, Person, client_for, give_keys, make_vault
from connectors.models import ConnectorEnablement
from policies import services as policy_services
from policies.models import Policy
from tenants import services
from tenants.models import ApiToken, Membership, Team, TeamMembership

pytestmark = pytest.mark.django_db
URL = "/api/v1/dataplane/sessions/context/"
FORBID_ALL = "forbid(principal, action, resource);"


@dataclass
class World:
    service: str
    session: str
    session_id: str
    payments: Team
    support: Team
    policies: dict[str, Policy]


def _policy(person: Person, name: str, team: Team | None = None, enabled: bool = True) -> Policy:
    with scope(organization=person.org):
        return policy_services.policy_create(
            acting=person.membership, team=team, name=name, cedar=FORBID_ALL, enabled=enabled
        )


@pytest.fixture
def world(cast: Cast) -> World:
    alice, bob, charlie = cast.alice, cast.bob, cast.charlie
    with scope(organization=alice.org):
        payments = services.team_create(acting=alice.membership, name="Payments")
        support = services.team_create(acting=alice.membership, name="Support")
        services.team_member_add(acting=alice.membership, team=payments, user_id=alice.user.pk)
        services.team_member_add(acting=alice.membership, team=support, user_id=bob.user.pk)
        ConnectorEnablement.objects.create(organization=alice.org, team=payments, connector="github")
        ConnectorEnablement.objects.create(organization=alice.org, team=payments, connector="stripe")
        ConnectorEnablement.objects.create(organization=alice.org, team=support, connector="slack")
        session = services.session_token_create(membership=alice.membership, name="claude-code")
    policies = {
        "org": _policy(alice, "org-wide"),
        "payments": _policy(alice, "payments only", payments),
        "support": _policy(alice, "support only", support),
        "disabled": _policy(alice, "switched off", enabled=False),
        "other org": _policy(charlie, "charlie's"),
    }
    return World(
        service=services.service_token_create(name="data plane").plaintext,
        session=session.plaintext,
        session_id=str(session.token.pk),
        payments=payments,
        support=support,
        policies=policies,
    )


def context(world: World, token: str | None = None) -> Any:
    return client_for(world.service).post(URL, {"session_token": token or world.session}, format="json")


def test_it_describes_the_session_user_and_organization(world: World, cast: Cast) -> None:
    response = context(world)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["session_id"] == world.session_id
    assert body["user_id"] == str(cast.alice.user.pk)
    assert body["user_email"] == "alice@example.com"
    assert body["organization_id"] == str(cast.alice.org.pk)
    assert body["agent"] == "claude-code"
    assert body["project_id"] is None
    assert body["team_ids"] == [str(world.payments.pk)]
    assert body["expires_at"]
    assert body["egress"] == {"mode": "open", "allow": [], "plain_http": [], "tcp": [], "project_tcp": []}


def test_it_gives_the_org_policies_and_the_users_teams_policies_only(world: World) -> None:
    policies = context(world).json()["policies"]
    assert {p["name"] for p in policies} == {"org-wide", "payments only"}
    org = next(p for p in policies if p["name"] == "org-wide")
    assert org == {"id": str(world.policies["org"].pk), "name": "org-wide", "cedar": FORBID_ALL}


def test_it_gives_the_connectors_enabled_for_the_users_teams(world: World) -> None:
    assert context(world).json()["connectors"] == ["github", "stripe"]


def test_it_reflects_the_egress_setting(world: World, cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        policy_services.egress_set(
            acting=cast.alice.membership,
            mode="allowlist",
            allow=["*.PyPI.org"],
            plain_http=["Deb.Debian.org"],
            tcp=["GitHub.com:22", "github.com:22"],
        )
    assert context(world).json()["egress"] == {
        "mode": "allowlist",
        "allow": ["*.pypi.org"],
        "plain_http": ["deb.debian.org"],
        "tcp": ["github.com:22"],
        "project_tcp": [],
    }
    with scope(organization=cast.alice.org):  # left out: kept as it is
        policy_services.egress_set(acting=cast.alice.membership, mode="open", allow=[])
    egress = context(world).json()["egress"]
    assert egress["plain_http"] == ["deb.debian.org"] and egress["tcp"] == ["github.com:22"]


def test_a_session_for_a_project_gets_the_projects_own_tcp_rules(world: World, cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        policy_services.egress_set(acting=cast.alice.membership, mode="open", allow=[], tcp=["git.example:22"])
        project = services.project_create(acting=cast.alice.membership, name="Checkout", team=world.payments)
        other = services.project_create(acting=cast.alice.membership, name="Website")
        policy_services.project_egress_set(acting=cast.alice.membership, project=project, tcp=["db.example:5432"])
        policy_services.project_egress_set(acting=cast.alice.membership, project=other, tcp=["web.example:3306"])
    for_project = services.session_token_create(membership=cast.alice.membership, name="a", project=project)
    body = context(world, for_project.plaintext).json()
    assert body["project_id"] == str(project.pk)
    assert (body["egress"]["tcp"], body["egress"]["project_tcp"]) == (["git.example:22"], ["db.example:5432"])
    assert context(world).json()["egress"]["project_tcp"] == []  # the same user, no project


def test_only_the_projects_team_or_a_project_manager_starts_sessions_for_it(world: World, cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        project = services.project_create(acting=cast.alice.membership, name="Checkout", team=world.payments)
        open_project = services.project_create(acting=cast.alice.membership, name="Website")
    url = f"/api/v1/orgs/{cast.alice.org.pk}/session-tokens/"
    bob = client_for(cast.bob.token)  # a member, in Support, not in Payments
    refused = bob.post(url, {"name": "a", "project": str(project.pk)}, format="json")
    assert refused.status_code == 403 and "checkout project's team" in refused.json()["detail"], refused.content
    with scopes_disabled():
        assert not ApiToken.objects.filter(user=cast.bob.user, kind="ses").exists()
    assert bob.post(url, {"name": "a", "project": str(open_project.pk)}, format="json").status_code == 201
    with scope(organization=cast.alice.org):
        services.team_member_add(acting=cast.alice.membership, team=world.payments, user_id=cast.bob.user.pk)
    assert bob.post(url, {"name": "a", "project": str(project.pk)}, format="json").status_code == 201
    alice = client_for(cast.alice.token)  # the owner manages projects
    assert alice.post(url, {"name": "a", "project": str(project.pk)}, format="json").status_code == 201


def test_credentials_come_only_from_the_users_vaults_most_specific_first(world: World, cast: Cast) -> None:
    give_keys(cast.alice)
    give_keys(cast.bob)
    shared = make_vault(cast.alice, type="shared")
    personal = make_vault(cast.alice, type="personal")
    bobs = make_vault(cast.bob, type="personal")
    credentials = context(world).json()["credentials"]
    assert credentials == [
        {
            "connector": "github",
            "vault_id": shared.id,
            "credential_id": shared.credential_id,
            "name": "github-token",
            "binding": "shared",
            "actions": [],
            "vault_name": "shared vault",
        },
        {
            "connector": "github",
            "vault_id": personal.id,
            "credential_id": personal.credential_id,
            "name": "github-token",
            "binding": "personal",
            "actions": [],
            "vault_name": "personal vault",
        },
    ]
    assert bobs.id not in str(credentials)


def test_a_user_without_vaults_gets_no_credentials(world: World) -> None:
    assert context(world).json()["credentials"] == []


def test_a_revoked_session_token_gets_404(world: World) -> None:
    services.token_revoke(acting=None, token=ApiToken.objects.get(pk=world.session_id))
    response = context(world)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_an_unknown_token_gets_the_same_404(world: World) -> None:
    unknown = context(world, "ail_ses_" + "x" * 40)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == context(world, "nonsense").json()["detail"]


def test_a_user_who_left_the_organization_gets_404(world: World, cast: Cast) -> None:
    with scopes_disabled():
        Membership.objects.filter(pk=cast.alice.membership.pk).delete()
    assert context(world).status_code == 404


def test_a_personal_or_session_token_is_refused(world: World, cast: Cast) -> None:
    for token in (cast.alice.token, world.session):
        response = client_for(token).post(URL, {"session_token": world.session}, format="json")
        assert response.status_code == 403
        assert response["Content-Type"] == "application/problem+json"
    assert client_for(None).post(URL, {"session_token": world.session}, format="json").status_code == 401


def test_shared_vaults_are_ranked_by_name(world: World, cast: Cast) -> None:
    import uuid

    from vaults import services as vault_services

    give_keys(cast.alice)
    first = make_vault(cast.alice, type="shared")
    later = make_vault(cast.alice, type="shared")
    with scope(organization=cast.alice.org):
        view = vault_services.vault_get_for(membership=cast.alice.membership, vault_id=uuid.UUID(later.id))
        vault_services.vault_rename(acting=cast.alice.membership, view=view, name="A first")
    credentials = context(world).json()["credentials"]
    assert [(c["vault_id"], c["credential_id"]) for c in credentials] == [
        (later.id, later.credential_id),
        (first.id, first.credential_id),
    ]


def test_pins_project_and_team_vaults_outrank_shared_and_personal_ones(world: World, cast: Cast) -> None:
    import uuid

    from vaults.models import Vault

    give_keys(cast.alice)
    personal = make_vault(cast.alice, type="personal")
    shared = make_vault(cast.alice, type="shared")
    team = make_vault(cast.alice, type="shared")
    project_vault = make_vault(cast.alice, type="shared")
    with scope(organization=cast.alice.org):
        project = services.project_create(acting=cast.alice.membership, name="App", team=world.payments)
        other = services.project_create(acting=cast.alice.membership, name="Other")
        Vault.objects.filter(pk=uuid.UUID(team.id)).update(team=world.payments)
        Vault.objects.filter(pk=uuid.UUID(project_vault.id)).update(project=project)
    plain = context(world).json()["credentials"]
    assert [(c["vault_id"], c["binding"]) for c in plain] == [
        (team.id, "team"),
        (shared.id, "shared"),
        (personal.id, "personal"),
    ], "another project's vault serves no session outside it"
    for_project = services.session_token_create(membership=cast.alice.membership, name="a", project=project)
    ranked = context(world, for_project.plaintext).json()["credentials"]
    assert [c["binding"] for c in ranked] == ["project", "team", "shared", "personal"]
    pin = f"{personal.id}:{personal.credential_id}"
    pinned = services.session_token_create(membership=cast.alice.membership, name="b", project=other, pins=[pin])
    assert [c["binding"] for c in context(world, pinned.plaintext).json()["credentials"]] == [
        "pinned",
        "team",
        "shared",
    ]
    from aileron_site.problems import InvalidInput

    with pytest.raises(InvalidInput, match="in your vaults to pin"):
        services.session_token_create(membership=cast.bob.membership, name="c", pins=[pin])
    with pytest.raises(InvalidInput, match="another project's vault"):  # it could never apply there
        services.session_token_create(
            membership=cast.alice.membership,
            name="d",
            project=other,
            pins=[f"{project_vault.id}:{project_vault.credential_id}"],
        )


def test_a_session_loses_its_projects_rules_and_vaults_once_its_user_leaves_the_projects_team(
    world: World, cast: Cast
) -> None:
    with scope(organization=cast.alice.org):
        # bob is in Support (the world's), not in Payments
        project = services.project_create(acting=cast.alice.membership, name="Desk", team=world.support)
        policy_services.project_egress_set(acting=cast.alice.membership, project=project, tcp=["db.example:5432"])
    session = services.session_token_create(membership=cast.bob.membership, name="a", project=project)
    body = context(world, session.plaintext).json()
    assert (body["project_id"], body["egress"]["project_tcp"]) == (str(project.pk), ["db.example:5432"])
    with scope(organization=cast.alice.org):
        services.team_member_remove(
            acting=cast.alice.membership,
            team_membership=TeamMembership.objects.get(team=world.support, user=cast.bob.user),
        )
    body = context(world, session.plaintext).json()
    assert (body["project_id"], body["egress"]["project_tcp"]) == (None, [])


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("github.com", "host:port"),
        ("github.com:443", "80 and 443"),
        ("github.com:80", "80 and 443"),
        ("github.com:0", "between 1 and 65535"),
        ("github.com:65536", "between 1 and 65535"),
        ("*:22", "wildcard"),
        ("git hub.com:22", "not a host name"),
    ],
)
def test_a_tcp_rule_is_checked_when_written(world: World, cast: Cast, rule: str, why: str) -> None:
    from aileron_site.problems import InvalidInput

    with scope(organization=cast.alice.org), pytest.raises(InvalidInput, match=why):
        policy_services.egress_set(acting=cast.alice.membership, mode="open", allow=[], tcp=[rule])
