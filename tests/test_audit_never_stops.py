"""The audit never silently stops: a full spool disk, a killed data plane and refusals outside a session.

Each case runs a standalone data plane (`aileron dataplane`, its own home and service token, reaching the
control plane through a relay this test can cut) beside a real `aileron service`, and asserts what the agent
got, what the upstream received and what the control plane's audit holds.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import Received, Reply
from tests.proxy_world import World, cli, proxy_world, session_ca
from tests.service import BIN, free_port
from tests.test_proxy_failclosed import Relay

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]
HANG = threading.Event()


def _hang(received: Received) -> Reply | None:
    if received.path.startswith("/repos/acme/hang"):
        HANG.wait(60)
        return Reply(200, {"content-type": "application/json"}, [b"{}"])
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("audit-never-stops")) as w:
        w.upstream.responders.insert(0, _hang)
        yield w


class DataPlane:
    """A standalone data plane process; start, kill -9 and start again on the same home."""

    def __init__(self, world: World, folder: Path, relay: Relay) -> None:
        self.world = world
        self.folder = folder
        self.relay = relay
        self.port = free_port()
        self.home = folder / "dp-home"
        self.home.mkdir(mode=0o700)
        shutil.copy(world.service.home / "cli.json", self.home / "cli.json")
        minted = subprocess.run(
            [sys.executable, "manage.py", "aileron_service_token", "--name", f"dp {folder.name}", "--json"],
            env=world.service.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert minted.returncode == 0, minted.stderr
        self.token_file = folder / "service-token"
        self.token_file.write_text(json.loads(minted.stdout)["token"])
        self.env = {**world.service.env, "AILERON_HOME": str(self.home)}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "dataplane.log"

    @property
    def spool(self) -> Path:
        return self.home / "dataplane" / "audit-spool"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "aileron"),
                    "dataplane",
                    "--port",
                    str(self.port),
                    "--api",
                    f"http://127.0.0.1:{self.relay.port}",
                    "--service-token-file",
                    str(self.token_file),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            with suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if (self.home / "run" / "credentials.sock").exists():
                    return
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)
        with suppress(FileNotFoundError):
            (self.home / "run" / "credentials.sock").unlink()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def session(self, name: str) -> tuple[str, str, Path]:
        """A new agent session unlocked on this data plane: its token, id, and the CA its client trusts."""
        started = cli(self.env, "session", "start", "--json", "--name", name)
        body = json.loads(started.stdout)
        ca = self.folder / f"{name}-ca.pem"
        ca.write_bytes(session_ca(self.port, body["token"]))
        return body["token"], body["session_id"], ca

    def client(self, token: str, ca: Path, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            proxy=f"http://aileron:{token}@127.0.0.1:{self.port}",
            verify=ssl.create_default_context(cafile=str(ca)),
            trust_env=False,
            **kwargs,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        with httpx.Client(proxy=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=10) as client:
            response = client.get(
                "http://aileron.proxy/healthz",
                headers={"Authorization": f"Bearer {self.token_file.read_text().strip()}"},
            )
        return response.status_code, response.json()

    def health_without_token(self) -> tuple[int, dict[str, Any]]:
        with httpx.Client(proxy=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=10) as client:
            response = client.get("http://aileron.proxy/healthz", headers={"Authorization": "Bearer wrong"})
        return response.status_code, response.json()

    def status(self) -> dict[str, Any]:
        done = subprocess.run(
            [str(BIN / "aileron"), "status", "--json"],
            env={**self.env, "AILERON_PROXY": f"127.0.0.1:{self.port}"},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        report: dict[str, Any] = json.loads(done.stdout)
        return report


@pytest.fixture
def dataplane(world: World, tmp_path: Path) -> Iterator[DataPlane]:
    relay = Relay(world.service.port)
    relay.start()
    plane = DataPlane(world, tmp_path, relay)
    try:
        yield plane
    finally:
        plane.stop()
        print(plane.log.read_text() if plane.log.exists() else "")  # pytest shows it when the test fails


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def by_path(records: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [r for r in records if r["path"] == path]


def test_a_full_spool_disk_stops_every_request_and_the_audit_catches_up_without_a_restart(
    world: World, dataplane: DataPlane
) -> None:
    dataplane.spool.mkdir(parents=True, mode=0o700)
    mounted = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(dataplane.spool)],  # noqa: S607
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("a real full disk needs root to mount a small filesystem")
    try:
        dataplane.start()
        token, session_id, ca = dataplane.session("disk")
        mark = len(world.upstream.received)
        with dataplane.client(token, ca, timeout=30) as client:
            assert client.get("https://api.github.com/repos/acme/before").status_code == 200
            world.audit_wait(lambda rs: len(by_path(rs, "/repos/acme/before")) == 1)

            filler = dataplane.spool / "filler"
            with filler.open("wb", buffering=0) as handle, suppress(OSError):
                while True:
                    handle.write(b"x" * 4096)
            with filler.open("ab", buffering=0) as handle, suppress(OSError):
                while True:
                    handle.write(b"x")
            # The last page of the open segment may still take a record or two; then the disk refuses.
            answers = [client.get(f"https://api.github.com/repos/acme/full-{i}") for i in range(40)]
            refused = [a for a in answers if a.status_code == 503]
            assert refused, [a.status_code for a in answers]
            assert refused[0].json()["type"] == "urn:aileron:problem:audit-unavailable"
            assert all(a.status_code == 503 for a in answers[answers.index(refused[0]) :])
            egress = client.get("https://docs.example.com/during-outage")
            assert egress.status_code == 503, egress.text
            assert egress.json()["type"] == "urn:aileron:problem:audit-unavailable"
            assert "/during-outage" not in [r.path for r in world.received_since(mark)]

            code, health = dataplane.health()
            assert code == 503
            assert health["audit"]["status"] == "degraded"
            assert "No space left on device" in json.dumps(health)
            # an agent reaching the proxy learns the status, not the report behind it
            assert dataplane.health_without_token() == (503, {"status": "degraded", "audit": {"status": "degraded"}})
            status = dataplane.status()["dataplane"]["health"]
            assert status["audit"]["status"] == "degraded"

            filler.unlink()  # space is back; the data plane is not restarted
            assert client.get("https://api.github.com/repos/acme/after").status_code == 200
            assert client.get("https://docs.example.com/after-outage").status_code == 200

        forwarded = {r.path for r in world.received_since(mark)}
        records = world.audit_wait(
            lambda rs: all(
                by_path(rs, p) for p in ("/repos/acme/after", "/after-outage", "/during-outage", *forwarded)
            ),
            timeout=60,
        )
        # Every request that reached the upstream has its allowed attempt; every refusal is there too.
        for path in forwarded:
            assert [r["decision"] for r in by_path(records, path)] == ["allow"], path
        assert [r["problem_type"] for r in by_path(records, "/during-outage")] == ["audit-unavailable"]
        refused_paths = {f"/repos/acme/full-{i}" for i, a in enumerate(answers) if a.status_code == 503}
        for path in refused_paths:
            assert [r["problem_type"] for r in by_path(records, path)] == ["audit-unavailable"], path
        assert all(r["session_id"] == session_id for r in records if r["path"] in refused_paths)
        wait_until(lambda: dataplane.health()[0] == 200)
        assert dataplane.health()[1]["audit"]["queued_records"] == 0
    finally:
        dataplane.stop()
        subprocess.run(["umount", "-l", str(dataplane.spool)], check=False)  # noqa: S603, S607


def test_a_request_cut_by_kill_9_is_marked_unknown_once_the_data_plane_is_back(
    world: World, dataplane: DataPlane
) -> None:
    dataplane.start()
    token, _, ca = dataplane.session("killed")
    HANG.clear()
    errors: list[BaseException] = []

    def hanging() -> None:
        try:
            with dataplane.client(token, ca, timeout=60) as client:
                client.get("https://api.github.com/repos/acme/hang-1")
        except BaseException as exc:  # noqa: BLE001 - the proxy dies under it: any error is expected
            errors.append(exc)

    thread = threading.Thread(target=hanging, daemon=True)
    thread.start()
    try:
        open_attempt = world.audit_wait(lambda rs: len(by_path(rs, "/repos/acme/hang-1")) == 1)
        [record] = by_path(open_attempt, "/repos/acme/hang-1")
        assert record["decision"] == "allow" and record["outcome"] == "" and record["upstream_status"] is None
        dataplane.kill9()
    finally:
        HANG.set()
    thread.join(timeout=30)
    assert errors, "the agent's request cannot have completed through a killed proxy"

    dataplane.start()
    records = world.audit_wait(lambda rs: [r["outcome"] for r in by_path(rs, "/repos/acme/hang-1")] == ["unknown"])
    [record] = by_path(records, "/repos/acme/hang-1")
    assert record["upstream_status"] is None and record["completed_at"] is not None
    # A request of the new run (a new session: keys are unlocked per process) completes and stays completed.
    token, _, ca = dataplane.session("after-restart")
    with dataplane.client(token, ca, timeout=30) as client:
        assert client.get("https://api.github.com/repos/acme/after-restart").status_code == 200
    records = world.audit_wait(
        lambda rs: [r["outcome"] for r in by_path(rs, "/repos/acme/after-restart")] == ["completed"]
    )
    assert [r["outcome"] for r in by_path(records, "/repos/acme/hang-1")] == ["unknown"]


def test_plain_http_and_connects_refused_while_the_control_plane_is_down_are_audited(
    world: World, dataplane: DataPlane
) -> None:
    dataplane.start()
    seen_token, seen_session, seen_ca = dataplane.session("seen")
    unseen_token = json.loads(cli(dataplane.env, "session", "start", "--json", "--name", "unseen").stdout)["token"]
    with dataplane.client(seen_token, seen_ca, timeout=30) as client:
        assert client.get("https://api.github.com/repos/acme/seen").status_code == 200
    mark = len(world.upstream.received)

    # Plain HTTP with the session's token: refused, attributed to the session.
    with httpx.Client(proxy=f"http://aileron:{seen_token}@127.0.0.1:{dataplane.port}", trust_env=False) as client:
        plain = client.get("http://plain.example.com/over-http?x=1")
    assert plain.status_code == 403 and plain.json()["type"] == "urn:aileron:problem:https-only"

    dataplane.relay.cut()
    time.sleep(1.5)  # past AILERON_SESSION_CACHE_SECONDS=1
    for token in (seen_token, unseen_token):
        with dataplane.client(token, seen_ca, timeout=30) as client, pytest.raises(httpx.ProxyError):
            client.get("https://api.github.com/repos/acme/while-down")
    dataplane.relay.up.set()
    assert world.received_since(mark) == []

    records = world.audit_wait(
        lambda rs: (
            len(by_path(rs, "/over-http")) == 1
            and len([r for r in rs if r["problem_type"] == "control-plane-unavailable" and r["method"] == "CONNECT"])
            == 2
        ),
        timeout=60,
    )
    [over_http] = by_path(records, "/over-http")
    assert (over_http["session_id"], over_http["agent"]) == (seen_session, "seen")
    assert over_http["host"] == "plain.example.com"
    assert (over_http["kind"], over_http["decision"], over_http["client_address"]) == ("refused", "deny", "127.0.0.1")
    connects = {
        r["agent"]: r for r in records if r["problem_type"] == "control-plane-unavailable" and r["method"] == "CONNECT"
    }
    assert set(connects) == {"seen", "unseen"}
    assert connects["seen"]["session_verified"] is True  # known from the data plane's cache
    assert connects["unseen"]["session_verified"] is False  # named only by its token's lookup part
    assert all(r["host"] == "api.github.com" and r["client_address"] == "127.0.0.1" for r in connects.values())
