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

    made = json.loads(ok("vault", "create", "Support keys", "--team", "support", "--json").output)
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
    listed = json.loads(ok("vault", "list", "--json").output)
    [team_vault] = [v for v in listed if v["id"] == vault_id]
    assert [w["email"] for w in team_vault["waiting"]] == ["carol@example.com"]

    confirmed = json.loads(ok("vault", "confirm", "--json").output)
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
        support = services.team_create(organization=cast.alice.org, name="Support")
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
    assert json.loads(ok("status", "--json").output)["credentials_due"] == []
    soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d")
    updated = json.loads(ok("secret", "update", "gh", "--expires", soon, "--json", stdin="ghp_second\n").output)
    assert (updated["version"], updated["expires_at"][:10]) == (2, soon)
    ok("secret", "update", "far", "--rotate-every", "90", stdin="xoxb_far_2\n")  # due in 90 days: not yet
    due = json.loads(ok("status", "--json").output)["credentials_due"]
    assert [(d["name"], d["why"], d["due_at"][:10]) for d in due] == [("gh", "expires", soon)]
    assert "gh in Personal: expires" in ok("status").output
    missing = CliRunner().invoke(cli, ["secret", "update", "nope"], input="x\n")
    assert missing.exit_code == 1 and missing.output.startswith("aileron: no secret 'nope'"), missing.output
    with caplog.at_level("WARNING", logger="vaults.services"):
        assert credentials_due_warn() == 1
    assert "credential gh" in caplog.text and "alice@example.com" in caplog.text
