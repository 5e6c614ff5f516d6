"""Headless Chromium for browser tests: Debian's chromium driven by Playwright, never a downloaded browser.

A test module takes a fixture by importing it under its own name, which also keeps ruff from calling it unused
(`from tests.browser import browser_page as browser_page`).
Without chromium or the playwright package the tests skip and say why; in CI (AILERON_NO_SKIPS=1) that skip
fails the run, so `.ci/run` installs chromium.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM_MISSING = "Chromium is not installed (apt-get install chromium): browser tests need it"
PLAYWRIGHT_MISSING = "Playwright is not installed (pip install -c constraints.txt -e '.[dev]'): browser tests need it"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
PHONE_VIEWPORT = {"width": 390, "height": 844}
# Long enough for a slow CI machine, short enough that a missing element fails the test long before
# pytest-timeout would.
ACTION_TIMEOUT_MS = 10_000
# Playwright already passes most of these; they are spelled out because the suite must not depend on, or
# make, any connection beyond the machine. Debian's launcher adds its own flags (e.g. --disable-pings).
# No GPU on these machines either.
QUIET_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-pings",
    "--disable-gpu",
]
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def chromium_path() -> Path | None:
    """AILERON_CHROMIUM if set (a missing file there means missing: no silent fallback), else chromium on PATH."""
    explicit = os.environ.get("AILERON_CHROMIUM")
    if explicit:
        candidates = [Path(explicit)]
    else:
        found = shutil.which("chromium")
        candidates = [Path(found)] if found else []
        candidates.append(DEBIAN_CHROMIUM)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _block_non_local(route: Route) -> None:
    """A page may load from this machine only: a test that needs a CDN would pass here and fail offline."""
    if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
        route.fallback()
    else:
        route.abort("blockedbyclient")


@contextmanager
def _chromium() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        explicit = os.environ.get("AILERON_CHROMIUM")
        pytest.skip(
            f"{CHROMIUM_MISSING} (AILERON_CHROMIUM={explicit} is not an executable file)"
            if explicit
            else CHROMIUM_MISSING
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(PLAYWRIGHT_MISSING)
    # Chromium's sandbox cannot start as root. Playwright turns the sandbox off unless asked, so ask for it
    # whenever we are not root.
    as_root = os.geteuid() == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            headless=True,
            chromium_sandbox=not as_root,
            args=[*QUIET_ARGS, *(["--no-sandbox"] if as_root else [])],
        )
        try:
            yield browser
        finally:
            browser.close()


def _close_django_connections() -> None:
    """Close the connections Django opened while Playwright's loop ran: left open, PostgreSQL refuses to drop
    the test database at the end of the session ("being accessed by other users")."""
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


@contextmanager
def _page(**context_options: Any) -> Iterator[Page]:
    # Playwright's sync API keeps its asyncio loop running in this thread while the test runs. Django then
    # sees "an async context": it refuses ORM calls (SynchronousOnlyOperation, lifted here because the test
    # really is synchronous) and asgiref hands the test a second connection, which cannot see, and on SQLite
    # waits for, the transaction of a plain `django_db` test. Browser tests that use the database therefore
    # take `django_db(transaction=True)`, as `live_server` needs anyway.
    with pytest.MonkeyPatch.context() as patch, _chromium() as browser:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        context = browser.new_context(**context_options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.route("**/*", _block_non_local)
        try:
            yield context.new_page()
        finally:
            context.close()
            _close_django_connections()


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A fresh page in headless Chromium with a desktop-sized viewport."""
    with _page() as page:
        yield page


@pytest.fixture
def phone_page() -> Iterator[Page]:
    """A fresh page in headless Chromium sized and behaving like a phone (390x844, touch)."""
    with _page(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True) as page:
        yield page
