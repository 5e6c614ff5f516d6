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

from tests.docker_engine import base_image as base_image
from tests.docker_engine import docker_client as docker_client
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


# The same agent for the sandboxes, in bash and curl (both in the base image; netns sees this host's).
AGENT_SH = r"""
echo "agent: pretending to answer the prompt myself"
printf 'g\r\ng\r\n'
printf 'g\r\n' > /dev/tty
curl -sS -o /dev/null -w 'REFUND-DONE %{http_code}\n' -X POST https://api.stripe.com/v1/refunds \
  -d charge=ch_box -d amount=77
IFS= read -r line
echo "AGENT-GOT [$line]"
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
            made = api.post(
                f"/api/v1/orgs/{w.org_id}/approval-rules/",
                json={"action": "stripe.update-customer", "window_seconds": 90, "four_eyes": True},
            )
            assert made.status_code == 201, made.text
        yield w


class Tmux:
    """A tmux server of its own (-L): a shared server would run new sessions with its own, older environment."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.base = ["tmux", "-L", name]

    def start(self, command: str, env: dict[str, str]) -> None:
        subprocess.run(
            [*self.base, "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", command],
            env=env,
            check=True,
        )

    def screen(self) -> str:
        result = subprocess.run(
            [*self.base, "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name], capture_output=True, text=True
        )
        return result.stdout + (f"\n[tmux: {result.stderr.strip()}]" if result.returncode else "")

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def approvals(world: World) -> list[dict[str, Any]]:
    with world.api() as api:
        return list(api.get(f"/api/v1/orgs/{world.org_id}/approvals/", params={"state": "all"}).json()["results"])


def test_the_approval_prompt_appears_in_the_launching_terminal_and_only_the_users_key_decides_it(
    world: World, tmp_path: Path
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT, encoding="utf-8")
    run_in_tmux(world, tmp_path, "none", [sys.executable, str(agent)], charge="ch_pty")


FOUR_EYES_AGENT = r"""
import os, sys, threading, httpx
def ask():
    with httpx.Client(proxy=os.environ["HTTPS_PROXY"], verify=os.environ["SSL_CERT_FILE"], timeout=120) as client:
        reply = client.post("https://api.stripe.com/v1/customers/cus_4eyes", data={"name": "Four Eyes"})
    print(f"UPDATE-DONE {reply.status_code} {reply.json().get('type', '')}", flush=True)
asking = threading.Thread(target=ask)
asking.start()
line = sys.stdin.readline().strip()
print(f"AGENT-GOT [{line}]", flush=True)
asking.join()
"""


def test_no_grant_is_offered_to_the_requester_of_a_four_eyes_action_and_keys_stay_the_agents(
    world: World, tmp_path: Path
) -> None:
    """Alice may not approve her own agent's four-eyes request: the terminal says who will instead of offering
    [g]rant, and what she types still reaches the agent."""
    agent = tmp_path / "agent.py"
    agent.write_text(FOUR_EYES_AGENT, encoding="utf-8")
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "xterm"}
    launch = shlex.join([str(BIN / "aileron"), "launch", "--sandbox", "none", "--", sys.executable, str(agent)])
    tmux = Tmux(f"aileron-pty-4eyes-{int(time.time() * 1000)}")
    tmux.start(f"cd {shlex.quote(str(tmp_path))}; {launch}; sleep 120", env)
    try:
        screen = tmux.wait_for("You cannot decide it", timeout=90)
        assert "four eyes: someone other than you must decide it" in screen and "[g]rant" not in screen, screen
        tmux.keys("g", "Enter")
        tmux.wait_for("AGENT-GOT [g]")
        [held] = [a for a in approvals(world) if a["action"] == "stripe.update-customer" and a["state"] == "pending"]
        with world.api() as api:
            cancelled = api.post(f"/api/v1/orgs/{world.org_id}/approvals/{held['id']}/cancel/")
            assert cancelled.status_code == 200, cancelled.text
        tmux.wait_for("UPDATE-DONE 4")
    finally:
        tmux.kill()
    assert not [a for a in approvals(world) if a["action"] == "stripe.update-customer" and a["decisions"]]


