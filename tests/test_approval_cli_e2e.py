"""`aileron approval` as a person runs it against a real `aileron service`: list, show, decide, watch, open.

Approvals are asked for the way the data plane asks: POST /api/v1/dataplane/approvals/ with the service token
the service wrote to AILERON_HOME/dataplane/service-token, for a live session token of Alice's.
"""

from __future__ import annotations

import hashlib
import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.service import BIN, Service, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@dataclass
class Alice:
    service: Service
    org_id: str
    pat: str
    session_id: str

    def aileron(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # As in a wide terminal: rich lays tables out for 80 columns in a pipe.
        return self.service.aileron(*args, env={"COLUMNS": "200", **(env or {})})

    def hold(self, *, action: str = "stripe.create-refund", **args: Any) -> dict[str, Any]:
        """What the data plane does when policy holds a request: ask for its approval."""
        args = args or {"charge": "ch_night_1", "amount": "4200"}
        body = json.dumps(args, sort_keys=True).encode()
        service_token = (self.service.home / "dataplane" / "service-token").read_text().strip()
        response = httpx.post(
            f"{self.service.url}/api/v1/dataplane/approvals/",
            headers={"Authorization": f"Bearer {service_token}"},
            json={
                "session_id": self.session_id,
                "request_id": str(uuid.uuid4()),
                "connector": action.split(".")[0],
                "action": action,
                "args": args,
                "method": "POST",
                "host": "api.stripe.com",
                "path": "/v1/refunds",
                "query": "",
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_bytes": len(body),
                "credential_id": str(uuid.uuid4()),
                "reason": "refunds need a human",
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        claim: dict[str, Any] = response.json()
        assert claim["state"] == "pending"
        return claim


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alice]:
    with running_service(tmp_path_factory.mktemp("approval-cli")) as service:
        init = service.aileron("init", "--org", "Acme", "--email", "alice@example.com", "--server", service.url)
        assert init.returncode == 0, init.stderr
        login = json.loads((service.home / "cli.json").read_text())
        session = httpx.post(
            f"{service.url}/api/v1/orgs/{login['organization_id']}/session-tokens/",
            headers={"Authorization": f"Bearer {login['token']}"},
            json={"name": "nightly agent"},
            timeout=30,
        )
        assert session.status_code == 201, session.text
        yield Alice(service, login["organization_id"], login["token"], session.json()["id"])


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aileron: "), stderr
    return lines[0]


def test_a_held_request_is_listed_shown_granted_once_and_in_the_morning_view(alice: Alice) -> None:
    approval_id = alice.hold()["id"]

    listed = alice.aileron("approval", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    pending = {a["id"]: a for a in json.loads(listed.stdout)}
    assert pending[approval_id]["state"] == "pending"
    assert pending[approval_id]["args"] == {"charge": "ch_night_1", "amount": "4200"}
    assert pending[approval_id]["agent"] == "nightly agent"

    shown = alice.aileron("approval", "show", approval_id)
    assert shown.returncode == 0, shown.stderr
    assert "POST https://api.stripe.com/v1/refunds" in shown.stdout
    assert pending[approval_id]["body_sha256"] in shown.stdout and "refunds need a human" in shown.stdout

    granted = alice.aileron("approval", "grant", approval_id[:8], "--reason", "expected refund")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.startswith(f"Granted {approval_id[:8]} (stripe.create-refund)")
    after = json.loads(alice.aileron("approval", "show", approval_id, "--json").stdout)
    assert after["state"] == "granted" and after["decision_reason"] == "expected refund"
    assert [(d["approver"], d["decision"]) for d in after["decisions"]] == [("alice@example.com", "grant")]

    again = alice.aileron("approval", "grant", approval_id)
    assert again.returncode == 1
    assert one_line(again.stderr) == "aileron: The approval is granted already. (409)"

    unexplained = alice.aileron("approval", "reject", approval_id)
    assert unexplained.returncode == 2
    assert "needs --reason" in one_line(unexplained.stderr)

    morning = alice.aileron("approval", "list", "--state", "all", "--since", "1h", "--json")
    assert morning.returncode == 0, morning.stderr
    assert {a["id"]: a["state"] for a in json.loads(morning.stdout)}[approval_id] == "granted"
    human = alice.aileron("approval", "list", "--state", "all", "--since", "1h")
    assert human.returncode == 0, human.stderr
    assert "granted, unused" in human.stdout
    assert "1 granted unused" in human.stdout.strip().splitlines()[-1]


def test_a_rejection_is_recorded_with_its_reason_and_shows_who_refused(alice: Alice) -> None:
    approval_id = alice.hold(amount="999999", charge="ch_big")["id"]

    rejected = alice.aileron("approval", "reject", approval_id, "--reason", "too large", "--json")

    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["state"] == "rejected"
    morning = alice.aileron("approval", "list", "--state", "rejected", "--since", "1h")
    assert "by alice@example.com: too large" in morning.stdout


class Lines:
    """A subprocess's stdout, line by line, with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)

    def next_matching(self, predicate: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                break
            message: dict[str, Any] = json.loads(line)
            if predicate(message):
                return message
        raise AssertionError(f"no matching line within {timeout}s")


def test_watch_json_receives_a_new_approval_within_seconds_and_stops_cleanly_on_ctrl_c(alice: Alice) -> None:
    waiting = alice.hold(charge="ch_before", amount="1")["id"]
    watch = subprocess.Popen(
        [str(BIN / "aileron"), "approval", "watch", "--json"],
        env=alice.service.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(watch)
        snapshot = lines.next_matching(lambda m: m["event"] == "snapshot", timeout=20)
        assert waiting in [a["id"] for a in snapshot["approvals"]]

        created_id = alice.hold(charge="ch_live", amount="2")["id"]
        created = lines.next_matching(lambda m: m["event"] == "created", timeout=5)
        assert created["approval"]["id"] == created_id
        assert created["approval"]["args"] == {"amount": "2", "charge": "ch_live"}

        assert alice.aileron("approval", "cancel", created_id).returncode == 0
        cancelled = lines.next_matching(lambda m: m["event"] == "cancelled", timeout=5)
        assert cancelled["approval"]["id"] == created_id and cancelled["approval"]["state"] == "cancelled"
    finally:
        watch.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            code = watch.wait(timeout=20)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert code == 0
    assert watch.stderr is not None and "Traceback" not in watch.stderr.read()


def test_watch_with_a_dead_token_ends_in_one_line_without_retrying(alice: Alice, tmp_path: Path) -> None:
    home = tmp_path / "mallory"
    home.mkdir()
    (home / "cli.json").write_text(
        json.dumps(
            {
                "server": alice.service.url,
                "token": "ail_pat_" + "x" * 40,
                "email": "mallory@example.com",
                "organization_id": alice.org_id,
            }
        )
    )

    started = time.monotonic()
    result = alice.aileron("approval", "watch", env={"AILERON_HOME": str(home)})

    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "aileron: the server refused your login token on the approvals feed (4401); log in again"
    )
    assert time.monotonic() - started < 20, "a refused token is not retried"


def test_open_prints_a_link_whose_token_is_a_fresh_one_day_personal_token(alice: Alice) -> None:
    opened = alice.aileron("approval", "open", "--json")

    assert opened.returncode == 0, opened.stderr
    link = json.loads(opened.stdout)
    prefix = f"{alice.service.url}/approvals/#token="
    assert link["url"].startswith(prefix) and link["url"].endswith(f"&org={alice.org_id}")
    token = link["url"][len(prefix) :].split("&", 1)[0]
    assert token != alice.pat
    who = httpx.get(f"{alice.service.url}/api/v1/whoami/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert who.status_code == 200
    assert who.json()["token_name"] == "web approvals" and who.json()["user"]["email"] == "alice@example.com"
    assert who.json()["expires_at"] == link["expires_at"]
