"""Every built-in connector, called the way its official clients and CLIs send the key, through the real proxy.

Each case sends the connector's placeholder exactly as a client does (header name and case, `Bearer` or bare,
HTTP Basic, query parameter, repeated) and asserts that the upstream got the injected credential once and the
placeholder nowhere, that the agent got the upstream's answer, and that an audit record was written.

What the clients send (checked against their sources): GitHub's REST docs `Authorization: Bearer`, `gh`, Octokit
and PyGithub `Authorization: token`, `curl -u user:token`; Stripe's docs `curl -u sk_...:`, its SDKs
`Authorization: Bearer`; OpenAI `Authorization: Bearer`; Anthropic's docs and Claude Code `x-api-key`, the Python
SDK 2.x `Authorization: Bearer` (also ANTHROPIC_AUTH_TOKEN); Gemini's docs, google-genai and Gemini CLI
`x-goog-api-key`, older REST docs `?key=`; Linear's docs and @linear/sdk `Authorization: <key>` (bare) or
`Authorization: Bearer <token>` (OAuth); Slack's docs, slack_sdk and @slack/web-api `Authorization: Bearer`,
legacy clients `?token=`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.package import Connector, load
from tests.fake_upstream import Received
from tests.proxy_world import CONNECTORS, World, proxy_world
from tests.service import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BUILTIN = Path(__file__).resolve().parents[1] / "connectors" / "builtin"
# Every header a credential rides in: the upstream must see exactly the one Aileron injects.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"})
# The environment variables `aileron launch` gives each connector's placeholder (runtime/sandbox/contract.py).
PLACEHOLDER_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "stripe": "STRIPE_API_KEY",
    "linear": "LINEAR_API_KEY",
    "slack": "SLACK_TOKEN",
    "github": "GH_TOKEN",
}


def builtin(name: str) -> Connector:
    return load(BUILTIN / name)


@dataclass(frozen=True)
class Call:
    """One request to a connector's host without its auth: what curl sends, what path the upstream must see,
    and how its audit record is recognised."""

    url: str
    args: tuple[str, ...]
    upstream_path: str
    audited: Callable[[dict[str, Any]], bool]


def call(connector: str, marker: str) -> Call:
    """A request that names `marker` somewhere the audit record keeps (path or a non-sensitive argument)."""
    if connector == "github":
        path = f"/repos/acme/{marker}"
        return Call(f"https://api.github.com{path}", (), path, lambda r: r["path"] == path)
    if connector == "stripe":
        path = f"/v1/customers/cus_{marker}"
        return Call(f"https://api.stripe.com{path}", (), path, lambda r: r["path"] == path)
    if connector == "gemini":
        path = f"/v1beta/models/{marker}:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        return Call(
            f"https://generativelanguage.googleapis.com{path}",
            ("-H", "content-type: application/json", "-d", json.dumps(body)),
            path,
            lambda r: r["path"] == path,
        )
    bodies: dict[str, tuple[str, str, dict[str, Any], tuple[str, ...]]] = {
        "openai": (
            "https://api.openai.com",
            "/v1/chat/completions",
            {"model": marker, "messages": [{"role": "user", "content": "hi"}]},
            (),
        ),
        "anthropic": (
            "https://api.anthropic.com",
            "/v1/messages",
            {"model": marker, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            ("-H", "anthropic-version: 2023-06-01"),
        ),
        "linear": (
            "https://api.linear.app",
            "/graphql",
            {"query": "query Issue($id: String!) { issue(id: $id) { id title } }", "variables": {"id": marker}},
            (),
        ),
        "slack": ("https://slack.com", "/api/chat.postMessage", {"channel": marker, "text": "hi"}, ()),
    }
    origin, path, body, extra = bodies[connector]
    key = {"openai": "model", "anthropic": "model", "linear": "id", "slack": "channel"}[connector]
    return Call(
        origin + path,
        ("-H", "content-type: application/json", *extra, "-d", json.dumps(body)),
        path,
        lambda r: r["args"].get(key) == marker,
    )


@dataclass(frozen=True)
class Form:
    """How one client sends the placeholder `{p}`: curl arguments, and a query string appended to the URL."""

    connector: str
    label: str
    args: tuple[str, ...] = ()
    query: str = ""
    kept_query: str = ""  # what of `query` the upstream must still get (it carries no credential)

    def curl_args(self, placeholder: str) -> list[str]:
        return [a.replace("{p}", placeholder) for a in self.args]


FORMS = [
    Form("github", "Authorization: Bearer (REST docs)", ("-H", "Authorization: Bearer {p}")),
    Form("github", "Authorization: token (gh, Octokit, PyGithub)", ("-H", "Authorization: token {p}")),
    Form("github", "authorization: token over HTTP/2", ("--http2", "-H", "authorization: token {p}")),
    Form("github", "HTTP Basic (curl -u user:token)", ("-u", "octocat:{p}")),
    Form("github", "repeated in two cases", ("-H", "Authorization: token {p}", "-H", "AUTHORIZATION: Bearer {p}")),
    Form("stripe", "HTTP Basic with the key as user (curl -u sk_...:)", ("-u", "{p}:")),
    Form("stripe", "Authorization: Bearer (SDKs)", ("-H", "Authorization: Bearer {p}")),
    Form("openai", "Authorization: Bearer (docs, SDKs, Codex)", ("-H", "Authorization: Bearer {p}")),
    Form("openai", "authorization: bearer, lower case", ("-H", "authorization: bearer {p}")),
    Form("anthropic", "x-api-key (docs, Claude Code)", ("-H", "x-api-key: {p}")),
    Form("anthropic", "X-Api-Key (SDKs before 2.x)", ("-H", "X-Api-Key: {p}")),
    Form("anthropic", "Authorization: Bearer (SDK 2.x, ANTHROPIC_AUTH_TOKEN)", ("-H", "Authorization: Bearer {p}")),
    Form(
        "anthropic",
        "Claude Code: ?beta=true, anthropic-beta, x-api-key",
        ("-H", "x-api-key: {p}", "-H", "anthropic-beta: oauth-2025-04-20"),
        query="beta=true",
        kept_query="beta=true",
    ),
    Form("anthropic", "x-api-key and Bearer together", ("-H", "x-api-key: {p}", "-H", "Authorization: Bearer {p}")),
    Form("anthropic", "x-api-key repeated", ("-H", "x-api-key: {p}", "-H", "X-API-KEY: {p}")),
    Form("gemini", "x-goog-api-key (docs, google-genai, Gemini CLI)", ("-H", "x-goog-api-key: {p}")),
    Form("gemini", "?key= (REST docs)", query="key={p}"),
    Form("gemini", "?alt=sse&key= (REST streaming)", query="alt=sse&key={p}", kept_query="alt=sse"),
    Form("gemini", "X-Goog-Api-Key and ?key= together", ("-H", "X-Goog-Api-Key: {p}"), query="key={p}"),
    Form("gemini", "?key= repeated", query="key={p}&key={p}"),
    Form("linear", "Authorization: <key> bare (docs, @linear/sdk apiKey)", ("-H", "Authorization: {p}")),
    Form("linear", "Authorization: Bearer (OAuth, @linear/sdk accessToken)", ("-H", "Authorization: Bearer {p}")),
    Form("slack", "Authorization: Bearer (docs, slack_sdk, @slack/web-api)", ("-H", "Authorization: Bearer {p}")),
    Form("slack", "?token= (legacy clients)", query="token={p}"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with proxy_world(tmp_path_factory.mktemp("clients")) as w:
        yield w


def marker() -> str:
    return f"m{secrets.token_hex(6)}"


def credential_fields(got: Received) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in got.fields if name.lower() in CREDENTIAL_HEADERS]


def assert_injected_and_audited(
    world: World, name: str, mark: int, audited: Callable[[dict[str, Any]], bool], upstream_path: str
) -> dict[str, Any]:
    """The upstream got the injected credential exactly once and the placeholder nowhere; the request is audited."""
    connector = builtin(name)
    canary = world.canaries[name].decode()
    [got] = world.received_since(mark)
    assert got.path == upstream_path
    if connector.auth.scheme == "bearer":
        expected = [("authorization", f"Bearer {canary}")]
    else:
        assert connector.auth.scheme == "header" and connector.auth.name
        expected = [(connector.auth.name.lower(), canary)]
    assert credential_fields(got) == expected
    placeholder = connector.auth.placeholder
    assert placeholder not in got.path and placeholder not in json.dumps(got.fields)
    records = world.audit_wait(lambda rs: any(audited(r) and r["upstream_status"] for r in rs), connector=name)
    [record] = [r for r in records if audited(r)]
    assert record["decision"] == "allow" and record["kind"] == "credentialed"
    assert record["credential_id"] and record["session_id"] == world.session_id
    assert 200 <= record["upstream_status"] < 300
    return record


def test_the_forms_cover_every_built_in_connector() -> None:
    names = {p.name for p in BUILTIN.iterdir() if (p / "connector.toml").exists()}
    assert names == set(CONNECTORS) == {f.connector for f in FORMS} == set(PLACEHOLDER_ENV)


@pytest.mark.parametrize("form", FORMS, ids=[f"{f.connector}: {f.label}" for f in FORMS])
def test_curl_sending_the_placeholder_as_the_official_clients_do_gets_the_real_credential(
    world: World, form: Form
) -> None:
    placeholder = builtin(form.connector).auth.placeholder
    request = call(form.connector, marker())
    query = form.query.replace("{p}", placeholder)
    url = request.url + (f"?{query}" if query else "")
    mark = len(world.upstream.received)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--proxy",
            world.proxy_url,
            "--cacert",
            str(world.ca_file),
            "-w",
            "\n%{http_code}",
            *form.curl_args(placeholder),
            *request.args,
            url,
        ],
        capture_output=True,
        timeout=30,
    )
    body, _, code = result.stdout.rpartition(b"\n")
    assert code in (b"200", b"201"), (code, body[:500], result.stderr.decode())
    upstream_path = request.upstream_path + (f"?{form.kept_query}" if form.kept_query else "")
    assert_injected_and_audited(world, form.connector, mark, request.audited, upstream_path)


def run_agent(world: World, code: str, tag: str) -> str:
    """Python as an agent runs it: another process with the runtime contract and the placeholders; `tag` is
    its one argument (the model or id that finds its audit record)."""
    placeholders = {var: builtin(name).auth.placeholder for name, var in PLACEHOLDER_ENV.items()}
    result = subprocess.run(
        [sys.executable, "-c", code, tag], env=world.agent_env(**placeholders), capture_output=True, timeout=60
    )
    world.outputs[f"agent {code[:60]}"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


HI = "messages=[{'role': 'user', 'content': 'hi'}]"
SDK_CASES = {
    "openai create": (
        "openai",
        f"""import openai, sys
