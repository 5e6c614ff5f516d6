"""Team vaults from the CLI against the real API (in-process): the team's members become readers without anyone
granting them one by one, the key is only ever wrapped by an owner's CLI, and leaving the team revokes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from django_scopes import scopes_disabled

from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from conftest import Cast, give_keys, make_person
from policies.selectors import session_context
from tenants import services
from tenants.models import Team
from tenants.roles import Role
from vaults.backend import vault_store
from vaults.models import PendingMember, Vault

pytestmark = pytest.mark.django_db
PASSPHRASE = "correct horse battery staple"


def ok(*args: str, stdin: str | None = None) -> Any:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def members_of(vault_id: str) -> dict[str, str]:
    return {m.user_id: m.role for m in vault_store().members(vault_id)}


def context_of(person: Any) -> Any:
    return session_context(
        session_token=services.session_token_create(membership=person.membership, name="agent").plaintext
    )


def test_a_team_vault_reaches_the_team_now_and_later_and_leaving_the_team_revokes(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    give_keys(cast.bob)
    carol = make_person("carol@example.com", org=cast.alice.org, role=Role.MEMBER)
    give_keys(carol)
    monkeypatch.setenv("AILERON_LOGIN_TOKEN", cast.alice.token)
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    ok("login", "--server", "http://testserver")  # alice's keys and personal vault, made by her CLI
    ok("team", "create", "Support")
    ok("team", "add", "support", "bob@example.com")
    ok("connector", "enable", "linear", "--team", "support")

    made = json.loads(ok("vault", "create", "Support keys", "--team", "support", "--json").stdout)
    vault_id = made["id"]
    assert made["team"] == "support"
    assert [(c["email"], c["confirmed"]) for c in made["confirmed"]] == [("bob@example.com", True)]
    assert members_of(vault_id) == {str(cast.alice.user.pk): "owner", str(cast.bob.user.pk): "reader"}
    ok("secret", "add", "linear-key", "--connector", "linear", "--vault", "Support keys", stdin="lin_api_team\n")
    assert [c.connector for c in context_of(cast.bob).credentials] == ["linear"]

    # Carol joins later: she waits, told why; the owner sees it; nothing is wrapped without an owner.
    ok("team", "add", "support", "carol@example.com")
    with scopes_disabled():
        assert list(PendingMember.objects.filter(vault_id=vault_id).values_list("user__email", flat=True)) == [
            "carol@example.com"
        ]
    assert str(carol.user.pk) not in members_of(vault_id)
    waiting = context_of(carol)
    assert waiting.credentials == [] and waiting.waiting == {"linear": "Support keys"}
    listed = json.loads(ok("vault", "list", "--json").stdout)
    [team_vault] = [v for v in listed if v["id"] == vault_id]
    assert [w["email"] for w in team_vault["waiting"]] == ["carol@example.com"]

    confirmed = json.loads(ok("vault", "confirm", "--json").stdout)
    assert confirmed == [{"vault": "Support keys", "email": "carol@example.com", "confirmed": True, "error": None}]
    assert members_of(vault_id)[str(carol.user.pk)] == "reader"
    with scopes_disabled():
        assert not PendingMember.objects.filter(vault_id=vault_id).exists()
    assert [c.connector for c in context_of(carol).credentials] == ["linear"]
    assert ok("vault", "confirm").output.strip() == "Nobody waits for a vault you own."

    # Carol leaves the team: revoked now, and the key must rotate before anything new is written.
    ok("team", "remove", "support", "carol@example.com")
    assert str(carol.user.pk) not in members_of(vault_id)
    assert vault_store().meta(vault_id).rotation is not None
    with scopes_disabled():
        assert Vault.objects.get(pk=vault_id).rotation_requested_at is not None
    assert context_of(carol).credentials == []


def test_a_team_vault_is_made_only_by_the_team_or_a_team_manager(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    with scopes_disabled():
        support = services.team_create(acting=cast.alice.membership, name="Support")
    give_keys(cast.bob)
    logged_in_as(cast.bob)
    result = CliRunner().invoke(
        cli, ["vault", "create", "Theirs", "--team", "support"], env={"AILERON_PASSPHRASE": PASSPHRASE}
    )
    assert result.exit_code == 1 and "Only members of support" in result.output, result.output
    with scopes_disabled():
        assert not Vault.objects.filter(team=support).exists()


def test_an_updated_value_is_the_next_version_and_owners_are_warned_before_it_expires(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datetime import UTC, datetime, timedelta

    from vaults.services import credentials_due_warn

    monkeypatch.setenv("AILERON_LOGIN_TOKEN", cast.alice.token)
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    ok("login", "--server", "http://testserver")
    ok("secret", "add", "gh", "--connector", "github", stdin="ghp_first\n")
    ok("secret", "add", "far", "--connector", "slack", stdin="xoxb_far\n")
    assert json.loads(ok("status", "--json").stdout)["credentials_due"] == []
    soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d")
    updated = json.loads(ok("secret", "update", "gh", "--expires", soon, "--json", stdin="ghp_second\n").stdout)
    assert (updated["version"], updated["expires_at"][:10]) == (2, soon)
    ok("secret", "update", "far", "--rotate-every", "90", stdin="xoxb_far_2\n")  # due in 90 days: not yet
    due = json.loads(ok("status", "--json").stdout)["credentials_due"]
    assert [(d["name"], d["why"], d["due_at"][:10]) for d in due] == [("gh", "expires", soon)]
    assert "gh in Personal: expires" in ok("status").output
    missing = CliRunner().invoke(cli, ["secret", "update", "nope"], input="x\n")
    assert missing.exit_code == 1 and missing.output.startswith("aileron: no secret 'nope'"), missing.output
    with caplog.at_level("WARNING", logger="vaults.services"):
        assert credentials_due_warn() == 1
    assert "credential gh" in caplog.text and "alice@example.com" in caplog.text


def test_holes_an_outside_review_found_stay_closed(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleting a team or project that owns vaults, a credential id reused in another vault, a project vault
    made by someone outside the project's team, a manual-confirm team vault, and a team name used twice."""
    from vaults.services import confirmations_drive

    give_keys(cast.bob)
    monkeypatch.setenv("AILERON_LOGIN_TOKEN", cast.alice.token)
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    ok("login", "--server", "http://testserver")
    team = json.loads(ok("team", "create", "Ops", "--json").stdout)
    made = json.loads(ok("vault", "create", "Ops keys", "--team", "ops", "--manual-confirm", "--json").stdout)
    assert made["auto_confirm"] is False
    refused = CliRunner().invoke(cli, ["team", "create", "Ops"])  # a second "Ops" (slug ops-xxxx)
    assert refused.exit_code == 0
    ambiguous = CliRunner().invoke(cli, ["team", "add", "Ops", "bob@example.com"])
    assert ambiguous.exit_code == 2 and "several teams are named 'Ops'" in ambiguous.output, ambiguous.output
    ok("team", "add", "ops", "bob@example.com")  # the slug names one exactly

    # bob joined the team: he waits, and no owner session lets him in on its own (manual confirm).
    with scopes_disabled():
        assert PendingMember.objects.filter(vault_id=made["id"], user=cast.bob.user).exists()
    assert confirmations_drive(key_socket="/nonexistent/socket") == 0
    assert str(cast.bob.user.pk) not in members_of(made["id"])
    ok("vault", "confirm")  # the owner's explicit command does
    assert members_of(made["id"])[str(cast.bob.user.pk)] == "reader"

    gone = CliRunner().invoke(cli, ["team", "create", "Gone"])
    assert gone.exit_code == 0
    with scopes_disabled():
        ops = Team.objects.get(pk=team["id"])
    from django.test import Client

    client = Client(headers={"Authorization": f"Bearer {cast.alice.token}"})
    deleted = client.delete(f"/api/v1/orgs/{cast.alice.org.pk}/teams/{ops.pk}/")
    assert deleted.status_code == 409 and "team vault" in deleted.json()["detail"], deleted.content
    project = client.post(
        f"/api/v1/orgs/{cast.alice.org.pk}/projects/",
        {"name": "Web", "team": str(ops.pk)},
        content_type="application/json",
    )
    assert project.status_code == 201, project.content
    ok("vault", "create", "Web keys", "--project", "web")
    assert client.delete(f"/api/v1/orgs/{cast.alice.org.pk}/projects/{project.json()['id']}/").status_code == 409
    with scopes_disabled():
        assert Team.objects.filter(pk=ops.pk).exists() and Vault.objects.filter(project__slug="web").exists()


