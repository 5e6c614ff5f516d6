"""`aileron audit query` against the real API (served in-process), as a logged-in member would run it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from django.test import Client
from django_scopes import scope

from aileron_cli import state
from aileron_cli.audit_cmd import since_parse
from aileron_cli.client import CliError
from aileron_cli.common import console
from aileron_cli.main import cli
from audit import services as audit_services
from audit.tests.factories import attempt, outcome, record_stored
from conftest import Cast, Person
from tenants import services

pytestmark = pytest.mark.django_db


class DjangoTransport(httpx.BaseTransport):
    """Hands the CLI's HTTP requests to Django's test client: the whole API stack, no network."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "accept")}
        response = Client().generic(
            request.method,
            request.url.raw_path.decode(),
            data=request.read(),
            content_type=request.headers.get("content-type", ""),
            headers=headers,
        )
        return httpx.Response(response.status_code, headers=dict(response.items()), content=response.content)


@pytest.fixture
def logged_in_as(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AILERON_HOME", str(tmp_path))
    monkeypatch.setattr(httpx, "Client", partial(httpx.Client, transport=DjangoTransport()))
    monkeypatch.setattr(console, "width", 200)  # a table wider than the 80 columns of a pipe

    def login(person: Person) -> None:
        state.login_save(
            state.Login(
                server="http://testserver",
                token=person.token,
                email=person.user.email,
                organization_id=str(person.org.pk),
            )
        )

    return login


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["audit", "query", *args], catch_exceptions=False)


def test_it_lists_the_members_own_records_as_a_table(cast: Cast, logged_in_as: Any) -> None:
    session = services.session_token_create(membership=cast.bob.membership, name="claude").token
    first = attempt(session, connector="anthropic", action="anthropic.messages.create")
    usage = {"model": "claude-x", "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.0125}
    audit_services.audit_ingest(records=[first, outcome(session, first["id"], usage=usage)])
    alices = services.session_token_create(membership=cast.alice.membership, name="alice agent").token
    record_stored(alices, action="stripe.refunds.create")
    logged_in_as(cast.bob)

    result = run()

    assert result.exit_code == 0, result.output
    assert "anthropic.messages.create" in result.output
    assert "bob@example.com" in result.output and "claude" in result.output
    assert "$0.0125" in result.output and "124 ms" in result.output
    assert "stripe.refunds.create" not in result.output, "Bob lacks audit.read"


def test_json_prints_the_records_and_filters_reach_the_api(cast: Cast, logged_in_as: Any) -> None:
    session = services.session_token_create(membership=cast.alice.membership, name="agent").token
    denied = record_stored(session, action="stripe.refunds.create", decision="deny")
    record_stored(session, action="slack.chat.postMessage", connector="slack")
    logged_in_as(cast.alice)

    result = run("--action", "stripe.*", "--decision", "deny", "--since", "2030-01-01T00:00:00Z", "--json")

    assert result.exit_code == 0, result.output
    assert [r["id"] for r in json.loads(result.stdout)] == [denied]


def test_a_bad_since_is_one_line_and_exit_2(cast: Cast, logged_in_as: Any) -> None:
    logged_in_as(cast.alice)
    result = CliRunner().invoke(cli, ["audit", "query", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "--since 'last tuesday'" in result.output


def test_since_takes_relative_spans_and_iso_times() -> None:
    now = datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
    assert since_parse("30m", now=now) == now - timedelta(minutes=30)
    assert since_parse("12h", now=now) == now - timedelta(hours=12)
    assert since_parse("2d", now=now) == now - timedelta(days=2)
    assert since_parse("2030-01-01T00:00:00Z") == datetime(2030, 1, 1, tzinfo=UTC)
    assert since_parse("2030-01-01T00:00:00") == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(CliError):
        since_parse("2w")


# --- aileron audit admin ---------------------------------------------------------------------------------------


def run_admin(*args: str) -> Any:
    return CliRunner().invoke(cli, ["audit", "admin", *args], catch_exceptions=False)


def test_admin_lists_who_changed_what_as_a_table(cast: Cast, logged_in_as: Any) -> None:
    with scope(organization=cast.alice.org):
        services.team_create(acting=cast.alice.membership, name="[Payments]")
        services.membership_update_role(acting=cast.alice.membership, membership=cast.bob.membership, role="admin")
    logged_in_as(cast.alice)

    result = run_admin()

    assert result.exit_code == 0, result.output
    assert "member.role_change" in result.output and "role: member -> admin" in result.output
    assert "team.create" in result.output and "[Payments]" in result.output, "names are shown, not read as markup"
    assert "alice@example.com" in result.output


def test_admin_json_prints_the_events_and_filters_reach_the_api(cast: Cast, logged_in_as: Any) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Payments")
        services.team_member_add(acting=cast.alice.membership, team=team, user_id=cast.bob.user.pk)
    services.membership_update_role(acting=cast.alice.membership, membership=cast.bob.membership, role="admin")
    with scope(organization=cast.alice.org):
        services.team_create(acting=cast.bob.membership, name="Support")
    logged_in_as(cast.alice)

    result = run_admin("--action", "team.*", "--actor", "alice@example.com", "--since", "1d", "--json")

    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert [(e["action"], e["target_label"]) for e in events] == [
        ("team.member_add", "bob@example.com in payments"),
        ("team.create", "Payments"),
    ]
    assert events[0]["after"]["email"] == "bob@example.com"


def test_admin_without_audit_read_is_one_line_and_a_non_zero_exit(cast: Cast, logged_in_as: Any) -> None:
    logged_in_as(cast.bob)
    result = CliRunner().invoke(cli, ["audit", "admin"])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1
    assert "audit.read" in result.output