@pytest.mark.parametrize("sandbox", ["docker", "netns"])
def test_inside_a_sandbox_the_prompt_is_the_launchers_too(
    world: World, tmp_path: Path, sandbox: str, request: pytest.FixtureRequest
) -> None:
    if sandbox == "docker":
        request.getfixturevalue("base_image")
    elif shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap): the netns sandbox needs it")
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o755)
    (project / "agent.sh").write_text(AGENT_SH, encoding="utf-8")
    (project / "agent.sh").chmod(0o755)
    run_in_tmux(
        world,
        project,
        sandbox,
        ["bash", "/workspace/agent.sh"],  # the project is the sandbox's /workspace
        charge="ch_box",
    )


def run_in_tmux(world: World, folder: Path, sandbox: str, command: list[str], *, charge: str) -> None:
    done = folder / "exit-code"
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "xterm"}
    launch = shlex.join(
        [
            str(BIN / "aileron"),
            "launch",
            "--sandbox",
            sandbox,
            "--dir",
            str(folder),
            "--name",
            f"pty-{sandbox}",
            "--",
            *command,
        ]
    )
    tmux = Tmux(f"aileron-pty-{sandbox}-{int(time.time() * 1000)}")
    mark = len(world.upstream.received)
    tmux.start(f"cd {shlex.quote(str(folder))}; {launch}; echo $? > {shlex.quote(str(done))}; sleep 120", env)
    try:
        screen = tmux.wait_for("waiting for approval", timeout=90)
        assert "stripe.create-refund" in screen and f'"charge": "{charge}"' in screen
        # The agent printed "g" and wrote it to its terminal: nothing was decided by that.
        time.sleep(1.0)
        held = [a for a in approvals(world) if a["args"].get("charge") == charge and a["state"] != "granted"]
        assert [a["state"] for a in held] == ["pending"]
        assert world.received_since(mark) == []
        info = subprocess.run([str(BIN / "aileron"), "session", "info", "--json"], env=env, capture_output=True)
        live = json.loads(info.stdout)
        assert [(s["session_id"], s["sandbox"]) for s in live] == [(held[0]["session_id"], sandbox)]

        tmux.keys("g")  # the user's key press, read by aileron
        tmux.wait_for("REFUND-DONE 201")
        tmux.keys("hello", "Enter")  # after the prompt, keys reach the agent again
        screen = tmux.wait_for("AGENT-GOT [")
        assert "AGENT-GOT [hello]" in screen, "the deciding key must never have reached the agent"
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "0", tmux.screen()
    finally:
        tmux.kill()
    got = world.received_since(mark)
    assert [(r.method, r.path) for r in got] == [("POST", "/v1/refunds")]
    assert got[0].headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    final = next(a for a in approvals(world) if a["args"].get("charge") == charge and a["state"] == "granted")
    assert [d["approver"] for d in final["decisions"]] == ["alice@example.com"]
    assert final["requester_email"] == "alice@example.com" and json.dumps(final).count(charge) >= 1


def test_the_projects_mcp_servers_and_the_hint_reach_the_sandboxed_agent(world: World, tmp_path: Path) -> None:
    """devcontainer.json's customizations.aileron.mcps land at $AILERON_MCP_CONFIG; session info sees the run."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap): the netns sandbox needs it")
    project = tmp_path / "project"
    (project / ".devcontainer").mkdir(parents=True)
    project.chmod(0o755)
    (project / ".devcontainer" / "devcontainer.json").write_text(
        '{ // a project with an MCP server\n "customizations": {"aileron": {"mcps": ['
        '{"name": "notes", "command": "notes-mcp", "args": ["--stdio"]}]}},\n}\n',
        encoding="utf-8",
    )
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}"}
    script = 'cat "$AILERON_MCP_CONFIG"; head -c 40 "$AILERON_HINT_FILE"; echo; aileron session info --json || true'
    result = subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "netns", "--dir", str(project), "--", "bash", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    config = json.loads(out[out.index("{") : out.index("\n}") + 2])
    assert config == {"mcpServers": {"notes": {"args": ["--stdio"], "command": "notes-mcp", "env": {}}}}
    assert "Aileron connects you to" in out


def test_claude_gets_the_hint_and_the_mcp_servers_on_its_command_line() -> None:
    from aileron_cli.launch import agent_argv

    argv = agent_argv(["claude", "fix the flaky test"], hint_file="/etc/aileron/hint.txt", mcp_config="/m.json")
    assert argv[:2] == ["bash", "-c"] and argv[3:] == ["claude", "fix the flaky test"]
    assert '--append-system-prompt "$(cat /etc/aileron/hint.txt)" --mcp-config /m.json "$@"' in argv[2]
    assert agent_argv(["./agent.sh", "x"], hint_file="/h") == ["./agent.sh", "x"]
