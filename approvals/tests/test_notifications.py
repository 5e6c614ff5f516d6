"""Notification channels through the real API, and deliveries to real local receivers (HTTP and SMTP)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django_scopes import scopes_disabled

from approvals import messages, notifications, signing
from approvals.models import ApprovalLink, NotificationChannel
from approvals.tests.factories import held_approval
from conftest import Cast, Person, client_for, make_person
from tenants import services as tenant_services
from tenants.models import ApiToken
from tenants.roles import Role
from tests.receivers import WebhookReceiver, smtp_server, webhook_receiver

pytestmark = pytest.mark.django_db
PUBLIC = "http://aileron.test:8400"


def channels_url(person: Person, channel_id: str = "", verb: str = "") -> str:
    base = f"/api/v1/orgs/{person.org.pk}/notification-channels/"
    return base + (f"{channel_id}/" if channel_id else "") + (f"{verb}/" if verb else "")


def add(person: Person, **body: Any) -> Any:
    return client_for(person.token).post(channels_url(person), body, format="json")


def session_of(person: Person) -> ApiToken:
    return tenant_services.session_token_create(membership=person.membership, name="claude").token


@pytest.fixture
def approver(cast: Cast) -> Person:
    return make_person("dana@example.com", org=cast.alice.org, role=Role.APPROVER)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as found:
        yield found


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    """Celery tasks run in the test (the worker's job), retries at once instead of after their countdown."""
    from aileron_site.celery import app

    settings.AILERON_PUBLIC_URL = PUBLIC
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def expected_signature(secret: str, header: str, body: bytes) -> str:
    """What the signature must be, computed here from the documented recipe (not with approvals.signing)."""
    stamp = dict(part.split("=", 1) for part in header.split(","))["t"]
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# --- setting channels up ----------------------------------------------------------------------------------------


def test_an_admin_adds_a_webhook_and_sees_its_secret_only_once(cast: Cast, receiver: WebhookReceiver) -> None:
    made = add(cast.alice, name="Ops-Hooks", kind="webhook", target=receiver.url)
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["name"] == "ops-hooks" and body["target"] == receiver.url and body["created_by"] == "alice@example.com"
    assert body["events"] == ["created", "decided", "expired", "cancelled", "credential_due"]
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    listed = client_for(cast.alice.token).get(channels_url(cast.alice)).json()["results"]
    shown = client_for(cast.alice.token).get(channels_url(cast.alice, body["id"])).json()
    assert [c["name"] for c in listed] == ["ops-hooks"]
    assert body["secret"] not in json.dumps(listed) + json.dumps(shown)
    assert "secret" not in shown


def test_a_slack_channel_never_shows_its_secret_path_again(cast: Cast) -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    made = add(cast.alice, name="slack", kind="slack", target=url)
    assert made.status_code == 201, made.content
    assert made.json()["secret"] is None
    listed = client_for(cast.alice.token).get(channels_url(cast.alice))
    assert "XXXXXXXX" not in listed.content.decode()
    assert listed.json()["results"][0]["target"] == "https://hooks.slack.com/…"


@pytest.mark.parametrize(
    "body,pointer",
    [
        ({"kind": "webhook", "target": "ftp://example.com/hook"}, "/target"),
        ({"kind": "webhook", "target": "https://user:pw@example.com/hook"}, "/target"),
        ({"kind": "webhook", "target": "https://example.com/hook#frag"}, "/target"),
        ({"kind": "webhook", "target": "https://exa mple.com/"}, "/target"),
        ({"kind": "slack", "target": "not a url"}, "/target"),
        ({"kind": "email", "target": "alice@example.com, not-an-address"}, "/target"),
        ({"kind": "email", "target": " , "}, "/target"),
        ({"kind": "webhook", "target": "https://example.com/", "events": ["created", "voted"]}, "/events/1"),
        ({"kind": "webhook", "target": "https://example.com/", "name": "-bad name"}, "/name"),
        ({"kind": "pager", "target": "https://example.com/"}, "/kind"),
    ],
)
def test_bad_channels_are_refused_with_a_problem_naming_the_field(
    cast: Cast, body: dict[str, Any], pointer: str
) -> None:
    made = add(cast.alice, **{"name": "x", **body})
    assert made.status_code == 400, made.content
    assert made["Content-Type"] == "application/problem+json"
    assert pointer in [e["pointer"] for e in made.json()["errors"]], made.json()
    with scopes_disabled():
        assert not NotificationChannel.objects.exists()


def test_a_second_channel_with_the_same_name_conflicts(cast: Cast) -> None:
    assert add(cast.alice, name="mail", kind="email", target="alice@example.com").status_code == 201
    again = add(cast.alice, name="MAIL", kind="email", target="bob@example.com")
    assert again.status_code == 409 and again["Content-Type"] == "application/problem+json"


def test_in_production_a_private_target_is_refused(cast: Cast, settings: Any) -> None:
    settings.AILERON_NOTIFY_ALLOW_PRIVATE = False
    for target in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/hook", "http://localhost/"):
        made = add(cast.alice, name="internal", kind="webhook", target=target)
        assert made.status_code == 400 and "private" in made.json()["detail"], (target, made.content)
    # A name that resolves to a private address is refused when the worker is about to call it.
    attempt = notifications.post("http://localhost:9/hook", b"{}", {})
    assert not attempt.ok and not attempt.retryable and "private address" in attempt.error


def test_members_cannot_see_channels_and_other_organizations_get_404(cast: Cast) -> None:
    made = add(cast.alice, name="hooks", kind="webhook", target="https://example.com/hook").json()
    bob = client_for(cast.bob.token)
    assert bob.get(channels_url(cast.alice)).status_code == 403
    assert add(cast.bob, name="mine", kind="webhook", target="https://example.com/").status_code == 403
    charlie = client_for(cast.charlie.token)
    for path in (channels_url(cast.alice, made["id"]), channels_url(cast.charlie, made["id"])):
        assert charlie.get(path).status_code == 404
        assert charlie.delete(path).status_code == 404
        assert charlie.patch(path, {"enabled": False}, format="json").status_code == 404
    assert charlie.post(channels_url(cast.charlie, made["id"], "test")).status_code == 404
    with scopes_disabled():
        assert NotificationChannel.objects.get(pk=made["id"]).enabled


def test_a_channel_is_changed_and_removed(cast: Cast) -> None:
    made = add(cast.alice, name="hooks", kind="webhook", target="https://example.com/hook").json()
    alice = client_for(cast.alice.token)
    changed = alice.patch(
        channels_url(cast.alice, made["id"]), {"events": ["expired"], "enabled": False}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["events"], changed.json()["enabled"]) == (["expired"], False)
    typo = alice.patch(channels_url(cast.alice, made["id"]), {"secret": "mine"}, format="json")
    assert typo.status_code == 400
    assert alice.delete(channels_url(cast.alice, made["id"])).status_code == 204
    assert alice.get(channels_url(cast.alice, made["id"])).status_code == 404


# --- delivering ---------------------------------------------------------------------------------------------


def test_a_held_request_reaches_the_webhook_signed_with_the_channel_secret(
    cast: Cast, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    secret = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()["secret"]
    with django_capture_on_commit_callbacks(execute=True):
        approval = held_approval(session_of(cast.bob), charge="ch_9", amount="4200")
    (hit,) = receiver.hits
    assert hit.headers["x-aileron-event"] == "approval.created"
    assert uuid.UUID(hit.headers["x-aileron-delivery"])
    signature = hit.headers["x-aileron-signature"]
    assert signature.startswith("t=") and f",v1={expected_signature(secret, signature, hit.body)}" in signature
    assert signing.verify(secret, hit.body, signature)
    assert not signing.verify(secret, hit.body.replace(b"4200", b"4201"), signature), "the body is what is signed"
    payload = json.loads(hit.body)
    shown = payload["data"]["approval"]
    assert (payload["type"], shown["id"], shown["action"]) == ("approval.created", str(approval.pk), approval.action)
    assert shown["args"] == {"charge": "ch_9", "amount": "4200"}
    assert shown["requester_email"] == "bob@example.com" and shown["expires_at"]
    for hidden in ("credential_id", "body_sha256", "request_hash"):
        assert hidden not in shown
    # The link is the channel creator's (Alice, an owner, may decide): for this approval only.
    assert (
        payload["link"].startswith(f"{PUBLIC}/approvals/#link=ail_apl_") and payload["link_for"] == "alice@example.com"
    )
    with scopes_disabled():
        link = ApprovalLink.objects.get()
    assert (link.approval_id, link.user_id, link.expires_at) == (approval.pk, cast.alice.user.pk, approval.expires_at)
    assert payload["link"].split("#link=")[1] not in link.digest, "stored as a digest only"


def test_a_receiver_answering_500_is_retried_with_backoff_under_one_delivery_id(
    cast: Cast, receiver: WebhookReceiver, eager: None
) -> None:
    made = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()
    approval = held_approval(session_of(cast.bob))
    receiver.script = [(500, {}), (503, {})]
    first = notifications.notification_deliver(
        channel_id=made["id"], event="created", approval_id=str(approval.pk), delivery_id="d-1", attempt=0
    )
    assert (first.status, first.retry_in) == ("retrying", 10.0)
    with scopes_disabled():
        channel = NotificationChannel.objects.get(pk=made["id"])
    assert channel.last_status == "retrying" and "500" in channel.last_error
    second = notifications.notification_deliver(
        channel_id=made["id"], event="created", approval_id=str(approval.pk), delivery_id="d-1", attempt=1
    )
    assert (second.status, second.retry_in) == ("retrying", 20.0)
    third = notifications.notification_deliver(
        channel_id=made["id"], event="created", approval_id=str(approval.pk), delivery_id="d-1", attempt=2
    )
    assert third.status == "ok"
    assert [h.headers["x-aileron-delivery"] for h in receiver.hits] == ["d-1"] * 3
    channel.refresh_from_db()
    assert (channel.last_status, channel.last_error) == ("ok", "")
    assert [notifications.retry_delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 320, 600]
    assert notifications.retry_delay(0, retry_after=90) == 90


def test_the_task_retries_a_failing_receiver_until_it_answers(
    cast: Cast, receiver: WebhookReceiver, eager: None
) -> None:
    from approvals.tasks import notification_deliver_task

    made = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()
    receiver.script = [(500, {}), (429, {"Retry-After": "1"})]
    kwargs = {"channel_id": made["id"], "event": "test", "delivery_id": "d-2"}
    assert notification_deliver_task.apply(kwargs=kwargs).get() == "ok"
    assert len(receiver.hits) == 3


def test_a_receiver_that_never_recovers_is_tried_a_bounded_number_of_times_and_the_failure_recorded(
    cast: Cast, receiver: WebhookReceiver, eager: None
) -> None:
    from approvals.tasks import notification_deliver_task

    made = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()
    receiver.script = [(502, {})] * 20
    kwargs = {"channel_id": made["id"], "event": "test", "delivery_id": "d-3"}
    assert notification_deliver_task.apply(kwargs=kwargs).get() == "failed"
    assert len(receiver.hits) == notifications.MAX_ATTEMPTS
    listed = client_for(cast.alice.token).get(channels_url(cast.alice)).json()["results"][0]
    assert listed["last_status"] == "failed"
    assert "502" in listed["last_error"] and f"after {notifications.MAX_ATTEMPTS} attempt(s)" in listed["last_error"]


@pytest.mark.parametrize("status", [400, 404, 410, 302])
def test_other_answers_are_final_and_redirects_are_not_followed(
    cast: Cast, receiver: WebhookReceiver, eager: None, status: int
) -> None:
    made = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()
    receiver.script = [(status, {"Location": receiver.url + "/elsewhere"})]
    outcome = notifications.notification_deliver(channel_id=made["id"], event="test", delivery_id="d-4")
    assert (outcome.status, outcome.retry_in) == ("failed", None)
    assert [h.path for h in receiver.hits] == ["/hooks/aileron"]


def test_an_unreachable_receiver_is_retried(cast: Cast, eager: None) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    made = add(cast.alice, name="hooks", kind="webhook", target=dead).json()
    outcome = notifications.notification_deliver(channel_id=made["id"], event="test", delivery_id="d-5")
    assert outcome.status == "retrying" and "could not connect" in outcome.error


def test_the_test_endpoint_reports_success_and_failure(cast: Cast, receiver: WebhookReceiver, eager: None) -> None:
    made = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()
    alice = client_for(cast.alice.token)
    ok = alice.post(channels_url(cast.alice, made["id"], "test"))
    assert ok.status_code == 200 and ok.json()["delivered"] and ok.json()["last_status"] == "ok", ok.content
    assert json.loads(receiver.hits[0].body)["type"] == "test"
    receiver.script = [(500, {})]
    failed = alice.post(channels_url(cast.alice, made["id"], "test"))
    # The receiver's failure is the answer, not the API's: never a 5xx.
    assert failed.status_code == 200 and failed.json()["delivered"] is False
    assert "500" in failed.json()["error"] and failed.json()["last_status"] == "failed"
    assert len(receiver.hits) == 2, "a test is sent once, never retried"


def test_slack_gets_incoming_webhook_blocks_with_the_agents_markup_escaped(
    cast: Cast, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    add(cast.alice, name="slack", kind="slack", target=receiver.url, events=["created"])
    with django_capture_on_commit_callbacks(execute=True):
        held_approval(session_of(cast.bob), charge="<https://evil.example|Grant here>", amount="1")
    (hit,) = receiver.hits
    payload = json.loads(hit.body)
    assert "x-aileron-signature" not in hit.headers
    assert payload["text"].startswith("Approval needed: stripe.create-refund asked by bob@example.com")
    text = json.dumps(payload["blocks"])
    assert "&lt;https://evil.example|Grant here&gt;" in text and "<https://evil" not in text
    (button,) = next(b for b in payload["blocks"] if b["type"] == "actions")["elements"]
    assert button["url"].startswith(f"{PUBLIC}/approvals/#link=ail_apl_")


def test_email_gives_each_approver_their_own_link_and_others_none(
    cast: Cast, approver: Person, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    targets = "dana@example.com, bob@example.com, outsider@example.org"
    add(cast.alice, name="mail", kind="email", target=targets)
    with django_capture_on_commit_callbacks(execute=True):
        approval = held_approval(session_of(cast.bob))
    by_address = {m.to[0]: m for m in mail.outbox}
    assert sorted(by_address) == ["bob@example.com", "dana@example.com", "outsider@example.org"]
    dana = by_address["dana@example.com"]
    assert dana.subject.startswith("[Aileron Org A] Approval needed: stripe.create-refund")
    assert "#link=ail_apl_" in dana.body and "as dana@example.com" in dana.body
    assert "amount" in dana.body and "bob@example.com" in dana.body
    for other in ("bob@example.com", "outsider@example.org"):  # bob is a member without approval.decide
        assert "#link=" not in by_address[other].body
        assert f"{PUBLIC}/approvals/{cast.alice.org.pk}/" in by_address[other].body
    with scopes_disabled():
        assert list(ApprovalLink.objects.values_list("user__email", "approval_id")) == [
            ("dana@example.com", approval.pk)
        ]


def test_four_eyes_requesters_get_no_link_for_their_own_request(
    cast: Cast, approver: Person, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    made = client_for(cast.alice.token).post(
        f"/api/v1/orgs/{cast.alice.org.pk}/approval-rules/",
        {"action": "stripe.create-refund", "four_eyes": True},
        format="json",
    )
    assert made.status_code == 201
    add(cast.alice, name="mail", kind="email", target="alice@example.com,dana@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        held_approval(session_of(cast.alice))
    by_address = {m.to[0]: m.body for m in mail.outbox}
    assert "#link=" not in by_address["alice@example.com"] and "#link=" in by_address["dana@example.com"]


def test_decisions_expiry_and_cancellation_are_sent_without_links(
    cast: Cast, approver: Person, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    from approvals import services

    add(cast.alice, name="hooks", kind="webhook", target=receiver.url)
    session = session_of(cast.bob)
    with django_capture_on_commit_callbacks(execute=True), scopes_disabled():
        rejected = held_approval(session, charge="ch_r")
        services.approval_decide(approval=rejected, membership=approver.membership, decision="reject", reason="no")
        expiring = held_approval(session, charge="ch_e")
        type(expiring).objects.filter(pk=expiring.pk).update(expires_at=expiring.created_at)
        services.approvals_expire_due()
        cancelled = held_approval(session, charge="ch_c")
        services.approval_cancel(approval=cancelled, membership=cast.bob.membership)
    seen = [
        (json.loads(h.body)["type"], json.loads(h.body)["data"]["approval"]["args"]["charge"]) for h in receiver.hits
    ]
    assert [s for s in seen if s[0] != "approval.created"] == [
        ("approval.decided", "ch_r"),
        ("approval.expired", "ch_e"),
        ("approval.cancelled", "ch_c"),
    ]
    decided = json.loads(next(h.body for h in receiver.hits if h.headers["x-aileron-event"] == "approval.decided"))
    assert decided["headline"].startswith("Rejected: stripe.create-refund")
    assert decided["data"]["approval"]["decisions"][0]["reason"] == "no"
    assert all(
        json.loads(h.body)["link"] is None for h in receiver.hits if h.headers["x-aileron-event"] != "approval.created"
    )


def test_a_channel_that_does_not_want_an_event_or_is_disabled_gets_nothing(
    cast: Cast, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    add(cast.alice, name="expiry-only", kind="webhook", target=receiver.url, events=["expired"])
    add(cast.alice, name="off", kind="webhook", target=receiver.url, enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        held_approval(session_of(cast.bob))
    assert receiver.hits == []


def test_a_dead_broker_never_fails_the_approval(
    cast: Cast, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from approvals.tasks import notification_deliver_task

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(notification_deliver_task, "apply_async", broken)
    made = add(cast.alice, name="hooks", kind="webhook", target="https://example.com/hook").json()
    with django_capture_on_commit_callbacks(execute=True):
        approval = held_approval(session_of(cast.bob))
    assert approval.state == "pending"
    with scopes_disabled():
        channel = NotificationChannel.objects.get(pk=made["id"])
    assert channel.last_status == "failed" and "broker down" in channel.last_error


def test_email_goes_through_a_real_smtp_server(cast: Cast, approver: Person, eager: None, settings: Any) -> None:
    with smtp_server() as mailbox:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = mailbox.host, mailbox.port
        made = add(cast.alice, name="mail", kind="email", target="dana@example.com").json()
        approval = held_approval(session_of(cast.bob))
        outcome = notifications.notification_deliver(
            channel_id=made["id"], event="created", approval_id=str(approval.pk), delivery_id="d-6"
        )
        assert outcome.status == "ok", outcome.error
        (message,) = mailbox.wait_for(lambda found: found)
    assert message["To"] == "dana@example.com" and message["X-Envelope-To"] == "dana@example.com"
    assert "Approval needed" in message["Subject"]
    assert "#link=ail_apl_" in message.get_content()


def test_a_credential_due_is_sent_once_a_day_naming_it_and_never_its_value(
    cast: Cast, receiver: WebhookReceiver, eager: None
) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from django_scopes import scope

    from conftest import give_keys, make_vault
    from vaults import crypto
    from vaults import services as vault_services

    secret = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()["secret"]
    add(cast.alice, name="approvals-only", kind="webhook", target=receiver.url + "other", events=["created"])
    give_keys(cast.alice)
    vault = make_vault(cast.alice, secret=b"ghp_old_value")
    expires = (timezone.now() + timedelta(days=3)).isoformat()
    with scope(organization=cast.alice.org):
        view = vault_services.vault_get_for(membership=cast.alice.membership, vault_id=uuid.UUID(vault.id))
        vault_services.credential_update(
            view=view,
            acting_user_id=cast.alice.user.pk,
            credential_id=uuid.UUID(vault.credential_id),
            ciphertext=crypto.credential_encrypt(
                b"ghp_new_value",
                vault.key,
                organization_id=str(cast.alice.org.pk),
                vault_id=vault.id,
                credential_id=vault.credential_id,
                key_version=1,
            ),
            expires_at=expires,
        )
    assert vault_services.credentials_due_warn() == 1
    assert vault_services.credentials_due_warn() == 1  # the hourly task again: still due, not sent again today
    (hit,) = receiver.hits  # the channel that wants only approvals got nothing
    assert hit.path == "/hooks/aileron" and hit.headers["x-aileron-event"] == "credential.due"
    assert signing.verify(secret, hit.body, hit.headers["x-aileron-signature"])
    payload = json.loads(hit.body)
    assert payload["type"] == "credential.due" and payload["link"] is None
    assert payload["data"]["credential"] == {
        "id": vault.credential_id,
        "name": "github-token",
        "vault": "shared vault",
        "vault_id": vault.id,
        "connector": "github",
        "version": 2,
        "why": "expires",
        "due_at": expires,
        "owners": ["alice@example.com"],
    }
    assert b"ghp_" not in hit.body
    # People (email, Slack) are told what to do about it.
    notice = messages.credential_due_notice(organization={"name": "Org A"}, credential=payload["data"]["credential"])
    assert "an owner runs `aileron secret update github-token`" in messages.email_message(notice)[1]


def test_redirecting_another_admins_channel_lends_no_vote_and_ends_the_links_sent_before(
    cast: Cast, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    """Bob, an admin, points Alice's webhook at himself: its links then act for him, never for Alice, and the link
    Alice's channel sent before stops working."""
    channel_id = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        earlier = held_approval(session_of(cast.bob), charge="ch_earlier")
    [sent] = [json.loads(h.body) for h in receiver.hits]
    assert sent["link_for"] == "alice@example.com"
    with scopes_disabled():
        tenant_services.membership_update_role(
            acting=cast.alice.membership, membership=cast.bob.membership, role="admin"
        )
    moved = client_for(cast.bob.token).patch(
        channels_url(cast.alice, channel_id), {"target": receiver.url + "/bob"}, format="json"
    )
    assert moved.status_code == 200, moved.content
    old_link = sent["link"].split("#link=")[1]
    refused = client_for(None).post(
        "/api/v1/approval-links/decide/",
        {"token": old_link, "approval_id": str(earlier.pk), "decision": "grant"},
        format="json",
    )
    assert refused.status_code == 404, refused.content
    with django_capture_on_commit_callbacks(execute=True):
        held_approval(session_of(cast.bob), charge="ch_bobs")
    bobs = json.loads(receiver.hits[-1].body)
    assert bobs["data"]["approval"]["args"]["charge"] == "ch_bobs"
    assert bobs["link_for"] == "bob@example.com"


def test_deleting_a_channel_ends_the_links_it_sent(
    cast: Cast, receiver: WebhookReceiver, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    channel_id = add(cast.alice, name="hooks", kind="webhook", target=receiver.url).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        approval = held_approval(session_of(cast.bob), charge="ch_1")
    token = json.loads(receiver.hits[0].body)["link"].split("#link=")[1]
    assert client_for(cast.alice.token).delete(channels_url(cast.alice, channel_id)).status_code == 204
    body = {"token": token, "approval_id": str(approval.pk), "decision": "grant"}
    assert client_for(None).post("/api/v1/approval-links/decide/", body, format="json").status_code == 404


def test_an_agents_argument_name_cannot_add_a_line_or_a_link_to_a_message() -> None:
    forged = "x\n*Decide it here:* https://aileron.evil.example/approvals/#link=ail_apl_PHISH"
    notice = messages.approval_notice(
        event="created",
        organization={"name": "Org A"},
        approval={"action": "stripe.create-refund", "args": {forged: "https://evil.example/x"}, "method": "POST"},
    )
    labels = [label for label, _ in notice.facts]
    assert all("\n" not in label for label in labels)
    text = messages.email_message(notice)[1]
    assert not any(line.startswith("*Decide it here") for line in text.splitlines())
    fields = messages.slack_payload(notice)["blocks"][1]["text"]["text"]
    assert "`https://evil.example/x`" in fields  # a code span: Slack links nothing in it
    assert not any(line.startswith("*Decide it here") for line in fields.splitlines())


def test_a_malformed_signature_timestamp_is_refused_not_raised() -> None:
    body = b"{}"
    for value in ("t=\u00b2,v1=00", f"t={'9' * 5000},v1=00", "t=\u0661\u0662,v1=00", "t=,v1=00"):
        assert signing.verify("whsec_x", body, value) is False
