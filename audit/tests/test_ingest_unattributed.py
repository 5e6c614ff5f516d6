"""Refusals outside a live session are stored and attributed as far as is known; restarts close open attempts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django_scopes import scopes_disabled

from audit.models import AuditRecord
from audit.tests.factories import T0, attempt, outcome
from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken

pytestmark = pytest.mark.django_db
URL = "/api/v1/dataplane/audit/"


@pytest.fixture
def service_token(db: Any) -> str:
    return services.service_token_create(name="data plane").plaintext


@pytest.fixture
def bob_session(cast: Cast) -> tuple[ApiToken, str]:
    created = services.session_token_create(membership=cast.bob.membership, name="claude")
    return created.token, created.plaintext


def ship(token: str, records: list[Any]) -> Any:
    return client_for(token).post(URL, data=json.dumps({"records": records}), content_type="application/json")


def stored(record_id: str) -> AuditRecord:
    with scopes_disabled():
        return AuditRecord.objects.get(pk=record_id)


def refusal(**fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "phase": "attempt",
        "session_id": None,
        "at": T0.isoformat(),
        "kind": "refused",
        "method": "GET",
        "host": "example.com",
        "path": "/",
        "decision": "deny",
        "reason": "plain HTTP is not forwarded; use https:// through CONNECT",
        "problem_type": "https-only",
        "client_address": "127.0.0.1",
        **fields,
    }


def test_a_refusal_with_no_token_is_stored_for_no_organization(service_token: str) -> None:
    record = refusal()
    assert ship(service_token, [record]).json() == {"accepted": 1, "rejected": []}
    row = stored(record["id"])
    assert (row.organization_id, row.session_uuid, row.user_id, row.session_verified) == (None, None, None, False)
    assert (row.kind, row.decision, row.problem_type, row.host, row.client_address) == (
        "refused",
        "deny",
        "https-only",
        "example.com",
        "127.0.0.1",
    )
    assert ship(service_token, [record]).json() == {"accepted": 1, "rejected": []}  # idempotent
    with scopes_disabled():
        assert AuditRecord.objects.filter(pk=record["id"]).count() == 1


def test_a_refusal_named_by_its_tokens_lookup_lands_in_that_sessions_audit_marked_unverified(
    service_token: str, cast: Cast, bob_session: tuple[ApiToken, str]
) -> None:
    session, _ = bob_session
    record = refusal(token_lookup=session.lookup, method="CONNECT", path="", problem_type="control-plane-unavailable")
    assert ship(service_token, [record]).json() == {"accepted": 1, "rejected": []}
    row = stored(record["id"])
    assert (row.organization_id, row.session_uuid, row.user_id, row.agent) == (
        cast.alice.org.pk,
        session.pk,
        cast.bob.user.pk,
        "claude",
    )
    assert row.session_verified is False
    assert row.token_lookup == session.lookup
    # Bob sees it in his organization's audit, flagged; Charlie's organization does not.
    listed = client_for(cast.bob.token).get(f"/api/v1/orgs/{cast.alice.org.pk}/audit/").json()
    mine = [r for r in listed["results"] if r["id"] == record["id"]]
    assert [(r["session_verified"], r["client_address"], r["problem_type"]) for r in mine] == [
        (False, "127.0.0.1", "control-plane-unavailable")
    ]
    others = client_for(cast.charlie.token).get(f"/api/v1/orgs/{cast.charlie.org.pk}/audit/").json()
    assert all(r["id"] != record["id"] for r in others["results"])


def test_an_unknown_lookup_is_stored_for_no_organization(service_token: str) -> None:
    record = refusal(token_lookup="Zz0000000000")
    assert ship(service_token, [record]).json()["accepted"] == 1
    assert stored(record["id"]).organization_id is None


def test_only_a_refusal_may_come_without_a_session(service_token: str, bob_session: tuple[ApiToken, str]) -> None:
    allowed = attempt(bob_session[0], session_id=None)
    bad_lookup = refusal(token_lookup="not a lookup!")
    answer = ship(service_token, [allowed, bad_lookup, outcome(bob_session[0], uuid.uuid4(), session_id=None)])
    assert answer.json()["accepted"] == 0
    assert [r["index"] for r in answer.json()["rejected"]] == [0, 1, 2]


def test_a_restart_marks_the_previous_runs_open_attempts_unknown_and_nothing_else(
    service_token: str, bob_session: tuple[ApiToken, str]
) -> None:
    session = bob_session[0]
    old_run, new_run, other_run = (str(uuid.uuid4()) for _ in range(3))
    finished = attempt(session, run=old_run)
    killed = attempt(session, run=old_run)
    refused = attempt(session, run=old_run, decision="deny", kind="refused")
    elsewhere = attempt(session, run=other_run)
    batch = [finished, outcome(session, finished["id"]), killed, refused, elsewhere]
    assert ship(service_token, batch).json()["accepted"] == 5
    restart = {
        "id": str(uuid.uuid4()),
        "phase": "restart",
        "previous_run": old_run,
        "run": new_run,
        "at": datetime(2030, 1, 2, 4, 0, tzinfo=UTC).isoformat(),
    }
    assert ship(service_token, [restart]).json() == {"accepted": 1, "rejected": []}
    assert (stored(killed["id"]).outcome, stored(killed["id"]).has_outcome) == ("unknown", True)
    assert stored(killed["id"]).completed_at == datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    assert stored(finished["id"]).outcome == "completed"
    assert (stored(refused["id"]).outcome, stored(refused["id"]).has_outcome) == ("", False)
    assert (stored(elsewhere["id"]).outcome, stored(elsewhere["id"]).has_outcome) == ("", False)
    # Idempotent: the restart again, and a late outcome for the killed request, change nothing.
    assert ship(service_token, [restart, outcome(session, killed["id"])]).json()["accepted"] == 2
    assert stored(killed["id"]).outcome == "unknown"
    assert stored(killed["id"]).upstream_status is None


def test_a_restart_in_the_same_batch_as_the_runs_attempts_closes_them(
    service_token: str, bob_session: tuple[ApiToken, str]
) -> None:
    run = str(uuid.uuid4())
    killed = attempt(bob_session[0], run=run)
    restart = {"id": str(uuid.uuid4()), "phase": "restart", "previous_run": run, "run": str(uuid.uuid4())}
    restart["at"] = T0.isoformat()
    assert ship(service_token, [killed, restart]).json()["accepted"] == 2
    assert stored(killed["id"]).outcome == "unknown"
