"""Approvals through the real API and services: binding, single use, who may decide, expiry, isolation."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from django_scopes import scopes_disabled

from approvals import binding, services
from approvals.models import Approval, ApprovalState
from conftest import Cast, Person, client_for, make_person
from tenants import services as tenant_services
from tenants.models import ApiToken
from tenants.roles import Role

pytestmark = pytest.mark.django_db
CLAIM = "/api/v1/dataplane/approvals/"
CREDENTIAL = "5b0e8d62-3f6e-4a57-9b7c-0d7c1b1f2a11"


@pytest.fixture
def service_token(db: Any) -> str:
    return tenant_services.service_token_create(name="data plane").plaintext


@pytest.fixture
def approver(cast: Cast) -> Person:
    return make_person("dana@example.com", org=cast.alice.org, role=Role.APPROVER)


def session_of(person: Person) -> ApiToken:
    return tenant_services.session_token_create(membership=person.membership, name="claude").token


def held(session: ApiToken, *, amount: str = "5000", **over: Any) -> dict[str, Any]:
    body = f"charge=ch_1&amount={amount}".encode()
    return {
        "session_id": str(session.pk),
        "request_id": str(uuid.uuid4()),
        "connector": "stripe",
        "action": "stripe.create-refund",
        "args": {"charge": "ch_1", "amount": amount},
        "method": "POST",
        "host": "api.stripe.com",
        "path": "/v1/refunds",
        "query": "",
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "credential_id": CREDENTIAL,
        "reason": "stripe.create-refund needs approval by default",
        **over,
    }


def claim(token: str, body: dict[str, Any]) -> Any:
    return client_for(token).post(CLAIM, data=json.dumps(body), content_type="application/json")


def url(person: Person, approval_id: str, verb: str = "") -> str:
    return f"/api/v1/orgs/{person.org.pk}/approvals/{approval_id}/" + (f"{verb}/" if verb else "")


def rule(person: Person, **fields: Any) -> None:
    made = client_for(person.token).post(f"/api/v1/orgs/{person.org.pk}/approval-rules/", fields, format="json")
    assert made.status_code == 201, made.content


# --- the binding ----------------------------------------------------------------------------------------------


def test_the_binding_hash_changes_with_every_part_and_ignores_query_order() -> None:
    base = {
        "organization_id": "o",
        "session_id": "s",
        "method": "POST",
        "host": "api.stripe.com",
        "path": "/v1/refunds",
        "query": "a=1&b=2",
        "body_sha256": "0" * 64,
        "credential_id": "c",
    }
    digest = binding.request_hash(**base)
    assert binding.request_hash(**{**base, "query": "b=2&a=1"}) == digest
    assert binding.request_hash(**{**base, "method": "post", "host": "API.stripe.com."}) == digest
    for name, other in [
        ("organization_id", "o2"),
        ("session_id", "s2"),
        ("method", "PUT"),
        ("host", "api.stripe.co"),
        ("path", "/v1/refunds/"),
        ("query", "a=1&b=3"),
        ("body_sha256", "1" * 64),
        ("credential_id", "c2"),
    ]:
        assert binding.request_hash(**{**base, name: other}) != digest, name


# --- asking and using -----------------------------------------------------------------------------------------


def test_identical_requests_share_one_pending_approval_and_a_grant_is_used_exactly_once(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    first = claim(service_token, held(session)).json()
    again = claim(service_token, held(session)).json()
    assert first["state"] == again["state"] == "pending"
    assert first["id"] == again["id"]

    granted = client_for(approver.token).post(url(cast.alice, first["id"], "grant"), {}, format="json")
    assert granted.status_code == 200, granted.content
    assert granted.json()["state"] == "granted"
    assert granted.json()["decisions"][0]["approver"] == "dana@example.com"

    retry = held(session)
    used = claim(service_token, retry).json()
    assert (used["state"], used["used_now"], used["approvers"]) == ("granted", True, ["dana@example.com"])
    replay = claim(service_token, held(session)).json()
    assert replay["state"] == "pending" and replay["id"] != first["id"], "a used grant must never be used again"
    with scopes_disabled():
        stored = Approval.objects.get(pk=first["id"])
    assert stored.consumed_at is not None and str(stored.consumed_request_id) == retry["request_id"]


def test_a_changed_argument_after_a_grant_needs_its_own_approval(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    first = claim(service_token, held(session, amount="5000")).json()
    client_for(approver.token).post(url(cast.alice, first["id"], "grant"), {}, format="json")
    changed = claim(service_token, held(session, amount="500000")).json()
    assert changed["state"] == "pending" and changed["id"] != first["id"]
    other_session = claim(service_token, held(session_of(cast.alice))).json()
    assert other_session["state"] == "pending", "a grant is bound to its session"
    assert claim(service_token, held(session, amount="5000")).json()["used_now"] is True


def test_a_rejection_keeps_refusing_that_exact_request_with_the_reason(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    first = claim(service_token, held(session)).json()
    no_reason = client_for(approver.token).post(url(cast.alice, first["id"], "reject"), {}, format="json")
    assert no_reason.status_code == 400
    rejected = client_for(approver.token).post(
        url(cast.alice, first["id"], "reject"), {"reason": "refunds over 40 EUR go through support"}, format="json"
    )
    assert rejected.json()["state"] == "rejected"
    again = claim(service_token, held(session)).json()
    assert (again["state"], again["decision_reason"]) == ("rejected", "refunds over 40 EUR go through support")


# --- who may decide -------------------------------------------------------------------------------------------


def test_a_member_without_approval_decide_cannot_grant_and_sees_only_their_own(cast: Cast, service_token: str) -> None:
    mine = claim(service_token, held(session_of(cast.bob))).json()
    alices = claim(service_token, held(session_of(cast.alice))).json()
    refused = client_for(cast.bob.token).post(url(cast.bob, mine["id"], "grant"), {}, format="json")
    assert refused.status_code == 403
    assert client_for(cast.bob.token).get(url(cast.bob, alices["id"])).status_code == 404
    listed = client_for(cast.bob.token).get(f"/api/v1/orgs/{cast.bob.org.pk}/approvals/").json()
    assert [a["id"] for a in listed["results"]] == [mine["id"]]
    assert client_for(cast.bob.token).post(url(cast.bob, mine["id"], "cancel")).json()["state"] == "cancelled"


def test_four_eyes_refuses_self_approval_and_accepts_another_approver(
    cast: Cast, approver: Person, service_token: str
) -> None:
    rule(cast.alice, action="stripe.*", four_eyes=True)
    mine = claim(service_token, held(session_of(cast.alice))).json()
    self_grant = client_for(cast.alice.token).post(url(cast.alice, mine["id"], "grant"), {}, format="json")
    assert self_grant.status_code == 403
    assert "four eyes" in self_grant.json()["detail"].lower()
    assert client_for(approver.token).post(url(cast.alice, mine["id"], "grant"), {}, format="json").json()["state"] == (
        "granted"
    )


@pytest.mark.parametrize(
    "action,suggestions",
    [
        ("github.create-isue", ["github.create-issue"]),
        ("githb.*", ["github.*"]),
        ("stripe.refund*", ["stripe.*"]),
        ("nothing.here", []),
    ],
)
def test_a_rule_for_an_action_that_is_not_installed_is_refused_naming_the_closest(
    cast: Cast, action: str, suggestions: list[str]
) -> None:
    """It would never apply; refused when written, with what was probably meant."""
    rules = f"/api/v1/orgs/{cast.alice.org.pk}/approval-rules/"
    refused = client_for(cast.alice.token).post(rules, {"action": action}, format="json")
    assert refused.status_code == 400 and refused["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["suggestions"] == suggestions
    assert problem["errors"][0]["pointer"] == "/action"
    assert repr(action) in problem["detail"]
    if suggestions:
        assert problem["detail"].endswith(f"Did you mean {suggestions[0]}?")
    assert client_for(cast.alice.token).get(rules).json()["results"] == []


def test_a_rule_may_name_an_action_a_prefix_of_installed_ones_or_everything(cast: Cast) -> None:
    for action in ("github.create-issue", "github.create-*", "stripe.*", "*"):
        rule(cast.alice, action=action)
    rules = f"/api/v1/orgs/{cast.alice.org.pk}/approval-rules/"
    made = client_for(cast.alice.token).get(rules).json()["results"]
    changed = client_for(cast.alice.token).patch(
        f"{rules}{made[0]['id']}/", {"action": "stripe.crate-refund"}, format="json"
    )
    assert changed.status_code == 400 and changed.json()["suggestions"] == ["stripe.create-refund"]


def test_two_approvers_must_agree_and_one_cannot_vote_twice(cast: Cast, approver: Person, service_token: str) -> None:
    rule(cast.alice, action="stripe.create-refund", approvers_required=2)
    pending = claim(service_token, held(session_of(cast.bob))).json()
    first = client_for(approver.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json").json()
    assert (first["state"], first["grants"]) == ("pending", 1)
    twice = client_for(approver.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json")
    assert twice.status_code == 409
    second = client_for(cast.alice.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json").json()
    assert (second["state"], second["grants"]) == ("granted", 2)


def test_a_session_token_can_never_approve(cast: Cast, service_token: str) -> None:
    session = tenant_services.session_token_create(membership=cast.alice.membership, name="claude")
    pending = claim(service_token, held(session.token)).json()
    refused = client_for(session.plaintext).post(url(cast.alice, pending["id"], "grant"), {}, format="json")
    assert refused.status_code == 403
    assert client_for(service_token).post(url(cast.alice, pending["id"], "grant"), {}, format="json").status_code == 403
    with scopes_disabled():
        assert Approval.objects.get(pk=pending["id"]).state == ApprovalState.PENDING


def test_another_organizations_request_cannot_be_seen_or_decided(cast: Cast, service_token: str) -> None:
    pending = claim(service_token, held(session_of(cast.alice))).json()
    charlie = client_for(cast.charlie.token)
    assert charlie.post(url(cast.alice, pending["id"], "grant"), {}, format="json").status_code == 404
    assert charlie.post(url(cast.charlie, pending["id"], "grant"), {}, format="json").status_code == 404
    assert charlie.get(url(cast.charlie, pending["id"])).status_code == 404
    with scopes_disabled():
        assert Approval.objects.get(pk=pending["id"]).state == ApprovalState.PENDING


# --- expiry and ending ----------------------------------------------------------------------------------------


def test_a_decision_after_expiry_is_refused_and_the_beat_task_expires_the_rest(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    late = claim(service_token, held(session)).json()
    other = claim(service_token, held(session, amount="7")).json()
    with scopes_disabled():
        Approval.objects.filter(pk__in=[late["id"], other["id"]]).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    refused = client_for(approver.token).post(url(cast.alice, late["id"], "grant"), {}, format="json")
    assert refused.status_code == 409 and refused.json()["state"] == "expired"
    from approvals.tasks import approvals_expire

    assert approvals_expire() == 1  # the other one; the first was expired by the refused decision
    with scopes_disabled():
        assert set(Approval.objects.values_list("state", flat=True)) == {"expired"}
    assert claim(service_token, held(session)).json()["id"] not in (late["id"], other["id"])


@override_settings(AILERON_APPROVAL_GRANT_TTL_SECONDS=0)
def test_a_grant_not_used_in_time_expires(cast: Cast, approver: Person, service_token: str) -> None:
    session = session_of(cast.alice)
    pending = claim(service_token, held(session)).json()
    client_for(approver.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json")
    again = claim(service_token, held(session)).json()
    assert again["id"] != pending["id"] and again["state"] == "pending"
    with scopes_disabled():
        assert Approval.objects.get(pk=pending["id"]).state == ApprovalState.EXPIRED


def test_ending_a_session_cancels_its_pending_approvals_and_unused_grants(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    waiting = claim(service_token, held(session)).json()
    granted = claim(service_token, held(session, amount="1")).json()
    client_for(approver.token).post(url(cast.alice, granted["id"], "grant"), {}, format="json")
    tenant_services.token_revoke(acting=None, token=session)
    with scopes_disabled():
        states = dict(Approval.objects.values_list("id", "state"))
    assert {str(k): v for k, v in states.items()} == {waiting["id"]: "cancelled", granted["id"]: "cancelled"}
    assert claim(service_token, held(session)).status_code == 404


def test_the_morning_view_lists_every_state_since_a_time(cast: Cast, approver: Person, service_token: str) -> None:
    session = session_of(cast.alice)
    ids = [claim(service_token, held(session, amount=str(n))).json()["id"] for n in range(3)]
    client_for(approver.token).post(url(cast.alice, ids[0], "grant"), {}, format="json")
    client_for(approver.token).post(url(cast.alice, ids[1], "reject"), {"reason": "no"}, format="json")
    assert claim(service_token, held(session, amount="0")).json()["used_now"] is True
    services.approval_record_outcomes(statuses={_consumed(ids[0]): 200})  # as audit ingest does
    since = (timezone.now() - timedelta(hours=12)).isoformat()
    base = f"/api/v1/orgs/{cast.alice.org.pk}/approvals/"
    everything = client_for(approver.token).get(base, {"state": "all", "since": since}).json()["results"]
    got = {a["id"]: (a["state"], a["completed"], a["outcome_status"]) for a in everything}
    assert got == {
        ids[0]: ("granted", True, 200),
        ids[1]: ("rejected", False, None),
        ids[2]: ("pending", False, None),
    }
    pending_only = client_for(approver.token).get(base, {"state": "pending"}).json()["results"]
    assert [a["id"] for a in pending_only] == [ids[2]]
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert client_for(approver.token).get(base, {"state": "all", "since": future}).json()["count"] == 0


def _consumed(approval_id: str) -> uuid.UUID:
    with scopes_disabled():
        request_id = Approval.objects.get(pk=approval_id).consumed_request_id
    assert request_id is not None
    return request_id


def test_bad_claims_are_refused_with_a_problem(cast: Cast, service_token: str) -> None:
    session = session_of(cast.alice)
    bad = claim(service_token, held(session, body_sha256="xyz"))
    assert bad.status_code == 400 and bad["content-type"] == "application/problem+json"
    assert claim(service_token, held(session, session_id=str(uuid.uuid4()))).status_code == 404
    assert claim(cast.alice.token, held(session)).status_code == 403


def wait(token: str | None, approval_id: str, body: Any) -> Any:
    return client_for(token).post(
        f"/api/v1/dataplane/approvals/{approval_id}/wait/", data=json.dumps(body), content_type="application/json"
    )


def test_the_wait_endpoint_reports_the_state_without_using_the_grant(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    pending = claim(service_token, held(session)).json()
    assert wait(service_token, pending["id"], {"timeout": 0.2}).json()["state"] == "pending"
    client_for(approver.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json")
    answer = wait(service_token, pending["id"], {"timeout": 5}).json()
    assert (answer["state"], answer["used_now"]) == ("granted", False)
    with scopes_disabled():
        assert Approval.objects.get(pk=pending["id"]).consumed_at is None
    assert wait(None, pending["id"], {"timeout": 0}).status_code == 401
    assert wait(cast.alice.token, pending["id"], {"timeout": 0}).status_code == 403
    assert wait(service_token, str(uuid.uuid4()), {"timeout": 0}).status_code == 404
    bad = wait(service_token, pending["id"], {"timeout": "forever"})
    assert bad.status_code == 400 and bad["content-type"] == "application/problem+json"
    wrong = client_for(service_token).get(f"/api/v1/dataplane/approvals/{pending['id']}/wait/")
    assert wrong.status_code == 405 and wrong["content-type"] == "application/problem+json"


def test_a_wait_for_a_request_uses_the_grant_once_and_a_release_gives_it_back(
    cast: Cast, approver: Person, service_token: str
) -> None:
    session = session_of(cast.alice)
    first = held(session)
    pending = claim(service_token, first).json()
    client_for(approver.token).post(url(cast.alice, pending["id"], "grant"), {}, format="json")
    used = wait(service_token, pending["id"], {"timeout": 1, "request_id": first["request_id"]}).json()
    assert (used["state"], used["used_now"]) == ("granted", True)
    other = wait(service_token, pending["id"], {"timeout": 0, "request_id": str(uuid.uuid4())}).json()
    assert (other["state"], other["used_now"]) == ("used", False), "one grant, one request"

    release = f"/api/v1/dataplane/approvals/{pending['id']}/release/"
    wrong = client_for(service_token).post(release, {"request_id": str(uuid.uuid4())}, format="json")
    assert wrong.status_code == 404
    given_back = client_for(service_token).post(release, {"request_id": first["request_id"]}, format="json")
    assert given_back.status_code == 204
    assert claim(service_token, held(session)).json()["used_now"] is True, "the agent's retry uses it"
