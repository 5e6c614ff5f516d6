"""The real agent CLIs, launched by `aileron launch` in the docker sandbox, against fake LLM upstreams.

The fake model answers the agent's first request with a tool call that runs `github create-issue` (and a search
for any credential) in the sandbox's shell, and its second, which carries the tool's output, with a final text.
The GitHub upstream must get the credential the proxy injected, the LLM upstream its own, the agent print the
final answer, and the audit show both calls of the session; nothing inside the sandbox may hold a credential.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    "grep -raohE --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
    '-e "$p[a-z]+-[0-9a-f]{24}" -e "Aileron conn""ects" / /proc/[0-9]*/environ 2>/dev/null | '
    'awk -v p="$p" \'index($0, p) {c++} /Aileron/ {h++} '
    'END {print "CREDENTIALS-FOUND " c+0; print "HINT-FOUND " h+0}\''
)  # no command substitution: Gemini CLI refuses to run one


# The held action: a Stripe refund, which the organization's approval rule holds until the user grants it. Each
# agent asks for its own charge (`ch_<agent>_held`, in the prompt), so each run needs its own grant.
REFUND_CHARGE = re.compile(r"ch_[a-z]+_held")


def refund_command(conversation: Any) -> str | None:
    """The refund the prompt asks for, as the shell command the fake model answers with; None for any other."""
    found = REFUND_CHARGE.search(json.dumps(conversation))
    if found is None:
        return None
    return (
        "curl -sS -o /dev/null -w 'REFUND-DONE %{http_code}\\n' -X POST https://api.stripe.com/v1/refunds "
        f"-d charge={found.group()} -d amount=500"
    )


def _sse(events: list[dict[str, Any]]) -> Reply:
    chunks = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]
    return Reply(200, {"Content-Type": "text/event-stream"}, chunks)


def anthropic_reply(content_events: list[dict[str, Any]], stop_reason: str, model: str) -> Reply:
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
        return anthropic_reply(
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
    command = refund_command(body.get("messages", [])) or TOOL_COMMAND
    arguments = json.dumps({"command": command, "description": "Do what the user asked"})
    return anthropic_reply(
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


def codex_outputs(body: dict[str, Any]) -> list[str]:
    """The output of every tool call Codex sent back (Responses API input items)."""
    items = body.get("input")
    outputs = [i.get("output") for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    return [o if isinstance(o, str) else json.dumps(o) for o in outputs if o is not None]


def responses_reply(item: dict[str, Any], model: str) -> Reply:
    usage = {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 150,
    }
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "model": model, "output": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {**response, "status": "completed", "output": [item], "usage": usage},
        },
    ]
    return _sse(events)


CODEX_SHELL_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "exec_command": lambda command: {"cmd": command},
    "shell_command": lambda command: {"command": command},
    "shell": lambda command: {"command": ["bash", "-lc", command]},
}


def codex_model(received: Received) -> Reply | None:
    """OpenAI's Responses API as Codex drives it: a shell tool call first, then the final answer."""
    if received.method != "POST" or not received.path.startswith("/v1/responses"):
        return None
    try:
        body = json.loads(received.body or b"{}")
    except ValueError:
        return None
    model = str(body.get("model", "gpt-4.1"))
    if codex_outputs(body):
        text = {"type": "output_text", "text": FINAL_ANSWER, "annotations": []}
        item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [text]}
        return responses_reply(item, model)
    names = [str(t.get("name")) for t in body.get("tools", []) if isinstance(t, dict)]
    tool = next((n for n in CODEX_SHELL_TOOLS if n in names), None)
    if tool is None:
        return Reply(
            400,
            {"Content-Type": "application/json"},
            [json.dumps({"error": {"message": f"no shell in {names}"}}).encode()],
        )
    arguments = json.dumps(CODEX_SHELL_TOOLS[tool](refund_command(body.get("input", [])) or TOOL_COMMAND))
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": tool,
        "arguments": arguments,
        "status": "completed",
    }
    return responses_reply(call, model)


def gemini_outputs(body: dict[str, Any]) -> list[str]:
    """Every functionResponse Gemini CLI sent back, as JSON text."""
    parts = [
        p for c in body.get("contents", []) if isinstance(c, dict) for p in c.get("parts", []) if isinstance(p, dict)
    ]
    return [json.dumps(p["functionResponse"]) for p in parts if "functionResponse" in p]


