"""Loaded with `-p tests.plugin` before Django starts: keeps the suite away from the user's ~/.aileron."""

import os
import tempfile

import pytest

os.environ.setdefault("AILERON_HOME", tempfile.mkdtemp(prefix="aileron-test-home-"))
os.environ.pop("AILERON_MODE", None)


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (AILERON_NO_SKIPS=1) every component is installed, so a skipped test is a failure."""
    if _skipped and os.environ.get("AILERON_NO_SKIPS") == "1":
        print(f"\nAILERON_NO_SKIPS=1 but {len(_skipped)} test(s) were skipped: " + ", ".join(_skipped[:10]))
        session.exitstatus = 1
