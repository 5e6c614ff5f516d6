"""The data plane's health endpoint, `http://aileron.proxy/healthz`: is every request still being audited?

Served by the proxy itself, like the session CA, as a plain-HTTP request to the proxy (no CONNECT, no session
token): a supervisor's probe and `aileron status` read it the same way. It answers 200 while the audit spool
writes and ships, and 503 while anything stalls, so a probe alone notices. Anyone who reaches the proxy (an
agent too) gets only that status; the report behind it (the process, the spool's errors and counts) goes to a
request that carries the data plane's service token (`Authorization: Bearer …`, as `aileron status` sends it
from AILERON_HOME). The body names no credential and no session; with several proxy processes, the one that
took the connection answers for its own spool.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any, Protocol

from mitmproxy import http

PATH = "/healthz"


class Reports(Protocol):
    def health(self) -> dict[str, Any]: ...


def body(spool: Reports) -> dict[str, Any]:
    audit = spool.health()
    return {"status": audit["status"], "pid": os.getpid(), "audit": audit}


def serve(flow: http.HTTPFlow, spool: Reports, *, operator_token: str = "") -> None:
    report = body(spool)
    code = 200 if report["status"] == "ok" else 503
    given = flow.request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not (operator_token and hmac.compare_digest(given.encode(), operator_token.encode())):
        report = {"status": report["status"], "audit": {"status": report["audit"]["status"]}}
    flow.response = http.Response.make(
        code,
        json.dumps(report, indent=1).encode(),
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
