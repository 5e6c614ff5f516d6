"""The approvals web page in real headless Chromium, against a real service with the proxy in front of a fake
Stripe: an agent's held request appears on the page without a reload, a click on Grant releases it upstream
with the injected credential, and the API, the page and the morning view agree about what happened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

# Imported as fixtures (pytest finds them by name); the redundant aliases tell ruff the names are meant here.
from tests.browser import browser_page as browser_page
from tests.browser import phone_page as phone_page
from tests.proxy_world import World, proxy_world

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HELD_WINDOW = 60  # stripe.create-refund: the agent waits while the approver clicks
FOUR_EYES_WINDOW = 1  # stripe.update-customer: the agent is answered at once, the approval stays pending


@dataclass
class People:
    world: World
    bob: str  # an approver in Alice's organization (Alice's PAT is world.pat; her agent makes the requests)

    def page_url(self, token: str) -> str:
        return f"{self.world.service.url}/approvals/#token={token}&org={self.world.org_id}"

    def approval(self, approval_id: str) -> dict[str, Any]:
        with self.world.api() as api:
            reply = api.get(f"/api/v1/orgs/{self.world.org_id}/approvals/{approval_id}/")
        assert reply.status_code == 200, reply.text
        found: dict[str, Any] = reply.json()
        return found


@dataclass
class HeldAgent:
    """An agent's HTTPS request through the proxy, waiting in a thread for the approver."""

    world: World
    path: str
    form: dict[str, str]
    result: dict[str, Any] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def start(self) -> HeldAgent:
        def send() -> None:
            with httpx.Client(proxy=self.world.proxy_url, verify=self.world.tls(), timeout=90) as client:
                reply = client.post(f"https://api.stripe.com{self.path}", data=self.form)
                self.result["status"], self.result["body"] = reply.status_code, reply.json()

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()
        return self

    def answer(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent is still waiting"
        return self.result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("approvals-browser")) as w:
        yield w


