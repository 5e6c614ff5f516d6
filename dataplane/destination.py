"""Step 2 of a request: Host / :authority, SNI and the CONNECT target name one destination, resolved and pinned."""

from __future__ import annotations

from mitmproxy import connection, http

from dataplane import problems
from dataplane.flowstate import Tunnel
from dataplane.guard import Blocked, Resolver, Target, Unresolvable
from dataplane.problems import Refusal


def norm_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def split_authority(authority: str, *, default_port: int) -> tuple[str, int]:
    text = authority.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            host, port_text = text, ""
    port = int(port_text) if port_text.isdigit() else default_port
    return norm_host(host), port


def check_binding(flow: http.HTTPFlow, tunnel: Tunnel) -> None:
    """Refuse a request whose Host or SNI names another destination than its tunnel's CONNECT."""
    authority = flow.request.host_header or ""
    host, port = split_authority(authority, default_port=tunnel.port)
    sni = flow.client_conn.sni
    if host != tunnel.host or port != tunnel.port or (sni is not None and norm_host(sni) != tunnel.host):
        raise Refusal(
            problems.DESTINATION_MISMATCH,
            f"the tunnel goes to {tunnel.host}:{tunnel.port} but the request names {authority or 'no host'}"
            + (f" (SNI {sni})" if sni and norm_host(sni) != tunnel.host else ""),
        )


async def resolve(resolver: Resolver, tunnel: Tunnel) -> Target:
    """The tunnel's destination resolved once and checked public, or a Refusal."""
    try:
        return await resolver.resolve(tunnel.host, tunnel.port)
    except Blocked as exc:
        raise Refusal(problems.PRIVATE_ADDRESS, str(exc)) from None
    except Unresolvable as exc:
        raise Refusal(problems.UNRESOLVABLE, str(exc)) from None


def pin_request(request: http.Request, target: Target) -> None:
    """Send the request to the checked address itself (keeping Host), so mitmproxy reuses the connection."""
    host_header = request.host_header
    request.host = target.address
    request.port = target.port
    request.host_header = host_header


def pin_server(tunnel: Tunnel | None, server: connection.Server) -> None:
    """Let the upstream connection go only to the address checked for the tunnel (no DNS rebinding)."""
    if tunnel is None or tunnel.target is None or server.address is None:
        server.error = "aileron: no checked destination for this connection"
        return
    host, port = server.address
    if str(host) != tunnel.target.address or port != tunnel.target.port:
        server.error = "aileron: destination differs from the checked one"
        return
    server.sni = tunnel.host
