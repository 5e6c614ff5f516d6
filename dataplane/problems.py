"""The proxy's answers to the agent when it refuses a request: RFC 9457 problem+json with a stable type.

Every refusal says what happened and what the agent can do next, in `detail` and `next`, so an agent (or the
human reading its transcript) can act on it without guessing. Types are `urn:aileron:problem:<slug>`, the
same scheme as the control plane's API. Imports no Django.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str
    status: int
    title: str
    next: str
    severity: str = ""  # "critical": the audit record is marked so, and the organization's admins alerted


PROXY_AUTH_REQUIRED = Kind(
    "proxy-auth-required",
    407,
    "Proxy authentication required",
    "Use HTTPS_PROXY=http://aileron:$AILERON_TOKEN@host:port with a live session token (aileron launch sets it).",
)
HTTPS_ONLY = Kind(
    "https-only",
    403,
    "Only HTTPS goes through the Aileron proxy",
    "Use an https:// URL; plain HTTP and other protocols are not forwarded.",
)
DESTINATION_MISMATCH = Kind(
    "destination-mismatch",
    421,
    "Host does not match the tunnel",
    "Send the request through a tunnel (CONNECT) to the host it is meant for; Host, :authority, SNI and the "
    "CONNECT target must agree.",
)
PRIVATE_ADDRESS = Kind(
    "private-address",
    403,
    "Destination is a private, loopback, link-local or metadata address",
    "The proxy does not reach private networks. An operator can map a private upstream with AILERON_UPSTREAM_RESOLVE.",
)
EGRESS_DENIED = Kind(
    "egress-denied",
    403,
    "Destination is not on the organization's egress allowlist",
    "Ask an organization admin to add the host to the egress allowlist (PUT /api/v1/orgs/{org}/egress/).",
)
UNRESOLVABLE = Kind("unresolvable-host", 502, "Destination host does not resolve", "Check the host name.")
UNMATCHED_ACTION = Kind(
    "unmatched-action",
    403,
    "No action of this connector matches the request",
    "Requests to a connector's host must be one of its actions: run `aileron actions list` or "
    "`aileron actions match METHOD URL` to find the right one.",
)
AMBIGUOUS_REQUEST = Kind(
    "ambiguous-request",
    400,
    "The request could be read in more than one way",
    "Send a plain request: no encoded slashes or dot segments in the path, no repeated or conflicting parameters.",
)
METHOD_OVERRIDE = Kind(
    "method-override",
    400,
    "Method-override headers are refused",
    "Send the real HTTP method instead of X-HTTP-Method-Override and similar headers.",
)
REQUEST_SMUGGLING = Kind(
    "malformed-request",
    400,
    "The request is not strict HTTP/1.1",
    "Nothing more was read from this connection. Send one Host, either one plain Content-Length or "
    "`Transfer-Encoding: chunked` with CRLF line ends, field values without control characters, and a path "
    "(not an absolute URI) as the request target.",
)
LENGTH_REQUIRED = Kind(
    "length-required",
    411,
    "The request body needs a Content-Length",
    "Send the body with a Content-Length header instead of chunked encoding.",
)
BODY_TOO_LARGE = Kind(
    "body-too-large",
    413,
    "The request body is too large for a credentialed action",
    "Policies read the whole body of a credentialed request, so its size is bounded; send a smaller body.",
)
CONNECTOR_DISABLED = Kind(
    "connector-disabled",
    403,
    "This connector is not enabled for you",
    "Ask an organization admin to enable the connector for your organization or team.",
)
POLICY_DENIED = Kind(
    "policy-denied",
    403,
    "Policy denies this action",
    "Do not retry the same request; choose another action or ask an admin about the policy.",
)
APPROVAL_PENDING = Kind(
    "approval-pending",
    403,
    "This action is waiting for a human approval",
    "Nothing was sent. An approver decides with `aileron approval grant ID` or on the approvals page; then send "
    "the identical request again and it goes through once. A changed request needs its own approval.",
)
APPROVAL_REJECTED = Kind(
    "approval-rejected",
    403,
    "An approver rejected this action",
    "Nothing was sent. Read the approver's reason; change the request (a new request asks anew) or ask them.",
)
APPROVAL_LAPSED = Kind(
    "approval-lapsed",
    403,
    "The approval of this action expired or was cancelled",
    "Nothing was sent. Send the request again to ask for a new approval.",
)
NO_CREDENTIAL = Kind(
    "no-credential",
    403,
    "You have no credential for this connector",
    "Add one: `aileron secret add NAME --connector CONNECTOR` (in your personal vault or a shared one).",
)
AUDIT_UNAVAILABLE = Kind(
    "audit-unavailable",
    503,
    "The audit log cannot record the request",
    "Nothing was sent. Retry later; an operator should check the data plane's disk.",
)
CREDENTIALS_UNAVAILABLE = Kind(
    "credentials-unavailable",
    503,
    "The credential service cannot answer",
    "Nothing was sent. Retry shortly; if it persists, restart the session (`aileron launch`) or check that the "
    "control plane is up.",
)
SESSION_LOCKED = Kind(
    "session-locked",
    403,
    "The session's keys are not unlocked in the credential service",
    "Start the session with `aileron launch` (or `aileron session start`) so your key reaches the data plane.",
)
CREDENTIAL_IN_REQUEST = Kind(
    "credential-in-request",
    403,
    "The request carries a credential",
    "Nothing was sent. Agents never send credentials themselves: use the connector's placeholder and the proxy "
    "injects the credential. This attempt is recorded as critical and your organization's admins are told.",
    severity="critical",
)
UNSCANNABLE_BODY = Kind(
    "unscannable-body",
    415,
    "The request body cannot be checked for credentials",
    "Nothing was sent. Send the body uncompressed, or gzip, deflate, br or zstd encoded, within the size limit.",
)
TCP_NOT_ALLOWED = Kind(
    "tcp-not-allowed",
    403,
    "No TCP rule of your organization or project allows raw TCP to this host and port",
    "Nothing was opened. An admin can allow it as a `host:port` TCP rule of the organization (PUT "
    "/api/v1/orgs/<org>/egress/, `tcp`) or of a project (PUT /api/v1/orgs/<org>/projects/<id>/egress/, for "
    "sessions started with `--project`); HTTP and HTTPS go through the proxy as usual.",
)
SCAN_UNAVAILABLE = Kind(
    "scan-unavailable",
    503,
    "The proxy could not check the request body for credentials",
    "Nothing was sent. Retry; the worker that scans large bodies stopped and is being restarted.",
)
HEADERS_TOO_LARGE = Kind(
    "headers-too-large",
    431,
    "The request head is too large",
    "Send fewer or shorter headers: the proxy reads a bounded request head.",
)
HEADER_TIMEOUT = Kind(
    "header-timeout",
    408,
    "The request head did not arrive in time",
    "Send the whole request head promptly after opening the connection; the connection was closed.",
)
BODY_TIMEOUT = Kind(
    "body-timeout",
    408,
    "The request body arrived too slowly",
    "The connection was closed and the request not completed upstream. Send the body promptly after the head: "
    "the proxy waits a bounded time for each part of a body, and for the whole of it at a minimum rate.",
)
TOO_MANY_CONNECTIONS = Kind(
    "too-many-connections",
    429,
    "This session holds as many connections through the proxy as it may",
    "Reuse open connections (keep-alive) or close idle ones, then retry.",
)
SESSION_CHECKS_BUSY = Kind(
    "session-checks-busy",
    503,
    "The proxy is asked to check more unknown session tokens than it checks at once",
    "Nothing was sent. Retry shortly with your session token; tokens already checked are not affected.",
)
BODY_BUDGET_EXHAUSTED = Kind(
    "body-budget-exhausted",
    503,
    "The proxy holds as many request bodies as it can right now",
    "Nothing was sent. Retry shortly; the bodies of credentialed requests are read whole before they are "
    "decided, and their total size in flight is bounded, for each session and for all of them together.",
)
UPSTREAM_TIMEOUT = Kind(
    "upstream-timeout",
    504,
    "The upstream did not answer in time",
    "The request may or may not have taken effect upstream; check before retrying a non-idempotent action.",
)
UPSTREAM_UNAVAILABLE = Kind(
    "upstream-unavailable",
    502,
    "The upstream could not be reached, could not be trusted, or answered with a malformed response",
    "The connection or its TLS verification failed, or the answer was not strict HTTP/1.1 (see `detail`). "
    "Retry later; if it persists, an operator can check the upstream's certificate and reachability.",
)
PROXY_ERROR = Kind("proxy-error", 500, "The proxy could not handle the request", "Retry; report it if it persists.")
CONTROL_PLANE_UNAVAILABLE = Kind(
    "control-plane-unavailable",
    503,
    "The control plane cannot answer",
    "Nothing was sent. Retry shortly.",
)
INTERNAL_ERROR = Kind(
    "internal-error",
    500,
    "The proxy failed on this request",
    "Nothing was sent and no credential was used. Retry once; if it fails again, give the request_id to an "
    "operator (the data plane's log and the audit record say what failed).",
)
RESPONSE_ERROR = Kind(
    "response-error",
    502,
    "The proxy failed on the upstream's answer",
    "The request reached the upstream, but its answer could not be passed on safely. Check the effect before "
    "retrying an action that changes something; give the request_id to an operator.",
)


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    """Raised inside the proxy's hooks; turned into the response the agent sees (and an audit record)."""

    kind: Kind
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)


def response(refusal: Refusal, *, request_id: str) -> http.Response:
    body = {
        "type": f"urn:aileron:problem:{refusal.kind.slug}",
        "title": refusal.kind.title,
        "status": refusal.kind.status,
        "detail": refusal.detail,
        "next": refusal.kind.next,
        "request_id": request_id,
        **{k: v for k, v in refusal.extra.items() if not k.startswith("_")},  # "_name": for the audit record only
    }
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE, "Cache-Control": "no-store"}
    if "retry_after_seconds" in refusal.extra:
        headers["Retry-After"] = str(int(refusal.extra["retry_after_seconds"]))
    if refusal.kind is REQUEST_SMUGGLING:
        headers["Connection"] = "close"  # where the request ends is in doubt: read nothing more from it
    if refusal.kind is PROXY_AUTH_REQUIRED:
        headers["Proxy-Authenticate"] = 'Basic realm="aileron"'
    return http.Response.make(refusal.kind.status, json.dumps(body).encode(), headers)
