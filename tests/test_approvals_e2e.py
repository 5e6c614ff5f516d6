"""Human approvals end to end: real agent clients held in the real proxy, decided by real people's tools.

Each test asserts what the fake upstream received (and that nothing was sent before a grant), what the agent
got back, what the approvers saw, and what the audit log and the approvals API hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.proxy_world import World, cli, proxy_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HELD_WINDOW = 60  # stripe.create-refund: long enough to decide while the agent waits
SHORT_WINDOW = 1  # stripe.update-customer (four eyes): the agent's window closes at once


@dataclass
class People:
    world: World
    bob: str  # an approver in Alice's organization
    dave: str  # owns another organization
    dave_org: str

    def as_(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.world.service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


PENDING_TTL = 20  # so that the beat task's expiry can be seen within a test


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    env = {"AILERON_APPROVAL_TTL_SECONDS": str(PENDING_TTL)}
    with proxy_world(tmp_path_factory.mktemp("approvals"), extra_env=env) as w:
        yield w


@pytest.fixture(scope="module")
def people(world: World) -> People:
    base = world.service.url
    with world.api() as api:
        invited = api.post(
            f"/api/v1/orgs/{world.org_id}/invitations/", json={"email": "bob@example.com", "role": "approver"}
        )
        assert invited.status_code == 201, invited.text
        bob = httpx.post(f"{base}/api/v1/invitations/accept/", json={"token": invited.json()["token"]}, timeout=30)
        assert bob.status_code == 201, bob.text
        for action, window, four_eyes in [
            ("stripe.create-refund", HELD_WINDOW, False),
            ("stripe.update-customer", SHORT_WINDOW, True),
        ]:
            made = api.post(
                f"/api/v1/orgs/{world.org_id}/approval-rules/",
                json={"action": action, "window_seconds": window, "four_eyes": four_eyes},
            )
            assert made.status_code == 201, made.text
    dave = httpx.post(
        f"{base}/api/v1/signup/", json={"organization": "Elsewhere", "email": "dave@example.net"}, timeout=30
    )
    assert dave.status_code == 201, dave.text
    return People(world, bob.json()["token"], dave.json()["token"], dave.json()["organization"]["id"])


def approvals(world: World, **params: str) -> list[dict[str, Any]]:
    with world.api() as api:
        reply = api.get(f"/api/v1/orgs/{world.org_id}/approvals/", params={"state": "all", **params})
        assert reply.status_code == 200, reply.text
        return list(reply.json()["results"])


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


class Listener:
    """An approver's websocket, read in a thread; events collected as they arrive."""

    def __init__(self, world: World, token: str) -> None:
        self.url = world.service.url.replace("http://", "ws://") + f"/ws/orgs/{world.org_id}/approvals/"
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.socket: Any = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the approver's websocket did not open"
        wait_for(lambda: any(e.get("event") == "snapshot" for e in self.events))

    def _read(self) -> None:
        from websockets.sync.client import connect

        with connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"}) as socket:
            self.socket = socket
            self.ready.set()
            try:
                for message in socket:
                    self.events.append(json.loads(message))
            except Exception:  # noqa: BLE001, S110 - the socket closed
                pass

    def first(self, event: str, action: str, timeout: float = 20.0, **args: str) -> dict[str, Any]:
        """The first `event` for `action` (whose arguments include `args`)."""

        def find() -> dict[str, Any] | None:
            for e in self.events:
                approval = e.get("approval", {})
                if e.get("event") == event and approval.get("action") == action:
                    if all(approval.get("args", {}).get(k) == v for k, v in args.items()):
                        return e
            return None

        found: dict[str, Any] = wait_for(find, timeout)
        return found

    def close(self) -> None:
        self.socket.close()


STRIPE_AGENT = """
import os, sys, stripe
stripe.api_key = "sk_test_placeholder_the_agent_holds"
stripe.api_base = "https://api.stripe.com"
stripe.ca_bundle_path = os.environ["SSL_CERT_FILE"]  # the session CA (the SDK ships its own bundle otherwise)
stripe.max_network_retries = 0
refund = stripe.Refund.create(charge="ch_night_1", amount=4200)
print(refund["id"] if "id" in refund else "ok")
"""


