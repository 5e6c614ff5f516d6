"""The real agent CLIs, launched by `aileron launch` in the docker sandbox, against fake LLM upstreams.

The fake model answers the agent's first request with a tool call that runs `github create-issue` (and a search
for any credential) in the sandbox's shell, and its second, which carries the tool's output, with a final text.
The GitHub upstream must get the credential the proxy injected, the LLM upstream its own, the agent print the
final answer, and the audit show both calls of the session; nothing inside the sandbox may hold a credential.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_engine import agents_image as agents_image
from tests.docker_engine import docker_available
from tests.docker_engine import docker_client as docker_client
from tests.fake_upstream import Received, Reply
from tests.proxy_world import World, proxy_world
from tests.service import BIN

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(docker_available() is not None, reason=str(docker_available())),
]

FINAL_ANSWER = "Filed octo/hello's issue through Aileron."
# The tool call's shell command: the issue, then a search of the sandbox for any credential (the pattern split so
# that the command line itself cannot match), its matches counted on a line the test reads back.
TOOL_COMMAND = (
    "github create-issue --repo octo/hello --title 'From a real agent' --body 'made inside'; "
    'echo "ISSUE-EXIT $?"; p="cana""ry-"; '
    "found=$(grep -raohE --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
    '-e "$p[a-z]+-[0-9a-f]{24}" -e "Aileron conn""ects" / /proc/[0-9]*/environ 2>/dev/null); '
    'echo "CREDENTIALS-FOUND $(printf "%s\\n" "$found" | grep -c "$p")"; '
    'echo "HINT-FOUND $(printf "%s\\n" "$found" | grep -c Aileron)"'
)


def _sse(events: list[dict[str, Any]]) -> Reply:
    chunks = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]
    return Reply(200, {"Content-Type": "text/event-stream"}, chunks)


def _message(content_events: list[dict[str, Any]], stop_reason: str, model: str) -> Reply:
    start: dict[str, Any] = {
        "type": "message_start",
        "message": {
            "id": f"msg_{time.monotonic_ns()}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 120, "output_tokens": 1},
        },
    }
    end: list[dict[str, Any]] = [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]
    return _sse([start, *content_events, *end])


def tool_results(body: dict[str, Any]) -> list[str]:
    """The text of every tool_result block the agent sent back."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    texts += [str(part.get("text", "")) for part in inner if isinstance(part, dict)]
                else:
                    texts.append(str(inner))
    return texts


def claude_model(received: Received) -> Reply | None:
    """Anthropic's Messages API as Claude Code drives it: a Bash tool call first, then the final answer."""
    if not received.path.startswith("/v1/messages"):
        return None
    try:
        body = json.loads(received.body or b"{}")
    except ValueError:
        return None
    if not body.get("stream"):
        return None
    model = str(body.get("model", "claude-sonnet-4-5"))
    if tool_results(body):
        text = {"type": "text", "text": ""}
        return _message(
            [
                {"type": "content_block_start", "index": 0, "content_block": text},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": FINAL_ANSWER}},
                {"type": "content_block_stop", "index": 0},
            ],
            "end_turn",
            model,
        )
    if not any(isinstance(t, dict) and t.get("name") == "Bash" for t in body.get("tools", [])):
        return None  # a side request (a title, a summary): the default reply
    call = {"type": "tool_use", "id": "toolu_01aileron", "name": "Bash", "input": {}}
    arguments = json.dumps({"command": TOOL_COMMAND, "description": "File the issue"})
    return _message(
        [
            {"type": "content_block_start", "index": 0, "content_block": call},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            },
            {"type": "content_block_stop", "index": 0},
        ],
        "tool_use",
        model,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("agents")) as w:
        w.upstream.responders.insert(0, claude_model)
        yield w


def project_folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o777)  # writable by the agent, whoever runs the test
    return project


def launch(world: World, project: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "dumb"}
    return subprocess.run(
        [str(BIN / "aileron"), "launch", "--sandbox", "docker", "--dir", str(project), "--", *command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def session_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.split("aileron: session ", 1)[1].split()[0]


def test_claude_code_files_an_issue_through_aileron_and_holds_no_credential(
    world: World, agents_image: str, tmp_path: Path
) -> None:
    mark = len(world.upstream.received)
    # A model the price table knows (Claude Code 2.1.332's default, claude-opus-5-5, has no price there yet).
    prompt = ("claude", "--model", "claude-sonnet-4-5", "-p", "File an issue in octo/hello")
    result = launch(world, project_folder(tmp_path), *prompt)
    output = result.stdout.replace("\r\n", "\n")
    assert result.returncode == 0, result.stderr + output
    assert FINAL_ANSWER in output

    received = world.received_since(mark)
    calls = [r for r in received if r.method == "POST" and r.path.startswith("/v1/messages")]
    assert calls, [r.path for r in received]
    anthropic_key = world.canaries["anthropic"].decode()
    assert all(r.headers.get("x-api-key") == anthropic_key for r in calls)  # the proxy's, not the placeholder
    answered = [text for r in calls for text in tool_results(json.loads(r.body))]
    assert any("ISSUE-EXIT 0" in text for text in answered), answered
    assert any("CREDENTIALS-FOUND 0" in text for text in answered), answered  # none in files or environments
    assert not any("HINT-FOUND 0" in text for text in answered), answered  # the search did read the files
    [issue] = [r for r in received if r.method == "POST" and r.path == "/repos/octo/hello/issues"]
    assert issue.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    assert json.loads(issue.body) == {"title": "From a real agent", "body": "made inside"}

    session_id = session_of(result)
    records = world.audit_wait(
        lambda rs: (
            any(r["session_id"] == session_id and r["action"] == "github.create-issue" for r in rs)
            and any(r["session_id"] == session_id and r["action"].startswith("anthropic.") and r["usage"] for r in rs)
        )
    )
    mine = [r for r in records if r["session_id"] == session_id]
    [filed] = [r for r in mine if r["action"] == "github.create-issue"]
    assert filed["upstream_status"] == 201
    llm = [r for r in mine if r["action"].startswith("anthropic.") and r["usage"]]
    assert len(llm) >= 2  # the tool call, then the answer
    assert all(r["usage"]["input_tokens"] == 120 and r["usage"]["cost_usd"] > 0 for r in llm), llm
    for name, canary in world.canaries.items():
        assert canary.decode() not in output + result.stderr, f"the {name} credential reached the terminal"
