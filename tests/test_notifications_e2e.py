"""Notifications end to end (issue 15, item 7): a held Stripe refund reaches a local webhook receiver (its
signature checked with the secret `aileron notify add` printed) and a local SMTP server; the link in the email
grants that approval once in headless Chromium, the proxy then releases the refund upstream, and the same link
can neither decide again nor decide another approval. Rejections and expiries are sent too.

Everything runs as real processes: `aileron service` (API, Celery worker and beat, data plane) from this
checkout, the fake Stripe upstream, and the receivers in threads of the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

# Imported as a fixture (pytest finds it by name); the redundant alias tells ruff the name is meant here.
from tests.browser import browser_page as browser_page
from tests.proxy_world import World, cli, proxy_world
from tests.receivers import Hit, Mailbox, WebhookReceiver, smtp_server, webhook_receiver

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
HELD_WINDOW = 60  # stripe.create-refund: the agent waits while the approver opens the email
SHORT_WINDOW = 1  # stripe.update-customer: answered at once, left pending (to expire, or to be "another")
PENDING_TTL = 45  # long enough to click a link, short enough to see an expiry within the test
LINK = re.compile(r"(http://\S+/approvals/#link=ail_apl_[A-Za-z0-9]+)")


@dataclass
class Setup:
    world: World
    receiver: WebhookReceiver
    mailbox: Mailbox
    secret: str  # as `aileron notify add --webhook` printed it
    bob: str  # an approver's personal token
    add_output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def approval(self, approval_id: str) -> dict[str, Any]:
        with self.world.api() as api:
            reply = api.get(f"/api/v1/orgs/{self.world.org_id}/approvals/{approval_id}/")
        assert reply.status_code == 200, reply.text
        found: dict[str, Any] = reply.json()
        return found

    def event(self, kind: str, charge_or_customer: str, timeout: float = 40.0) -> tuple[Hit, dict[str, Any]]:
        """The first webhook delivery of KIND for the approval whose arguments or path name CHARGE_OR_CUSTOMER."""

        def find(hits: list[Hit]) -> tuple[Hit, dict[str, Any]] | None:
            for hit in hits:
                payload = json.loads(hit.body)
                if payload["type"] != f"approval.{kind}":
                    continue  # another approval event, or a credential warning
                shown = payload["data"]["approval"]
                if payload["type"] == f"approval.{kind}" and (
                    shown["args"].get("charge") == charge_or_customer or shown["path"].endswith(charge_or_customer)
                ):
                    return hit, payload
            return None

        found: tuple[Hit, dict[str, Any]] = self.receiver.wait_for(find, timeout)
        return found

    def mail(self, to: str, subject_part: str, timeout: float = 40.0) -> EmailMessage:
        def find(messages: list[EmailMessage]) -> EmailMessage | None:
            return next((m for m in messages if m["To"] == to and subject_part in str(m["Subject"])), None)

        found: EmailMessage = self.mailbox.wait_for(find, timeout)
        return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with webhook_receiver() as receiver, smtp_server() as mailbox:
        env = {
            # The service and every CLI call run this checkout's code, whichever checkout the venv was made from.
            "PYTHONPATH": str(REPO),
            "AILERON_APPROVAL_TTL_SECONDS": str(PENDING_TTL),
            "AILERON_EMAIL_HOST": mailbox.host,
            "AILERON_EMAIL_PORT": str(mailbox.port),
            "AILERON_EMAIL_FROM": "aileron@acme.example",
        }
        with proxy_world(tmp_path_factory.mktemp("notifications"), extra_env=env) as world:
            with world.api() as api:
                invited = api.post(
                    f"/api/v1/orgs/{world.org_id}/invitations/", json={"email": "bob@example.com", "role": "approver"}
                )
                assert invited.status_code == 201, invited.text
                for action, window, four_eyes in [
                    ("stripe.create-refund", HELD_WINDOW, False),
                    ("stripe.update-customer", SHORT_WINDOW, True),
                ]:
                    made = api.post(
                        f"/api/v1/orgs/{world.org_id}/approval-rules/",
                        json={"action": action, "window_seconds": window, "four_eyes": four_eyes},
                    )
                    assert made.status_code == 201, made.text
            bob = httpx.post(
                f"{world.service.url}/api/v1/invitations/accept/", json={"token": invited.json()["token"]}, timeout=30
            )
            assert bob.status_code == 201, bob.text
            added = cli(world.service.env, "notify", "add", "hooks", "--webhook", receiver.url).stdout.decode()
            secret = added.split("verify X-Aileron-Signature with it): ")[1].split()[0]
            cli(world.service.env, "notify", "add", "mail", "--email", "bob@example.com")
            yield Setup(world, receiver, mailbox, secret, bob.json()["token"], added)


class HeldAgent:
    """An agent's HTTPS request through the proxy, waiting in a thread for a decision."""

    def __init__(self, world: World, path: str, form: dict[str, str]) -> None:
        self.result: dict[str, Any] = {}

        def send() -> None:
            with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=90) as client:
                reply = client.post(f"https://api.stripe.com{path}", data=form)
                self.result["status"], self.result["body"] = reply.status_code, reply.json()

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def answer(self, timeout: float = 60.0) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent is still waiting"
        return self.result


