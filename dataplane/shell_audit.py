"""Reports from the sandbox's mediated shell (runtime/sandbox/shell), written to the audit log. Imports no Django.

The shell sends each decision it records as a plain HTTP request through the proxy, like the session CA:

    POST http://aileron.proxy/shell-audit
    Proxy-Authorization: Bearer <session token>
    X-Aileron-Decision: allow | deny
    X-Aileron-Rule: deny:<pattern> | allow-list | guard:<what> | (empty: nothing matched)
    X-Aileron-Command: <the command line, backslash-escaped>
    X-Aileron-Cwd: <the working directory, backslash-escaped>

Everything is in headers so the proxy answers from `requestheaders` without reading a body, and bash can send it
with a single `printf` to /dev/tcp. The session, and so the user and organization, come from the token, never
from the report. What the report says happened is the shell's word: a program in the sandbox could send one, or
not send one; the README's "Mediated shell" section says what that means.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Protocol

from mitmproxy import http

from dataplane.control import SessionContext
from dataplane.problems import PROXY_AUTH_REQUIRED, Kind, Refusal

PATH = "/shell-audit"
ACTION = "shell.command"
MAX_COMMAND_CHARS = 2000
MAX_CWD_CHARS = 512
MAX_RULE_CHARS = 400
DECISIONS = ("allow", "deny")

SHELL_REPORT_INVALID = Kind(
    "shell-report-invalid",
    400,
    "The shell audit report is malformed",
    "Send POST http://aileron.proxy/shell-audit with X-Aileron-Decision (allow or deny), X-Aileron-Rule and "
    "X-Aileron-Command headers, as the mediated shell does.",
)

_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
# Aileron tokens typed on a command line (a session token, a personal one): kept out of the audit log.
_TOKENS = re.compile(r"ail_(?:ses|pat|svc)_[A-Za-z0-9_-]+")


class _Sessions(Protocol):
    async def get(self, token: str) -> Any: ...  # dataplane.sessions.Sessions: the live session, or a Refusal


class _Spool(Protocol):
    def record(self, record: dict[str, Any]) -> None: ...


def unescape(text: str) -> str:
    """Undo the shell's escaping of backslash, newline, carriage return and tab (other controls became '?')."""
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), text)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _header(request: http.Request, name: str) -> str:
    # Header bytes are whatever the shell printed; undecodable ones are replaced, never refused.
    raw: str = request.headers.get(name, "")
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def reason_for(decision: str, rule: str, context: SessionContext) -> str:
    """The audit record's reason: what decided, in words, and whether the live policy still says so."""
    kind, _, detail = rule.partition(":")
    policy = context.shell_policy
    if kind == "deny":
        said = f"deny pattern {detail!r}"
        if detail not in policy.deny:
            said += " (not in the organization's current shell policy)"
    elif kind == "allow-list":
        said = "it matches none of the allow patterns"
        if not policy.allow:
            said += " (the organization's current shell policy has no allow list)"
    elif kind == "guard":
        return f"refused by the mediated shell's guard: {detail}"
    elif decision == "allow":
        return "allowed by the shell policy"
    else:
        said = rule or "no reason given"
    if decision == "allow":
        return f"audit mode: would have been blocked by the shell policy, {said}"
    return f"blocked by the shell policy: {said}"


def record_from(request: http.Request, context: SessionContext, *, request_id: str) -> dict[str, Any]:
    """The audit record for one shell report, or a Refusal if the report is malformed."""
    decision = request.headers.get("x-aileron-decision", "")
    if decision not in DECISIONS:
        raise Refusal(SHELL_REPORT_INVALID, "X-Aileron-Decision must be allow or deny")
    if "x-aileron-command" not in request.headers:
        raise Refusal(SHELL_REPORT_INVALID, "X-Aileron-Command is missing")
    command = _TOKENS.sub("[redacted]", unescape(_header(request, "x-aileron-command")))
    rule = _bounded(unescape(_header(request, "x-aileron-rule")), MAX_RULE_CHARS)
    cwd = _bounded(unescape(_header(request, "x-aileron-cwd")), MAX_CWD_CHARS)
    return {
        "id": request_id,
        "phase": "attempt",
        "session_id": context.session_id,
        "at": datetime.now(UTC).isoformat(),
        "kind": "shell",
        "connector": "",
        "action": ACTION,
        "method": "",
        "host": "",
        "path": "",
        "args": {"command": _bounded(command, MAX_COMMAND_CHARS), "cwd": cwd},
        "decision": decision,
        "reason": reason_for(decision, rule, context)[:1000],
        "problem_type": "",
        "credential_id": None,
    }


async def serve(flow: http.HTTPFlow, *, token: str | None, sessions: _Sessions, spool: _Spool, request_id: str) -> None:
    """Answer one report: 204 once it is queued for the audit spool; a Refusal for anything else."""
    if token is None:
        raise Refusal(PROXY_AUTH_REQUIRED, "a shell audit report needs the session token")
    live = await sessions.get(token)
    if flow.request.method != "POST":
        raise Refusal(SHELL_REPORT_INVALID, f"{PATH} takes POST only")
    spool.record(record_from(flow.request, live.context, request_id=request_id))
    flow.response = http.Response.make(204, b"", {"Cache-Control": "no-store"})
