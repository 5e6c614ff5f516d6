"""The audit record the data plane ships, parsed and bounded. Pure: no ORM, so the data plane can reuse it.

Type errors reject a record (the caller reports them back so the spool stops retrying it); over-long text is
cut to its column's length instead, because the agent controls some of it (a path) and must not be able to
keep a request out of the audit log by making it long.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_RECORDS_PER_BATCH = 1000
MAX_ARGS_BYTES = 64 * 1024
MAX_APPROVERS = 10

KINDS = ("credentialed", "egress", "refused", "shell", "tcp")
DECISIONS = ("allow", "deny", "approval_required", "error")
# A restart record closes the previous run of a data plane's spool: its attempts without outcome are unknown.
PHASES = ("attempt", "outcome", "restart")
# "critical": the agent sent a credential it should never hold (credential-in-request); admins must look.
SEVERITIES = ("", "critical")

# Column lengths, shared with audit.models so that truncation here always fits there.
LENGTHS = {
    "connector": 64,
    "action": 200,
    "method": 16,
    "host": 255,
    "path": 2048,
    "reason": 2000,
    "problem_type": 100,
    "client_address": 64,
    "token_lookup": 16,
    "error": 500,
}
USAGE_MODEL_LENGTH = 200
USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")

ATTEMPT_FIELDS = (
    "kind",
    "connector",
    "action",
    "method",
    "host",
    "path",
    "args",
    "decision",
    "reason",
    "problem_type",
    "credential_id",
    "approval_id",
    "approvers",
    "dataplane_run",
    "client_address",
    "token_lookup",
    "severity",
)
OUTCOME_FIELDS = (
    "upstream_status",
    "latency_ms",
    "request_bytes",
    "response_bytes",
    "usage",
    "credential_version",
    "completed_at",
    "error",
)


class RecordError(ValueError):
    """This record cannot be stored; the message says why (it goes back to the data plane)."""


@dataclass(frozen=True, slots=True)
class ShippedRecord:
    id: uuid.UUID
    phase: str
    session_id: uuid.UUID | None  # None only for a refusal tied to no known session, and for a restart
    at: datetime
    fields: dict[str, Any] = field(default_factory=dict)  # the phase's fields only, parsed


def _uuid(value: Any, name: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise RecordError(f"{name} must be a UUID")


EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
# What no database column and no UTF-8 text can hold: NUL (PostgreSQL refuses it) and lone surrogates (they
# cannot be encoded). The agent controls some text (a path, JSON arguments), so it is replaced, never refused:
# a record that cannot be stored would hold up every record shipped after it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean(value: str) -> str:
    """VALUE with NUL and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", value)


def _clean_json(value: Any, depth: int = 0) -> Any:
    """JSON with every string (keys included) cleaned, -0.0 as 0.0 (databases give it back as 0), and a NaN or
    an infinity as its text."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, float):
        return value + 0.0 if math.isfinite(value) else str(value)  # JSON has no NaN; databases refuse it
    if isinstance(value, dict):
        return {clean(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    return value


def _datetime(value: Any, name: str) -> datetime:
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise RecordError(f"{name} must carry a UTC offset")
            try:
                parsed = parsed.astimezone(UTC)
            except OverflowError:
                raise RecordError(f"{name} must be between the years 2000 and 9000") from None
            if not EARLIEST <= parsed < LATEST:
                raise RecordError(f"{name} must be between the years 2000 and 9000")
            return parsed
    raise RecordError(f"{name} must be an ISO 8601 timestamp")


def _text(value: Any, name: str, *, case: str = "") -> str:
    """Text cut to its column (after any change of case, which can lengthen it: "İ".lower() is 2 characters)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a string")
    text: str = clean(value[: LENGTHS[name]])
    if case == "lower":
        text = text.lower()
    elif case == "upper":
        text = text.upper()
    return text[: LENGTHS[name]]


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise RecordError(f"{name} must be one of {', '.join(choices)}")
    return str(value)


def _count(value: Any, name: str, *, low: int = 0, high: int = 2**62) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RecordError(f"{name} must be an integer from {low} to {high}")
    return value


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise RecordError(f"{name} must be a non-negative number")
    return float(value) + 0.0  # -0.0 is stored as 0.0