def held_four_eyes(world: World, customer: str) -> str:
    with httpx.Client(proxy=world.proxy_url, verify=world.tls(), timeout=30) as agent:
        reply = agent.post(f"https://api.stripe.com/v1/customers/{customer}", data={"email": "n@example.com"})
    assert reply.status_code == 403 and reply.json()["type"] == "urn:aileron:problem:approval-pending", reply.text
    approval_id: str = reply.json()["approval_id"]
    return approval_id


def test_a_held_refund_reaches_webhook_and_email_and_the_link_grants_it_once_in_chromium(
    browser_page: Page, setup: Setup
) -> None:
    from playwright.sync_api import expect

    world, page = setup.world, browser_page
    mark = len(world.upstream.received)
    agent = HeldAgent(world, "/v1/refunds", {"charge": "ch_notify_1", "amount": "4200"})

    # The webhook: signed with the secret the CLI printed, recently, over exactly these bytes.
    hit, payload = setup.event("created", "ch_notify_1")
    approval_id = payload["data"]["approval"]["id"]
    stamp, _, mac = hit.headers["x-aileron-signature"].partition(",v1=")
    assert stamp.startswith("t=") and abs(time.time() - int(stamp[2:])) < 120
    expected = hmac.new(setup.secret.encode(), stamp[2:].encode() + b"." + hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected), "the signature must verify with the secret `notify add` printed"
    assert hit.headers["x-aileron-event"] == "approval.created" and hit.headers["x-aileron-delivery"]
    shown = payload["data"]["approval"]
    assert (shown["action"], shown["requester_email"]) == ("stripe.create-refund", "alice@example.com")
    assert shown["args"] == {"charge": "ch_notify_1", "amount": "4200"}
    assert world.canaries["stripe"].decode() not in hit.body.decode(), "no credential in a notification"

    # The email: to the approver, with a link that is theirs.
    email = setup.mail("bob@example.com", "Approval needed: stripe.create-refund")
    text = email.get_content()
    assert "ch_notify_1" in text and "alice@example.com" in text and "as bob@example.com" in text
    link = LINK.search(text)
    assert link, text
    token = link.group(1).split("#link=")[1]
    assert world.received_since(mark) == [], "nothing may reach upstream before the grant"
    other_id = held_four_eyes(world, "cus_notify_other")  # another held approval the link must not touch

    # The link signs the page in for that one decision: the card is there, the secret leaves the address bar.
    page.goto(link.group(1))
    card = page.locator(f'#pending .card[data-approval-id="{approval_id}"]')
    expect(card).to_be_visible(timeout=20_000)
    assert "#link=" not in page.url
    expect(page.locator("#org-name")).to_contain_text("deciding as bob@example.com")
    expect(page.locator(f'#pending .card[data-approval-id="{other_id}"]')).to_have_count(0)
    card.locator("button.grant").click()

    answer = agent.answer()
    assert answer["status"] == 201, answer  # the fake upstream's answer to a POST
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/refunds")]
    assert got[0].headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    decided = setup.approval(approval_id)
    assert decided["state"] == "granted"
    assert [(d["approver"], d["decision"]) for d in decided["decisions"]] == [("bob@example.com", "grant")]
    expect(page.locator(f'#recent .card[data-approval-id="{approval_id}"]')).to_have_attribute("data-state", "granted")
    expect(page.locator("#notice")).to_contain_text("used up")
    _, told = setup.event("decided", "ch_notify_1")
    assert told["data"]["approval"]["state"] == "granted" and told["link"] is None

    # The same link decides nothing more: not twice, not another approval, and it is no API token.
    base = world.service.url
    again = httpx.post(
        f"{base}/api/v1/approval-links/decide/",
        json={"token": token, "approval_id": approval_id, "decision": "reject", "reason": "twice"},
        timeout=30,
    )
    assert again.status_code == 403 and again.headers["content-type"] == "application/problem+json", again.text
    other = httpx.post(
        f"{base}/api/v1/approval-links/decide/",
        json={"token": token, "approval_id": other_id, "decision": "grant"},
        timeout=30,
    )
    assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json", other.text
    bearer = httpx.get(
        f"{base}/api/v1/orgs/{world.org_id}/approvals/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert bearer.status_code == 401
    assert setup.approval(other_id)["state"] == "pending"
    assert setup.approval(approval_id)["decisions"] == decided["decisions"]

    # Opened again (a new tab), the page shows what happened and offers no decision.
    again_page = page.context.new_page()
    again_page.goto(link.group(1))
    expect(again_page.locator("#notice")).to_contain_text("This link has been used")
    settled = again_page.locator(f'#recent .card[data-approval-id="{approval_id}"]')
    expect(settled).to_have_attribute("data-state", "granted")
    expect(again_page.locator("button.grant")).to_have_count(0)
    assert len(world.received_since(mark)) == 1, "the refund went upstream exactly once"


def test_rejections_and_expiries_are_sent_too(setup: Setup) -> None:
    world = setup.world
    agent = HeldAgent(world, "/v1/refunds", {"charge": "ch_notify_2", "amount": "999999"})
    _, created = setup.event("created", "ch_notify_2")
    with httpx.Client(base_url=world.service.url, headers={"Authorization": f"Bearer {setup.bob}"}) as bob:
        rejected = bob.post(
            f"/api/v1/orgs/{world.org_id}/approvals/{created['data']['approval']['id']}/reject/",
            json={"reason": "refund larger than the charge"},
        )
        assert rejected.status_code == 200, rejected.text
    assert agent.answer()["status"] == 403
    _, told = setup.event("decided", "ch_notify_2")
    assert told["data"]["approval"]["state"] == "rejected"
    assert told["data"]["approval"]["decisions"][0]["reason"] == "refund larger than the charge"
    email = setup.mail("bob@example.com", "Rejected: stripe.create-refund")
    assert "refund larger than the charge" in email.get_content() and "#link=" not in email.get_content()

    # Undecided: Celery beat expires it in the worker, and the worker sends the expiry.
    late = held_four_eyes(world, "cus_notify_late")
    _, expired = setup.event("expired", "cus_notify_late", timeout=PENDING_TTL + 60)
    assert expired["data"]["approval"]["id"] == late and expired["data"]["approval"]["state"] == "expired"
    setup.mail("bob@example.com", "Expired: stripe.update-customer")
    listed = json.loads(cli(world.service.env, "notify", "list", "--json").stdout)
    assert {c["name"]: c["last_status"] for c in listed} == {"hooks": "ok", "mail": "ok"}
