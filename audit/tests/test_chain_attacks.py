"""What an outside review of the audit chain found, each kept from coming back: content that poisoned ingest for
every organization, rows the log showed but the chain did not vouch for, and inputs that crashed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import DataError, connection
from django_scopes import scopes_disabled

from audit import services as audit_services
from audit.bulk import insert_many
from audit.chaining import chain_verify
from audit.models import AuditRecord
from audit.services import audit_ingest
from audit.tests.factories import attempt, outcome
from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(cast: Cast) -> ApiToken:
    return services.session_token_create(membership=cast.bob.membership, name="claude").token


def org_of(session: ApiToken) -> uuid.UUID:
    assert session.organization_id is not None
    return session.organization_id


def verdict(session: ApiToken) -> tuple[bool, str, str]:
    result = chain_verify(organization_uuid=org_of(session))
    broken = result.broken
    return result.intact, broken.why if broken else "", broken.record_id if broken else ""


def sql(statement: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def pk(record_id: str) -> Any:
    return uuid.UUID(record_id).hex if connection.vendor == "sqlite" else uuid.UUID(record_id)


def test_agent_text_that_no_database_or_utf8_can_hold_is_stored_cleaned_and_the_chain_holds(session: ApiToken) -> None:
    first = attempt(session, path="/v1/chat?x=\x00", reason="a\ud800b",
                    args={"user": "\ud800", "note": "nul\x00here", "\ud83d": [-0.0, "\x00"]})  # fmt: skip
    result = audit_ingest(records=[first, outcome(session, first["id"], latency_ms=-0.0, error="\x00")])
    assert (result.accepted, result.rejected) == (2, [])
    with scopes_disabled():
        row = AuditRecord.objects.get(pk=first["id"])
    assert row.path == "/v1/chat?x=\ufffd" and row.reason == "a\ufffdb" and row.error == "\ufffd"
    assert row.args == {"user": "\ufffd", "note": "nul\ufffdhere", "\ufffd": [0.0, "\ufffd"]}
    assert row.latency_ms == 0.0
    assert verdict(session) == (True, "", "")


def test_case_changes_that_lengthen_text_still_fit_the_column(session: ApiToken) -> None:
    first = attempt(session, host="İ" * 255, method="ß" * 16)
    assert audit_ingest(records=[first]).rejected == []
    with scopes_disabled():
        row = AuditRecord.objects.get(pk=first["id"])
    assert len(row.host) == 255 and len(row.method) == 16
    assert verdict(session)[0]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z"])
def test_a_time_out_of_range_rejects_that_record_only(session: ApiToken, moment: str) -> None:
    good = attempt(session)
    bad = attempt(session, at=moment)
    result = audit_ingest(records=[good, bad])
    assert result.accepted == 1
    assert [(r["id"], "between the years 2000 and 9000" in r["reason"]) for r in result.rejected] == [(bad["id"], True)]


def test_a_record_the_database_refuses_is_rejected_alone_and_the_rest_are_stored(
    session: ApiToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned = attempt(session)
    real_insert = insert_many

    def refusing(model: Any, rows: list[Any]) -> None:  # as PostgreSQL refuses a value it cannot hold
        if any(str(getattr(r, "id", "")) == poisoned["id"] for r in rows):
            raise DataError("invalid byte sequence")
        real_insert(model, rows)

    monkeypatch.setattr(audit_services, "insert_many", refusing)
    fine = [attempt(session) for _ in range(3)]
    result = audit_ingest(records=[fine[0], poisoned, fine[1], fine[2]])
    assert result.accepted == 3
    assert [(r["index"], r["id"]) for r in result.rejected] == [(1, poisoned["id"])]
    with scopes_disabled():
        assert AuditRecord.objects.filter(pk__in=[r["id"] for r in fine]).count() == 3
    assert verdict(session)[0]


def test_rows_the_log_shows_but_the_chain_does_not_vouch_for_are_named(cast: Cast, session: ApiToken) -> None:
    first = attempt(session)
    audit_ingest(records=[first])
    with scopes_disabled():
        template = AuditRecord.objects.get(pk=first["id"])
    # A row with neither half, fully populated: the audit list would show it.
    template.pk, template.has_attempt, template.has_outcome = uuid.uuid4(), False, False
    with scopes_disabled():
        template.save(force_insert=True)
    assert verdict(session) == (False, "inserted", str(template.pk))
    sql("DELETE FROM audit_auditrecord WHERE id = %s", pk(str(template.pk)))
    # Outcome columns written onto an attempt that never had one.
    sql("UPDATE audit_auditrecord SET upstream_status = 200 WHERE id = %s", pk(first["id"]))
    assert verdict(session) == (False, "edited", first["id"])
    sql("UPDATE audit_auditrecord SET upstream_status = NULL WHERE id = %s", pk(first["id"]))
    assert verdict(session)[0]
    # Moved out of the organization's view: the key emptied while the organization still exists.
    sql("UPDATE audit_auditrecord SET organization_id = NULL WHERE id = %s", pk(first["id"]))
    assert verdict(session) == (False, "edited", first["id"])
    # Moved into another organization's view: its list must not show it, and verify names it.
    other = cast.charlie.org
    sql("UPDATE audit_auditrecord SET organization_id = %s WHERE id = %s", pk(str(other.pk)), pk(first["id"]))
    listed = client_for(cast.charlie.token).get(f"/api/v1/orgs/{other.pk}/audit/").json()
    assert first["id"] not in json.dumps(listed)
    result = chain_verify(organization_uuid=other.pk)
    assert not result.intact and result.broken is not None and result.broken.record_id == first["id"]


def test_bad_checkpoint_times_are_a_400_not_a_500(cast: Cast, session: ApiToken) -> None:
    url = f"/api/v1/orgs/{cast.alice.org.pk}/audit/verify/"
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        checkpoint = {"organization": str(cast.alice.org.pk), "seq": 1, "head": "h", "at": moment, "key_id": "k",
                      "signature": "s"}  # fmt: skip
        answer = client_for(cast.alice.token).post(url, {"checkpoint": checkpoint}, format="json")
        assert answer.status_code == 400, answer.content
        assert answer["Content-Type"].startswith("application/problem+json")


def test_now_is_within_the_range_records_may_carry() -> None:
    from audit.records import EARLIEST, LATEST

    assert EARLIEST < datetime.now(UTC) < LATEST
