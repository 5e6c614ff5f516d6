"""Audit records for requests refused before a live session was established (plain HTTP, CONNECT, a dead session).

Such a request has no verified session, yet it is audited like any other refusal, attributed as far as the
proxy knows: the session's id when the token belongs to a session it has seen live (cached), otherwise only
the token's lookup part (never the token itself), which the control plane maps to a session and marks
unverified; and always the client's address, the method, host and path.

Refusals that no live session can be held to account for (a made-up token, no token) cost an audit row each
and are free to send: beyond `Unverified`'s rate they are counted instead, and the next one recorded says how
many were not recorded one by one (with a warning in the log), so a flood cannot fill the audit store.
Imports no Django.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from mitmproxy import http

from dataplane.problems import Refusal

log = logging.getLogger("aileron.refusals")

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


class Bucket:
    """A token bucket: `rate` a second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Unverified:
    """Audits refusals outside any live session, one row each up to a rate, then counted (see the module)."""

    def __init__(self, spool: Spool, *, rate: float = 20.0, burst: float = 200.0) -> None:
        self.spool = spool
        self.bucket = Bucket(rate, burst)
        self.untold = 0  # refusals since the last one recorded, not recorded one by one
        self.warned_at = 0.0

    def audit(
        self,
        flow: http.HTTPFlow,
        refusal: Refusal,
        *,
        request_id: str,
        session_id: str | None,
        token: str | None,
        host: str,
    ) -> None:
        if session_id is None and not self.bucket.take():
            self.untold += 1
            if time.monotonic() - self.warned_at > 60:
                self.warned_at = time.monotonic()
                log.warning(
                    "refusals without a live session arrive faster than %g a second; counting them instead of "
                    "recording each (%d so far)",
                    self.bucket.rate,
                    self.untold,
                )
            return
        entry = record(flow, refusal, request_id=request_id, session_id=session_id, token=token, host=host)
        if session_id is None and self.untold:
            entry["reason"] = f"{entry['reason']} ({self.untold} similar refusals before it were counted, not recorded)"
            self.untold = 0
        self.spool.record(entry)
