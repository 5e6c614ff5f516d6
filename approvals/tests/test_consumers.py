"""The approvals websocket, driven through the real ASGI application (origin check, token auth, routing).

Alice owns org A (she sees every approval in it), Bob is a plain member of A (he sees his own requests only),
Charlie owns org B and must see nothing of A. Approvals are created and decided by the real services, whose
events travel over the configured channel layer (in-memory by default, Redis with REDIS_URL).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django_scopes import scopes_disabled

from aileron_site.asgi import application
from approvals import services
from approvals.models import Approval
from conftest import Cast, Person, make_person
from tenants.roles import Role
from tenants.selectors import token_authenticate
from tenants.services import service_token_create, session_token_create, token_revoke

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

HOST = "localhost:8000"
WAIT = 5.0  # seconds for an event to arrive; they arrive in milliseconds


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(scenario)()


@pytest.fixture(autouse=True)
def empty_channel_layer() -> Iterator[None]:
    yield
    layer: Any = get_channel_layer()
    if hasattr(layer, "flush"):
        async_to_sync(layer.flush)()


def socket(
    org_id: uuid.UUID | str,
    token: str | None = None,
    *,
    origin: str | None = None,
    subprotocols: list[str] | None = None,
    host: str = HOST,
) -> WebsocketCommunicator:
    headers = [(b"host", host.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, f"/ws/orgs/{org_id}/approvals/", headers, subprotocols)


def hold(person: Person, *, action: str = "stripe.create-refund", amount: int = 500) -> Approval:
    """What the data plane does when policy holds one of PERSON's agent's requests."""
    with scopes_disabled():
        session = session_token_create(membership=person.membership, name=f"{person.user.email}'s agent").token
    claim = services.approval_claim(
        held=services.HeldRequest(
            session_id=session.pk,
            request_id=uuid.uuid4(),
            connector="stripe",
            action=action,
            args={"charge": "ch_123", "amount": amount},
            method="POST",
            host="api.stripe.com",
            path="/v1/refunds",
            query="",
            body_sha256=uuid.uuid4().hex * 2,
            body_bytes=30,
            credential_id=uuid.uuid4(),
            reason="refunds over 100 need a person",
        )
    )
    return claim.approval


def revoke(raw: str) -> None:
    token = token_authenticate(raw=raw)
    assert token is not None
    token_revoke(acting=None, token=token)


def grant(person: Person, approval: Approval) -> Approval:
    with scopes_disabled():
        return services.approval_decide(approval=approval, membership=person.membership, decision="grant")


async def connected(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """Connect, expect acceptance, and return the snapshot (always the first message)."""
    accepted, _subprotocol = await communicator.connect(timeout=WAIT)
    assert accepted
    snapshot: dict[str, Any] = await communicator.receive_json_from(timeout=WAIT)
    assert snapshot["event"] == "snapshot"
    return snapshot


async def refused_with(communicator: WebsocketCommunicator) -> int | None:
    """The close code of a socket the server accepts only to close at once (or None if it never accepted)."""
    accepted, _ = await communicator.connect(timeout=WAIT)
    if not accepted:
        return None
    message = await communicator.receive_output(timeout=WAIT)
    assert message["type"] == "websocket.close", message
    code: int = message["code"]
    return code


def test_it_sends_the_pending_approvals_first_newest_first(cast: Cast) -> None:
    older = hold(cast.alice, amount=100)
    newer = hold(cast.bob, amount=200)
    decided = hold(cast.bob, amount=300)
    grant(cast.alice, decided)

    async def scenario() -> None:
        communicator = socket(cast.alice.org.pk, cast.alice.token)
        snapshot = await connected(communicator)
        assert [a["id"] for a in snapshot["approvals"]] == [str(newer.pk), str(older.pk)]
        first = snapshot["approvals"][0]
        assert first["args"] == {"charge": "ch_123", "amount": 200}
        assert first["requester_email"] == "bob@example.com"
        assert first["held_reason"] == "refunds over 100 need a person"
        await communicator.disconnect()

    run(scenario)


def test_a_new_held_request_arrives_as_created_and_a_grant_as_decided(cast: Cast) -> None:
    async def scenario() -> None:
        communicator = socket(cast.alice.org.pk, cast.alice.token)
        assert (await connected(communicator))["approvals"] == []

        approval = await database_sync_to_async(hold)(cast.bob)
        created = await communicator.receive_json_from(timeout=WAIT)
        assert created["event"] == "created"
        assert created["approval"]["id"] == str(approval.pk)
        assert created["approval"]["state"] == "pending"
        assert created["approval"]["action"] == "stripe.create-refund"

        await database_sync_to_async(grant)(cast.alice, approval)
        decided = await communicator.receive_json_from(timeout=WAIT)
        assert decided["event"] == "decided"
        assert decided["approval"]["id"] == str(approval.pk)
        assert decided["approval"]["state"] == "granted"
        assert decided["approval"]["decisions"][0]["approver"] == "alice@example.com"
        await communicator.disconnect()

    run(scenario)


def test_a_member_without_approval_decide_sees_only_their_own_requests(cast: Cast) -> None:
    alices = hold(cast.alice, amount=111)

    async def scenario() -> None:
        communicator = socket(cast.bob.org.pk, cast.bob.token)
        assert (await connected(communicator))["approvals"] == []

        await database_sync_to_async(hold)(cast.alice, amount=222)
        bobs = await database_sync_to_async(hold)(cast.bob, amount=333)
        message = await communicator.receive_json_from(timeout=WAIT)
        assert (message["event"], message["approval"]["id"]) == ("created", str(bobs.pk))
        await database_sync_to_async(grant)(cast.alice, alices)
        assert await communicator.receive_nothing(timeout=0.5)

        again = socket(cast.bob.org.pk, cast.bob.token)
        assert [a["id"] for a in (await connected(again))["approvals"]] == [str(bobs.pk)]
        await communicator.disconnect()
        await again.disconnect()

    run(scenario)


def test_an_approver_sees_everyone_s_requests_in_the_organization(cast: Cast) -> None:
    dana = make_person("dana@example.com", org=cast.alice.org, role=Role.APPROVER)

    async def scenario() -> None:
        communicator = socket(dana.org.pk, dana.token)
        await connected(communicator)
        bobs = await database_sync_to_async(hold)(cast.bob)
        message = await communicator.receive_json_from(timeout=WAIT)
        assert (message["event"], message["approval"]["id"]) == ("created", str(bobs.pk))
        await communicator.disconnect()

    run(scenario)


def test_a_member_of_another_organization_is_refused_and_hears_nothing(cast: Cast) -> None:
    async def scenario() -> None:
        charlie_on_a = socket(cast.alice.org.pk, cast.charlie.token)
        assert await refused_with(charlie_on_a) == 4404
        missing = socket(uuid.uuid4(), cast.charlie.token)
        assert await refused_with(missing) == 4404

        charlie_on_b = socket(cast.charlie.org.pk, cast.charlie.token)
        assert (await connected(charlie_on_b))["approvals"] == []
        await database_sync_to_async(hold)(cast.bob)
        assert await charlie_on_b.receive_nothing(timeout=0.5)
        await charlie_on_b.disconnect()

    run(scenario)


def test_a_person_s_requests_in_another_organization_stay_out_of_this_organization_s_socket(cast: Cast) -> None:
    # Bob is also a member of org B: his user group carries his requests from both organizations.
    with scopes_disabled():
        from tenants.models import Membership

        bob_in_b = Membership.objects.create(organization=cast.charlie.org, user=cast.bob.user, role=Role.MEMBER)
    bob_b = Person(cast.bob.user, cast.bob.token, bob_in_b)

    async def scenario() -> None:
        on_a = socket(cast.alice.org.pk, cast.bob.token)
        await connected(on_a)
        await database_sync_to_async(hold)(bob_b)
        assert await on_a.receive_nothing(timeout=0.5)
        await on_a.disconnect()

    run(scenario)


def test_an_agent_s_session_token_is_refused_with_4403(cast: Cast) -> None:
    with scopes_disabled():
        session = session_token_create(membership=cast.alice.membership, name="agent").plaintext
    service = service_token_create(name="data plane").plaintext

    async def scenario() -> None:
        assert await refused_with(socket(cast.alice.org.pk, session)) == 4403
        assert await refused_with(socket(cast.alice.org.pk, service)) == 4403
        via_subprotocol = socket(cast.alice.org.pk, subprotocols=["aileron.v1", f"bearer.{session}"])
        assert await refused_with(via_subprotocol) == 4403

    run(scenario)


def test_no_token_or_a_bad_one_is_refused_with_4401(cast: Cast) -> None:
    async def scenario() -> None:
        assert await refused_with(socket(cast.alice.org.pk)) == 4401
        assert await refused_with(socket(cast.alice.org.pk, "ail_pat_" + "x" * 44)) == 4401
        assert await refused_with(socket(cast.alice.org.pk, "")) == 4401

    run(scenario)


def test_a_revoked_token_is_refused_and_an_open_socket_closes_at_the_next_event(cast: Cast) -> None:
    async def scenario() -> None:
        communicator = socket(cast.alice.org.pk, cast.alice.token)
        await connected(communicator)
        await database_sync_to_async(revoke)(cast.alice.token)
        await database_sync_to_async(hold)(cast.bob)
        message = await communicator.receive_output(timeout=WAIT)
        assert message == {"type": "websocket.close", "code": 4401}
        assert await refused_with(socket(cast.alice.org.pk, cast.alice.token)) == 4401

    run(scenario)


def test_a_page_from_another_site_cannot_open_the_socket(cast: Cast) -> None:
    async def scenario() -> None:
        for origin in ("https://evil.example", "http://localhost:9999", "null", f"http://{HOST}.evil.example"):
            hijack = socket(cast.alice.org.pk, cast.alice.token, origin=origin)
            accepted, _ = await hijack.connect(timeout=WAIT)
            assert not accepted, origin
        # A host name the site does not serve (DNS rebinding) is refused even when Origin matches it.
        rebound = socket(
            cast.alice.org.pk, cast.alice.token, origin="http://evil.example:8000", host="evil.example:8000"
        )
        assert not (await rebound.connect(timeout=WAIT))[0]

        same_site = socket(cast.alice.org.pk, cast.alice.token, origin=f"http://{HOST}")
        await connected(same_site)
        await same_site.disconnect()

    run(scenario)


def test_a_browser_s_token_in_the_subprotocol_works_and_is_never_echoed(cast: Cast) -> None:
    async def scenario() -> None:
        communicator = socket(
            cast.alice.org.pk, origin=f"http://{HOST}", subprotocols=["aileron.v1", f"bearer.{cast.alice.token}"]
        )
        accepted, subprotocol = await communicator.connect(timeout=WAIT)
        assert accepted and subprotocol == "aileron.v1"
        snapshot = await communicator.receive_json_from(timeout=WAIT)
        assert snapshot == {"event": "snapshot", "approvals": []}
        await communicator.disconnect()

    run(scenario)
