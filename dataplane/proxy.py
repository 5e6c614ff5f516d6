"""The credential-mediation proxy: a mitmproxy addon that decides, injects and audits every agent request.

For each request inside a session's CONNECT tunnel, in `requestheaders` (or in `request` once a bounded body
has been read, for a credentialed action that carries one):

1. the session must be live (its token in Proxy-Authorization at CONNECT, re-checked on a short cache);
2. Host / :authority, SNI and the CONNECT target must name the same destination;
3. a request to a connector's host must be one of its actions (connector matcher), to an enabled connector,
   allowed by policy (connector default + organization and team Cedar policies); an action that needs
   approval is held (asynchronously) until people grant it, for its window, and a grant is used once;
4. the attempt is written durably to the audit spool; if it cannot be, nothing is sent (503);
5. whatever auth the agent sent is stripped and the credential decrypted by the credential service is
   injected; the request goes upstream to the address the proxy resolved and checked, with strict TLS;
6. the response is streamed back with any echo of the credential redacted, LLM token usage is counted, and
   the outcome is audited.

Before any of it, what the agent sent (host, path, query, headers, and a read body) is scanned for every
credential its session can reach, in every encoding: one found refuses the request as critical, to any host
(`exfil`, over `credscan`); responses to such sessions are redacted of all of them.

Requests to other hosts are uncredentialed egress: forwarded (and audited) unless the organization keeps an
allowlist, never to private addresses. Plain HTTP is refused. Imports no Django.

Each step has its module: 1 `sessions`, 2 `destination` (and `framing`), 3 `decision` and `approval_hold`,
4 `audit_records`, 5 `inject`, 6 and the scan `exfil`; a flow's state between hooks is a `flowstate.Pending`. This
addon only orders them on mitmproxy's hooks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from mitmproxy import connection, http, tcp
from mitmproxy.certs import CertStore
from mitmproxy.proxy import server_hooks

from connectors.identify import Catalog
from connectors.package import Action, Connector
from dataplane import approval_hold, credscan, exfil, health, problems, rawtcp, refusals, shell_audit, ws_messages
from dataplane.audit_records import (
    attempt_record,
    failed_outcome_record,
    new_request_id,
    outcome_record,
    refusal_record,
)
from dataplane.connections import ConnectionGuard, close_client
from dataplane.control import ApprovalTicket, ControlPlane, credential_for
from dataplane.decision import decide, identify, model_of
from dataplane.destination import check_binding, norm_host, pin_request, pin_server, resolve, split_authority
from dataplane.failures import describe, frames
from dataplane.flowstate import Pending, Tunnel
from dataplane.framing import (
    BODY_ERROR,
    Malformed,
    bounded_length,
    read_framing,
    refuse_method_override,
    screen_response,
)
from dataplane.guard import Resolver
from dataplane.inject import Decryptor, decrypt, inject, strip_auth
from dataplane.limits import BodyBudget, parse_body_timeout
from dataplane.nested import NestedCredential, NestedScan
from dataplane.problems import Refusal
from dataplane.scanpool import OFF_LOOP_BYTES, ScanPool, ScanTooLong, ScanUnavailable
from dataplane.sessions import CA_HOST, Sessions, proxy_token, serve_ca
from dataplane.spool import AuditSpool, SpoolError
from dataplane.usage import PriceTable, UsageParser, provider_for
from policies.engine import TCP_PORTS_OF_THE_PROXY, egress_allows
from vaults import crypto

log = logging.getLogger("aileron.proxy")

DEFAULT_MAX_BODY = 10 * 1024 * 1024


class AileronProxy:
    def __init__(
        self,
        *,
        control: ControlPlane,
        credentials: Decryptor,
        spool: AuditSpool,
        connectors: list[Connector],
        resolver: Resolver,
        seed: bytes,
        session_ttl: float = 10.0,
        max_body: int = DEFAULT_MAX_BODY,
        prices: PriceTable | None = None,
        budget: BodyBudget | None = None,
        session_connections: int = 256,
        connections: ConnectionGuard | None = None,
        operator_token: str = "",
        scans: ScanPool | None = None,
    ) -> None:
        self.credentials = credentials
        self.spool = spool
        self.catalog = Catalog(connectors)
        self.actions: dict[str, Action] = {a.id: a for c in connectors for a in c.actions}
        self.by_host: dict[str, Connector] = {h.lower(): c for c in connectors for h in c.hosts}
        self.resolver = resolver
        self.control = control
        self.sessions = Sessions(control, seed, ttl=session_ttl)
        self.max_body = max_body
        self.budget = budget or BodyBudget(max(max_body, 64 * 1024 * 1024))
        self.prices = prices or PriceTable.load(None)
        self.tunnels: dict[str, Tunnel] = {}
        self.plain: dict[str, Tunnel] = {}  # the destination of a connection's current plain-HTTP request
        self.session_connections = session_connections
        self.connections = connections  # its hooks are called from these (one addon: one dispatch per hook)
        self.operator_token = operator_token  # what opens the health endpoint's full report
        self.unverified = refusals.Unverified(spool)
        self.scans = scans or ScanPool()  # large bodies are scanned in worker processes
        self.scan_slots: dict[str, asyncio.Lock] = {}  # per user: one large body scanned at a time
        self.held: dict[str, tuple[str, str]] = {}  # client connection -> (session token, user) it counts for
        self.tunnels_of: Counter[str] = Counter()  # connections held, by session token and by "user:" id
        self.raw: dict[str, rawtcp.RawTunnel] = {}  # raw TCP tunnels (TCP rules), by client connection
        self._raw_watch: asyncio.Task[None] | None = None  # closes those whose session or rule is gone
        self.pending: dict[str, Pending] = {}
        self.sockets: dict[str, ws_messages.Socket] = {}  # WebSockets of sessions holding credentials, by flow
        self.reach = exfil.Reach(functools.partial(decrypt, credentials))
        spool.scrub = self.reach.scrub  # every audit record, whoever builds it, redacted of its session's credentials

    # --- connection-level hooks ---------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        try:
            await self._connect(flow)
        except Exception as exc:
            self._drop_tunnel(flow.client_conn.id)
            self._fail(flow, exc, hook="http_connect")

    async def _connect(self, flow: http.HTTPFlow) -> None:
        token = proxy_token(flow.request.headers.get("proxy-authorization", ""))
        flow.request.headers.pop("proxy-authorization", None)
        try:
            if token is None:
                raise Refusal(problems.PROXY_AUTH_REQUIRED, "the CONNECT carried no session token")
            live = await self.sessions.get(token)
            self._drop_tunnel(flow.client_conn.id)
            self._hold_connection(flow.client_conn.id, token, live.context.user_id)
        except Refusal as refusal:
            self._refuse_unverified(flow, refusal, token=token, host=flow.request.host, request_id=new_request_id())
            return
        tunnel = Tunnel(token, norm_host(flow.request.host), flow.request.port)
        wants_raw = flow.request.headers.pop("x-aileron-tunnel", "").strip().lower() == "tcp"  # the sandbox relay
        rule = None
        if tunnel.port not in TCP_PORTS_OF_THE_PROXY and tunnel.host not in self.by_host:
            rule = rawtcp.tcp_rule(live.context, tunnel.host, tunnel.port)
        if rule is not None or wants_raw:
            try:
                if rule is None:
                    raise Refusal(problems.TCP_NOT_ALLOWED, f"no TCP rule allows {tunnel.host}:{tunnel.port}")
                await self._open_raw(flow, tunnel, live.context.session_id, rule)
            except Refusal as refusal:
                self._drop_tunnel(flow.client_conn.id)
                self._refuse_unverified(flow, refusal, token=token, host=tunnel.host, request_id=new_request_id())
                return
        self.tunnels[flow.client_conn.id] = tunnel

    async def _open_raw(self, flow: http.HTTPFlow, tunnel: Tunnel, session_id: str, rule: str) -> None:
        """A CONNECT a TCP rule allows: its checked address, its durable attempt record, then a raw relay."""
        tunnel.target = await resolve(self.resolver, tunnel)
        raw = rawtcp.RawTunnel(new_request_id(), session_id, rule, tunnel.host, tunnel.port, time.perf_counter())
        peer = flow.client_conn.peername
        try:
            await self.spool.record_durable(rawtcp.attempt_record(raw, client_address=str(peer[0]) if peer else ""))
        except SpoolError as exc:
            raise Refusal(problems.AUDIT_UNAVAILABLE, str(exc)) from None
        self.raw[flow.client_conn.id] = raw
        flow.metadata[rawtcp.METADATA_KEY] = (tunnel.target.address, tunnel.target.port)
        if self._raw_watch is None or self._raw_watch.done():
            self._raw_watch = asyncio.create_task(self._watch_raw(), name="aileron raw tunnels")

    async def _watch_raw(self) -> None:
        """While raw tunnels are open: each is closed once its session ends (revoked, expired) or the rule that
        let it through is gone, within about the session cache's lifetime. A tunnel carries no requests to
        re-check, and SSH keep-alives would keep it open for good. A control plane that cannot answer closes
        none: new tunnels are refused meanwhile, open ones were allowed."""
        while self.raw:
            await asyncio.sleep(max(1.0, self.sessions.ttl))
            for client_id, raw in list(self.raw.items()):
                tunnel = self.tunnels.get(client_id)
                if tunnel is None or raw.cut is not None:
                    continue
                try:
                    live = await self.sessions.get(tunnel.token)
                except Refusal as refusal:
                    if refusal.kind is not problems.PROXY_AUTH_REQUIRED:
                        continue
                    raw.cut = "closed by the proxy: the session ended"
                else:
                    if rawtcp.tcp_rule(live.context, raw.host, raw.port) is not None:
                        continue
                    raw.cut = f"closed by the proxy: no TCP rule allows {raw.host}:{raw.port} any more"
                log.info("raw tunnel %s to %s:%s %s", raw.request_id, raw.host, raw.port, raw.cut)
                close_client(client_id, why=raw.cut)

    def _hold_connection(self, client_id: str, token: str, user_id: str) -> None:
        """Count a client connection (a tunnel, or plain-HTTP requests) for its session and its user, or refuse
        it beyond either's limit: one session, or one user's many sessions, cannot fill the connection table."""
        if client_id in self.held:
            return
        user = "user:" + user_id
        if self.tunnels_of[token] >= self.session_connections:
            held, limit, whose = self.tunnels_of[token], self.session_connections, "this session has"
        elif self.tunnels_of[user] >= 2 * self.session_connections:
            held, limit, whose = self.tunnels_of[user], 2 * self.session_connections, "your sessions have"
        else:
            self.held[client_id] = (token, user)
            self.tunnels_of[token] += 1
            self.tunnels_of[user] += 1
            return
        raise Refusal(
            problems.TOO_MANY_CONNECTIONS,
            f"{whose} {held} connections open through the proxy, the limit is {limit}",
            {"retry_after_seconds": 5},
        )

    def refuse_head(self, client: connection.Client, request: http.Request, refusal: Refusal) -> http.Response:
        """Answer a request refused while its head was read (no hook ran), audited in its tunnel's session."""
        tunnel = self.tunnels.get(client.id)
        live = self.sessions.cached(tunnel.token) if tunnel is not None else None
        if tunnel is None or live is None:
            return problems.response(refusal, request_id=new_request_id())
        flow = http.HTTPFlow(client, connection.Server(address=None))
        flow.request = request
        pending = Pending(new_request_id(), time.perf_counter(), live, kind="refused", host=tunnel.host)
        self._refuse(flow, pending, refusal)
        assert flow.response is not None  # noqa: S101 (_refuse always answers)
        return flow.response

    def client_connected(self, client: connection.Client) -> None:
        if self.connections is not None:
            self.connections.client_connected(client)

    def client_disconnected(self, client: connection.Client) -> None:
        if self.connections is not None:
            self.connections.client_disconnected(client)
        self._end_raw(client.id, error=None)
        self._drop_tunnel(client.id)

    # --- raw TCP tunnels (dataplane.rawtcp) ---------------------------------------------------------------

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        if self.connections is not None:
            self.connections.requestheaders(flow)  # in use for as long as it relays

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        raw = self.raw.get(flow.client_conn.id)
        if raw is not None:  # (a TCP layer runs only in a raw tunnel: mitmproxy's rawtcp is off)
            rawtcp.count(raw, flow)
        else:
            flow.messages.clear()

    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        if self.connections is not None:
            self.connections.flow_done(flow)
        self._end_raw(flow.client_conn.id, error=None)

    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        if self.connections is not None:
            self.connections.flow_done(flow)
        self._end_raw(flow.client_conn.id, error=flow.error.msg if flow.error else "the connection failed")

    def _end_raw(self, client_id: str, *, error: str | None) -> None:
        raw = self.raw.pop(client_id, None)
        if raw is not None:
            self._record_safely(rawtcp.outcome_record(raw, error=raw.cut or error))

    def _drop_tunnel(self, client_id: str) -> None:
        self.plain.pop(client_id, None)
        self.tunnels.pop(client_id, None)
        for key in self.held.pop(client_id, ()):
            self.tunnels_of[key] -= 1
            if self.tunnels_of[key] <= 0:
                del self.tunnels_of[key]

    def certstore_for(self, client_id: str) -> CertStore:
        tunnel = self.tunnels.get(client_id)
        live = self.sessions.cached(tunnel.token) if tunnel else None
        if live is None:
            raise ConnectionError("TLS from a client without a live session tunnel")
        return live.certstore

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Connect only to the address this proxy resolved and checked for the tunnel (no DNS rebinding)."""
        try:
            pin_server(self.tunnels.get(data.client.id) or self.plain.get(data.client.id), data.server)
        except Exception as exc:
            log.error("checking an upstream address failed: %s\n%s", describe(exc), frames(exc))
            data.server.error = "aileron: the destination could not be checked"

    # --- request hooks ------------------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.connections is not None:
            self.connections.requestheaders(flow)
        try:
            await self._requestheaders(flow)
        except Exception as exc:
            self._fail(flow, exc, hook="requestheaders")

    async def _requestheaders(self, flow: http.HTTPFlow) -> None:
        request_id = new_request_id()
        started = time.perf_counter()
        tunnel = self.tunnels.get(flow.client_conn.id)
        try:
            if tunnel is None:
                if flow.request.scheme == "http" and norm_host(flow.request.pretty_host) == CA_HOST:
                    if flow.request.path.split("?", 1)[0] == health.PATH:
                        health.serve(flow, self.spool, operator_token=self.operator_token)
                        return
                    if flow.request.path.split("?", 1)[0] == shell_audit.PATH:
                        # the sandbox's mediated shell reporting a command it ran or refused
                        token = proxy_token(flow.request.headers.get("proxy-authorization", ""))
                        await shell_audit.serve(
                            flow, token=token, sessions=self.sessions, spool=self.spool, request_id=request_id
                        )
                        return
                    await serve_ca(flow, self.sessions)
                    return
                tunnel = self._plain_tunnel(flow)  # a package mirror over plain HTTP, or a Refusal
            live = await self.sessions.get(tunnel.token)
        except Refusal as refusal:
            stale = self.sessions.cached(tunnel.token) if tunnel is not None else None
            if tunnel is not None and stale is not None and refusal.kind is problems.CONTROL_PLANE_UNAVAILABLE:
                # The session was live a moment ago: refuse, and keep the refusal in its audit trail.
                self._refuse(flow, Pending(request_id, started, stale, kind="refused", host=tunnel.host), refusal)
            elif tunnel is not None:
                self._refuse_unverified(flow, refusal, token=tunnel.token, host=tunnel.host, request_id=request_id)
            else:
                token = proxy_token(flow.request.headers.get("proxy-authorization", ""))
                host = flow.request.pretty_host
                self._refuse_unverified(flow, refusal, token=token, host=host, request_id=request_id)
            return
        pending = Pending(request_id, started, live, kind="refused", host=tunnel.host)
        if flow.error is not None:
            # mitmproxy's own framing checks (validate_inbound_headers) refused it and answer 400 themselves:
            # keep the attempt in the session's audit trail.
            record = attempt_record(
                flow,
                pending,
                sensitive=(),
                decision="deny",
                reason=flow.error.msg[:300],
                problem_type=problems.REQUEST_SMUGGLING.slug,
            )
            self.spool.record(record)
            return
        self.pending[flow.id] = pending
        try:
            # what the agent sent, before anything is stripped or injected: no credential it could have obtained
            pending.scan = await self.reach.matcher(live.context)
            exfil.check_head(self.reach, live.context.session_id, pending.scan, flow.request, tunnel.host)
            if tunnel.plain:
                await self._screen_plain(flow, tunnel, pending)
            else:
                await self._screen(flow, tunnel, pending)
        except Refusal as refusal:
            self._refuse(flow, pending, refusal)
            return
        if flow.response is None and not pending.decide_with_body and tunnel.target:
            pin_request(flow.request, tunnel.target)

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as exc:
            self._fail(flow, exc, hook="request")

    async def _request(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        if pending is None or flow.response is not None:
            return
        if pending.scan_body:  # an egress body, read before anything is forwarded
            try:
                await self._check_body(flow, pending)
                await self._record_egress(flow, pending)
            except Refusal as refusal:
                self._refuse(flow, pending, refusal)
            return
        if not pending.decide_with_body:
            return
        try:
            await self._check_body(flow, pending)
            await self._decide(flow, pending, body=flow.request.raw_content or b"")
        except Refusal as refusal:
            self._refuse(flow, pending, refusal)
            return
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is not None and tunnel.target is not None:
            pin_request(flow.request, tunnel.target)

    async def _check_body(self, flow: http.HTTPFlow, pending: Pending) -> None:
        """The outbound scan of a read body. A large or compressed one is read (decoded every way) in a worker
        process, one at a time per user and within a deadline: no session's megabytes of escapes may hold the lock
        every session's requests need, nor the workers for long (dataplane.scanpool)."""
        session_id = pending.live.context.session_id
        matcher = pending.scan or exfil.EMPTY
        body = flow.request.raw_content or b""
        encoding = flow.request.headers.get("content-encoding", "").strip().lower()
        compressed = encoding not in ("", "identity")  # a small body may decode to megabytes: never on the loop
        if not matcher or not body or (len(body) < OFF_LOOP_BYTES and not compressed):
            exfil.check_body(self.reach, session_id, matcher, flow.request)
            return
        # One large scan at a time per user (all their sessions together), each within the pool's deadline: no
        # user's bodies can hold the workers for long ahead of another's.
        user = pending.live.context.user_id
        slot = self.scan_slots.get(user)
        if slot is None:
            if len(self.scan_slots) > 10_000:  # forget the idle ones
                self.scan_slots = {k: v for k, v in self.scan_slots.items() if v.locked()}
            slot = self.scan_slots[user] = asyncio.Lock()
        async with slot:
            try:
                found = await self.scans.scan(matcher, body, encoding)
            except (credscan.Undecodable, ScanTooLong) as exc:
                raise Refusal(problems.UNSCANNABLE_BODY, str(exc)) from None
            except ScanUnavailable as exc:
                raise Refusal(problems.SCAN_UNAVAILABLE, str(exc)) from None
        if found is not None:
            raise exfil.leak(self.reach, session_id, matcher, found)

    async def _screen(self, flow: http.HTTPFlow, tunnel: Tunnel, pending: Pending) -> None:
        request = flow.request
        if request.scheme != "https" or not flow.client_conn.tls_established:
            # Plaintext inside a CONNECT tunnel: never forwarded (and never given a credential).
            raise Refusal(problems.HTTPS_ONLY, "the tunnel carried plain HTTP; only HTTPS is forwarded")
        # strict HTTP/1.1 and no hop-by-hop field forwarded (before the binding reads Host), then destination binding
        framing = read_framing(request)
        pending.websocket = framing.websocket
        check_binding(flow, tunnel)
        connector = self.by_host.get(tunnel.host)
        if connector is None:
            await self._egress(flow, tunnel, pending)
            return
        pending.kind = "credentialed"
        pending.connector = connector.name
        refuse_method_override(framing, connector.name)
        strip_auth(request, connector, framing.names)
        length = bounded_length(framing, self.max_body)
        tunnel.target = tunnel.target or await resolve(self.resolver, tunnel)
        if length > 0:
            self._reserve(flow, pending, length)
            pending.decide_with_body = True  # buffered (not streamed): decided in `request`
            return
        await self._decide(flow, pending, body=b"")

    def _plain_tunnel(self, flow: http.HTTPFlow) -> Tunnel:
        """A plain-HTTP request to the proxy (absolute form, no CONNECT): the destination it names, for a session,
        as a tunnel of its own (this connection's next request may name another); Refusal if none can be."""
        request = flow.request
        token = proxy_token(request.headers.get("proxy-authorization", ""))
        if request.scheme != "http" or not request.host or token is None:
            raise Refusal(problems.HTTPS_ONLY, "plain HTTP is not forwarded; use https:// through CONNECT")
        tunnel = Tunnel(token, norm_host(request.host), request.port, plain=True)
        self.plain[flow.client_conn.id] = tunnel
        return tunnel

    async def _screen_plain(self, flow: http.HTTPFlow, tunnel: Tunnel, pending: Pending) -> None:
        """Plain HTTP goes only to the organization's listed hosts (package mirrors), on port 80, uncredentialed."""
        context = pending.live.context
        if tunnel.host in self.by_host or not egress_allows(context.egress_plain_http, tunnel.host):
            raise Refusal(
                problems.HTTPS_ONLY,
                f"plain HTTP to {tunnel.host} is not forwarded; use https://, or have an admin add the host to "
                "the organization's plain-HTTP egress hosts (package mirrors)"
                if tunnel.host not in self.by_host
                else f"{tunnel.host} is a connector's host: it is reached over HTTPS only",
            )
        if tunnel.port != 80:
            raise Refusal(problems.HTTPS_ONLY, f"plain HTTP is forwarded to port 80 only, not {tunnel.port}")
        # counted like a tunnel, for the session of its first request
        self._hold_connection(flow.client_conn.id, tunnel.token, context.user_id)
        framing = read_framing(flow.request)  # strict HTTP/1.1; Proxy-Authorization and hop-by-hop fields removed
        if framing.websocket:
            raise Refusal(problems.HTTPS_ONLY, "no WebSocket over plain HTTP")
        host_header = flow.request.host_header or ""
        if split_authority(host_header, default_port=80) != (tunnel.host, 80):
            raise Refusal(
                problems.DESTINATION_MISMATCH,
                f"the request goes to {tunnel.host} but its Host header names {host_header or 'no host'}",
            )
        await self._egress(flow, tunnel, pending, listed=True)

    async def _egress(self, flow: http.HTTPFlow, tunnel: Tunnel, pending: Pending, *, listed: bool = False) -> None:
        live = pending.live
        pending.kind = "egress"
        # `listed`: named by the organization for this use (plain HTTP): its own allowlist
        allowlist = live.context.egress_mode == "allowlist" and not listed
        if allowlist and not egress_allows(live.context.egress_allow, tunnel.host):
            raise Refusal(problems.EGRESS_DENIED, f"{tunnel.host} is not on your organization's egress allowlist")
        tunnel.target = tunnel.target or await resolve(self.resolver, tunnel)
        if pending.scan:
            flow.request.headers["accept-encoding"] = "identity"  # so an echo of a credential can be redacted
            length = exfil.hold_body(flow.request, self.max_body)
            if length > 0:
                self._reserve(flow, pending, length)
                pending.scan_body = True  # read, scanned and recorded in `request`, then sent
                return
        flow.request.stream = True
        await self._record_egress(flow, pending)

    def _reserve(self, flow: http.HTTPFlow, pending: Pending, length: int) -> None:
        """Count a body read whole before it is sent against the budget of bodies in flight (the session's share
        of it, and all of it), or refuse it."""
        context = pending.live.context
        reason = self.budget.admit(flow.id, length, owner=context.session_id, user=context.user_id)
        if reason is not None:
            raise Refusal(problems.BODY_BUDGET_EXHAUSTED, reason, {"retry_after_seconds": 2})

    async def _record_egress(self, flow: http.HTTPFlow, pending: Pending) -> None:
        # Like a credentialed attempt: nothing leaves before its record is on disk (the group commit shares it).
        try:
            await self.spool.record_durable(
                attempt_record(flow, pending, sensitive=(), decision="allow", reason="uncredentialed egress")
            )
        except SpoolError as exc:
            raise Refusal(problems.AUDIT_UNAVAILABLE, str(exc)) from None
        pending.attempt_recorded = True

    async def _decide(self, flow: http.HTTPFlow, pending: Pending, *, body: bytes) -> None:
        request = flow.request
        ctx_ = pending.live.context
        path, _, query = request.path.partition("?")
        # 3. action, connector, policy, approval
        found = identify(self.catalog, pending, request, body=body)
        outcome, reason = decide(pending, self.actions, found)
        candidates = ctx_.credentials.get(pending.connector, ())
        ref = credential_for(candidates, pending.action)
        if ref is None:
            why = f"none of your vaults holds a credential for {pending.connector}"
            if candidates:
                why = f"your credentials for {pending.connector} are bound to other actions than {pending.action}"
            if (vault := ctx_.waiting.get(pending.connector)) is not None:
                why += f"; waiting for an owner of {vault!r} to confirm you (`aileron vault confirm`)"
            raise Refusal(problems.NO_CREDENTIAL, why)
        approval: ApprovalTicket | None = None
        if outcome == "approval_required":
            # Held until people decide (other traffic keeps flowing: this only awaits), its body in the pool of
            # held ones: bodies being sent never wait for people's decisions.
            held = self.budget.hold(flow.id)
            if held is not None:
                raise Refusal(problems.BODY_BUDGET_EXHAUSTED, held, {"retry_after_seconds": 30})
            approval = await approval_hold.hold(
                self.control,
                flow,
                pending,
                ref,
                sensitive=self._sensitive(pending),
                path=found[0].path,
                query=query,
                body=body,
                why=reason,
            )
            reason = f"{reason}; granted by {', '.join(approval.approvers) or 'an approver'}"
        # 4. durable attempt record, before any credential exists in this request
        attempt = attempt_record(
            flow,
            pending,
            sensitive=self._sensitive(pending),
            decision="allow",
            reason=reason,
            credential_id=ref.credential_id,
        )
        if approval is not None:
            attempt["approval_id"] = approval.id
            attempt["approvers"] = list(approval.approvers)
        try:
            await self.spool.record_durable(attempt)
        except SpoolError as exc:
            raise Refusal(problems.AUDIT_UNAVAILABLE, str(exc)) from None
        pending.attempt_recorded = True
        # 5. decrypt, strip, inject
        plaintext = await decrypt(self.credentials, ctx_.session_id, ref.vault_id, ref.credential_id)
        try:
            secret = bytes(plaintext)
            pending.credential_version = plaintext.version
        finally:
            crypto.wipe(plaintext)
        pending.scan = self.reach.injected(ctx_.session_id, ref.credential_id, secret)
        connector = self.by_host[pending.host]
        pending.secret = secret  # from here on, known to every path that must keep it out of what it writes
        pending.scheme = connector.auth.scheme
        inject(request, connector, secret)
        if found[0].path != path:
            request.path = found[0].path + (f"?{query}" if query else "")
        request.headers["accept-encoding"] = "identity"  # so echoes can be redacted and usage read while streaming
        pending.provider = provider_for(pending.connector, found[0].action.split(".", 1)[-1])
        pending.model = model_of(pending.args)
        if pending.provider is not None:
            self.prices.prepare()  # the price catalog loads while the model answers

    def _sensitive(self, pending: Pending) -> tuple[str, ...] | list[str]:
        action = self.actions.get(pending.action)
        return action.sensitive if action else ()

    # --- response hooks -----------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as exc:
            self._fail_response(flow, exc)

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        response = flow.response
        if pending is None or response is None or pending.kind == "refused":
            return
        try:
            screened = screen_response(
                status=response.status_code, fields=response.headers.fields, websocket=pending.websocket
            )
        except Malformed as exc:
            log.warning("request %s: %s; connection closed", pending.request_id, exc)
            flow.kill()  # type: ignore[no-untyped-call]  # never a raw pipe: its bytes would bypass every check
            return
        if screened is not None:
            response.headers.fields = screened
        if pending.kind == "egress" and not pending.scan:
            response.stream = True
            return
        # 6. count LLM usage while streaming, and redact echoes of the credentials
        if pending.provider is not None:
            pending.usage = UsageParser(
                provider=pending.provider,
                content_type=response.headers.get("content-type", ""),
                request_model=pending.model,
            )

        def count(chunk: bytes) -> None:
            pending.response_bytes += len(chunk)
            if pending.usage is not None:
                try:
                    pending.usage.feed(chunk)
                except Exception as exc:
                    # Usage is bookkeeping: the answer still reaches the agent, uncounted.
                    error = describe(exc, scan=pending.scan)
                    log.error("request %s: counting usage failed: %s\n%s", pending.request_id, error, frames(exc))
                    pending.usage = None

        # every header now, and the body as it streams, of every form of every credential the session can reach
        pending.redactor = exfil.redact_response(flow, pending.scan or exfil.EMPTY, count)
        redact = response.stream
        assert callable(redact)  # noqa: S101
        # compressed data inside a credentialed answer is read too (gzip in gzip, application/gzip, ...)
        inside = NestedScan(pending.scan) if pending.kind == "credentialed" and pending.scan else None

        def stream(chunk: bytes) -> Iterable[bytes] | bytes:
            try:
                out = redact(chunk)
                if inside is None:
                    return out
                released = [piece for part in ([out] if isinstance(out, bytes) else out) for piece in inside(part)]
                return released + (inside(b"") if not chunk else [])
            except NestedCredential as exc:
                pending.error = pending.error or f"nested: {exc}; the answer was cut off"
                log.warning("request %s: %s; the answer was cut off", pending.request_id, exc)
                if flow.killable:
                    flow.kill()  # type: ignore[no-untyped-call]
                return []
            except Exception as exc:
                # Part of the answer may have reached the agent already: end it as broken, never pass the rest.
                pending.error = pending.error or describe(exc, scan=pending.scan)
                log.error("request %s: redacting failed: %s\n%s", pending.request_id, pending.error, frames(exc))
                if flow.killable:
                    flow.kill()  # type: ignore[no-untyped-call]
                return []  # no chunk at all: an empty one would end a chunked body cleanly

        response.stream = stream

    def response(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        if pending is not None and pending.scan and flow.response is not None:
            exfil.redact_trailers(flow.response, pending.scan)  # sent to the agent after this hook
            if flow.websocket is not None:  # a 101 follows: its messages are screened with the same matcher
                self.sockets[flow.id] = ws_messages.Socket(pending, pending.scan)
        self._finish(flow)
        if pending is not None and pending.response_failed:
            refusal = Refusal(
                problems.RESPONSE_ERROR, "the proxy failed on the upstream's answer; the request was sent"
            )
            flow.response = problems.response(refusal, request_id=pending.request_id)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        socket = self.sockets.get(flow.id)
        if socket is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        try:
            refusal = await self._screen_message(socket, message)
        except Exception as exc:
            message.drop()  # type: ignore[no-untyped-call]  # never passed unread
            socket.refused = True
            log.error("request %s: screening a WebSocket message failed: %s", socket.pending.request_id, describe(exc))
            ws_messages.close(flow)
            return
        if refusal is None:
            return
        log.warning(
            "request %s: refused as %s (%s)", socket.pending.request_id, refusal.kind.slug, refusal.kind.severity
        )
        record = refusal_record(flow, socket.pending, refusal, sensitive=())
        self._record_safely({**record, "id": new_request_id()})
        ws_messages.close(flow)

    async def _screen_message(self, socket: ws_messages.Socket, message: Any) -> Refusal | None:
        """A WebSocket message of a session holding credentials: bounded like a body, a large one from the agent
        scanned in the workers (outside attack: 20 MiB messages were read on the event loop, 7 s each)."""
        size = len(message.content) if not socket.refused else 0
        if size > self.max_body:
            message.drop()
            socket.refused = True
            return Refusal(
                problems.BODY_TOO_LARGE,
                f"a WebSocket message of {size} bytes; at most {self.max_body} are read",
                {"limit": self.max_body},
            )
        if socket.refused or not message.from_client or size < OFF_LOOP_BYTES:
            return ws_messages.screen(self.reach, socket, message)
        user = socket.pending.live.context.user_id
        slot = self.scan_slots.setdefault(user, asyncio.Lock())
        async with slot:
            try:
                found = await self.scans.scan(socket.scan, message.content, "")
            except (ScanTooLong, ScanUnavailable) as exc:
                message.drop()
                socket.refused = True
                return Refusal(problems.UNSCANNABLE_BODY, f"a WebSocket message: {exc}")
        return ws_messages.refused_for(self.reach, socket, message, found)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        if self.connections is not None:
            self.connections.websocket_start(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if self.connections is not None:
            self.connections.flow_done(flow)
        self.sockets.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self.sockets.pop(flow.id, None)
        pending = self.pending.get(flow.id)
        cut = parse_body_timeout(flow.error.msg) if flow.error is not None else None
        if pending is not None and cut is not None:
            # The body came too slowly: the agent was answered 408 with this request id; nothing was completed.
            request_id, detail = cut
            record = refusal_record(flow, pending, Refusal(problems.BODY_TIMEOUT, detail[:300]), sensitive=())
            record.update(id=request_id or new_request_id(), kind="refused", credential_id=None)
            self.spool.record(record)
        elif pending is not None and flow.error is not None and BODY_ERROR in flow.error.msg:
            # The head was fine and went on; the body was not, and the upstream saw no end of it: audit the refusal.
            refusal = Refusal(problems.REQUEST_SMUGGLING, flow.error.msg.split(BODY_ERROR, 1)[1][:300])
            record = refusal_record(flow, pending, refusal, sensitive=())
            self.spool.record({**record, "id": new_request_id(), "kind": "refused", "credential_id": None})
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        if self.connections is not None:
            self.connections.flow_done(flow)
        self.budget.release(flow.id)
        pending = self.pending.pop(flow.id, None)
        if pending is None:
            return
        scan, pending.secret, pending.scan = pending.scan, None, None
        try:
            self._complete(flow, pending)
        except Exception as exc:
            error = describe(exc, scan=scan)
            log.error("request %s: recording the outcome failed: %s\n%s", pending.request_id, error, frames(exc))
            self._record_safely(failed_outcome_record(pending, error))

    def _complete(self, flow: http.HTTPFlow, pending: Pending) -> None:
        if pending.redactor is not None and pending.redactor.count:
            # Worth an operator's attention: the upstream sent the credential back (never logged itself).
            log.warning(
                "request %s (%s): the upstream echoed the credential %d time(s); redacted before the agent saw it",
                pending.request_id,
                pending.action,
                pending.redactor.count,
            )
        if pending.kind == "refused" or not pending.attempt_recorded:
            return
        usage = pending.usage.result() if pending.usage is not None else None
        if usage is not None:
            usage.cost_usd = self.prices.cost(usage)
        self.spool.record(outcome_record(flow, pending, usage, response=flow.response))

    # --- refusals and failures ----------------------------------------------------------------------------

    def _refuse(self, flow: http.HTTPFlow, pending: Pending, refusal: Refusal) -> None:
        """Answer the agent with the problem, never forward, and audit the refusal (durably, best effort)."""
        pending.secret = None
        flow.request.stream = False
        flow.response = problems.response(refusal, request_id=pending.request_id)
        if refusal.kind.severity:
            log.warning("request %s: refused as %s (%s)", pending.request_id, refusal.kind.slug, refusal.kind.severity)
        self.spool.record(refusal_record(flow, pending, refusal, sensitive=self._sensitive(pending)))
        pending.scan = None
        self.pending.pop(flow.id, None)

    def _refuse_unverified(
        self, flow: http.HTTPFlow, refusal: Refusal, *, token: str | None, host: str, request_id: str
    ) -> None:
        """Answer a refusal outside a live session and audit it, attributed as far as is known (refusals.py)."""
        flow.response = problems.response(refusal, request_id=request_id)
        cached = self.sessions.cached(token) if token else None
        session_id = cached.context.session_id if cached is not None else None
        self.unverified.audit(flow, refusal, request_id=request_id, session_id=session_id, token=token, host=host)

    def _fail(self, flow: http.HTTPFlow, exc: Exception, *, hook: str) -> None:
        """An unexpected exception in a request hook: the agent gets a problem, nothing is forwarded (the proxy
        answers itself), and the attempt is audited with the error."""
        pending = self.pending.pop(flow.id, None) or self._attributable(flow)
        request_id = pending.request_id if pending is not None else new_request_id()
        error = describe(exc, scan=pending.scan) if pending else describe(exc)
        log.error("request %s: the %s hook failed: %s\n%s", request_id, hook, error, frames(exc))
        refusal = Refusal(
            problems.INTERNAL_ERROR, f"the proxy failed on this request ({type(exc).__name__}); nothing was sent"
        )
        flow.request.stream = False
        flow.response = problems.response(refusal, request_id=request_id)
        if pending is None:
            return  # no live session to attribute it to: the log line is all there is
        pending.secret = None
        pending.error = error
        if pending.attempt_recorded:
            # The attempt is durably "allow": complete it with the error; nothing reached the upstream.
            self._record_safely(outcome_record(flow, pending, None, response=None))
            return
        record = refusal_record(flow, pending, refusal, sensitive=self._sensitive(pending))
        record["decision"] = "error"
        record["reason"] = error[:1000]
        if pending.scan:
            exfil.audit_fields(pending.scan, record)
        self._record_safely(record)

    def _fail_response(self, flow: http.HTTPFlow, exc: Exception) -> None:
        """An unexpected exception on the upstream's answer: it is buffered, then replaced in `response`."""
        pending = self.pending.get(flow.id)
        if flow.response is not None:
            flow.response.stream = False
        if pending is None:
            log.error("the responseheaders hook failed: %s\n%s", describe(exc), frames(exc))
            return
        pending.error = describe(exc, scan=pending.scan)
        pending.response_failed = True
        log.error("request %s: the responseheaders hook failed: %s\n%s", pending.request_id, pending.error, frames(exc))

    def _attributable(self, flow: http.HTTPFlow) -> Pending | None:
        """A record for a failure before the flow had one, when its tunnel's session is known."""
        tunnel = self.tunnels.get(flow.client_conn.id)
        live = self.sessions.cached(tunnel.token) if tunnel is not None else None
        if tunnel is None or live is None:
            return None
        return Pending(new_request_id(), time.perf_counter(), live, kind="refused", host=tunnel.host)

    def _record_safely(self, record: dict[str, Any]) -> None:
        try:
            self.spool.record(record)
        except Exception as exc:
            log.error("request %s: its audit record could not be written: %s", record.get("id"), describe(exc))