reply = openai.OpenAI().chat.completions.create(model=sys.argv[1], {HI})
print(reply.choices[0].message.content)""",
    ),
    "openai with_raw_response": (
        "openai",
        f"""import openai, sys
raw = openai.OpenAI().chat.completions.with_raw_response.create(model=sys.argv[1], {HI})
print(raw.status_code, raw.parse().choices[0].message.content)""",
    ),
    "anthropic create": (
        "anthropic",
        f"""import anthropic, sys
reply = anthropic.Anthropic().messages.create(model=sys.argv[1], max_tokens=16, {HI})
print(reply.content[0].text)""",
    ),
    "anthropic with_raw_response": (
        "anthropic",
        f"""import anthropic, sys
raw = anthropic.Anthropic().messages.with_raw_response.create(model=sys.argv[1], max_tokens=16, {HI})
print(raw.status_code, raw.parse().content[0].text)""",
    ),
    "anthropic with_raw_response, key as X-Api-Key": (
        "anthropic",
        f"""import anthropic, os, sys
client = anthropic.Anthropic(api_key=None, default_headers={{"X-Api-Key": os.environ["ANTHROPIC_API_KEY"]}})
raw = client.messages.with_raw_response.create(model=sys.argv[1], max_tokens=16, {HI})
print(raw.status_code, raw.parse().content[0].text)""",
    ),
    "stripe StripeClient": (
        "stripe",
        """import os, stripe, sys
