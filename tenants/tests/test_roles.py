"""Each role can do exactly what the permission matrix (and so the README) says, through the API."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django_scopes import scope

from conftest import Person, client_for, give_keys, make_person, make_vault
from tenants import services
from tenants.permissions import ROLE_PERMISSIONS, Perm, matrix_markdown
from tenants.roles import Role

pytestmark = pytest.mark.django_db
README = Path(__file__).resolve().parents[2] / "README.md"

# Not yet reachable through any endpoint: their issues add the endpoints and the probes.
NOT_YET_ENFORCED: set[Perm] = set()


@dataclass
class World:
    owner: Person
    actor: Person
    victim: Person
    victim_session_id: str
    team_id: str
    victim_vault_id: str = ""
    victim_audit_record_id: str = ""
    victim_approval_id: str = ""

    @property
    def org_id(self) -> str:
        return str(self.owner.org.pk)


@dataclass(frozen=True)
class Probe:
    method: str
    path: Callable[[World], str]
    body: dict[str, Any] | Callable[[World], dict[str, Any]] | None = None
    denied: tuple[int, ...] = (403,)


PROBES: dict[Perm, Probe] = {
    Perm.ORG_VIEW: Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/"),
    Perm.ORG_UPDATE: Probe("patch", lambda w: f"/api/v1/orgs/{w.org_id}/", {"name": "Renamed"}),
    Perm.ORG_DELETE: Probe("delete", lambda w: f"/api/v1/orgs/{w.org_id}/"),
    Perm.MEMBER_VIEW: Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/members/"),
    Perm.MEMBER_INVITE: Probe(
        "post",
        lambda w: f"/api/v1/orgs/{w.org_id}/invitations/",
        {"email": "newcomer@example.com", "role": "member"},
    ),
    Perm.MEMBER_MANAGE: Probe(
        "patch", lambda w: f"/api/v1/orgs/{w.org_id}/members/{w.victim.membership.pk}/", {"role": "auditor"}
    ),
    Perm.OWNER_MANAGE: Probe(
        "patch", lambda w: f"/api/v1/orgs/{w.org_id}/members/{w.victim.membership.pk}/", {"role": "owner"}
    ),
    Perm.TEAM_VIEW: Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/teams/{w.team_id}/"),
    Perm.TEAM_MANAGE: Probe("post", lambda w: f"/api/v1/orgs/{w.org_id}/teams/", {"name": "New team"}),
    Perm.PROJECT_VIEW: Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/projects/"),
    Perm.PROJECT_MANAGE: Probe("post", lambda w: f"/api/v1/orgs/{w.org_id}/projects/", {"name": "New project"}),
    Perm.SESSION_CREATE: Probe("post", lambda w: f"/api/v1/orgs/{w.org_id}/session-tokens/", {"name": "agent"}),
    # Someone else's session token is invisible (404) without session.view_all.
    Perm.SESSION_VIEW_ALL: Probe(
        "get", lambda w: f"/api/v1/orgs/{w.org_id}/session-tokens/{w.victim_session_id}/", denied=(404,)
    ),
    Perm.SESSION_REVOKE_ALL: Probe(
        "delete",
        lambda w: f"/api/v1/orgs/{w.org_id}/session-tokens/{w.victim_session_id}/",
        denied=(403, 404),
    ),
}


def _new_vault_body(world: World) -> dict[str, Any]:
    """What `aileron vault create` sends: a fresh vault key wrapped to the actor's own public key."""
    from vaults import crypto
    from vaults.models import UserKeys

    vault_id = str(uuid.uuid4())
    public = bytes(UserKeys.objects.get(user=world.actor.user).public_key)
    wrapping = crypto.vault_key_wrap(
        crypto.vault_key_new(), public, vault_id=vault_id, member_id=str(world.actor.user.pk), key_version=1
    )
    return {"id": vault_id, "name": "Deploy keys", "type": "shared", "wrapping": crypto.b64(wrapping)}


