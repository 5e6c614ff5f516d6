"""WebSocket messages of a session holding credentials: the upstream's redacted, the agent's scanned like a body.

mitmproxy assembles a message from its frames before the `websocket_message` hook, so a credential split over
frames is seen whole. A message from the upstream has every form of every credential the session can reach
replaced (text and binary alike); a message from the agent that carries one, in any form, is dropped, every later
message of that WebSocket in either direction is dropped too, and its connection is closed: the caller audits
the refusal as critical (`credential-in-request`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mitmproxy import ctx, http
from mitmproxy.websocket import WebSocketMessage

from dataplane import credscan, exfil
from dataplane.credscan import Matcher
from dataplane.flowstate import Pending
from dataplane.problems import Refusal

log = logging.getLogger("aileron.proxy")


@dataclass
class Socket:
    """A WebSocket after its 101: the request it upgraded and the matcher its session was scanned with."""

    pending: Pending
    scan: Matcher
    refused: bool = False  # a message carried a credential: nothing more passes, either way


def screen(reach: exfil.Reach, socket: Socket, message: WebSocketMessage) -> Refusal | None:
    """Redact an upstream's message in place; a Refusal for an agent's message that carries a credential."""
    if socket.refused:
        message.drop()  # type: ignore[no-untyped-call]
        return None
    if not message.from_client:
        redacted, count = exfil.redact_value(socket.scan, message.content)
        if count:
            message.content = redacted
            log.warning("request %s: a credential in a WebSocket message was redacted", socket.pending.request_id)
        return None
    return refused_for(reach, socket, message, credscan.scan_request(socket.scan, body=message.content))


def refused_for(
    reach: exfil.Reach, socket: Socket, message: WebSocketMessage, found: credscan.Found | None
) -> Refusal | None:
    """The refusal of an agent's message in which the scan `found` a credential (None: it passes)."""
    if found is None:
        return None
    message.drop()  # type: ignore[no-untyped-call]
    socket.refused = True
    refusal = exfil.leak(reach, socket.pending.live.context.session_id, socket.scan, found)
    return Refusal(
        refusal.kind, refusal.detail.replace("the request carries", "a WebSocket message carries"), refusal.extra
    )


def close(flow: http.HTTPFlow) -> None:
    """End the agent's connection (a killed flow does not end a WebSocket in mitmproxy 12): its reading task is
    cancelled, which closes both sides. Best effort: a refused socket drops every message meanwhile."""
    try:
        server = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        handler = server.connections.get(flow.client_conn.id) if server is not None else None
        task = handler.transports[handler.client].handler if handler is not None else None
        if task is not None:
            task.cancel("aileron: a WebSocket message carried a credential")
    except Exception as exc:
        log.error("closing a refused WebSocket failed (%s); its messages are dropped", type(exc).__name__)
