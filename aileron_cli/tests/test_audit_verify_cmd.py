"""`aileron audit verify` and `aileron audit checkpoint`, through the real API stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from django.db import connection

from aileron_cli.main import cli
from aileron_cli.tests.test_audit_cmd import logged_in_as  # noqa: F401  (a fixture)
from audit.models import AuditChainHead
from audit.tests.factories import record_stored
from conftest import Cast
from tenants import services

pytestmark = pytest.mark.django_db


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_verify_says_intact_then_names_the_edited_record_and_exits_3(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
) -> None:
    logged_in_as(cast.alice)
    session = services.session_token_create(membership=cast.bob.membership, name="claude").token
    b = AuditChainHead.objects.get(pk=cast.alice.org.pk).next_seq  # the organization's admin changes come first
    first = record_stored(session)
    record_stored(session)
    result = run("audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"intact: {b + 4} link(s) up to #{b + 3}, 0 stored checkpoint(s) checked"
    pk: Any = first.replace("-", "") if connection.vendor == "sqlite" else first
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditrecord SET upstream_status = 204 WHERE id = %s", [pk])
    result = run("audit", "verify")
    assert result.exit_code == 3
    assert result.output.strip() == (
        f"BROKEN at #{b + 1}: record {first} was edited: the record's outcome differs from what was chained"
    )
    as_json = json.loads(run("audit", "verify", "--json").output)
    assert as_json["intact"] is False and as_json["broken"]["record_id"] == first


def test_a_saved_checkpoint_is_checked_later_and_a_bad_file_is_one_line(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    logged_in_as(cast.alice)
    session = services.session_token_create(membership=cast.bob.membership, name="claude").token
    record_stored(session)
    saved = tmp_path / "checkpoint.json"
    made = run("audit", "checkpoint", "-o", str(saved))
    assert made.exit_code == 0, made.output
    assert json.loads(saved.read_text()) == json.loads(made.output)
    result = run("audit", "verify", "--checkpoint", str(saved))
    assert (
        result.exit_code == 0
        and f"it reaches the checkpoint at #{json.loads(saved.read_text())['seq']}" in result.output
    )
    (tmp_path / "junk.json").write_text("{nope")
    for path, message in [(tmp_path / "junk.json", "is not JSON"), (tmp_path / "absent.json", "cannot read")]:
        result = run("audit", "verify", "--checkpoint", str(path))
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    (tmp_path / "wrong.json").write_text(json.dumps({"seq": "x"}))
    result = run("audit", "verify", "--checkpoint", str(tmp_path / "wrong.json"))
    assert result.exit_code != 0 and "checkpoint" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_member_without_audit_read_gets_one_line(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
) -> None:
    logged_in_as(cast.bob)
    result = run("audit", "verify")
    assert result.exit_code != 0 and "audit.read" in result.output and len(result.output.strip().splitlines()) == 1


def test_retention_is_shown_and_set_by_the_owner_only(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
) -> None:
    logged_in_as(cast.alice)
    assert run("audit", "retention").output.strip() == "audit records are kept for ever"
    result = run("audit", "retention", "--days", "90")
    assert (
        result.exit_code == 0 and result.output.strip() == "audit records are kept 90 day(s) (set by alice@example.com)"
    )
    assert json.loads(run("audit", "retention", "--json").output)["days"] == 90
    assert "not both" in run("audit", "retention", "--days", "5", "--forever").output
    assert run("audit", "retention", "--forever").output.startswith("audit records are kept for ever")
    logged_in_as(cast.bob)
    refused = run("audit", "retention", "--days", "1")
    assert refused.exit_code != 0 and "audit.retention" in refused.output


def test_a_deeply_nested_checkpoint_file_and_an_absurd_since_are_one_line(
    cast: Cast,
    logged_in_as: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    logged_in_as(cast.alice)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    for args in (["audit", "verify", "--checkpoint", str(deep)], ["audit", "verify", "--since", "999999d"]):
        result = run(*args)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
