"""Teams, members, invitations, connector enablement and logout from the CLI, against the real API (in-process):
what the database holds afterwards, and one-line errors for people and teams that are not there."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from django_scopes import scopes_disabled

from aileron_cli import state
from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from conftest import Cast
from connectors.models import ConnectorEnablement
from policies.selectors import session_context
from tenants import services
from tenants.models import ApiToken, Invitation, Membership, Team, TeamMembership

pytestmark = pytest.mark.django_db
PASSPHRASE = "correct horse battery staple"


def aileron(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def ok(*args: str, stdin: str | None = None) -> Any:
    result = aileron(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result


def test_after_init_enable_and_secret_add_the_owners_first_session_has_the_connector_and_its_credential(
    logged_in_as: Any,  # noqa: F811  (AILERON_HOME and the in-process API; nobody logged in yet)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    made = json.loads(
        ok("init", "--org", "Acme", "--email", "owner@acme.example", "--server", "http://testserver", "--json").stdout
    )
    assert made["team"]["slug"] == "everyone"
    with scopes_disabled():
        team = Team.objects.get(pk=made["team"]["id"])
        assert list(TeamMembership.objects.filter(team=team).values_list("user__email", flat=True)) == [
            "owner@acme.example"
        ]
    assert "is enabled for Everyone" in ok("connector", "enable", "github", "--team", "everyone").output
    ok("secret", "add", "gh", "--connector", "github", stdin="ghp_owner_value\n")
    org = made["organization"]["id"]
    with scopes_disabled():
        assert ConnectorEnablement.objects.filter(organization_id=org, team=team, connector="github").exists()
        membership = Membership.objects.get(organization_id=org, user__email="owner@acme.example")
    issued = services.session_token_create(membership=membership, name="claude")
    context = session_context(session_token=issued.plaintext)
    assert context.connectors == ["github"]
    assert [c.connector for c in context.credentials] == ["github"]


def test_teams_are_managed_by_email_and_say_in_one_line_who_is_not_there(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    created = json.loads(ok("team", "create", "Support", "--json").stdout)
    ok("team", "add", "support", "BOB@example.com")
    with scopes_disabled():
        assert TeamMembership.objects.filter(team_id=created["id"], user=cast.bob.user).exists()
    for args, message in (
        (("team", "add", "support", "zed@example.com"), "zed@example.com is not a member of this organization"),
        (("team", "add", "support", "charlie@example.net"), "charlie@example.net is not a member"),
        (("team", "add", "nope", "bob@example.com"), "no team 'nope' in this organization (teams: support)"),
        (("team", "remove", "support", "zed@example.com"), "zed@example.com is not a member of this organization"),
        (("connector", "enable", "github", "--team", "nope"), "no team 'nope'"),
    ):
        result = aileron(*args)
        assert result.exit_code != 0, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aileron: ") and message in lines[0], (args, lines)
    ok("connector", "enable", "slack", "--team", "Support")
    listed = json.loads(ok("team", "list", "--json").stdout)
    assert [(t["slug"], t["members"], t["connectors"]) for t in listed] == [("support", ["bob@example.com"], ["slack"])]
    ok("connector", "disable", "slack", "--team", "support")
    ok("team", "remove", "support", "bob@example.com")
    with scopes_disabled():
        assert not TeamMembership.objects.filter(team_id=created["id"]).exists()
        assert not ConnectorEnablement.objects.filter(team_id=created["id"]).exists()


def test_members_roles_and_removal_by_email(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    members = json.loads(ok("member", "list", "--json").stdout)
    assert sorted((m["user"]["email"], m["role"]) for m in members) == [
        ("alice@example.com", "owner"),
        ("bob@example.com", "member"),
    ]
    assert ok("member", "role", "bob@example.com", "approver").output.strip() == "bob@example.com is now approver."
    with scopes_disabled():
        assert Membership.objects.get(pk=cast.bob.membership.pk).role == "approver"
    bad = aileron("member", "role", "bob@example.com", "root")
    assert bad.exit_code == 2 and "root" in bad.output
    ok("member", "remove", "bob@example.com")
    with scopes_disabled():
        assert not Membership.objects.filter(pk=cast.bob.membership.pk).exists()


def test_members_may_not_change_roles_and_are_told_why(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.bob)
    result = aileron("member", "role", "alice@example.com", "member")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "(403)" in result.output
    with scopes_disabled():
        assert Membership.objects.get(pk=cast.alice.membership.pk).role == "owner"


def test_invitations_are_listed_and_revoked_by_email(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    ok("invite", "carol@example.com")
    pending = json.loads(ok("invitation", "list", "--json").stdout)
    assert [(i["email"], i["state"]) for i in pending] == [("carol@example.com", "pending")]
    ok("invitation", "revoke", "Carol@Example.com")
    with scopes_disabled():
        assert Invitation.objects.get(email="carol@example.com").revoked_at is not None
    assert json.loads(ok("invitation", "list", "--json").stdout) == []
    assert [i["state"] for i in json.loads(ok("invitation", "list", "--all", "--json").stdout)] == ["revoked"]
    again = aileron("invitation", "revoke", "carol@example.com")
    assert again.exit_code == 2
    assert again.output.strip() == "aileron: no pending invitation for carol@example.com (`aileron invitation list`)"


def test_logout_revokes_the_token_and_forgets_the_login(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    assert json.loads(ok("logout", "--json").stdout)["token_revoked"] is True
    with scopes_disabled():
        token = ApiToken.objects.get(user=cast.alice.user, kind="pat")
    assert token.revoked_at is not None
    assert state.login_load() is None
    again = aileron("logout")
    assert again.exit_code == 1 and again.output.strip().startswith("aileron: not logged in")


def test_an_invitation_with_teams_makes_the_person_join_them(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged_in_as(cast.alice)
    ok("team", "create", "Support")
    ok("team", "create", "Ops")
    refused = aileron("invite", "dave@example.com", "--team", "support", "--team", "nope")
    assert refused.exit_code == 2 and "no team 'nope'" in refused.output
    with scopes_disabled():
        assert not Invitation.objects.filter(email="dave@example.com").exists()  # nothing half-made
    invited = json.loads(ok("invite", "dave@example.com", "--team", "support", "--team", "Ops", "--json").stdout)
    assert sorted(invited["teams"]) == ["ops", "support"]
    listed = json.loads(ok("invitation", "list", "--json").stdout)
    assert sorted(listed[0]["teams"]) == ["ops", "support"]
    monkeypatch.setenv("AILERON_HOME", str(tmp_path_factory.mktemp("dave")))  # dave's own machine
    monkeypatch.setenv("AILERON_INVITATION", invited["token"])
    monkeypatch.setenv("AILERON_PASSPHRASE", PASSPHRASE)
    joined = json.loads(ok("join", "--server", "http://testserver", "--json").stdout)
    assert sorted(joined["teams"]) == ["ops", "support"]
    with scopes_disabled():
        teams = TeamMembership.objects.filter(user__email="dave@example.com").values_list("team__slug", flat=True)
        assert sorted(teams) == ["ops", "support"]
