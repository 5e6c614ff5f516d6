"""`aileron secret add` against the real API (served in-process): a connector name that is not installed."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from conftest import Cast, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def with_keys(cast: Cast, logged_in_as: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Alice logged in with `aileron login`, which made her keys and personal vault."""
    monkeypatch.setenv("AILERON_LOGIN_TOKEN", cast.alice.token)
    monkeypatch.setenv("AILERON_PASSPHRASE", "correct horse battery staple")
    result = CliRunner().invoke(cli, ["login", "--server", "http://testserver"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_a_secret_for_a_connector_that_is_not_installed_is_one_line_naming_the_closest(
    cast: Cast, with_keys: None
) -> None:
    result = CliRunner().invoke(cli, ["secret", "add", "gh", "--connector", "githb"], input="ghp_value\n")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "aileron: No connector named 'githb' is installed. Did you mean github? (400)"
    ]
    assert "ghp_value" not in result.output
    vaults = client_for(cast.alice.token).get(f"/api/v1/orgs/{cast.alice.org.pk}/vaults/").json()
    personal = vaults["results"][0] if isinstance(vaults, dict) else vaults[0]
    stored = client_for(cast.alice.token).get(f"/api/v1/orgs/{cast.alice.org.pk}/vaults/{personal['id']}/credentials/")
    assert stored.json() == []

    added = CliRunner().invoke(cli, ["secret", "add", "gh", "--connector", "github"], input="ghp_value\n")
    assert added.exit_code == 0, added.output
    assert added.output.startswith("Added gh (github) to vault")
