"""The browser tests' Chromium really runs: it loads a page from a local server and runs its JavaScript."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

# Imported as a fixture (pytest finds it by name); the redundant alias tells ruff the name is meant to be here.
from tests.browser import browser_page as browser_page

if TYPE_CHECKING:
    from playwright.sync_api import Page

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
  <p id="status">waiting</p>
  <button id="go" onclick="document.getElementById('status').textContent = 'clicked ' + (6 * 7)">Go</button>
</body></html>
"""


class OnePage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OnePage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(30)
def test_a_click_runs_the_pages_javascript(browser_page: Page, page_url: str) -> None:
    from playwright.sync_api import expect  # here, not at the top: without playwright the fixture skips

    browser_page.goto(page_url)
    expect(browser_page.locator("#status")).to_have_text("waiting")

    browser_page.click("#go")

    # 6 * 7 is computed by the page, so the text can only come from JavaScript that ran.
    expect(browser_page.locator("#status")).to_have_text("clicked 42")
