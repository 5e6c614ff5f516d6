"""`aileron usage`, through the real API stack, agrees with the API and the records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from audit.tests.test_usage import SINCE, UNTIL, fleet  # noqa: F401  (a fixture)
from conftest import Cast

pytestmark = pytest.mark.django_db


def test_usage_by_team_as_a_table_and_as_json(
    cast: Cast,
    fleet: Any,  # noqa: F811
    logged_in_as: Any,  # noqa: F811
) -> None:
    logged_in_as(cast.alice)
    result = CliRunner().invoke(cli, ["usage", "--by", "team", "--since", SINCE, "--until", UNTIL])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert "0.0137" in rows["Red"] and "1,000" in rows["Red"]  # cost; p50 latency 1,000 ms
    assert "0.0000*" in rows["Blue"] and "1 (20%)" in rows["Blue"]
    assert "some LLM calls used a model no price source knows" in result.output
    as_json = json.loads(
        CliRunner().invoke(cli, ["usage", "--by", "model", "--since", SINCE, "--until", UNTIL, "--json"]).output
    )
    assert {g["name"]: g["cost_usd"] for g in as_json["groups"]}["claude-opus-5-5"] == "0.013700"


def test_usage_with_nothing_audited_and_a_bad_time(cast: Cast, logged_in_as: Any) -> None:  # noqa: F811
    logged_in_as(cast.alice)
    assert CliRunner().invoke(cli, ["usage"]).output.strip() == "Nothing was audited in that time."
    bad = CliRunner().invoke(cli, ["usage", "--since", "yesterday-ish"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1
