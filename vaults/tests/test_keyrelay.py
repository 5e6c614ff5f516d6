"""The key-channel relay's control-plane side: a request is handed to one data plane once, its sealed payload is
cleared when claimed, answers go back once, and one person cannot flood the data plane's nonces."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from aileron_site.problems import InvalidInput
from conftest import Cast
from vaults import keyrelay
from vaults.models import KeyChannelMessage

pytestmark = pytest.mark.django_db
NONCE = base64.b64encode(os.urandom(32)).decode()


def test_a_request_is_claimed_once_and_its_answer_taken_once(cast: Cast) -> None:
    posted = keyrelay.keyrelay_post(membership=cast.alice.membership, op="attest", body={"nonce": NONCE, "x": 1})
    assert posted.body == {"nonce": NONCE}  # only the fields the operation reads travel on
    [claimed] = keyrelay.keyrelay_claim()
    assert claimed.pk == posted.pk and claimed.body == {"nonce": NONCE}
    assert KeyChannelMessage.objects.get(pk=posted.pk).body == {}  # cleared in the database as it is handed out
    assert keyrelay.keyrelay_claim() == []
    assert keyrelay.keyrelay_take(message_id=posted.pk) is None
    assert keyrelay.keyrelay_answer(message_id=posted.pk, answer={"ok": True}) is True
    assert keyrelay.keyrelay_answer(message_id=posted.pk, answer={"ok": False}) is False
    assert keyrelay.keyrelay_take(message_id=posted.pk) == {"ok": True}
    assert not KeyChannelMessage.objects.filter(pk=posted.pk).exists()


def test_bad_requests_are_refused_before_they_reach_the_data_plane(cast: Cast) -> None:
    for op, body, why in [
        ("attest", {"nonce": "AAAA"}, "nonce must be 32 bytes"),
        ("attest", {"nonce": "not base64!"}, "nonce is not base64"),
        ("open", {"session_token": "ail_ses_x", "nonce": NONCE, "sealed_master_key": "AA=="}, "never relayed"),
        ("open", {"session_id": str(uuid.uuid4()), "nonce": NONCE, "sealed_master_key": "AA=="}, "No live session"),
        ("status", {"session_id": "nope"}, "session_id must be"),
        ("rotate", {}, "op must be one of"),
    ]:
        with pytest.raises(Exception, match=why):
            keyrelay.keyrelay_post(membership=cast.alice.membership, op=op, body=body)
    assert not KeyChannelMessage.objects.exists()


def test_one_person_has_a_bounded_number_of_requests_waiting(cast: Cast) -> None:
    for _ in range(keyrelay.MAX_OUTSTANDING_PER_USER):
        keyrelay.keyrelay_post(membership=cast.alice.membership, op="attest", body={"nonce": NONCE})
    with pytest.raises(keyrelay.TooManyRequests):
        keyrelay.keyrelay_post(membership=cast.alice.membership, op="attest", body={"nonce": NONCE})
    keyrelay.keyrelay_post(membership=cast.bob.membership, op="attest", body={"nonce": NONCE})  # others are not


def test_abandoned_requests_are_swept_and_never_handed_out(cast: Cast) -> None:
    old = keyrelay.keyrelay_post(membership=cast.alice.membership, op="attest", body={"nonce": NONCE})
    KeyChannelMessage.objects.filter(pk=old.pk).update(created_at=timezone.now() - keyrelay.LIFETIME - timedelta(1))
    assert keyrelay.keyrelay_claim() == []
    assert keyrelay.keyrelay_sweep() == 1 and not KeyChannelMessage.objects.exists()
    with pytest.raises(InvalidInput):
        keyrelay.keyrelay_request_clean(membership=cast.alice.membership, op="", body={})