def _args(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError("args must be an object")
    try:
        size = len(json.dumps(value, separators=(",", ":")))
    except RecursionError:  # not JSON after all (NaN, a cycle cannot come from the wire; depth can)
        raise RecordError("args must be a JSON object") from None
    if size > MAX_ARGS_BYTES:
        return {"_truncated": True, "_bytes": size}
    try:
        cleaned: dict[str, Any] = _clean_json(value)
    except RecursionError:
        raise RecordError("args are nested too deeply") from None
    return cleaned


def _usage(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError("usage must be an object or null")
    usage: dict[str, Any] = {}
    provider = value.get("provider")
    if isinstance(provider, str):
        usage["provider"] = clean(provider[:USAGE_MODEL_LENGTH])
    model = value.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise RecordError("usage.model must be a string")
        usage["model"] = clean(model[:USAGE_MODEL_LENGTH])
    for name in USAGE_COUNTS:
        if value.get(name) is not None:
            usage[name] = _count(value[name], f"usage.{name}")
    if value.get("cost_usd") is not None:
        usage["cost_usd"] = _number(value["cost_usd"], "usage.cost_usd")
    return usage


def _approvers(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_APPROVERS or not all(isinstance(v, str) for v in value):
        raise RecordError(f"approvers must be a list of at most {MAX_APPROVERS} strings")
    return [clean(v[:254]) for v in value]


def _attempt_fields(raw: dict[str, Any]) -> dict[str, Any]:
    credential = raw.get("credential_id")
    approval = raw.get("approval_id")
    run = raw.get("run")
    lookup = _text(raw.get("token_lookup"), "token_lookup")
    if not lookup.isalnum() and lookup:
        raise RecordError("token_lookup must be letters and digits")
    return {
        "kind": _choice(raw.get("kind"), "kind", KINDS),
        "connector": _text(raw.get("connector"), "connector"),
        "action": _text(raw.get("action"), "action"),
        "method": _text(raw.get("method"), "method", case="upper"),
        "host": _text(raw.get("host"), "host", case="lower"),
        "path": _text(raw.get("path"), "path"),
        "args": _args(raw.get("args")),
        "decision": _choice(raw.get("decision"), "decision", DECISIONS),
        "reason": _text(raw.get("reason"), "reason"),
        "problem_type": _text(raw.get("problem_type"), "problem_type"),
        "credential_id": None if credential is None else _uuid(credential, "credential_id"),
        "approval_id": None if approval is None else _uuid(approval, "approval_id"),
        "approvers": _approvers(raw.get("approvers")),
        "dataplane_run": None if run is None else _uuid(run, "run"),
        "client_address": _text(raw.get("client_address"), "client_address"),
        "token_lookup": lookup,
        "severity": _choice(raw.get("severity") or "", "severity", SEVERITIES),
    }


def _outcome_fields(raw: dict[str, Any]) -> dict[str, Any]:
    completed = raw.get("completed_at")
    return {
        "upstream_status": _count(raw.get("upstream_status"), "upstream_status", low=100, high=599),
        "latency_ms": _number(raw.get("latency_ms"), "latency_ms"),
        "request_bytes": _count(raw.get("request_bytes"), "request_bytes"),
        "response_bytes": _count(raw.get("response_bytes"), "response_bytes"),
        "usage": _usage(raw.get("usage")),
        "credential_version": _count(raw.get("credential_version"), "credential_version", low=1),
        "completed_at": None if completed is None else _datetime(completed, "completed_at"),
        "error": _text(raw.get("error"), "error"),
    }


def record_parse(raw: Any) -> ShippedRecord:
    """One shipped record, validated; unknown keys are ignored. Raises RecordError."""
    if not isinstance(raw, dict):
        raise RecordError("a record must be an object")
    record_id = _uuid(raw.get("id"), "id")
    phase = _choice(raw.get("phase"), "phase", PHASES)
    at = _datetime(raw.get("at"), "at")
    if phase == "restart":
        fields = {"previous_run": _uuid(raw.get("previous_run"), "previous_run"), "run": _uuid(raw.get("run"), "run")}
        return ShippedRecord(id=record_id, phase=phase, session_id=None, at=at, fields=fields)
    fields = _attempt_fields(raw) if phase == "attempt" else _outcome_fields(raw)
    session = raw.get("session_id")
    if session is None and phase == "attempt" and fields["kind"] == "refused" and fields["decision"] == "deny":
        # Refused before any session was known (plain HTTP, no token, the control plane unreachable): still
        # audited, attributed by the control plane as far as the token's lookup part allows.
        return ShippedRecord(id=record_id, phase=phase, session_id=None, at=at, fields=fields)
    return ShippedRecord(id=record_id, phase=phase, session_id=_uuid(session, "session_id"), at=at, fields=fields)


def raw_id(raw: Any) -> str | None:
    """The id a rejected record claimed, echoed back so the spool can drop it (None if it had none)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value[:64] if isinstance(value, str) else None