def gemini_model(received: Received) -> Reply | None:
    """Gemini's streamGenerateContent as Gemini CLI drives it: a run_shell_command call, then the final answer."""
    if ":streamGenerateContent" not in received.path:
        return None
    try:
        body = json.loads(received.body or b"{}")
    except ValueError:
        return None
    declared = [
        str(f.get("name"))
        for t in body.get("tools", [])
        if isinstance(t, dict)
        for f in t.get("functionDeclarations", [])
    ]
    if gemini_outputs(body):
        part: dict[str, Any] = {"text": FINAL_ANSWER}
    elif "run_shell_command" in declared:
        part = {
            "functionCall": {
                "name": "run_shell_command",
                "args": {
                    "command": refund_command(body.get("contents", [])) or TOOL_COMMAND,
                    "description": "Do what the user asked",
                },
            }
        }
    else:
        return None  # a side request (routing, a summary): the default reply
    return gemini_reply(part)


def gemini_reply(part: dict[str, Any]) -> Reply:
    event = {
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 150},
        "modelVersion": "gemini-2.5-flash",
    }
    return Reply(200, {"Content-Type": "text/event-stream"}, [f"data: {json.dumps(event)}\r\n\r\n".encode()])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("agents")) as w:
        w.upstream.responders[:0] = [claude_model, codex_model, gemini_model]
        with w.api() as api:
            made = api.post(
                f"/api/v1/orgs/{w.org_id}/approval-rules/",
                json={"action": "stripe.create-refund", "window_seconds": 90},
            )
            assert made.status_code == 201, made.text
        yield w


# The project's MCP server (devcontainer.json customizations.aileron.mcps): one tool, `ping`, over stdio.
NOTES_MCP = """\
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    method, result = message.get("method"), None
    if method == "initialize":
        version = message.get("params", {}).get("protocolVersion", "2025-06-18")
        info = {"name": "notes", "version": "1"}
        result = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
    elif method == "tools/list":
        schema = {"type": "object", "properties": {}}
        result = {"tools": [{"name": "ping", "description": "Ping the notes.", "inputSchema": schema}]}
    reply = {"jsonrpc": "2.0", "id": message["id"]}
    reply.update({"result": result} if result is not None else {"error": {"code": -32601, "message": method}})
    print(json.dumps(reply), flush=True)
"""


def project_folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / ".devcontainer").mkdir(parents=True)
    project.chmod(0o777)  # writable by the agent, whoever runs the test
    (project / "notes_mcp.py").write_text(NOTES_MCP, encoding="utf-8")
    mcp = {"name": "notes", "command": "python3", "args": ["/workspace/notes_mcp.py"]}
    devcontainer = {"customizations": {"aileron": {"mcps": [mcp]}}}
    (project / ".devcontainer" / "devcontainer.json").write_text(json.dumps(devcontainer), encoding="utf-8")
    return project


def tool_names(body: dict[str, Any]) -> list[str]:
    """The tools an LLM request offers the model (Anthropic and OpenAI `tools`, Gemini functionDeclarations)."""
    names = []
    for tool in body.get("tools", []):
        if isinstance(tool, dict):
            names += [str(tool["name"])] if "name" in tool else []
            names += [str(f.get("name")) for f in tool.get("functionDeclarations", []) if isinstance(f, dict)]
    return names


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


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    is_llm_call: Callable[[Received], bool]
    credential_header: tuple[str, str]  # (header, connector): what the LLM upstream must get
    outputs: Callable[[dict[str, Any]], list[str]]  # the tool outputs in a request body
    provider: str


PROMPT = "File an issue in octo/hello"
# Claude Code runs on its own default model (claude-opus-5-5 in 2.1.332), which only the genai-prices catalog
# prices; Codex and Gemini CLI are pinned to models every price source knows.
CASES = {
    "claude": Case(
        ("claude", "-p", PROMPT),
        lambda r: r.method == "POST" and r.path.startswith("/v1/messages"),
        ("x-api-key", "anthropic"),
        tool_results,
        "anthropic",
    ),
    "codex": Case(
        ("codex", "exec", "-m", "gpt-4.1", PROMPT),
        lambda r: r.method == "POST" and r.path.startswith("/v1/responses"),
        ("authorization", "openai"),
        codex_outputs,
        "openai",
    ),
    "gemini": Case(
        ("gemini", "-m", "gemini-2.5-flash", "-y", "-p", PROMPT),
        lambda r: ":streamGenerateContent" in r.path,
        ("x-goog-api-key", "gemini"),
        gemini_outputs,
        "gemini",
    ),
}