@pytest.fixture(scope="module")
def people(world: World) -> People:
    with world.api() as api:
        invited = api.post(
            f"/api/v1/orgs/{world.org_id}/invitations/", json={"email": "bob@example.com", "role": "approver"}
        )
        assert invited.status_code == 201, invited.text
        for action, window, four_eyes in [
            ("stripe.create-refund", HELD_WINDOW, False),
            ("stripe.update-customer", FOUR_EYES_WINDOW, True),
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
    return People(world, bob.json()["token"])


def signed_in(page: Page, people: People, token: str) -> None:
    """Open the page as `aileron approval open` prints it, and wait for the live connection."""
    from playwright.sync_api import expect

    page.goto(people.page_url(token))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # The token left the address bar (and so the history) as soon as the page read it.
    assert page.url == f"{people.world.service.url}/approvals/{people.world.org_id}/"


def pending_card(page: Page, text: str) -> Locator:
    return page.locator("#pending .card", has_text=text)


def held_four_eyes(people: People, customer: str) -> str:
    """Alice's agent changes a customer (four eyes, a 1 s window): answered approval-pending, left pending."""
    with httpx.Client(proxy=people.world.proxy_url, verify=people.world.tls(), timeout=30) as agent:
        reply = agent.post(f"https://api.stripe.com/v1/customers/{customer}", data={"email": "new@example.com"})
    assert reply.status_code == 403, reply.text
    assert reply.json()["type"] == "urn:aileron:problem:approval-pending"
    approval_id: str = reply.json()["approval_id"]
    return approval_id


def test_a_held_request_appears_without_a_reload_and_grant_releases_it_upstream(
    browser_page: Page, people: People
) -> None:
    from playwright.sync_api import expect

    page, world = browser_page, people.world
    signed_in(page, people, people.bob)
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    mark = len(world.upstream.received)

    agent = HeldAgent(world, "/v1/refunds", {"charge": "ch_browser_1", "amount": "4200"}).start()
    card = pending_card(page, "ch_browser_1")
    expect(card).to_be_visible(timeout=20_000)
    assert page.evaluate("window.sameDocument") is True, "the row must arrive over the websocket, not a reload"
    expect(card.locator(".action")).to_have_text("stripe.create-refund")
    expect(card.locator(".requester")).to_have_text("alice@example.com")
    expect(card.locator(".args")).to_contain_text("4200")
    expect(card.locator(".age")).to_contain_text("ago")
    assert world.received_since(mark) == [], "nothing may reach upstream before the grant"
    approval_id = card.get_attribute("data-approval-id")
    assert approval_id

    card.locator("button.grant").click()

    answer = agent.answer()
    assert answer["status"] == 201, answer  # the fake upstream's answer to a POST
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/refunds")]
    assert got[0].headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    approval = people.approval(approval_id)
    assert approval["state"] == "granted"
    assert [(d["approver"], d["decision"]) for d in approval["decisions"]] == [("bob@example.com", "grant")]
    expect(pending_card(page, "ch_browser_1")).to_have_count(0)
    settled = page.locator(f'#recent .card[data-approval-id="{approval_id}"]')
    expect(settled).to_have_attribute("data-state", "granted")
    expect(settled).to_contain_text("granted by bob@example.com")
    expect(settled.locator(".outcome")).to_contain_text("Used", timeout=20_000)


def test_a_rejection_needs_a_reason_and_the_agent_is_told_it(browser_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page, world = browser_page, people.world
    signed_in(page, people, people.bob)
    mark = len(world.upstream.received)
    agent = HeldAgent(world, "/v1/refunds", {"charge": "ch_browser_2", "amount": "999999"}).start()
    card = pending_card(page, "ch_browser_2")
    expect(card).to_be_visible(timeout=20_000)

    card.locator("button.reject").click()
    expect(card.locator(".error")).to_contain_text("needs a reason")
    assert agent.thread is not None and agent.thread.is_alive(), "an empty reason decides nothing"

    card.locator("input.reason").fill("refund larger than the charge")
    card.locator("button.reject").click()

    answer = agent.answer()
    assert answer["status"] == 403
    assert answer["body"]["type"] == "urn:aileron:problem:approval-rejected"
    assert answer["body"]["reason"] == "refund larger than the charge"
    assert world.received_since(mark) == []
    expect(page.locator("#recent .card", has_text="stripe.create-refund").first).to_have_attribute(
        "data-state", "rejected"
    )


def test_the_api_s_refusal_is_shown_four_eyes_and_another_approver_then_grants(
    browser_page: Page, people: People
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    approval_id = held_four_eyes(people, "cus_browser_4")
    signed_in(page, people, people.world.pat)  # Alice: her own agent asked
    card = page.locator(f'#pending .card[data-approval-id="{approval_id}"]')
    expect(card).to_be_visible()
    expect(card).to_contain_text("your agent's request, so someone else must decide it")

    card.locator("button.grant").click()
    expect(card.locator(".error")).to_have_text("Four eyes: someone other than the requester must decide this action.")
    assert people.approval(approval_id)["state"] == "pending"

    # Bob grants it through the API: Alice's open page follows without a reload.
    with httpx.Client(base_url=people.world.service.url, headers={"Authorization": f"Bearer {people.bob}"}) as bob:
        granted = bob.post(f"/api/v1/orgs/{people.world.org_id}/approvals/{approval_id}/grant/", json={})
        assert granted.status_code == 200, granted.text
    expect(card).to_have_count(0)
    expect(page.locator(f'#recent .card[data-approval-id="{approval_id}"]')).to_have_attribute("data-state", "granted")


def test_an_agent_s_markup_is_shown_as_text_never_run(browser_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page = browser_page
    signed_in(page, people, people.bob)
    markup = '<img src=x onerror="window.pwned=1">'
    agent = HeldAgent(people.world, "/v1/refunds", {"charge": markup, "amount": "1"}).start()
    card = pending_card(page, markup)
    expect(card).to_be_visible(timeout=20_000)
    assert card.locator("img").count() == 0
    assert page.evaluate("window.pwned") is None
    card.locator("input.reason").fill("test over")
    card.locator("button.reject").click()
    assert agent.answer()["status"] == 403


def test_the_morning_view_sorts_the_night_by_outcome(browser_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page = browser_page
    # What the other tests left: a completed refund (ch_browser_1), a rejected one, a four-eyes customer
    # change; and one more held now that nobody decides.
    held_four_eyes(people, "cus_browser_left")
    signed_in(page, people, people.bob)
    page.locator("#tab-history").click()
    history = page.locator("#history")
    pending = history.locator('[data-group="pending"]')
    expect(pending).to_contain_text("stripe.update-customer")
    rejected = history.locator('[data-group="rejected"]')
    expect(rejected).to_contain_text("rejected by bob@example.com: refund larger than the charge")
    completed = history.locator('[data-group="completed"]')
    expect(completed).to_contain_text("charge=ch_browser_1")
    expect(completed).to_contain_text("upstream answered 201", timeout=20_000)


def test_on_a_phone_the_pending_approval_and_its_grant_button_fit_the_screen(phone_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page = phone_page
    approval_id = held_four_eyes(people, "cus_browser_phone")
    signed_in(page, people, people.bob)
    card = page.locator(f'#pending .card[data-approval-id="{approval_id}"]')
    expect(card).to_be_visible()
    grant = card.locator("button.grant")
    expect(grant).to_be_visible()
    width = page.viewport_size["width"] if page.viewport_size else 0
    box = grant.bounding_box()
    assert box is not None
    assert 0 <= box["x"] and box["x"] + box["width"] <= width
    assert box["height"] >= 44, "big enough to tap"
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scrolling"


def test_without_a_token_the_page_asks_for_one_and_refuses_an_agent_s(browser_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page, world = browser_page, people.world
    page.goto(f"{world.service.url}/approvals/")
    expect(page.locator("#signin")).to_be_visible()
    page.locator("#token-input").fill(world.token)  # the agent's session token
    page.locator("#signin-form button").click()
    expect(page.locator("#notice")).to_contain_text("personal token")

    page.locator("#token-input").fill(people.bob)
    page.locator("#signin-form button").click()
    # Bob belongs to one organization: the page goes straight to it.
    expect(page).to_have_url(f"{world.service.url}/approvals/{world.org_id}/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def test_after_a_dropped_connection_the_page_reconnects_and_the_snapshot_resyncs(
    browser_page: Page, people: People
) -> None:
    from playwright.sync_api import WebSocketRoute, expect

    page = browser_page
    sockets: list[WebSocketRoute] = []
    cut = threading.Event()

    def relay(socket: WebSocketRoute) -> None:
        if cut.is_set():
            socket.close(code=1012)  # the server is "restarting": the page must back off and retry
            return
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(lambda url: "/ws/orgs/" in url, relay)
    signed_in(page, people, people.bob)
    cut.set()
    sockets[-1].close(code=1012)
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline")

    # Held while the page has no connection: no event can reach it, only the next snapshot.
    approval_id = held_four_eyes(people, "cus_browser_offline")
    cut.clear()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=40_000)
    expect(page.locator(f'#pending .card[data-approval-id="{approval_id}"]')).to_be_visible()


def test_a_token_revoked_while_the_page_is_open_signs_the_page_out(browser_page: Page, people: People) -> None:
    from playwright.sync_api import expect

    page, base = browser_page, people.world.service.url
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {people.bob}"}, timeout=30) as bob:
        made = bob.post("/api/v1/tokens/", json={"name": "web approvals"})
        assert made.status_code == 201, made.text
        signed_in(page, people, made.json()["token"])
        assert bob.delete(f"/api/v1/tokens/{made.json()['id']}/").status_code == 204

    held_four_eyes(people, "cus_browser_revoked")  # the next event finds the token dead: the server closes 4401
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("expired or revoked")
    assert page.evaluate("sessionStorage.length") == 0, "the dead token is forgotten"
