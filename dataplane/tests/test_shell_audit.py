"""Reports from the mediated shell: http://aileron.proxy/shell-audit through the proxy becomes an audit record."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from audit.records import record_parse
from dataplane import shell_audit
from dataplane.tests.test_proxy_addon import CONTEXT, TOKEN, make_proxy
from policies.shell_rules import ShellRules

POLICY = ShellRules(mode="enforce", deny=("rm -rf *", "curl *"))


def report(**headers: str) -> http.HTTPFlow:
    fields = [(b"host", b"aileron.proxy"), (b"proxy-authorization", f"Bearer {TOKEN}".encode())]
    fields += [(k.replace("_", "-").encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    request = tutils.treq(
        host="aileron.proxy",
        port=80,
        scheme=b"http",
        method=b"POST",
        path=b"/shell-audit",
        authority=b"",
        headers=http.Headers(fields),
        content=b"",
    )
    return tflow.tflow(req=request)


def served(tmp_path: Path, flow: http.HTTPFlow, context: Any = None) -> list[dict[str, Any]]:
    proxy, spool, _ = make_proxy(tmp_path)
    if context is not None:
        proxy.sessions.control.session_context = lambda token: context
    asyncio.run(proxy.requestheaders(flow))
    return list(spool.records)


def test_a_refusal_report_becomes_a_shell_audit_record_of_the_session(tmp_path: Path) -> None:
    flow = report(
        x_aileron_decision="deny",
        x_aileron_rule="deny:rm -rf *",
        x_aileron_command="rm -rf /workspace",
        x_aileron_cwd="/workspace",
    )
    [record] = served(tmp_path, flow, dataclasses.replace(CONTEXT, shell_policy=POLICY))
    assert flow.response is not None and flow.response.status_code == 204
    assert record["kind"] == "shell" and record["action"] == "shell.command"
    assert record["session_id"] == CONTEXT.session_id
    assert record["decision"] == "deny"
    assert record["reason"] == "blocked by the shell policy: deny pattern 'rm -rf *'"
    assert record["args"] == {"command": "rm -rf /workspace", "cwd": "/workspace"}
    parsed = record_parse(json.loads(json.dumps(record)))  # what the control plane's ingest will accept
    assert parsed.fields["kind"] == "shell" and parsed.fields["args"]["command"] == "rm -rf /workspace"


@pytest.mark.parametrize(
    ("decision", "rule", "reason"),
    [
        ("allow", "deny:curl *", "audit mode: would have been blocked by the shell policy, deny pattern 'curl *'"),
        ("allow", "", "allowed by the shell policy"),
        ("deny", "allow-list", "blocked by the shell policy: it matches none of the allow patterns"),
        ("deny", "guard:enable would load or switch off builtins", "refused by the mediated shell's guard: enable"),
        ("deny", "deny:sudo *", "deny pattern 'sudo *' (not in the organization's current shell policy)"),
    ],
)
def test_the_reason_says_what_decided_and_whether_the_live_policy_still_says_so(
    tmp_path: Path, decision: str, rule: str, reason: str
) -> None:
    flow = report(x_aileron_decision=decision, x_aileron_rule=rule, x_aileron_command="x")
    [record] = served(tmp_path, flow, dataclasses.replace(CONTEXT, shell_policy=POLICY))
    assert reason in record["reason"]


def test_the_shells_escapes_are_undone_and_tokens_typed_in_a_command_are_redacted(tmp_path: Path) -> None:
    command = "curl -H 'Authorization: ail_pat_abcdef0123' x\\nnext\\\\n\\tz"
    [record] = served(tmp_path, report(x_aileron_decision="deny", x_aileron_rule="", x_aileron_command=command))
    assert record["args"]["command"] == "curl -H 'Authorization: [redacted]' x\nnext\\n\tz"


def test_a_long_command_is_cut(tmp_path: Path) -> None:
    long = "echo " + "x" * 5000
    [record] = served(tmp_path, report(x_aileron_decision="deny", x_aileron_rule="", x_aileron_command=long))
    assert len(record["args"]["command"]) == shell_audit.MAX_COMMAND_CHARS + 1


def test_undecodable_bytes_are_kept_as_replacement_characters(tmp_path: Path) -> None:
    flow = report(x_aileron_decision="deny", x_aileron_rule="", x_aileron_command="echo \udcff")
    [record] = served(tmp_path, flow)
    assert record["args"]["command"] == "echo \ufffd"


def refusals_only(records: list[dict[str, Any]], slug: str) -> list[dict[str, Any]]:
    """What a refused report leaves: no shell record, only the proxy's refusal (every refusal is audited)."""
    assert [r["kind"] for r in records] == ["refused"]
    assert [(r["decision"], r["problem_type"], r["host"], r["path"]) for r in records] == [
        ("deny", slug, "aileron.proxy", "/shell-audit")
    ]
    return records


def test_a_report_without_the_session_token_is_refused_and_not_recorded_as_the_shells(tmp_path: Path) -> None:
    flow = report(x_aileron_decision="deny", x_aileron_rule="", x_aileron_command="x")
    del flow.request.headers["proxy-authorization"]
    [refusal] = refusals_only(served(tmp_path, flow), "proxy-auth-required")
    assert (refusal["session_id"], refusal["token_lookup"]) == (None, "")
    assert flow.response is not None and flow.response.status_code == 407


@pytest.mark.parametrize(
    "headers",
    [
        {"x_aileron_decision": "maybe", "x_aileron_command": "x"},
        {"x_aileron_decision": "deny"},
    ],
)
def test_a_malformed_report_is_refused_with_a_problem(tmp_path: Path, headers: dict[str, str]) -> None:
    flow = report(**headers)
    [refusal] = refusals_only(served(tmp_path, flow), "shell-report-invalid")
    assert refusal["session_id"] == CONTEXT.session_id
    assert flow.response is not None and flow.response.status_code == 400
    assert flow.response.json()["type"] == "urn:aileron:problem:shell-report-invalid"


def test_only_post_is_taken(tmp_path: Path) -> None:
    flow = report(x_aileron_decision="deny", x_aileron_command="x")
    flow.request.method = "GET"
    refusals_only(served(tmp_path, flow), "shell-report-invalid")
    assert flow.response is not None and flow.response.status_code == 400


def test_the_session_ca_is_still_served_next_to_it(tmp_path: Path) -> None:
    flow = report()
    flow.request.method = "GET"
    flow.request.path = "/ca.pem"
    assert served(tmp_path, flow) == []
    assert flow.response is not None and flow.response.status_code == 200
    assert (flow.response.content or b"").startswith(b"-----BEGIN CERTIFICATE-----")
