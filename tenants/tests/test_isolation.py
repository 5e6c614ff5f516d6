"""Cross-tenant isolation, checked by walking the URL conf so that a new endpoint cannot be forgotten."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern
from django_scopes import scope, scopes_disabled

from approvals.notifications import notification_channel_create
from approvals.services import approval_rule_create
from approvals.tests.factories import held_approval
from audit.chaining import checkpoint_make
from audit.models import AdminEvent
from audit.tests.factories import record_stored
from conftest import Cast, Person, client_for, give_keys, make_vault
from policies.services import policy_create, shell_policy_set
from tenants import services
from tenants.models import ApiToken, Invitation, Membership, Organization, Project, Team, TeamMembership
from tests.urlwalk import api_routes, methods_of
from vaults.keyrelay import keyrelay_post

pytestmark = pytest.mark.django_db
WRITE_BODY = {"name": "x", "role": "admin", "email": "zed@example.com", "user_id": None, "organization": "x"}


@dataclass
class Objects:
    person: Person
    ids: dict[str, str]


def populate(person: Person, other_member: Person | None = None) -> Objects:
    org = person.org
    with scope(organization=org):
        team = services.team_create(acting=person.membership, name="Team")
        project = services.project_create(acting=person.membership, name="Project", team=team)
        invitation, _ = services.invitation_create(acting=person.membership, email=f"new@{org.slug}.example")
        member = other_member.membership if other_member else person.membership
        services.team_member_add(acting=person.membership, team=team, user_id=member.user_id)
        session = services.session_token_create(membership=person.membership, name="agent").token
        record_id = record_stored(session)
        checkpoint_make(organization_uuid=org.pk)  # so that GET .../audit/checkpoint/ has one to show
        policy = policy_create(
            acting=person.membership, team=None, name="P", cedar="forbid(principal, action, resource);"
        )
        rule = approval_rule_create(acting=person.membership, action="stripe.*")
        shell_rule = f"rm -rf /{org.slug}-only-*"
        shell_policy_set(acting=person.membership, mode="enforce", deny=[shell_rule], allow=[], record_allowed=False)
        approval = held_approval(session)
        channel = notification_channel_create(
            acting=person.membership, name="hooks", kind="webhook", target=f"https://{org.slug}.example/hook"
        ).channel
        event = AdminEvent.objects.filter(organization_uuid=org.pk, action="team.create").get()
    pat = ApiToken.objects.filter(user=person.user, kind="pat").first()
    assert pat is not None
    give_keys(person)
    vault = make_vault(person)
    message = keyrelay_post(membership=person.membership, op="attest", body={"nonce": "A" * 43 + "="})
    return Objects(
        person,
        {
            "org_id": str(org.pk),
            "member_id": str(member.pk),
            "team_id": str(team.pk),
            "project_id": str(project.pk),
            "invitation_id": str(invitation.pk),
            "user_id": str(member.user_id),
            "pat_id": str(pat.pk),
            "session_id": str(session.pk),
            "vault_id": vault.id,
            "credential_id": vault.credential_id,
            "record_id": record_id,
            "policy_id": str(policy.pk),
            "approval_id": str(approval.pk),
            "rule_id": str(rule.pk),
            "message_id": str(message.pk),  # a key-channel request waiting for the data plane
            "channel_id": str(channel.pk),
            "event_id": str(event.pk),  # an admin event (the team's creation)
            "shell_rule": shell_rule,  # not a URL id: a value that must not show through another organization
            "name": "github",  # a connector: installed server-wide, enabled per team
        },
    )


def kwarg_value(route: str, kwarg: str, ids: dict[str, str]) -> str:
    if kwarg == "token_id":
        return ids["session_id"] if "session-tokens" in route else ids["pat_id"]
    if kwarg not in ids:
        pytest.fail(f"{route}: no object for <{kwarg}> in the isolation test; add one to populate()")
    return ids[kwarg]


def fill(route: str, pattern: URLPattern, ids: dict[str, str], org_ids: dict[str, str] | None = None) -> str:
    path = "/" + route
    for kwarg in pattern.pattern.converters:
        source = org_ids if (kwarg == "org_id" and org_ids is not None) else ids
        path = re.sub(rf"<[a-z]+:{kwarg}>", kwarg_value(route, kwarg, source), path)
    return path


def call(token: str, method: str, path: str) -> Any:
    client = client_for(token)
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, data=json.dumps(WRITE_BODY), content_type="application/json")


@pytest.fixture
def worlds(cast: Cast) -> tuple[Objects, Objects]:
    return populate(cast.alice, cast.bob), populate(cast.charlie)


def snapshot() -> dict[str, int]:
    with scopes_disabled():
        return {
            m.__name__: m.objects.count()
            for m in (Organization, Membership, Team, TeamMembership, Project, Invitation, ApiToken, AdminEvent)
        }


def test_the_walk_finds_the_organization_endpoints() -> None:
    routes = [r for r, _ in api_routes()]
    assert "api/v1/orgs/<uuid:org_id>/teams/<uuid:team_id>/" in routes
    assert len([r for r in routes if "<uuid:" in r]) >= 10


def test_charlie_gets_404_for_every_endpoint_that_takes_one_of_alices_ids(
    worlds: tuple[Objects, Objects],
) -> None:
    a, c = worlds
    before = snapshot()
    checked = 0
    for route, pattern in api_routes():
        if not pattern.pattern.converters:
            continue
        if route.startswith("api/v1/dataplane/"):
            # The data plane's endpoints take only its service token: a person's token is refused before any
            # id is looked at (403 alike for every id, so nothing leaks).
            for method in methods_of(pattern):
                refused = call(c.person.token, method, fill(route, pattern, a.ids))
                assert refused.status_code == 403, f"{method.upper()} {route} as Charlie: {refused.status_code}"
            continue
        for method in methods_of(pattern):
            path = fill(route, pattern, a.ids)
            response = call(c.person.token, method, path)
            assert response.status_code == 404, f"{method.upper()} {path} as Charlie: {response.status_code}"
            assert response["Content-Type"] == "application/problem+json"
            checked += 1
    assert checked >= 20
    assert snapshot() == before, "a refused request changed data"


def test_charlie_gets_404_when_pairing_his_org_with_alices_nested_ids(
    worlds: tuple[Objects, Objects],
) -> None:
    a, c = worlds
    before = snapshot()
    checked = 0
    for route, pattern in api_routes():
        converters = pattern.pattern.converters
        # connector names are installed server-wide, not owned by a tenant: only tenant ids can leak
        if "org_id" not in converters or not set(converters) - {"org_id", "name"}:
            continue
        for method in methods_of(pattern):
            path = fill(route, pattern, a.ids, org_ids=c.ids)
            response = call(c.person.token, method, path)
            assert response.status_code == 404, f"{method.upper()} {path} as Charlie: {response.status_code}"
            checked += 1
    assert checked >= 8
    assert snapshot() == before


def test_no_list_or_read_that_charlie_can_make_shows_anything_of_alices(
    worlds: tuple[Objects, Objects], cast: Cast
) -> None:
    a, c = worlds
    secrets_of_a = {v for k, v in a.ids.items() if k != "name"} | {
        cast.alice.user.email,
        cast.bob.user.email,
        a.person.org.slug,
    }
    seen = 0
    for route, pattern in api_routes():
        if "get" not in methods_of(pattern):
            continue
        path = fill(route, pattern, c.ids)
        response = client_for(c.person.token).get(path)
        assert response.status_code == 200, f"GET {path} as Charlie: {response.status_code}"
        text = response.content.decode()
        leaked = [s for s in secrets_of_a if s in text]
        assert not leaked, f"GET {path} shows Alice's {leaked}"
        seen += 1
    assert seen >= 12


def test_bob_sees_his_own_org_through_the_same_endpoints(worlds: tuple[Objects, Objects], cast: Cast) -> None:
    a, _ = worlds
    response = client_for(cast.bob.token).get(f"/api/v1/orgs/{a.ids['org_id']}/teams/{a.ids['team_id']}/")
    assert response.status_code == 200
    assert response.json()["id"] == a.ids["team_id"]