VAULT_PERMS = {Perm.VAULT_CREATE, Perm.VAULT_VIEW_ALL}
PROBES[Perm.CONNECTOR_MANAGE] = Probe("put", lambda w: f"/api/v1/orgs/{w.org_id}/connectors/github/teams/{w.team_id}/")
PROBES[Perm.POLICY_MANAGE] = Probe(
    "post",
    lambda w: f"/api/v1/orgs/{w.org_id}/policies/",
    {"name": "No refunds", "cedar": 'forbid(principal, action == Aileron::Action::"stripe.create-refund", resource);'},
)
PROBES[Perm.VAULT_CREATE] = Probe("post", lambda w: f"/api/v1/orgs/{w.org_id}/vaults/", _new_vault_body)
# Someone else's audit records are invisible (404) without audit.read; one's own are always readable.
PROBES[Perm.AUDIT_READ] = Probe(
    "get", lambda w: f"/api/v1/orgs/{w.org_id}/audit/{w.victim_audit_record_id}/", denied=(404,)
)
# Someone else's held request is invisible (404) without approval.decide or audit.read; an auditor sees it and
# is refused the decision (403).
PROBES[Perm.APPROVAL_DECIDE] = Probe(
    "post",
    lambda w: f"/api/v1/orgs/{w.org_id}/approvals/{w.victim_approval_id}/grant/",
    {"reason": "ok"},
    denied=(403, 404),
)
# Shortening retention removes evidence: owners only (auditors and admins read it, and are refused the change).
PROBES[Perm.AUDIT_RETENTION] = Probe("put", lambda w: f"/api/v1/orgs/{w.org_id}/audit/retention/", {"days": 90})
# Notification channels are called by the worker (and a Slack URL is a secret): only notify.manage sees them.
PROBES[Perm.NOTIFY_MANAGE] = Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/notification-channels/")
# Someone else's vault is invisible (404) without vault.view_all.
PROBES[Perm.VAULT_VIEW_ALL] = Probe(
    "get", lambda w: f"/api/v1/orgs/{w.org_id}/vaults/{w.victim_vault_id}/", denied=(404,)
)


# Further routes guarded by a permission that already has its probe above: each is held to the matrix too.
MORE_PROBES: dict[str, tuple[Perm, Probe]] = {
    # Admin events describe other people's changes: without audit.read they are refused, not narrowed.
    "admin-events": (Perm.AUDIT_READ, Probe("get", lambda w: f"/api/v1/orgs/{w.org_id}/audit/admin/")),
}


def build_world(role: Role, perm: Perm | None = None) -> World:
    owner = make_person("owner@example.com", org_name="Matrix Org")
    actor = owner if role == Role.OWNER else make_person("actor@example.com", org=owner.org, role=role)
    victim = make_person("victim@example.com", org=owner.org, role=Role.MEMBER)
    with scope(organization=owner.org):
        team = services.team_create(acting=owner.membership, name="Core")
        session = services.session_token_create(membership=victim.membership, name="victim agent").token
    world = World(owner=owner, actor=actor, victim=victim, victim_session_id=str(session.pk), team_id=str(team.pk))
    if perm == Perm.AUDIT_READ:
        from audit.tests.factories import record_stored

        world.victim_audit_record_id = record_stored(session)
    if perm == Perm.APPROVAL_DECIDE:
        from approvals.tests.factories import held_approval

        world.victim_approval_id = str(held_approval(session).pk)
    if perm in VAULT_PERMS:  # key pairs cost an Argon2id run each: only where the probe needs them
        give_keys(actor)
        give_keys(victim)
        world.victim_vault_id = make_vault(victim).id
    return world


def test_every_enforced_permission_has_a_probe() -> None:
    assert set(PROBES) | NOT_YET_ENFORCED == set(Perm)


@pytest.mark.parametrize("perm", list(PROBES), ids=lambda p: p.value)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_role_can_do_exactly_what_the_matrix_says(role: Role, perm: Perm) -> None:
    check_probe(role, perm, PROBES[perm])


@pytest.mark.parametrize("route", list(MORE_PROBES))
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_role_can_do_exactly_what_the_matrix_says_on_every_route_of_a_permission(role: Role, route: str) -> None:
    check_probe(role, *MORE_PROBES[route])


def check_probe(role: Role, perm: Perm, probe: Probe) -> None:
    world = build_world(role, perm)
    client = client_for(world.actor.token)
    raw_body = probe.body(world) if callable(probe.body) else probe.body
    body = json.dumps(raw_body) if raw_body is not None else None
    if probe.method == "get":
        response = client.get(probe.path(world))
    else:
        response = getattr(client, probe.method)(probe.path(world), data=body, content_type="application/json")
    allowed = perm in ROLE_PERMISSIONS[role]
    if allowed:
        assert 200 <= response.status_code < 300, (role, perm, response.status_code, response.content)
    else:
        assert response.status_code in probe.denied, (role, perm, response.status_code, response.content)
        assert response["Content-Type"] == "application/problem+json"


def test_readme_shows_the_matrix_the_code_enforces() -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- permission-matrix -->\n(.*?)\n<!-- /permission-matrix -->", text, re.S)
    assert match, "README.md lacks the permission-matrix block"
    assert match.group(1).strip() == matrix_markdown().strip(), (
        "README's matrix differs from tenants.permissions: regenerate it with `python -m tenants.permissions`"
    )