def test_a_held_stripe_write_is_pushed_to_the_approver_released_by_the_cli_and_audited(
    world: World, people: People
) -> None:
    listener = Listener(world, people.bob)
    try:
        mark = len(world.upstream.received)
        agent = subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", STRIPE_AGENT],
            env=world.agent_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        pushed = listener.first("created", "stripe.create-refund")["approval"]
        assert pushed["args"] == {"charge": "ch_night_1", "amount": "4200"}
        assert pushed["requester_email"] == "alice@example.com"
        assert pushed["state"] == "pending"
        time.sleep(0.3)
        assert agent.poll() is None, "the agent must still be waiting"
        assert world.received_since(mark) == [], "nothing may reach upstream before the grant"

        granted = cli(world.service.env, "approval", "grant", pushed["id"], "--reason", "night refund ok")
        assert granted.returncode == 0, granted.stderr.decode()
        out, err = agent.communicate(timeout=60)
        assert agent.returncode == 0, err.decode()[-2000:]
    finally:
        listener.close()
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/refunds")]
    assert got[0].headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    assert sorted(got[0].body.decode().split("&")) == ["amount=4200", "charge=ch_night_1"]
    records = world.audit_wait(
        lambda rs: any(r["approval_id"] == pushed["id"] and r["upstream_status"] for r in rs),
        action="stripe.create-refund",
    )
    record = next(r for r in records if r["approval_id"] == pushed["id"])
    assert (record["decision"], record["approvers"], record["upstream_status"]) == ("allow", ["alice@example.com"], 201)
    assert "granted by alice@example.com" in record["reason"]
    final = wait_for(lambda: [a for a in approvals(world) if a["id"] == pushed["id"] and a["outcome_status"]])[0]
    assert (final["state"], final["completed"], final["decision_reason"]) == ("granted", True, "night refund ok")


def test_after_the_window_the_agent_gets_the_approval_id_and_a_later_grant_lets_one_retry_through(
    world: World, people: People
) -> None:
    mark = len(world.upstream.received)
    form = {"email": "new@example.com", "metadata[reason]": "window test"}
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as agent:
        first = agent.post("https://api.stripe.com/v1/customers/cus_42", data=form)
        assert first.status_code == 403
        problem = first.json()
        assert problem["type"] == "urn:aileron:problem:approval-pending"
        assert first.headers["retry-after"] == "30"
        # What will really happen: pending while the session lasts, withdrawn when it ends.
        assert "while this session lasts" in problem["detail"] and "withdraws it" in problem["detail"], problem
        with world.api() as api:
            session = api.get(f"/api/v1/orgs/{world.org_id}/session-tokens/{world.session_id}/").json()
        approval_expiry = datetime.fromisoformat(problem["expires_at"])
        assert approval_expiry <= datetime.fromisoformat(session["expires_at"])
        approval_id = problem["approval_id"]
        with people.as_(people.bob) as bob:
            assert bob.post(f"/api/v1/orgs/{world.org_id}/approvals/{approval_id}/grant/", json={}).status_code == 200
        retry = agent.post("https://api.stripe.com/v1/customers/cus_42", data=form)
        assert retry.status_code == 201, retry.text  # the fake upstream's answer to a POST
        replay = agent.post("https://api.stripe.com/v1/customers/cus_42", data=form)
        assert replay.status_code == 403, "a grant is used once"
        assert replay.json()["type"] == "urn:aileron:problem:approval-pending"
        assert replay.json()["approval_id"] != approval_id
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/customers/cus_42")], "exactly once"


def test_attacks_on_approvals_are_refused(world: World, people: People) -> None:
    mark = len(world.upstream.received)
    org = world.org_id
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as agent:
        held = agent.post("https://api.stripe.com/v1/customers/cus_7", data={"email": "a@example.com"})
        approval_id = held.json()["approval_id"]

        # Self-approval under four eyes (Alice's own agent made the request).
        with world.api() as alice:
            own = alice.post(f"/api/v1/orgs/{org}/approvals/{approval_id}/grant/", json={})
            assert own.status_code == 403 and "four eyes" in own.json()["detail"].lower()
        # The agent's own session token cannot approve.
        with people.as_(world.token) as session:
            assert session.post(f"/api/v1/orgs/{org}/approvals/{approval_id}/grant/", json={}).status_code == 403
        # Another organization's owner cannot see or decide it, through either organization's path.
        with people.as_(people.dave) as dave:
            assert dave.post(f"/api/v1/orgs/{org}/approvals/{approval_id}/grant/", json={}).status_code == 404
            elsewhere = f"/api/v1/orgs/{people.dave_org}/approvals/{approval_id}/grant/"
            assert dave.post(elsewhere, json={}).status_code == 404
        assert next(a for a in approvals(world) if a["id"] == approval_id)["state"] == "pending"

        # Bob grants; a changed argument is a new request that needs its own approval.
        with people.as_(people.bob) as bob:
            assert bob.post(f"/api/v1/orgs/{org}/approvals/{approval_id}/grant/", json={}).status_code == 200
        changed = agent.post("https://api.stripe.com/v1/customers/cus_7", data={"email": "attacker@example.com"})
        assert changed.status_code == 403 and changed.json()["approval_id"] != approval_id
        # The granted one goes through once; its replay does not.
        assert (
            agent.post("https://api.stripe.com/v1/customers/cus_7", data={"email": "a@example.com"}).status_code == 201
        )
        again = agent.post("https://api.stripe.com/v1/customers/cus_7", data={"email": "a@example.com"})
        assert again.status_code == 403
    got = world.received_since(mark)
    assert [(r.path, r.body) for r in got] == [("/v1/customers/cus_7", b"email=a%40example.com")]


