"""One-time approval links: they open and decide their own approval, once, as their person, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from django_scopes import scope, scopes_disabled
from rest_framework.test import APIClient

from approvals import links
from approvals.models import Approval, ApprovalLink
from approvals.tests.factories import held_approval
from conftest import Cast, Person, client_for, make_person
from tenants import services as tenant_services
from tenants.models import ApiToken
from tenants.roles import Role

pytestmark = pytest.mark.django_db
OPEN = "/api/v1/approval-links/open/"
DECIDE = "/api/v1/approval-links/decide/"


@pytest.fixture
def approver(cast: Cast) -> Person:
    return make_person("dana@example.com", org=cast.alice.org, role=Role.APPROVER)


def session_of(person: Person) -> ApiToken:
    return tenant_services.session_token_create(membership=person.membership, name="claude").token


def issue(approval: Approval, person: Person) -> str:
    token = links.approval_link_issue(approval=approval, user=person.user)
    assert token is not None
    return token


def decide(token: str, approval: Approval, decision: str = "grant", reason: str = "") -> Any:
    body = {"token": token, "approval_id": str(approval.pk), "decision": decision, "reason": reason}
    return APIClient().post(DECIDE, body, format="json")


def state(approval: Approval) -> str:
    with scopes_disabled():
        return Approval.objects.get(pk=approval.pk).state


def test_a_link_opens_its_approval_and_grants_it_once_as_its_person(cast: Cast, approver: Person) -> None:
    approval = held_approval(session_of(cast.bob), charge="ch_1")
    token = issue(approval, approver)
    opened = APIClient().post(OPEN, {"token": token}, format="json")
    assert opened.status_code == 200, opened.content
    body = opened.json()
    assert (body["approval"]["id"], body["decider"], body["may_decide"]) == (str(approval.pk), "dana@example.com", True)
    granted = decide(token, approval, reason="fine")
    assert granted.status_code == 200, granted.content
    assert granted.json()["approval"]["state"] == "granted" and granted.json()["may_decide"] is False
    assert [(d["approver"], d["reason"]) for d in granted.json()["approval"]["decisions"]] == [
        ("dana@example.com", "fine")
    ]
    again = decide(token, approval, "reject", "changed my mind")
    assert again.status_code == 403 and again["Content-Type"] == "application/problem+json"
    assert "used" in again.json()["detail"]
    assert state(approval) == "granted"


def test_a_link_cannot_decide_another_approval(cast: Cast, approver: Person) -> None:
    session = session_of(cast.bob)
    mine, other = held_approval(session, charge="ch_mine"), held_approval(session, charge="ch_other")
    token = issue(mine, approver)
    refused = decide(token, other)
    assert refused.status_code == 404 and refused["Content-Type"] == "application/problem+json"
    assert state(other) == "pending"
    assert decide(token, mine).status_code == 200, "the refusal did not use the link up"


def test_a_link_is_no_bearer_token_for_any_other_call(cast: Cast, approver: Person) -> None:
    approval = held_approval(session_of(cast.bob))
    token = issue(approval, approver)
    client = client_for(token)
    org = cast.alice.org.pk
    for path in ("/api/v1/whoami/", f"/api/v1/orgs/{org}/approvals/", f"/api/v1/orgs/{org}/approvals/{approval.pk}/"):
        assert client.get(path).status_code == 401, path
    assert client.post(f"/api/v1/orgs/{org}/approvals/{approval.pk}/grant/", {}, format="json").status_code == 401
    assert state(approval) == "pending"


def test_unknown_forged_and_expired_links_are_404(cast: Cast, approver: Person) -> None:
    approval = held_approval(session_of(cast.bob))
    token = issue(approval, approver)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (forged, "ail_apl_short", cast.alice.token, "x" * 60):
        assert APIClient().post(OPEN, {"token": bad}, format="json").status_code == 404, bad
        assert decide(bad, approval).status_code == 404
    with scopes_disabled():
        Approval.objects.filter(pk=approval.pk).update(expires_at=approval.created_at)
        ApprovalLink.objects.update(expires_at=approval.created_at)
    assert APIClient().post(OPEN, {"token": token}, format="json").status_code == 404


def test_a_refused_decision_leaves_the_link_usable(cast: Cast, approver: Person) -> None:
    approval = held_approval(session_of(cast.bob))
    token = issue(approval, approver)
    no_reason = decide(token, approval, "reject", "")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["detail"]
    rejected = decide(token, approval, "reject", "too large")
    assert rejected.status_code == 200 and rejected.json()["approval"]["state"] == "rejected"


def test_the_rules_of_approval_decide_still_hold_behind_a_link(cast: Cast, approver: Person) -> None:
    # Four eyes: no link is issued to the requester, and one issued before the rule applied cannot decide.
    with scope(organization=cast.alice.org):
        made = client_for(cast.alice.token).post(
            f"/api/v1/orgs/{cast.alice.org.pk}/approval-rules/",
            {"action": "stripe.create-refund", "four_eyes": True},
            format="json",
        )
    assert made.status_code == 201
    own = held_approval(session_of(cast.alice))
    assert links.approval_link_issue(approval=own, user=cast.alice.user) is None
    assert links.approval_link_issue(approval=own, user=cast.bob.user) is None, "bob lacks approval.decide"
    # A decider who loses the role before using the link is refused, and the approval stays pending.
    token = issue(own, approver)
    with scopes_disabled():
        approver.membership.role = Role.MEMBER
        approver.membership.save(update_fields=["role"])
    refused = decide(token, own)
    assert refused.status_code == 403 and state(own) == "pending"
    assert APIClient().post(OPEN, {"token": token}, format="json").json()["may_decide"] is False


def test_a_link_of_someone_who_left_the_organization_decides_nothing(cast: Cast, approver: Person) -> None:
    approval = held_approval(session_of(cast.bob))
    token = issue(approval, approver)
    with scopes_disabled():
        approver.membership.delete()
    assert decide(token, approval).status_code == 403
    assert state(approval) == "pending"
