"""The approvals web page's shell: served to anyone, carrying no data, locked down by its headers."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser

import pytest
from django.test import Client

from conftest import Cast


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def test_the_page_runs_only_this_site_s_scripts_with_no_inline_code() -> None:
    response = Client().get("/approvals/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    csp = directives(response["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://testserver"]
    assert csp["frame-ancestors"] == ["'none'"]
    page = parse(response.content.decode())
    scripts = page.all("script")
    assert scripts and all((s.get("src") or "").startswith("/static/approvals/") for s in scripts)
    assert page.inline == []
    assert not any("style" in attrs or any(k.startswith("on") for k in attrs) for _, attrs in page.tags)


def test_the_page_may_not_be_cached_framed_or_leak_a_referrer() -> None:
    response = Client().get("/approvals/")
    assert response["Cache-Control"] == "no-store"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "no-referrer"


def test_over_https_the_websocket_must_be_wss() -> None:
    response = Client().get("/approvals/", secure=True)
    assert directives(response["Content-Security-Policy"])["connect-src"] == ["'self'", "wss://testserver"]


def test_it_fits_a_phone_screen() -> None:
    page = parse(Client().get("/approvals/").content.decode())
    viewports = [m for m in page.all("meta") if m.get("name") == "viewport"]
    assert viewports and "width=device-width" in (viewports[0]["content"] or "")


def test_the_organization_page_names_the_id_and_nothing_of_the_organization(cast: Cast) -> None:
    org = cast.alice.org
    response = Client().get(f"/approvals/{org.pk}/")
    assert response.status_code == 200
    body = parse(response.content.decode()).all("body")[0]
    assert body["data-org"] == str(org.pk)
    assert org.name not in response.content.decode()
    # Who may decide comes from the permission matrix, so the page hides buttons a member could not use.
    assert set((body["data-decide-roles"] or "").split()) == {"owner", "admin", "approver"}


def test_an_unknown_organization_gets_the_same_shell() -> None:
    shell = Client().get(f"/approvals/{uuid.uuid4()}/")
    assert shell.status_code == 200
    assert Client().get("/approvals/not-a-uuid/").status_code == 404


def test_a_token_sent_to_the_server_is_not_reflected() -> None:
    token = "ail_pat_" + "A" * 44
    response = Client().get(f"/approvals/?token={token}")
    assert token not in response.content.decode()


def test_it_only_answers_reads() -> None:
    assert Client().post("/approvals/").status_code == 405


@pytest.mark.parametrize(
    ("path", "kind"), [("approvals/approvals.js", "javascript"), ("approvals/approvals.css", "text/css")]
)
def test_its_script_and_styles_are_served_by_the_site(path: str, kind: str) -> None:
    response = Client().get(f"/static/{path}")
    assert response.status_code == 200
    assert kind in response["Content-Type"]
    assert b"".join(response.streaming_content if response.streaming else [response.content])  # type: ignore[attr-defined]
