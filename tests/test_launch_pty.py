"""PTY-owned approvals: `aileron launch` driven in a real terminal (tmux).

The agent's held request is shown in the launching terminal; the key press that decides it goes to `aileron`,
never to the agent, and the agent cannot answer its own prompt by printing or typing.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_world import World, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AGENT = r"""
import os, sys, httpx
print("agent: pretending to answer the prompt myself", flush=True)
sys.stdout.write("g\r\ng\r\n"); sys.stdout.flush()
with open("/dev/tty", "w") as tty:
    tty.write("g\r\n")
with httpx.Client(proxy=os.environ["HTTPS_PROXY"], verify=os.environ["SSL_CERT_FILE"], timeout=120) as client:
    reply = client.post("https://api.stripe.com/v1/refunds", data={"charge": "ch_pty", "amount": "1234"})
print(f"REFUND-DONE {reply.status_code}", flush=True)
line = sys.stdin.readline().strip()
print(f"AGENT-GOT [{line}]", flush=True)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the terminal test drives aileron launch in it")
    with proxy_world(tmp_path_factory.mktemp("launch-pty")) as w:
        with w.api() as api:
            made = api.post(
                f"/api/v1/orgs/{w.org_id}/approval-rules/",
                json={"action": "stripe.create-refund", "window_seconds": 90},
            )
            assert made.status_code == 201, made.text
        yield w


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def start(self, command: str, env: dict[str, str]) -> None:
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", command],
            env=env,
            check=True,
        )

    def screen(self) -> str:
        result = subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name], capture_output=True, text=True
        )
        return result.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def approvals(world: World) -> list[dict[str, Any]]:
    with world.api() as api:
        return list(api.get(f"/api/v1/orgs/{world.org_id}/approvals/", params={"state": "all"}).json()["results"])


def test_the_approval_prompt_appears_in_the_launching_terminal_and_only_the_users_key_decides_it(
    world: World, tmp_path: Path
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT, encoding="utf-8")
    done = tmp_path / "exit-code"
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "xterm"}
    launch = shlex.join(
        [str(BIN / "aileron"), "launch", "--sandbox", "none", "--name", "pty-agent", "--", sys.executable, str(agent)]
    )
    tmux = Tmux(f"aileron-pty-{int(time.time() * 1000)}")
    mark = len(world.upstream.received)
    tmux.start(f"{launch}; echo $? > {shlex.quote(str(done))}; sleep 60", env)
    try:
        screen = tmux.wait_for("waiting for approval")
        assert "stripe.create-refund" in screen and '"charge": "ch_pty"' in screen
        # The agent printed "g" and wrote it to its terminal: nothing was decided by that.
        time.sleep(1.0)
        held = [a for a in approvals(world) if a["args"].get("charge") == "ch_pty"]
        assert [a["state"] for a in held] == ["pending"]
        assert world.received_since(mark) == []

        tmux.keys("g")  # the user's key press, read by aileron
        tmux.wait_for("REFUND-DONE 201")
        tmux.keys("hello", "Enter")  # after the prompt, keys reach the agent again
        screen = tmux.wait_for("AGENT-GOT [")
        assert "AGENT-GOT [hello]" in screen, "the deciding key must never have reached the agent"
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "0"
    finally:
        tmux.kill()
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/refunds")]
    assert got[0].headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    final = next(a for a in approvals(world) if a["args"].get("charge") == "ch_pty")
    assert final["state"] == "granted" and [d["approver"] for d in final["decisions"]] == ["alice@example.com"]
    assert json.dumps(final).count("ch_pty") >= 1
