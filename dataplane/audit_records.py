"""Step 4 and the outcome of step 6: the audit records of a request, its arguments bounded and redacted."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mitmproxy import http

from dataplane import exfil, problems
from dataplane.destination import norm_host
from dataplane.flowstate import Pending
from dataplane.problems import Refusal
from dataplane.usage import Usage

ARG_STRING_LIMIT = 256
ARGS_JSON_LIMIT = 8 * 1024


def attempt_record(
    flow: http.HTTPFlow,
    pending: Pending,
    *,
    sensitive: Sequence[str],
    decision: str,
    reason: str,
    credential_id: str | None = None,
    problem_type: str = "",
) -> dict[str, Any]:
    """The record of what the agent asked for and what was decided, written before anything is sent."""
    request = flow.request
    peer = flow.client_conn.peername
    return {
        "id": pending.request_id,
        "phase": "attempt",
        "session_id": pending.live.context.session_id,
        "client_address": str(peer[0])[:64] if peer else "",  # where the agent's connection came from
        "at": now(),
        "kind": pending.kind,
        "connector": pending.connector,
        "action": pending.action,
        "method": request.method,
        "host": pending.host or norm_host(request.host),
        "path": request.path.split("?", 1)[0][:2048],
        "args": redact_args(pending.args, sensitive),
        "decision": decision,
        "reason": reason[:1000],
        "problem_type": problem_type,
        "credential_id": credential_id,
    }


def refusal_record(
    flow: http.HTTPFlow, pending: Pending, refusal: Refusal, *, sensitive: Sequence[str]
) -> dict[str, Any]:
    """The attempt record of a request the proxy answered with a problem itself."""
    decision = "approval_required" if refusal.kind is problems.APPROVAL_PENDING else "deny"
    record = attempt_record(
        flow, pending, sensitive=sensitive, decision=decision, reason=refusal.detail, problem_type=refusal.kind.slug
    )
    if "approval_id" in refusal.extra:
        record["approval_id"] = refusal.extra["approval_id"]
        record["approvers"] = list(refusal.extra.get("approvers", []))
    record["kind"] = "refused" if pending.kind != "credentialed" else "credentialed"
    record["upstream_status"] = None
    if refusal.kind.severity:
        record["severity"] = refusal.kind.severity
    if refusal.extra.get("_credential_id"):
        record["credential_id"] = refusal.extra["_credential_id"]  # which credential the agent holds
    if pending.scan:
        exfil.audit_fields(pending.scan, record)  # the record repeats the request: never a credential in it
    return record


def outcome_record(
    flow: http.HTTPFlow, pending: Pending, usage: Usage | None, *, response: http.Response | None
) -> dict[str, Any]:
    """The record completing an attempt: what the upstream answered (`response`, None when nothing was sent), how
    long it took, what it cost, and what failed."""
    return {
        "id": pending.request_id,
        "phase": "outcome",
        "session_id": pending.live.context.session_id,
        "at": now(),
        "upstream_status": response.status_code if response is not None else None,
        "latency_ms": round((time.perf_counter() - pending.started) * 1000, 3),
        "request_bytes": len(flow.request.raw_content or b"") if not flow.request.stream else None,
        "response_bytes": pending.response_bytes or (len(response.raw_content or b"") if response else 0),
        "usage": usage.as_dict() if usage is not None else None,
        "credential_version": pending.credential_version,
        "error": pending.error or (flow.error.msg if flow.error else None),
        "completed_at": now(),
    }


def failed_outcome_record(pending: Pending, error: str) -> dict[str, Any]:
    """The smallest outcome, for when building the full one failed: the attempt never stays without one."""
    return {
        "id": pending.request_id,
        "phase": "outcome",
        "session_id": pending.live.context.session_id,
        "at": now(),
        "upstream_status": None,
        "error": error,
        "completed_at": now(),
    }


def redact_args(args: dict[str, Any], sensitive: Sequence[str]) -> dict[str, Any]:
    """Arguments as audited: sensitive ones replaced, long strings cut, the whole bounded in size."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in sensitive:
            out[key] = "[redacted]"
        else:
            out[key] = _bounded(value, depth=0)
    if len(out) <= 16 and all(len(k) <= 100 and isinstance(v, str | int | float | bool | None) for k, v in out.items()):
        return out  # at most 16 short names with scalars of at most 256 characters: within the limit, unmeasured
    text = json.dumps(out, default=str)
    if len(text) > ARGS_JSON_LIMIT:
        return {"_truncated": True, "keys": sorted(out)[:100]}
    return out


def _bounded(value: Any, *, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= ARG_STRING_LIMIT else value[:ARG_STRING_LIMIT] + "…"
    if depth > 3:
        return "…"
    if isinstance(value, dict):
        return {str(k)[:100]: _bounded(v, depth=depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_bounded(v, depth=depth + 1) for v in value[:50]]
    return value


def new_request_id() -> str:
    return str(uuid.uuid4())


def now() -> str:
    return datetime.now(UTC).isoformat()
