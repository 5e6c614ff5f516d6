"""Audit records for requests refused before a live session was established (plain HTTP, CONNECT, a dead session).

Such a request has no verified session, yet it is audited like any other refusal, attributed as far as the
proxy knows: the session's id when the token belongs to a session it has seen live (cached), otherwise only
the token's lookup part (never the token itself), which the control plane maps to a session and marks
unverified; and always the client's address, the method, host and path. Imports no Django.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from mitmproxy import http

from dataplane.problems import Refusal

TOKEN_PREFIX = "ail_ses_"  # noqa: S105 - the public kind marker of a session token
LOOKUP_LENGTH = 12  # tenants.tokens.LOOKUP_LENGTH: the part of a token that names its row, and nothing more


class Spool(Protocol):
    def record(self, record: dict[str, Any]) -> None: ...


def token_lookup(token: str | None) -> str:
    """The lookup part of a session token (empty if there is no well-formed one): safe to store."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return ""
    lookup = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + LOOKUP_LENGTH]
    return lookup if len(lookup) == LOOKUP_LENGTH and lookup.isalnum() and lookup.isascii() else ""


def record(
    flow: http.HTTPFlow,
    refusal: Refusal,
    *,
    request_id: str,
    session_id: str | None,
    token: str | None,
    host: str,
) -> dict[str, Any]:
    """The attempt record of a refusal outside any verified session."""
    request = flow.request
    peer = flow.client_conn.peername
    return {
        "id": request_id or str(uuid.uuid4()),
        "phase": "attempt",
        "session_id": session_id,
        "token_lookup": "" if session_id else token_lookup(token),
        "client_address": str(peer[0])[:64] if peer else "",
        "at": datetime.now(UTC).isoformat(),
        "kind": "refused",
        "connector": "",
        "action": "",
        "method": request.method[:16],
        "host": host.strip().strip("[]").rstrip(".").lower()[:255],
        "path": "" if request.method == "CONNECT" else request.path.split("?", 1)[0][:2048],
        "args": {},
        "decision": "deny",
        "reason": refusal.detail[:1000],
        "problem_type": refusal.kind.slug,
        "credential_id": None,
    }


def audit(
    spool: Spool,
    flow: http.HTTPFlow,
    refusal: Refusal,
    *,
    request_id: str,
    session_id: str | None,
    token: str | None,
    host: str,
) -> None:
    """Queue the refusal's record (not waited for: nothing is forwarded either way)."""
    spool.record(record(flow, refusal, request_id=request_id, session_id=session_id, token=token, host=host))
