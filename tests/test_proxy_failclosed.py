"""Fail closed: with the control plane unreachable the data plane refuses credentialed requests and injects
nothing; the audit records it spools meanwhile reach the control plane once it is back.

A second data plane runs standalone (`aileron dataplane`, its own home, key channel and service token, as on
another machine in the v4.x split) and reaches the control plane through a relay this test can cut.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy_world import World, proxy_world, session_ca
from tests.service import BIN, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


class Relay:
    """A TCP relay in front of the control plane that can refuse connections (the control plane is 'down')."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self.loop = asyncio.new_event_loop()
        self.open: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up.is_set():
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.open -= {writer, up_writer}

    def cut(self) -> None:
        """Refuse new connections and drop the open ones (keep-alive included)."""
        self.up.clear()

        def close_all() -> None:
            for writer in list(self.open):
                writer.close()

        self.loop.call_soon_threadsafe(close_all)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result(
            timeout=10
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("failclosed")) as w:
        yield w


def test_control_plane_down_refuses_credentialed_requests_and_spooled_audit_arrives_later(
    world: World, tmp_path: Path
) -> None:
    svc = world.service
    relay = Relay(svc.port)
    relay.start()
    minted = subprocess.run(
        [sys.executable, "manage.py", "aileron_service_token", "--name", "standalone data plane", "--json"],
        env=svc.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert minted.returncode == 0, minted.stderr
    token_file = tmp_path / "service-token"
    token_file.write_text(json.loads(minted.stdout)["token"])
    home = tmp_path / "dp-home"
    home.mkdir(mode=0o700)
    shutil.copy(svc.home / "cli.json", home / "cli.json")
    proxy_port = free_port()
    env = {**svc.env, "AILERON_HOME": str(home)}
    log = (tmp_path / "dataplane.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "aileron"),
            "dataplane",
            "--port",
            str(proxy_port),
            "--api",
            f"http://127.0.0.1:{relay.port}",
            "--service-token-file",
            str(token_file),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "run" / "credentials.sock").exists():
            assert process.poll() is None, (tmp_path / "dataplane.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dataplane.log").read_text()
            time.sleep(0.1)
        started = subprocess.run(
            [str(BIN / "aileron"), "session", "start", "--json", "--name", "overnight"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr.decode()
        token = json.loads(started.stdout)["token"]
        ca = tmp_path / "ca.pem"
        ca.write_bytes(session_ca(proxy_port, token))
        proxy = f"http://aileron:{token}@127.0.0.1:{proxy_port}"
        tls = ssl.create_default_context(cafile=str(ca))
        mark = len(world.upstream.received)
        with httpx.Client(proxy=proxy, verify=tls) as client:
            ok = client.get("https://api.github.com/repos/acme/up")
            assert ok.status_code == 200, ok.text
            assert world.upstream.received[-1].headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"

            relay.cut()  # the control plane is now unreachable for the data plane
            time.sleep(1.5)  # past AILERON_SESSION_CACHE_SECONDS=1
            down = [client.get(f"https://api.github.com/repos/acme/down-{i}") for i in range(3)]
        for reply in down:
            assert reply.status_code == 503, reply.text
            assert reply.json()["type"] == "urn:aileron:problem:control-plane-unavailable"
        assert [r.path for r in world.received_since(mark)] == ["/repos/acme/up"]  # nothing else went out
        spool = home / "dataplane" / "audit-spool"

        def spooled() -> bytes:
            return b"".join(p.read_bytes() for p in spool.glob("*.jsonl"))

        # A refusal's record is written by the spool's writer thread (group commit), a moment after the answer.
        deadline = time.monotonic() + 10
        while spooled().count(b"control-plane-unavailable") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spooled().count(b"control-plane-unavailable") == 3

        relay.up.set()  # back: the spooled records are shipped
        refused = world.audit_wait(
            lambda rs: sum(1 for r in rs if r["problem_type"] == "control-plane-unavailable") == 3,
            timeout=60,
        )
        paths = sorted(r["path"] for r in refused if r["problem_type"] == "control-plane-unavailable")
        assert paths == ["/repos/acme/down-0", "/repos/acme/down-1", "/repos/acme/down-2"]
        assert all(r["agent"] == "overnight" for r in refused if r["problem_type"] == "control-plane-unavailable")
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        print((tmp_path / "dataplane.log").read_text())  # pytest shows it when the test fails
