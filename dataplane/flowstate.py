"""What the proxy knows about a client connection (Tunnel) and about one request between its hooks (Pending)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dataplane.credscan import Matcher, StreamRedactor
from dataplane.guard import Target
from dataplane.sessions import Live
from dataplane.usage import UsageParser


@dataclass
class Tunnel:
    """One client connection's CONNECT: whose it is and where it was allowed to go."""

    token: str
    host: str
    port: int
    target: Target | None = None
    plain: bool = False  # not a CONNECT: one plain-HTTP request's destination (package mirrors)


@dataclass
class Pending:
    """What a flow carries between hooks (never the plaintext after the response)."""

    request_id: str
    started: float
    live: Live
    kind: str  # "refused" until screened, then "egress" or "credentialed"
    host: str = ""  # the tunnel's host: the request's own host is rewritten to the pinned address
    connector: str = ""
    action: str = ""
    args: dict[str, Any] = field(default_factory=dict)  # the identified action's arguments (unredacted)
    decide_with_body: bool = False  # a bounded body is read first: decided in the `request` hook
    scan_body: bool = False  # an egress body is read first: scanned for credentials and recorded in `request`
    decision: tuple[str, str] | None = None  # (outcome, reason) of the policy
    approval_id: str | None = None  # the approval this request was held for
    attempt_recorded: bool = False  # the attempt is durably in the spool: its outcome is audited too
    secret: bytes | None = field(default=None, repr=False)
    credential_version: int | None = None  # which version of the credential was injected, for the outcome
    scheme: str = ""
    provider: str | None = None
    model: str | None = None
    usage: UsageParser | None = None
    redactor: StreamRedactor | None = None
    response_bytes: int = 0
    scan: Matcher | None = field(default=None, repr=False)  # every credential the session can reach
    websocket: bool = False  # a WebSocket upgrade: its 101 answer may switch protocols
    error: str | None = None  # what failed inside the proxy (described without the credential), for the outcome
    response_failed: bool = False  # the upstream's answer is replaced by a problem before the agent sees it