def test_a_rejection_reaches_the_held_agent_with_the_reason_and_nothing_is_sent(world: World, people: People) -> None:
    listener = Listener(world, people.bob)
    mark = len(world.upstream.received)
    result: dict[str, Any] = {}

    def agent() -> None:
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=90) as client:
            reply = client.post("https://api.stripe.com/v1/refunds", data={"charge": "ch_bad", "amount": "999999"})
            result["status"], result["body"] = reply.status_code, reply.json()

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        pushed = listener.first("created", "stripe.create-refund", charge="ch_bad")["approval"]
        with people.as_(people.bob) as bob:
            rejected = bob.post(
                f"/api/v1/orgs/{world.org_id}/approvals/{pushed['id']}/reject/", json={"reason": "too large"}
            )
            assert rejected.status_code == 200, rejected.text
        thread.join(timeout=30)
        assert listener.first("decided", "stripe.create-refund", charge="ch_bad")["approval"]["state"] == "rejected"
    finally:
        listener.close()
    assert result["status"] == 403
    assert result["body"]["type"] == "urn:aileron:problem:approval-rejected"
    assert result["body"]["reason"] == "too large"
    assert result["body"]["approvers"] == ["bob@example.com"]
    assert world.received_since(mark) == []


def test_other_traffic_keeps_flowing_while_requests_are_held(world: World, people: People) -> None:
    held_results: list[int] = []

    def hold(n: int) -> None:
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=90) as client:
            reply = client.post("https://api.stripe.com/v1/refunds", data={"charge": f"ch_hold_{n}", "amount": "1"})
            held_results.append(reply.status_code)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    wait_for(lambda: len([a for a in approvals(world, state="pending") if _holding(a)]) == 10)
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=10) as client:
        for _ in range(20):
            assert client.get("https://api.stripe.com/v1/customers", params={"limit": "1"}).status_code == 200
    assert held_results == [], "the held requests are still waiting while the others went through"
    with people.as_(people.bob) as bob:
        for a in approvals(world, state="pending"):
            if _holding(a):
                bob.post(f"/api/v1/orgs/{world.org_id}/approvals/{a['id']}/reject/", json={"reason": "test over"})
    for t in threads:
        t.join(timeout=30)
    assert held_results == [403] * 10


def test_an_undecided_request_expires_by_the_beat_task_and_the_approver_is_told(world: World, people: People) -> None:
    """Celery beat expires it in the worker process; on the embedded default the worker relays the event
    through the API (the in-memory channel layer reaches no other process)."""
    listener = Listener(world, people.bob)
    try:
        with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as agent:
            reply = agent.post("https://api.stripe.com/v1/customers/cus_late", data={"email": "late@example.com"})
            approval_id = reply.json()["approval_id"]

            def expired() -> dict[str, Any] | None:
                return next(
                    (e for e in listener.events if e.get("event") == "expired" and e["approval"]["id"] == approval_id),
                    None,
                )

            event = wait_for(expired, timeout=PENDING_TTL + 40)
            assert event["approval"]["state"] == "expired"
            with people.as_(people.bob) as bob:
                late = bob.post(f"/api/v1/orgs/{world.org_id}/approvals/{approval_id}/grant/", json={})
                assert late.status_code == 409 and late.json()["state"] == "expired"
            again = agent.post("https://api.stripe.com/v1/customers/cus_late", data={"email": "late@example.com"})
            assert again.status_code == 403 and again.json()["approval_id"] != approval_id
    finally:
        listener.close()


def _holding(approval: dict[str, Any]) -> bool:
    return str(approval["args"].get("charge", "")).startswith("ch_hold_")