stripe.ca_bundle_path = os.environ["SSL_CERT_FILE"]  # stripe-python trusts its own bundle, not SSL_CERT_FILE
customer = stripe.StripeClient(os.environ["STRIPE_API_KEY"]).v1.customers.retrieve("cus_" + sys.argv[1])
print(customer.to_dict()["ok"])""",
    ),
}


@pytest.mark.parametrize("case", list(SDK_CASES))
def test_the_official_sdks_get_the_real_credential(world: World, case: str) -> None:
    name, code = SDK_CASES[case]
    tag = marker()
    mark = len(world.upstream.received)
    out = run_agent(world, code, tag)
    assert out.strip() in ("hi", "200 hi", "True"), out
    request = call(name, tag)
    assert_injected_and_audited(world, name, mark, request.audited, request.upstream_path)


def test_gh_api_gets_the_real_credential(world: World, tmp_path: Path) -> None:
    gh = shutil.which("gh")
    if gh is None:
        pytest.skip("the gh CLI is not installed (Debian package gh)")
    tag = marker()
    mark = len(world.upstream.received)
    placeholder = builtin("github").auth.placeholder
    env = world.agent_env(GH_TOKEN=placeholder, GH_CONFIG_DIR=str(tmp_path), GH_PROMPT_DISABLED="1")
    result = subprocess.run([gh, "api", f"repos/acme/{tag}"], env=env, capture_output=True, timeout=60)
    world.outputs["gh"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    request = call("github", tag)
    assert_injected_and_audited(world, "github", mark, request.audited, request.upstream_path)


def test_aileron_launch_curl_to_anthropic_with_x_api_key_as_in_the_report(world: World) -> None:
    """`aileron launch --sandbox none -- curl -sS https://api.anthropic.com/v1/messages -H "x-api-key:
    $ANTHROPIC_API_KEY" -H content-type:application/json -d '{...}'`, the key expanded inside the launched shell."""
    tag = marker()
    body = json.dumps({"model": tag, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    command = (
        'curl -sS https://api.anthropic.com/v1/messages -H "x-api-key: $ANTHROPIC_API_KEY" '
        f"-H content-type:application/json -d '{body}'"
    )
    mark = len(world.upstream.received)
    result = subprocess.run(
        [
            str(BIN / "aileron"),
            "launch",
            "--sandbox",
            "none",
            "--proxy",
            f"127.0.0.1:{world.service.proxy_port}",
            "--",
            "sh",
            "-c",
            command,
        ],
        env={**world.service.env, "ANTHROPIC_API_KEY": "sk-ant-users-own-real-key"},
        capture_output=True,
        timeout=120,
    )
    world.outputs["launch curl"] = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"{"), result.stdout[:500]  # not mitmproxy's HTML page
    reply = json.loads(result.stdout)
    assert reply["content"][0]["text"] == "hi" and reply["model"] == tag
    [got] = world.received_since(mark)
    assert got.path == "/v1/messages"
    assert credential_fields(got) == [("x-api-key", world.canaries["anthropic"].decode())]
    assert "sk-ant-" not in json.dumps(got.fields)  # neither the placeholder nor the user's own key
    records = world.audit_wait(
        lambda rs: any(r["args"].get("model") == tag and r["upstream_status"] for r in rs), connector="anthropic"
    )
    [record] = [r for r in records if r["args"].get("model") == tag]
    assert record["decision"] == "allow" and record["upstream_status"] == 200 and record["credential_id"]


def test_no_client_form_raised_inside_the_proxy(world: World) -> None:
    """Run last: none of the requests above made the addon raise (mitmproxy logs `Addon error` and a traceback)."""
    log = world.service.log.read_text(errors="replace")
    assert "Addon error" not in log and "Traceback" not in log, log[-3000:]
