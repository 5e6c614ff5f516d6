"""The data plane's audit batches: stored once, attributed by the control plane, nothing lost or merged."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from django_scopes import scope, scopes_disabled

from audit.models import AuditRecord
from audit.records import MAX_RECORDS_PER_BATCH
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
def bob_session(cast: Cast) -> ApiToken:
    return services.session_token_create(membership=cast.bob.membership, name="claude").token


def ship(token: str, records: list[Any]) -> Any:
    return client_for(token).post(URL, data=json.dumps({"records": records}), content_type="application/json")


def stored(record_id: str) -> AuditRecord:
    with scopes_disabled():
        return AuditRecord.objects.get(pk=record_id)


def count() -> int:
    with scopes_disabled():
        return AuditRecord.objects.count()


def test_an_attempt_then_its_outcome_make_one_complete_record(service_token: str, bob_session: ApiToken) -> None:
    first = attempt(bob_session)
    assert ship(service_token, [first]).json() == {"accepted": 1, "rejected": []}
    assert ship(service_token, [outcome(bob_session, first["id"])]).json() == {"accepted": 1, "rejected": []}

    record = stored(first["id"])
    assert (record.action, record.decision, record.kind, record.method) == (
        "stripe.charges.create",
        "allow",
        "credentialed",
        "POST",
    )
    assert record.args == {"amount": 500, "currency": "usd"}
    assert record.credential_id == uuid.UUID(int=7)
    assert (record.upstream_status, record.latency_ms, record.response_bytes) == (200, 123.5, 2048)
    assert record.at == T0
    assert record.completed_at is not None


def test_re_sending_a_batch_changes_nothing(service_token: str, bob_session: ApiToken) -> None:
    first = attempt(bob_session)
    batch = [first, outcome(bob_session, first["id"])]
    ship(service_token, batch)
    before = stored(first["id"])

    again = ship(service_token, batch)
    altered = ship(service_token, [attempt(bob_session, first["id"], decision="deny", action="stripe.refunds.create")])

    assert again.json() == {"accepted": 2, "rejected": []}
    assert altered.status_code == 200
    after = stored(first["id"])
    assert count() == 1
    assert (after.action, after.decision, after.ingested_at) == (before.action, before.decision, before.ingested_at)


def test_an_outcome_that_arrives_first_is_kept_and_the_attempt_fills_in_the_rest(
    service_token: str, bob_session: ApiToken
) -> None:
    record_id = str(uuid.uuid4())
    early = outcome(bob_session, record_id, at="2030-01-02T03:04:09+00:00")
    assert ship(service_token, [early]).json()["accepted"] == 1
    half = stored(record_id)
    assert (half.upstream_status, half.decision, half.action) == (200, "", "")

    ship(service_token, [attempt(bob_session, record_id)])

    whole = stored(record_id)
    assert (whole.upstream_status, whole.decision, whole.action) == (200, "allow", "stripe.charges.create")
    assert whole.at == T0, "the attempt's time replaces the outcome's provisional one"


def test_both_halves_in_one_batch_make_one_record(service_token: str, bob_session: ApiToken) -> None:
    record_id = str(uuid.uuid4())
    answer = ship(service_token, [outcome(bob_session, record_id), attempt(bob_session, record_id)])
    assert answer.json() == {"accepted": 2, "rejected": []}
    record = stored(record_id)
    assert (record.decision, record.upstream_status) == ("allow", 200)


def test_who_did_it_is_derived_from_the_session_not_taken_from_the_record(
    service_token: str, cast: Cast, bob_session: ApiToken
) -> None:
    with scope(organization=cast.alice.org):
        team = services.team_create(acting=cast.alice.membership, name="Payments")
        services.team_member_add(acting=cast.alice.membership, team=team, user_id=cast.bob.user.pk)
    first = attempt(bob_session, user="alice@example.com", organization=str(cast.charlie.org.pk), agent="root")

    ship(service_token, [first])

    record = stored(first["id"])
    assert record.organization_id == cast.alice.org.pk
    assert record.user_id == cast.bob.user.pk
    assert record.agent == "claude"
    assert record.session_id == record.session_uuid == bob_session.pk
    assert record.team_id == team.pk, "Bob's only team in the organization"
    assert record.project_id is None


def test_the_projects_team_wins_and_several_teams_without_a_project_give_none(service_token: str, cast: Cast) -> None:
    org = cast.alice.org
    with scope(organization=org):
        core = services.team_create(acting=cast.alice.membership, name="Core")
        web = services.team_create(acting=cast.alice.membership, name="Web")
        for team in (core, web):
            services.team_member_add(acting=cast.alice.membership, team=team, user_id=cast.bob.user.pk)
        project = services.project_create(acting=cast.alice.membership, name="Checkout", team=web)
    with_project = services.session_token_create(membership=cast.bob.membership, name="a", project=project).token
    without = services.session_token_create(membership=cast.bob.membership, name="b").token
    first, second = attempt(with_project), attempt(without)

    ship(service_token, [first, second])

    assert (stored(first["id"]).team_id, stored(first["id"]).project_id) == (web.pk, project.pk)
    assert stored(second["id"]).team_id is None


def test_a_revoked_session_still_attributes_its_late_records(service_token: str, bob_session: ApiToken) -> None:
    services.token_revoke(acting=None, token=bob_session)
    first = attempt(bob_session)
    assert ship(service_token, [first]).json() == {"accepted": 1, "rejected": []}
    assert stored(first["id"]).user_id == bob_session.user_id


def test_bad_records_are_reported_and_the_good_ones_stored(
    service_token: str, cast: Cast, bob_session: ApiToken
) -> None:
    personal = ApiToken.objects.get(user=cast.bob.user, kind="pat")
    good = attempt(bob_session)
    batch: list[Any] = [
        good,
        attempt(str(uuid.uuid4())),
        attempt(personal),
        attempt(bob_session, decision="maybe"),
        attempt(bob_session, at="2030-01-02T03:04:05"),
        {"id": "not-a-uuid", "phase": "attempt"},
        "a string",
    ]

    body = ship(service_token, batch).json()

    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "unknown agent session"),
        (2, "unknown agent session"),
        (3, "decision must be one of allow, deny, approval_required, error"),
        (4, "at must carry a UTC offset"),
        (5, "id must be a UUID"),
        (6, "a record must be an object"),
    ]
    assert body["rejected"][0]["id"] == batch[1]["id"]
    assert body["rejected"][5]["id"] is None
    assert count() == 1 and stored(good["id"])


def test_long_text_is_cut_to_fit_rather_than_losing_the_record(service_token: str, bob_session: ApiToken) -> None:
    first = attempt(bob_session, path="/" + "a" * 5000, reason="r" * 5000, args={"blob": "x" * 100_000})
    assert ship(service_token, [first]).json()["accepted"] == 1
    record = stored(first["id"])
    assert len(record.path) == 2048 and len(record.reason) == 2000
    assert record.args["_truncated"] is True


def test_an_id_taken_in_another_organization_is_rejected_not_merged(
    service_token: str, cast: Cast, bob_session: ApiToken
) -> None:
    charlies = services.session_token_create(membership=cast.charlie.membership, name="charlie's agent").token
    first = attempt(bob_session)
    ship(service_token, [first])

    body = ship(service_token, [outcome(charlies, first["id"], upstream_status=500)]).json()

    assert body["accepted"] == 0
    assert body["rejected"][0]["id"] == first["id"]
    record = stored(first["id"])
    assert (record.organization_id, record.upstream_status) == (cast.alice.org.pk, None)


def test_only_the_service_token_may_ship(cast: Cast, bob_session: ApiToken) -> None:
    session_plain = services.session_token_create(membership=cast.bob.membership, name="agent").plaintext
    for token in (cast.alice.token, session_plain):
        response = ship(token, [attempt(bob_session)])
        assert response.status_code == 403
        assert response["Content-Type"] == "application/problem+json"
    assert ship("", [attempt(bob_session)]).status_code == 401
    assert count() == 0


def test_a_batch_over_the_limit_is_refused_whole(service_token: str, bob_session: ApiToken) -> None:
    response = ship(service_token, [attempt(bob_session) for _ in range(MAX_RECORDS_PER_BATCH + 1)])
    assert response.status_code == 413
    assert response.json()["type"].endswith("too-many-records")
    assert count() == 0


@pytest.mark.parametrize("body", [{}, {"records": {}}, [], {"records": "x"}])
def test_a_body_without_a_records_list_is_a_400(service_token: str, body: Any) -> None:
    response = client_for(service_token).post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_a_batch_of_500_is_ingested_well_under_a_second(service_token: str, bob_session: ApiToken) -> None:
    attempts = [attempt(bob_session) for _ in range(500)]
    outcomes = [outcome(bob_session, a["id"]) for a in attempts]

    started = time.perf_counter()
    first = ship(service_token, attempts)
    second = ship(service_token, outcomes)
    elapsed = time.perf_counter() - started

    assert first.json()["accepted"] == second.json()["accepted"] == 500
    assert count() == 500
    assert elapsed < 2.0, f"two batches of 500 took {elapsed:.2f}s"
