"""Admin events: every change people make to an organization is recorded with it, readable by audit.read holders."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.db import transaction
from django_scopes import scope, scopes_disabled

from aileron_site.problems import InvalidInput
from audit.models import AdminEvent
from audit.services import admin_event_record
from conftest import Cast, client_for, give_keys, make_vault
from tenants import selectors, services
from tenants.models import ApiToken, Invitation, Project
from tenants.roles import Role

pytestmark = pytest.mark.django_db


def events(organization_id: uuid.UUID | None = None, **filters: Any) -> list[AdminEvent]:
    with scopes_disabled():
        found = AdminEvent.objects.filter(**filters).order_by("created_at", "id")
        if organization_id is not None:
            found = found.filter(organization_uuid=organization_id)
        return list(found)


def only(**filters: Any) -> AdminEvent:
    found = events(**filters)
    assert len(found) == 1, [(e.action, e.target_label) for e in found]
    return found[0]


def admin_url(cast: Cast, suffix: str = "") -> str:
    return f"/api/v1/orgs/{cast.alice.org.pk}/audit/admin/{suffix}"


# --- recording -----------------------------------------------------------------------------------------------


def test_a_role_change_records_the_actor_their_role_and_the_role_before_and_after(cast: Cast) -> None:
    response = client_for(cast.alice.token).patch(
        f"/api/v1/orgs/{cast.alice.org.pk}/members/{cast.bob.membership.pk}/", {"role": "auditor"}, format="json"
    )
    assert response.status_code == 200

    event = only(action="member.role_change")
    assert event.organization_uuid == cast.alice.org.pk
    assert (event.actor_id, event.actor_email, event.actor_role) == (cast.alice.user.pk, "alice@example.com", "owner")
    assert (event.target_type, event.target_id, event.target_label) == (
        "member",
        str(cast.bob.user.pk),
        "bob@example.com",
    )
    assert event.before == {"user_id": str(cast.bob.user.pk), "email": "bob@example.com", "role": "member"}
    assert event.after == {"user_id": str(cast.bob.user.pk), "email": "bob@example.com", "role": "auditor"}


def test_teams_record_their_creation_rename_members_and_deletion(cast: Cast) -> None:
    alice = cast.alice.membership
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=alice, name="Payments")
        team_id = str(team.pk)  # deleting the team clears its pk
        services.team_update(acting=alice, team=team, name="Billing", slug="billing")
        services.team_member_add(acting=alice, team=team, user_id=cast.bob.user.pk)
        services.team_member_remove(
            acting=alice, team_membership=selectors.team_member_get(team=team, user_id=cast.bob.user.pk)
        )
        services.team_delete(acting=alice, team=team)

    recorded = events(cast.alice.org.pk, target_id__in=[team_id, str(cast.bob.user.pk)])
    assert [(e.action, e.before, e.after) for e in recorded] == [
        ("team.create", None, {"name": "Payments", "slug": "payments"}),
        ("team.update", {"name": "Payments", "slug": "payments"}, {"name": "Billing", "slug": "billing"}),
        (
            "team.member_add",
            None,
            {"team_id": team_id, "team": "billing", "user_id": str(cast.bob.user.pk), "email": "bob@example.com"},
        ),
        (
            "team.member_remove",
            {"team_id": team_id, "team": "billing", "user_id": str(cast.bob.user.pk), "email": "bob@example.com"},
            None,
        ),
        ("team.delete", {"name": "Billing", "slug": "billing"}, None),
    ]
    assert {e.actor_email for e in recorded} == {"alice@example.com"}


def test_projects_record_each_change_with_its_fields(cast: Cast) -> None:
    alice = cast.alice.membership
    with scope(organization=cast.alice.org):
        project = services.project_create(acting=alice, name="Checkout", description="the shop")
        services.project_update(acting=alice, project=project, fields={"description": "the new shop"})
        services.project_delete(acting=alice, project=project)

    recorded = events(cast.alice.org.pk, target_type="project")
    assert [e.action for e in recorded] == ["project.create", "project.update", "project.delete"]
    assert recorded[1].before is not None and recorded[1].after is not None
    assert (recorded[1].before["description"], recorded[1].after["description"]) == ("the shop", "the new shop")
    assert recorded[2].after is None and recorded[2].target_label == "Checkout"


def test_accepting_an_invitation_is_the_joining_persons_act(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Support")
        invitation, _ = services.invitation_create(
            acting=cast.alice.membership, email="dana@example.com", role=Role.APPROVER, teams=[team]
        )
    joined = services.invitation_accept(invitation=invitation, acting_user=None, name="Dana")

    created = only(action="invitation.create")
    assert created.actor_email == "alice@example.com"
    assert created.after is not None and (created.after["email"], created.after["teams"]) == (
        "dana@example.com",
        ["support"],
    )
    accepted = only(action="invitation.accept")
    assert (accepted.actor_id, accepted.actor_role) == (joined.user.pk, "approver")
    assert accepted.before is not None and accepted.before["accepted_at"] is None
    assert accepted.after is not None and accepted.after["accepted_at"] is not None
    assert only(action="team.member_add").actor_email == "dana@example.com"


def test_a_revoked_invitation_records_who_revoked_it(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        invitation, _ = services.invitation_create(acting=cast.alice.membership, email="erin@example.com")
    response = client_for(cast.alice.token).delete(f"/api/v1/orgs/{cast.alice.org.pk}/invitations/{invitation.pk}/")
    assert response.status_code == 204
    revoked = only(action="invitation.revoke")
    assert revoked.actor_email == "alice@example.com"
    assert revoked.before is not None and revoked.before["revoked_at"] is None
    assert revoked.after is not None and revoked.after["revoked_at"] is not None


def test_a_personal_token_belongs_to_no_organization_and_a_session_to_its_own(cast: Cast) -> None:
    issued = client_for(cast.bob.token).post("/api/v1/tokens/", {"name": "laptop"}, format="json").json()
    client_for(cast.bob.token).delete(f"/api/v1/tokens/{issued['id']}/")
    session = services.session_token_create(membership=cast.bob.membership, name="claude").token
    client_for(cast.alice.token).delete(f"/api/v1/orgs/{cast.alice.org.pk}/session-tokens/{session.pk}/")

    started = only(action="token.create", target_id=str(session.pk))
    assert (started.organization_uuid, started.actor_email, started.actor_role) == (
        cast.alice.org.pk,
        "bob@example.com",
        "member",
    )
    assert started.after is not None and (started.after["kind"], started.after["name"]) == ("ses", "claude")
    personal = events(target_id=issued["id"])
    assert [(e.action, e.organization_uuid, e.actor_email) for e in personal] == [
        ("token.create", None, "bob@example.com"),
        ("token.revoke", None, "bob@example.com"),
    ]
    revoked = only(action="token.revoke", target_id=str(session.pk))
    assert (revoked.organization_uuid, revoked.actor_email, revoked.actor_role) == (
        cast.alice.org.pk,
        "alice@example.com",
        "owner",
    )


def test_the_data_planes_token_is_minted_by_the_system() -> None:
    issued = services.service_token_create(name="data plane")
    event = only(action="token.create", target_id=str(issued.token.pk))
    assert (event.actor_id, event.actor_email, event.actor_role, event.organization_uuid) == (None, "", "", None)


def test_removing_a_member_records_the_removal_and_their_revoked_sessions(cast: Cast) -> None:
    session = services.session_token_create(membership=cast.bob.membership, name="claude").token
    response = client_for(cast.alice.token).delete(
        f"/api/v1/orgs/{cast.alice.org.pk}/members/{cast.bob.membership.pk}/"
    )
    assert response.status_code == 204
    removed = only(action="member.remove")
    assert (removed.actor_email, removed.after) == ("alice@example.com", None)
    assert removed.before == {"user_id": str(cast.bob.user.pk), "email": "bob@example.com", "role": "member"}
    assert only(action="token.revoke", target_id=str(session.pk)).actor_email == "alice@example.com"


FORBID_REFUNDS = 'forbid(principal, action == Aileron::Action::"stripe.create-refund", resource);'


def test_policies_record_their_cedar_before_and_after(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/policies/"
    alice = client_for(cast.alice.token)
    created = alice.post(url, {"name": "No refunds", "cedar": FORBID_REFUNDS}, format="json").json()
    alice.patch(f"{url}{created['id']}/", {"enabled": False}, format="json")
    alice.delete(f"{url}{created['id']}/")

    recorded = events(target_id=created["id"])
    assert [(e.action, e.actor_email) for e in recorded] == [
        ("policy.create", "alice@example.com"),
        ("policy.update", "alice@example.com"),
        ("policy.delete", "alice@example.com"),
    ]
    assert recorded[0].after is not None and recorded[0].after["cedar"] == FORBID_REFUNDS
    assert recorded[1].before is not None and recorded[1].after is not None
    assert (recorded[1].before["enabled"], recorded[1].after["enabled"]) == (True, False)
    assert recorded[2].after is None


def test_egress_and_shell_settings_record_the_setting_before_and_after(cast: Cast) -> None:
    alice = client_for(cast.alice.token)
    org = cast.alice.org
    egress_body = {"mode": "allowlist", "allow": ["*.example.com"]}
    assert alice.put(f"/api/v1/orgs/{org.pk}/egress/", egress_body, format="json").status_code == 200
    shell = {"mode": "audit", "deny": ["rm -rf *"], "allow": [], "record_allowed": True}
    assert alice.put(f"/api/v1/orgs/{org.pk}/shell-policy/", shell, format="json").status_code == 200
    with scope(organization=org):
        project = services.project_create(acting=cast.alice.membership, name="Payments")
    tcp = {"tcp": ["db.payments.example:5432"]}
    assert alice.put(f"/api/v1/orgs/{org.pk}/projects/{project.pk}/egress/", tcp, format="json").status_code == 200

    egress = only(action="egress.update")
    assert egress.before is not None and egress.after is not None
    assert (egress.before["mode"], egress.after["mode"], egress.after["allow"]) == (
        "open",
        "allowlist",
        ["*.example.com"],
    )
    shell_event = only(action="shell_policy.update")
    assert shell_event.after == shell and shell_event.actor_email == "alice@example.com"
    project_egress = only(action="project_egress.update")
    assert (project_egress.target_id, project_egress.before, project_egress.after) == (
        str(project.pk),
        {"tcp": []},
        {"tcp": ["db.payments.example:5432"]},
    )


def test_enabling_and_disabling_a_connector_records_the_team(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Support")
    url = f"/api/v1/orgs/{cast.alice.org.pk}/connectors/github/teams/{team.pk}/"
    alice = client_for(cast.alice.token)
    assert alice.put(url).status_code in (200, 201, 204)
    assert alice.put(url).status_code in (200, 201, 204)  # already enabled: no second event
    assert alice.delete(url).status_code == 204

    snapshot = {"connector": "github", "team_id": str(team.pk), "team": "support"}
    assert [(e.action, e.before, e.after, e.actor_email) for e in events(target_type="connector")] == [
        ("connector.enable", None, snapshot, "alice@example.com"),
        ("connector.disable", snapshot, None, "alice@example.com"),
    ]


def test_approval_rules_record_their_settings_before_and_after(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/approval-rules/"
    alice = client_for(cast.alice.token)
    rule = alice.post(url, {"action": "stripe.*"}, format="json").json()
    assert alice.patch(f"{url}{rule['id']}/", {"four_eyes": True}, format="json").status_code == 200
    assert alice.delete(f"{url}{rule['id']}/").status_code == 204

    recorded = events(target_id=rule["id"])
    assert [e.action for e in recorded] == ["approval_rule.create", "approval_rule.update", "approval_rule.delete"]
    assert recorded[1].before is not None and recorded[1].after is not None
    assert (recorded[1].before["four_eyes"], recorded[1].after["four_eyes"]) == (False, True)
    assert recorded[2].target_label == "stripe.*" and recorded[2].after is None


def test_notification_channels_are_recorded_without_their_secrets(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/notification-channels/"
    alice = client_for(cast.alice.token)
    slack_path = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    slack = alice.post(
        url, {"name": "on-call", "kind": "slack", "target": f"https://hooks.slack.com{slack_path}"}, format="json"
    ).json()
    hook = alice.post(
        url, {"name": "hooks", "kind": "webhook", "target": "https://hooks.example.com/in?key=sekrit"}, format="json"
    ).json()
    assert alice.patch(f"{url}{slack['id']}/", {"enabled": False}, format="json").status_code == 200
    assert alice.delete(f"{url}{hook['id']}/").status_code == 204

    recorded = events(target_type="notification_channel")
    assert [e.action for e in recorded] == [
        "notification_channel.create",
        "notification_channel.create",
        "notification_channel.update",
        "notification_channel.delete",
    ]
    update = recorded[2]
    assert update.before is not None and update.after is not None
    assert (update.before["enabled"], update.after["enabled"]) == (True, False)
    assert update.after["target"] == "https://hooks.slack.com/…"
    stored = json.dumps([(e.before, e.after) for e in recorded])
    assert hook["secret"] and hook["secret"] not in stored
    assert slack_path not in stored and "sekrit" not in stored


def test_vaults_record_creation_grants_revokes_rotations_and_deletion_without_key_material(cast: Cast) -> None:
    from vaults import crypto
    from vaults.models import UserKeys

    give_keys(cast.alice)
    give_keys(cast.bob)
    vault = make_vault(cast.alice, secret=b"ghp_never_in_an_event")
    alice = client_for(cast.alice.token)
    base = f"/api/v1/orgs/{cast.alice.org.pk}/vaults/{vault.id}/"
    bob_key = bytes(UserKeys.objects.get(user=cast.bob.user).public_key)
    wrapping = crypto.b64(
        crypto.vault_key_wrap(vault.key, bob_key, vault_id=vault.id, member_id=str(cast.bob.user.pk), key_version=1)
    )
    grant = {"user_id": str(cast.bob.user.pk), "role": "reader", "wrapping": wrapping}
    assert alice.post(f"{base}members/", grant, format="json").status_code == 201
    assert alice.patch(base, {"name": "Deploy keys"}, format="json").status_code == 200
    assert alice.delete(f"{base}members/{cast.bob.user.pk}/").status_code == 200

    recorded = events(target_type="vault", target_id=vault.id)
    assert [(e.action, e.actor_email) for e in recorded] == [
        ("vault.create", "alice@example.com"),
        ("vault.grant", "alice@example.com"),
        ("vault.rename", "alice@example.com"),
        ("vault.revoke", "alice@example.com"),
    ]
    created, granted, renamed, revoked = recorded
    assert created.after == {
        "name": "shared vault",
        "type": "shared",
        "team_id": None,
        "project_id": None,
        "key_version": 1,
    }
    assert (granted.before, granted.after) == (None, {"user_id": str(cast.bob.user.pk), "role": "reader"})
    assert renamed.before is not None and renamed.after is not None
    assert (renamed.before["name"], renamed.after["name"], renamed.target_label) == (
        "shared vault",
        "Deploy keys",
        "Deploy keys",
    )
    assert (revoked.before, revoked.after) == ({"user_id": str(cast.bob.user.pk), "role": "reader"}, None)
    stored = json.dumps([(e.before, e.after) for e in recorded])
    assert wrapping not in stored and "ghp_never_in_an_event" not in stored


def test_a_confirmation_through_an_owners_session_is_the_systems_act(cast: Cast) -> None:
    from vaults import crypto
    from vaults import services as vault_services
    from vaults.models import UserKeys

    give_keys(cast.alice)
    give_keys(cast.bob)
    keys = {p.user.pk: bytes(UserKeys.objects.get(user=p.user).public_key) for p in (cast.alice, cast.bob)}
    vault_id, key = uuid.uuid4(), crypto.vault_key_new()

    def wrap(user_id: uuid.UUID) -> bytes:
        return crypto.vault_key_wrap(key, keys[user_id], vault_id=str(vault_id), member_id=str(user_id), key_version=1)

    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Support")
        services.team_member_add(acting=cast.alice.membership, team=team, user_id=cast.alice.user.pk)
        vault_services.vault_create(
            acting=cast.alice.membership,
            vault_id=vault_id,
            name="Support keys",
            type="shared",
            owner_wrapping=wrap(cast.alice.user.pk),
            team=team,
        )
        services.team_member_add(acting=cast.alice.membership, team=team, user_id=cast.bob.user.pk)  # Bob waits
    session = services.session_token_create(membership=cast.alice.membership, name="agent").token

    done = vault_services.confirm_commit_for_session(
        session_id=session.pk,
        vault_id=vault_id,
        key_version=1,
        wrappings={str(cast.bob.user.pk): wrap(cast.bob.user.pk)},
    )

    assert done == 1
    event = only(action="vault.confirm")
    assert (event.actor_id, event.actor_email, event.organization_uuid) == (None, "", cast.alice.org.pk)
    assert (event.target_id, event.target_label) == (str(vault_id), "Support keys")
    assert event.after == {"user_id": str(cast.bob.user.pk), "role": "reader"}


def test_a_membership_cannot_change_another_organizations_team_under_its_own_name(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Payments")
    with scopes_disabled(), pytest.raises(InvalidInput):
        services.team_delete(acting=cast.charlie.membership, team=team)
    assert events(cast.charlie.org.pk, target_type="team") == []
    assert [e.action for e in events(target_id=str(team.pk))] == ["team.create"]


def test_setting_audit_retention_records_the_days_before_and_after(cast: Cast) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/audit/retention/"
    assert client_for(cast.alice.token).put(url, {"days": 90}, format="json").status_code == 200
    assert client_for(cast.alice.token).put(url, {"days": None}, format="json").status_code == 200
    recorded = events(cast.alice.org.pk, action="audit_retention.update")
    assert [(e.actor_email, e.before, e.after) for e in recorded] == [
        ("alice@example.com", {"days": None}, {"days": 90}),
        ("alice@example.com", {"days": 90}, {"days": None}),
    ]


def test_a_change_that_fails_leaves_no_event(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    with scope(organization=cast.alice.org):
        project = services.project_create(acting=cast.alice.membership, name="Checkout")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database refused")

    monkeypatch.setattr(Project, "delete", refuse)  # fails after the service has recorded its event
    with scope(organization=cast.alice.org), pytest.raises(RuntimeError):
        services.project_delete(acting=cast.alice.membership, project=project)

    assert [e.action for e in events(target_id=str(project.pk))] == ["project.create"]
    with scopes_disabled():
        assert Project.objects.filter(pk=project.pk).exists()


def test_an_event_is_never_changed_or_deleted_once_written(cast: Cast) -> None:
    event = only(action="organization.create", organization_uuid=cast.alice.org.pk)
    event.action = "organization.nothing"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    assert only(organization_uuid=cast.alice.org.pk).action == "organization.create"


def test_an_event_is_refused_outside_a_transaction(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = transaction.get_connection()
    monkeypatch.setattr(connection, "in_atomic_block", False)
    with pytest.raises(RuntimeError, match="inside the transaction"):
        admin_event_record(
            acting=None, organization=cast.alice.org, action="team.create", target_type="team", target_id="x"
        )


def test_no_secret_ever_reaches_an_event(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        invitation, invitation_secret = services.invitation_create(acting=cast.alice.membership, email="f@example.com")
        services.invitation_revoke(acting=cast.alice.membership, invitation=invitation)
    personal = services.personal_token_create(user=cast.alice.user, name="ci")
    service = services.service_token_create(name="data plane")
    services.token_revoke(acting=None, token=service.token)
    with scopes_disabled():
        invitation = Invitation.objects.get(pk=invitation.pk)
        tokens = list(ApiToken.objects.all())
    secrets = {invitation_secret, invitation.digest, invitation.lookup, personal.plaintext, service.plaintext}
    secrets |= {t.digest for t in tokens} | {t.lookup for t in tokens}

    stored = json.dumps([{"before": e.before, "after": e.after, "label": e.target_label} for e in events()])
    body = client_for(cast.alice.token).get(admin_url(cast, "?limit=500")).content.decode()

    assert len(events()) >= 6
    assert [s for s in secrets if s in stored] == []
    assert [s for s in secrets if s in body] == []


def test_deleting_the_organization_keeps_its_events_and_says_who_deleted_it(cast: Cast) -> None:
    org_id = cast.alice.org.pk
    with scope(organization=cast.alice.org):
        services.team_create(acting=cast.alice.membership, name="Payments")
    response = client_for(cast.alice.token).delete(f"/api/v1/orgs/{org_id}/")
    assert response.status_code == 204

    kept = events(org_id)
    assert {e.action for e in kept} >= {"organization.create", "team.create", "organization.delete"}
    assert all(e.organization_id is None for e in kept), "the key is nulled, the row stays"
    deleted = only(action="organization.delete")
    assert (deleted.actor_email, deleted.before, deleted.after) == (
        "alice@example.com",
        {"name": "Org A", "slug": cast.alice.org.slug},
        None,
    )


# --- reading ---------------------------------------------------------------------------------------------------


@pytest.fixture
def changes(cast: Cast) -> Cast:
    """Alice makes a team and a project, promotes Bob, and Charlie (in his own organization) makes a team."""
    with scope(organization=cast.alice.org):
        services.team_create(acting=cast.alice.membership, name="Payments")
        services.project_create(acting=cast.alice.membership, name="Checkout")
        services.membership_update_role(acting=cast.alice.membership, membership=cast.bob.membership, role=Role.ADMIN)
    with scope(organization=cast.charlie.org):
        services.team_create(acting=cast.charlie.membership, name="Charlies")
    return cast


def listed(token: str, url: str) -> list[dict[str, Any]]:
    response = client_for(token).get(url)
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_the_list_shows_the_organizations_events_newest_first(changes: Cast) -> None:
    body = listed(changes.alice.token, admin_url(changes))
    assert [e["action"] for e in body] == ["member.role_change", "project.create", "team.create", "organization.create"]
    newest = body[0]
    assert (newest["actor_email"], newest["actor_role"], newest["organization"]) == (
        "alice@example.com",
        "owner",
        str(changes.alice.org.pk),
    )
    assert (newest["before"]["role"], newest["after"]["role"]) == ("member", "admin")
    assert "Charlies" not in json.dumps(body)


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        ("?action=team.create", ["team.create"]),
        ("?action=member.*", ["member.role_change"]),
        ("?target_type=project", ["project.create"]),
        ("?actor=ALICE@example.com&action=project.*", ["project.create"]),
        ("?actor=bob@example.com", []),
        ("?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z", []),
        ("?limit=1&offset=1", ["project.create"]),
    ],
)
def test_the_list_filters(changes: Cast, query: str, actions: list[str]) -> None:
    assert [e["action"] for e in listed(changes.alice.token, admin_url(changes, query))] == actions


def test_the_list_filters_by_target_id(changes: Cast) -> None:
    body = listed(changes.alice.token, admin_url(changes, f"?target_id={changes.bob.user.pk}"))
    assert [e["action"] for e in body] == ["member.role_change"]


def test_a_bad_time_filter_is_a_400_problem(changes: Cast) -> None:
    response = client_for(changes.alice.token).get(admin_url(changes, "?since=yesterday"))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_one_event_reads_by_its_id(changes: Cast) -> None:
    event = only(action="project.create")
    body = client_for(changes.alice.token).get(admin_url(changes, f"{event.pk}/")).json()
    assert (body["id"], body["target_label"], body["after"]["name"]) == (str(event.pk), "Checkout", "Checkout")


def test_a_member_without_audit_read_is_refused_not_narrowed(cast: Cast) -> None:
    event = only(action="organization.create", organization_uuid=cast.alice.org.pk)
    for url in (admin_url(cast), admin_url(cast, f"{event.pk}/")):
        response = client_for(cast.bob.token).get(url)
        assert response.status_code == 403, url
        assert response["Content-Type"] == "application/problem+json"


def test_another_organizations_events_are_404_never_shown(changes: Cast) -> None:
    charlies = only(action="team.create", organization_uuid=changes.charlie.org.pk)
    alices = only(action="team.create", organization_uuid=changes.alice.org.pk)
    charlie = client_for(changes.charlie.token)
    assert charlie.get(admin_url(changes)).status_code == 404
    assert charlie.get(admin_url(changes, f"{alices.pk}/")).status_code == 404
    assert charlie.get(f"/api/v1/orgs/{changes.charlie.org.pk}/audit/admin/{alices.pk}/").status_code == 404
    own = listed(changes.charlie.token, f"/api/v1/orgs/{changes.charlie.org.pk}/audit/admin/")
    assert str(charlies.pk) in {e["id"] for e in own}
    assert str(alices.pk) not in {e["id"] for e in own}


def test_a_channel_moved_to_another_path_on_the_same_host_shows_as_changed_without_the_path() -> None:
    from approvals.models import NotificationChannel
    from audit.snapshots import notification_channel_snapshot

    one = NotificationChannel(name="ops", kind="slack", target="https://hooks.slack.com/services/T0/B0/s3cr3t")
    two = NotificationChannel(name="ops", kind="slack", target="https://hooks.slack.com/services/T0/B0/other")
    first, second = notification_channel_snapshot(one), notification_channel_snapshot(two)
    assert first["target"] == second["target"] == "https://hooks.slack.com/…"
    assert first["target_fingerprint"] != second["target_fingerprint"]
    assert "s3cr3t" not in str(first) and "other" not in str(second)