@pytest.mark.parametrize("agent", list(CASES))
def test_the_real_agent_files_an_issue_through_aileron_and_holds_no_credential(
    world: World, agents_image: str, tmp_path: Path, agent: str
) -> None:
    case = CASES[agent]
    mark = len(world.upstream.received)
    result = launch(world, project_folder(tmp_path), *case.argv)
    output = result.stdout.replace("\r\n", "\n")
    received = world.received_since(mark)
    seen = [f"{r.method} {r.path}" for r in received]
    assert result.returncode == 0, (result.stderr + output)[-4000:] + str(seen)
    assert FINAL_ANSWER in output, output[-4000:]

    calls = [r for r in received if case.is_llm_call(r)]
    assert calls, seen
    header, connector = case.credential_header
    canary = world.canaries[connector].decode()
    for call in calls:  # the proxy's credential, not the placeholder
        assert call.headers.get(header) in (canary, f"Bearer {canary}"), (header, call.headers.get(header))
    first = json.loads(calls[0].body)
    assert "Aileron connects you to" in calls[0].body.decode(), "the hint is not in the agent's instructions"
    # The project's MCP server's tool is offered: Claude Code lists it deferred (mcp__notes__ping), Codex in an
    # mcp__notes namespace, Gemini CLI as a function declaration named after the server.
    offered = calls[0].body.decode().replace('": "', '":"')
    names = tool_names(first)
    assert "mcp__notes__ping" in offered or '"name":"ping"' in offered or any(n.endswith("_ping") for n in names), names
    answered = [text for r in calls for text in case.outputs(json.loads(r.body))]
    assert any("ISSUE-EXIT 0" in text for text in answered), answered
    assert any("CREDENTIALS-FOUND 0" in text for text in answered), answered  # none in files or environments
    assert not any("HINT-FOUND 0" in text for text in answered), answered  # the search did read the files
    [issue] = [r for r in received if r.method == "POST" and r.path == "/repos/octo/hello/issues"]
    assert issue.headers["authorization"] == f"Bearer {world.canaries['github'].decode()}"
    assert json.loads(issue.body) == {"title": "From a real agent", "body": "made inside"}

    session_id = session_of(result)

    def llm_records(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in rs
            if r["session_id"] == session_id and r["usage"] and r["action"].startswith(f"{case.provider}.")
        ]

    records = world.audit_wait(
        lambda rs: (
            any(r["session_id"] == session_id and r["action"] == "github.create-issue" for r in rs)
            and len(llm_records(rs)) >= 2  # the tool call, then the answer
        )
    )
    [filed] = [r for r in records if r["session_id"] == session_id and r["action"] == "github.create-issue"]
    assert filed["upstream_status"] == 201
    assert all(r["usage"]["input_tokens"] == 120 and r["usage"]["cost_usd"] > 0 for r in llm_records(records))
    if agent == "claude":  # its own default model, which only the price catalog knows
        assert {r["usage"]["model"] for r in llm_records(records)} == {"claude-opus-5-5"}
    for name, secret in world.canaries.items():
        assert secret.decode() not in output + result.stderr, f"the {name} credential reached the terminal"


@pytest.mark.parametrize("agent", list(CASES))
def test_the_agents_held_refund_is_granted_in_the_launching_terminal_and_the_agent_carries_on(
    world: World, agents_image: str, tmp_path: Path, agent: str
) -> None:
    """The real agent's tool call asks for a refund; `aileron launch` shows the held request in its terminal
    (tmux), the user's key grants it, the refund goes out with the injected key, and the agent finishes."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the terminal test drives aileron launch in it")
    from tests.test_launch_pty import Tmux, approvals

    project = project_folder(tmp_path)
    done = tmp_path / "exit-code"
    env = {**world.service.env, "AILERON_PROXY": f"127.0.0.1:{world.service.proxy_port}", "TERM": "xterm"}
    argv = [str(BIN / "aileron"), "launch", "--sandbox", "docker", "--dir", str(project), "--"]
    case, charge = CASES[agent], f"ch_{agent}_held"
    argv += [*case.argv[:-1], f"Refund charge {charge}"]  # the case's own way to run it, with this prompt
    tmux = Tmux(f"aileron-{agent}-held-{int(time.time() * 1000)}")
    mark = len(world.upstream.received)
    tmux.start(f"{shlex.join(argv)}; echo $? > {shlex.quote(str(done))}; sleep 120", env)
    try:
        screen = tmux.wait_for("waiting for approval", timeout=180)
        assert "stripe.create-refund" in screen and charge in screen
        assert not [r for r in world.received_since(mark) if r.path.startswith("/v1/refunds")]  # held
        tmux.keys("g")  # the user's key press, read by aileron
        tmux.wait_for(FINAL_ANSWER, timeout=120)
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0", tmux.screen()
    finally:
        tmux.kill()
    received = world.received_since(mark)
    [refund] = [r for r in received if r.method == "POST" and r.path == "/v1/refunds"]
    assert refund.headers["authorization"] == f"Bearer {world.canaries['stripe'].decode()}"
    assert refund.body.startswith(f"charge={charge}&".encode()), refund.body
    calls = [r for r in received if case.is_llm_call(r)]
    assert any("REFUND-DONE 201" in text for r in calls for text in case.outputs(json.loads(r.body)))
    granted = next(a for a in approvals(world) if a["args"].get("charge") == charge)
    assert granted["state"] == "granted"
    assert [d["approver"] for d in granted["decisions"]] == ["alice@example.com"]
