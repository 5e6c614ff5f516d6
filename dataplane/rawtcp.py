"""Raw TCP through the proxy under the organization's "host:port" rules: SSH to a git host, a database port.

A session's CONNECT to a host and port that one of its organization's TCP rules names (never port 80 or 443,
never a connector's host) is not opened as TLS. Its destination is resolved and checked like any other (the
private-address guard holds: an internal database is reached through AILERON_UPSTREAM_RESOLVE), its attempt is
written durably to the audit spool before the agent gets its 200, and then the tunnel relays bytes both ways;
when either side closes, the outcome record counts them. Without a rule, nothing changes: inside a tunnel the
proxy expects TLS and HTTP, and refuses raw bytes (denied by default).

The bytes are not read: SSH and TLS-wrapped database protocols are encrypted end to end, so a rule is the
organization's trust in that destination, not a check of what crosses. No credential is ever injected. In the
sandbox, the relay (runtime/sandbox/relay.py `--connect`, `--forward`) opens these tunnels for ssh and for
local ports. Imports no Django.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy import tcp
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import tcp as tcp_layers

from dataplane.audit_records import now
from dataplane.control import SessionContext
from policies.engine import tcp_allows

METADATA_KEY = "aileron_raw_tcp"  # on a CONNECT flow: relay raw TCP in this tunnel, to this checked address


@dataclass
class RawTunnel:
    """A raw TCP tunnel's audit: which rule let it through, and the bytes it carried."""

    request_id: str
    session_id: str
    rule: str  # which rule, and whose: "the organization's rule github.com:22"
    host: str
    port: int
    started: float
    up: int = 0  # from the agent
    down: int = 0  # to the agent
    done: bool = False
    cut: str | None = None  # why the proxy closed it (its session ended, its rule was removed), for the outcome


def tcp_rule(context: SessionContext, host: str, port: int) -> str | None:
    """Which of the session's TCP rules lets HOST:PORT through, named with its owner, or None (denied)."""
    rule = tcp_allows(context.egress_tcp, host, port)
    if rule is not None:
        return f"the organization's rule {rule}"
    rule = tcp_allows(context.project_tcp, host, port)
    if rule is not None:
        return f"the project's rule {rule}"
    return None


def attempt_record(raw: RawTunnel, *, client_address: str) -> dict[str, Any]:
    return {
        "id": raw.request_id,
        "phase": "attempt",
        "session_id": raw.session_id,
        "client_address": client_address[:64],
        "at": now(),
        "kind": "tcp",
        "connector": "",
        "action": "",
        "method": "CONNECT",
        "host": raw.host,
        "path": "",
        "args": {"port": raw.port},
        "decision": "allow",
        "reason": f"raw TCP under {raw.rule}",
        "problem_type": "",
        "credential_id": None,
    }


def outcome_record(raw: RawTunnel, *, error: str | None) -> dict[str, Any]:
    return {
        "id": raw.request_id,
        "phase": "outcome",
        "session_id": raw.session_id,
        "at": now(),
        "upstream_status": None,
        "latency_ms": round((time.perf_counter() - raw.started) * 1000, 3),
        "request_bytes": raw.up,
        "response_bytes": raw.down,
        "usage": None,
        "error": error,
        "completed_at": now(),
    }


def count(raw: RawTunnel, flow: tcp.TCPFlow) -> None:
    """Count the message just relayed, and drop it: a long SSH session keeps no history in memory."""
    for message in flow.messages:
        if message.from_client:
            raw.up += len(message.content)
        else:
            raw.down += len(message.content)
    flow.messages.clear()


_installed = False


def install() -> None:
    """A CONNECT marked raw (METADATA_KEY) gets a TCP relay as its tunnel's layer at once, not a wait for the
    client's first bytes: some protocols (MySQL, SMTP) have the server speak first."""
    global _installed
    if _installed:
        return
    _installed = True
    stream = http_layers.HttpStream
    original = stream.handle_connect_regular

    def handle_connect_regular(self: Any) -> Generator[commands.Command, Any, None]:
        target = self.flow.metadata.get(METADATA_KEY)
        if target and not self.flow.response:
            self.context.server.address = tuple(target)  # the address resolved and checked, nothing else
            self.child_layer = tcp_layers.TCPLayer(self.context)
            yield from self.handle_connect_finish()
            return
        yield from original(self)  # type: ignore[no-untyped-call]

    stream.handle_connect_regular = handle_connect_regular  # type: ignore[method-assign]
