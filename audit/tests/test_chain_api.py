"""The audit chain over the API: verify, checkpoints, who may ask."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection

from audit import chain
from audit.models import AuditChainHead
from audit.tests.factories import record_stored
from conftest import Cast, client_for
from tenants import services
from tenants.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(cast: Cast) -> ApiToken:
    return services.session_token_create(membership=cast.bob.membership, name="claude").token


def url(cast: Cast, what: str) -> str:
    return f"/api/v1/orgs/{cast.alice.org.pk}/audit/{what}/"


def test_the_owner_verifies_an_intact_chain_and_gets_the_key_to_check_exports(cast: Cast, session: ApiToken) -> None:
    before = AuditChainHead.objects.get(pk=cast.alice.org.pk).next_seq  # the organization's admin changes
    record_stored(session)
    answer = client_for(cast.alice.token).get(url(cast, "verify"))
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["intact"], body["checked"], body["head_seq"], body["broken"]) == (True, before + 2, before + 1, None)
    made = client_for(cast.alice.token).post(url(cast, "checkpoint"))
    assert made.status_code == 201
    checkpoint = chain.Checkpoint.from_dict(made.json())
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["public_key"]))
    assert chain.checkpoint_valid(checkpoint, public) and checkpoint.key_id == body["key_id"]
    assert client_for(cast.alice.token).get(url(cast, "checkpoint")).json() == made.json()


def test_an_edit_is_reported_with_the_record_and_why(cast: Cast, session: ApiToken) -> None:
    before = AuditChainHead.objects.get(pk=cast.alice.org.pk).next_seq
    record_id = record_stored(session)
    record_stored(session)
    pk: Any = record_id.replace("-", "") if connection.vendor == "sqlite" else record_id
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditrecord SET action = 'stripe.refunds.create' WHERE id = %s", [pk])
    body = client_for(cast.alice.token).get(url(cast, "verify")).json()
    assert body["intact"] is False
    assert body["broken"] == {
        "seq": before,
        "record_id": record_id,
        "why": "edited",
        "detail": "the record's attempt differs from what was chained",
    }


def test_an_exported_checkpoint_is_checked_and_a_bad_one_is_a_problem(cast: Cast, session: ApiToken) -> None:
    record_stored(session)
    exported = client_for(cast.alice.token).post(url(cast, "checkpoint")).json()
    ok = client_for(cast.alice.token).post(url(cast, "verify"), {"checkpoint": exported}, format="json")
    assert ok.status_code == 200 and ok.json()["intact"] is True and ok.json()["against"] == exported
    forged = {**exported, "seq": exported["seq"] + 5}
    bad = client_for(cast.alice.token).post(url(cast, "verify"), {"checkpoint": forged}, format="json")
    assert bad.json()["intact"] is False and bad.json()["broken"]["why"] == "edited"
    garbage = client_for(cast.alice.token).post(url(cast, "verify"), {"checkpoint": {"seq": "x"}}, format="json")
    assert garbage.status_code == 400
    assert garbage["Content-Type"].startswith("application/problem+json")
    assert "checkpoint" in garbage.content.decode()


def test_members_without_audit_read_and_other_organizations_are_refused(cast: Cast, session: ApiToken) -> None:
    record_stored(session)
    assert client_for(cast.bob.token).get(url(cast, "verify")).status_code == 403
    assert client_for(cast.bob.token).post(url(cast, "checkpoint")).status_code == 403
    assert client_for(cast.charlie.token).get(url(cast, "verify")).status_code == 404
    assert client_for(cast.charlie.token).get(url(cast, "checkpoint")).status_code == 404


def test_no_checkpoint_yet_is_a_404_problem_and_a_new_organization_has_a_chain_already(cast: Cast) -> None:
    answer = client_for(cast.alice.token).get(url(cast, "checkpoint"))
    assert answer.status_code == 404 and "No checkpoint yet" in answer.json()["detail"]
    assert client_for(cast.alice.token).get(url(cast, "verify")).json()["intact"] is True
    made = client_for(cast.alice.token).post(url(cast, "checkpoint"))  # its creation is the chain's first link
    assert made.status_code == 201 and made.json()["seq"] >= 0


def test_retention_is_read_by_auditors_and_set_by_owners_only(cast: Cast) -> None:
    owner = client_for(cast.alice.token)
    assert owner.get(url(cast, "retention")).json() == {"days": None, "updated_at": None, "updated_by": ""}
    answer = owner.put(url(cast, "retention"), {"days": 90}, format="json")
    assert answer.status_code == 200 and answer.json()["days"] == 90
    assert answer.json()["updated_by"] == "alice@example.com"
    assert owner.put(url(cast, "retention"), {"days": 0}, format="json").status_code == 400
    assert owner.put(url(cast, "retention"), {"days": 90, "extra": 1}, format="json").status_code == 400
    assert owner.put(url(cast, "retention"), {"days": None}, format="json").json()["days"] is None
    assert client_for(cast.bob.token).put(url(cast, "retention"), {"days": 1}, format="json").status_code == 403
    assert client_for(cast.charlie.token).get(url(cast, "retention")).status_code == 404


def test_verifying_and_signing_are_rate_limited_per_person(
    cast: Cast, session: ApiToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"audit-verify": "2/hour", "audit-checkpoint": "1/hour"})
    alice, checkpoint = client_for(cast.alice.token), url(cast, "checkpoint")
    assert [alice.get(url(cast, "verify")).status_code for _ in range(3)] == [200, 200, 429]
    limited = alice.post(url(cast, "verify"), {}, format="json")
    assert limited["Content-Type"] == "application/problem+json" and int(limited["Retry-After"]) > 0
    assert [alice.post(checkpoint).status_code for _ in range(2)] == [201, 429]
