"""`aileron notify` against the real API (in-process) and a real local webhook receiver."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from django_scopes import scopes_disabled

from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from approvals import signing
from approvals.models import NotificationChannel
from conftest import Cast
from tests.receivers import webhook_receiver

pytestmark = pytest.mark.django_db


def aileron(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ok(*args: str) -> Any:
    result = aileron(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(*args: str) -> str:
    result = aileron(*args)
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aileron: "), lines
    return str(lines[0])


def test_a_webhook_is_added_with_its_secret_printed_once_then_tested_listed_and_removed(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
) -> None:
    logged_in_as(cast.alice)
    with webhook_receiver() as receiver:
        added = ok("notify", "add", "ops", "--webhook", receiver.url, "--events", "created,expired").output
        secret = added.split("Signing secret (shown once; verify X-Aileron-Signature with it): ")[1].strip()
        assert secret.startswith("whsec_")
        with scopes_disabled():
            assert NotificationChannel.objects.get(name="ops").events == ["created", "expired"]
        assert "Delivered a test message to ops." in ok("notify", "test", "ops").output
        (hit,) = receiver.hits
        assert signing.verify(secret, hit.body, hit.headers["x-aileron-signature"])
        receiver.script = [(500, {})]
        failed = one_line_error("notify", "test", "ops")
        assert "the test message to ops was not delivered: the receiver answered 500" in failed
    listed = json.loads(ok("notify", "list", "--json").stdout)
    assert [(c["name"], c["kind"], c["last_status"]) for c in listed] == [("ops", "webhook", "failed")]
    assert secret not in ok("notify", "list", "--json").output
    table = aileron("notify", "list")
    assert "ops" in table.output and "failed" in table.output and "the last delivery to ops failed" in table.output
    assert json.loads(ok("notify", "remove", "ops", "--json").stdout)["removed"]["name"] == "ops"
    assert json.loads(ok("notify", "list", "--json").stdout) == []


def test_slack_and_email_channels_print_no_secret(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    slack = json.loads(
        ok("notify", "add", "chat", "--slack", "https://hooks.slack.com/services/T/B/x", "--json").stdout
    )
    assert slack["secret"] is None and slack["target"] == "https://hooks.slack.com/…"
    out = ok("notify", "add", "mail", "--email", "alice@example.com,bob@example.com").output
    assert "Added the email channel mail" in out and "secret" not in out.lower()


def test_mistakes_get_one_line_errors(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    assert "exactly one of --webhook" in one_line_error("notify", "add", "x")
    assert "exactly one of --webhook" in one_line_error(
        "notify", "add", "x", "--webhook", "https://a.example/", "--slack", "https://b.example/"
    )
    assert "--events takes some of" in one_line_error(
        "notify", "add", "x", "--webhook", "https://a.example/", "--events", "voted"
    )
    assert "http:// or https://" in one_line_error("notify", "add", "x", "--webhook", "file:///etc/passwd")
    assert "may not carry credentials" in one_line_error("notify", "add", "x", "--webhook", "https://u:p@a.example/")
    assert "no notification channel 'nope'" in one_line_error("notify", "test", "nope")
    assert "no notification channel 'nope'" in one_line_error("notify", "remove", "nope")
    logged_in_as(cast.bob)
    assert "lacks notify.manage" in one_line_error("notify", "list")