def test_a_credential_id_is_unique_across_the_organizations_vaults(cast: Cast) -> None:
    import uuid as uuid_

    from conftest import make_vault
    from vaults import crypto as c
    from vaults import services as vault_services

    give_keys(cast.alice)
    first = make_vault(cast.alice, type="personal")
    second = make_vault(cast.alice, type="shared")
    with scopes_disabled():
        view = vault_services.vault_get_for(membership=cast.alice.membership, vault_id=uuid_.UUID(second.id))
    key_version, wrapping = vault_store().wrapping(second.id, str(cast.alice.user.pk))
    assert wrapping is not None and key_version == 1
    from aileron_site.problems import Conflict

    with pytest.raises(Conflict, match="choose another id"):
        vault_services.credential_add(
            view=view,
            acting_user_id=cast.alice.user.pk,
            credential_id=uuid_.UUID(first.credential_id),  # the personal vault's credential's id
            name="hijack",
            connector="github",
            ciphertext=c.credential_encrypt(
                b"x",
                c.vault_key_new(),
                organization_id=str(cast.alice.org.pk),
                vault_id=second.id,
                credential_id=first.credential_id,
                key_version=1,
            ),
            action_bindings=[],
        )


def test_only_the_projects_team_makes_its_vault(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    with scopes_disabled():
        support = services.team_create(acting=cast.alice.membership, name="Support")
        services.project_create(acting=cast.alice.membership, name="Desk", team=support)
    give_keys(cast.bob)
    logged_in_as(cast.bob)
    result = CliRunner().invoke(
        cli, ["vault", "create", "Mine", "--project", "desk"], env={"AILERON_PASSPHRASE": PASSPHRASE}
    )
    assert result.exit_code == 1 and "Only members of the desk project's team" in result.output, result.output


def test_logout_keeps_the_login_when_the_token_cannot_be_revoked(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    from unittest import mock

    from aileron_cli import state
    from aileron_cli.client import ApiClient, CliError

    logged_in_as(cast.alice)
    down = CliError("cannot reach the Aileron service at http://testserver (is `aileron service` running?)")
    with mock.patch.object(ApiClient, "request", side_effect=down):
        result = CliRunner().invoke(cli, ["logout"])
    assert result.exit_code == 1 and "still logged in" in result.output, result.output
    assert state.login_load() is not None


def test_adding_replacing_and_removing_a_secret_are_admin_events_without_the_value(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_scopes import scopes_disabled

    from audit.chaining import chain_verify
    from audit.models import AdminEvent

    monkeypatch.setenv("AILERON_LOGIN_TOKEN", cast.alice.token)
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    ok("login", "--server", "http://testserver")
    ok("secret", "add", "gh", "--connector", "github", stdin="ghp_the_first_value\n")
    ok("secret", "update", "gh", "--rotate-every", "30", stdin="ghp_the_second_value\n")
    ok("secret", "rm", "gh")
    with scopes_disabled():
        events = list(
            AdminEvent.objects.filter(organization=cast.alice.org, target_type="credential").order_by("created_at")
        )
    assert [(e.action, e.actor_email) for e in events] == [
        ("credential.create", "alice@example.com"),
        ("credential.update", "alice@example.com"),
        ("credential.delete", "alice@example.com"),
    ]
    assert events[1].before is not None and events[1].after is not None
    assert (events[1].before["version"], events[1].after["version"], events[1].after["rotate_every_days"]) == (1, 2, 30)
    assert events[2].after is None and events[2].before is not None and events[2].before["name"] == "gh"
    text = json.dumps([[e.before, e.after, e.target_label] for e in events])
    assert "ghp_the_" not in text and "ciphertext" not in text
    assert chain_verify(organization_uuid=cast.alice.org.pk).intact
