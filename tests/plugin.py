"""Loaded with `-p tests.plugin` before Django starts: keeps the suite away from the user's ~/.aileron."""

import os
import tempfile

import pytest

os.environ.setdefault("AILERON_HOME", tempfile.mkdtemp(prefix="aileron-test-home-"))
os.environ.pop("AILERON_MODE", None)


def redis_index(*, service: bool) -> int | None:
    """The Redis database of this test process (`service=False`) or of the services it starts (True), or None
    to keep REDIS_URL's own. Workers of one run (pytest-xdist) each get their own pair, so no channel group, queue
    or flush of one reaches another: worker n uses 2n and 2n + 1 (13, 14 and 15 stay for the rest of .ci/run)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.removeprefix("gw").isdigit():
        return 14 if service else None
    return 2 * int(worker.removeprefix("gw")) + int(service)


if os.environ.get("REDIS_URL") and (index := redis_index(service=False)) is not None:
    from urllib.parse import urlsplit, urlunsplit

    os.environ["REDIS_URL"] = urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path=f"/{index}"))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (AILERON_NO_SKIPS=1) every component is installed, so a skipped test is a failure."""
    if _skipped and os.environ.get("AILERON_NO_SKIPS") == "1":
        print(f"\nAILERON_NO_SKIPS=1 but {len(_skipped)} test(s) were skipped: " + ", ".join(_skipped[:10]))
        session.exitstatus = 1
