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

Requests to other hosts are uncredentialed egress: forwarded (and audited) unless the organization keeps an
allowlist, never to private addresses. Plain HTTP is refused. Imports no Django.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mitmproxy import connection, http, tls
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.certs import CertStore, CertStoreEntry
from mitmproxy.proxy import context, server_hooks

from connectors.identify import Catalog, Identified
from connectors.matcher import Refused
from connectors.package import Action, Connector
from dataplane import problems, session_ca, shell_audit
from dataplane.control import (
    ApprovalTicket,
    ControlPlane,
    ControlPlaneError,
    CredentialRef,
    NotFoundError,
    SessionContext,
)
from dataplane.credentials import CredentialServiceError, SessionUnknown
from dataplane.guard import Blocked, Resolver, Target, Unresolvable
from dataplane.limits import BodyBudget
from dataplane.problems import Refusal
from dataplane.spool import AuditSpool, SpoolError
from dataplane.usage import PriceTable, UsageParser, provider_for
from policies.engine import Engine, PolicyDoc, PolicyError, egress_allows
from vaults import crypto

log = logging.getLogger("aileron.proxy")

CA_HOST = "aileron.proxy"  # http://aileron.proxy/ca.pem: the session's CA; /shell-audit: dataplane.shell_audit
DEFAULT_MAX_BODY = 10 * 1024 * 1024
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# Auth an agent might attach; all of it is removed before a credential is injected.
AUTH_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie")
ARG_STRING_LIMIT = 256
ARGS_JSON_LIMIT = 8 * 1024
RETRY_AFTER_SECONDS = 30  # the hint an agent gets when its held request's window closed undecided


@dataclass
class Live:
    """A live session as the proxy sees it: context, compiled policy and certificate store."""

    context: SessionContext
    engine: Engine
    certstore: CertStore
    ca_pem: bytes
    fetched_at: float


class Sessions:
    """Session token -> Live, cached for `ttl` seconds; one fetch at a time per token; fails closed."""

    def __init__(self, control: ControlPlane, seed: bytes, *, ttl: float) -> None:
        self.control = control
        self.seed = seed
        self.ttl = ttl
        self._live: dict[str, Live] = {}
        self._inflight: dict[str, asyncio.Future[Live]] = {}
        self._refused: dict[str, float] = {}  # tokens the control plane just refused: not asked again at once
        self.dhparams: Any = None

    def cached(self, token: str) -> Live | None:
        """The last known state of a session, however old (for attributing a refusal, never for allowing)."""
        return self._live.get(token)

    async def get(self, token: str) -> Live:
        # Keyed by the token itself: it is in memory for the tunnel anyway, and a str caches its hash.
        found = self._live.get(token)
        now = time.monotonic()
        if found is not None and now - found.fetched_at < self.ttl:
            return found
        if self._refused.get(token, 0.0) > now:
            raise Refusal(problems.PROXY_AUTH_REQUIRED, "the session token is unknown, revoked or expired")
        pending = self._inflight.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Live] = asyncio.get_running_loop().create_future()
        self._inflight[token] = future
        try:
            live = await self._fetch(token, found)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        else:
            future.set_result(live)
            return live
        finally:
            del self._inflight[token]

    async def _fetch(self, token: str, previous: Live | None) -> Live:
        try:
            context = await asyncio.to_thread(self.control.session_context, token)
        except NotFoundError:
            self._live.pop(token, None)
            if len(self._refused) > 10_000:
                self._refused.clear()
            self._refused[token] = time.monotonic() + min(self.ttl, 2.0)
            raise Refusal(problems.PROXY_AUTH_REQUIRED, "the session token is unknown, revoked or expired") from None
        except ControlPlaneError as exc:
            raise Refusal(problems.CONTROL_PLANE_UNAVAILABLE, f"cannot check the session: {exc}") from None
        if previous is not None and previous.context == context:
            previous.fetched_at = time.monotonic()
            return previous
        try:
            engine = Engine([PolicyDoc(id=p["id"], name=p["name"], cedar=p["cedar"]) for p in context.policies])
        except PolicyError as exc:
            raise Refusal(problems.POLICY_DENIED, f"the organization's policy does not compile: {exc}") from None
        expires = datetime.fromisoformat(context.expires_at.replace("Z", "+00:00"))
        if previous is not None and previous.context.session_id == context.session_id:
            store, pem = previous.certstore, previous.ca_pem
        else:
            store = session_ca.session_certstore(
                self.seed, session_id=context.session_id, expires_at=expires, dhparams=self.dhparams
            )
            pem = session_ca.cert_pem(store.default_ca.to_cryptography())
        live = Live(context, engine, store, pem, time.monotonic())
        self._live[token] = live
        self._evict_idle()
        return live

    def _evict_idle(self) -> None:
        """Forget sessions unused for a while (their certificate stores with them); a later request re-fetches."""
        horizon = time.monotonic() - max(600.0, self.ttl * 60)
        for key in [k for k, v in self._live.items() if v.fetched_at < horizon]:
            del self._live[key]


@dataclass
class Tunnel:
    """One client connection's CONNECT: whose it is and where it was allowed to go."""

    token: str
    host: str
    port: int
    target: Target | None = None


@dataclass
class Pending:
    """What a credentialed flow carries between hooks (never the plaintext after the response)."""

    request_id: str
    started: float
    live: Live
    kind: str
    host: str = ""  # the tunnel's host: the request's own host is rewritten to the pinned address
    connector: str = ""
    action: str = ""
    secret: bytes | None = field(default=None, repr=False)
    scheme: str = ""
    provider: str | None = None
    model: str | None = None
    usage: UsageParser | None = None
    redactor: Redactor | None = None
    response_bytes: int = 0


class Redactor:
    """Replaces the credential in a streamed body, also across chunk boundaries, in each form it may take."""

    MARK = b"[redacted by aileron]"

    def __init__(self, *needles: bytes, on_chunk: Any = None) -> None:
        # Longest first, so a form that contains another (URL-encoded, say) is replaced whole.
        self.needles = sorted({n for n in needles if len(n) >= 4}, key=len, reverse=True)
        self.longest = max((len(n) for n in self.needles), default=0)
        self.carry = b""
        self.on_chunk = on_chunk
        self.count = 0

    def redact(self, data: bytes) -> bytes:
        for needle in self.needles:
            if needle in data:
                self.count += data.count(needle)
                data = data.replace(needle, self.MARK)
        return data

    def __call__(self, chunk: bytes) -> bytes:
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        data = self.redact(self.carry + chunk)
        self.carry = b""
        if chunk:
            # Hold back the longest tail that could begin a needle; release it with the next chunk or the end.
            for n in range(min(self.longest - 1, len(data)), 0, -1):
                tail = data[-n:]
                if any(needle.startswith(tail) for needle in self.needles):
                    self.carry, data = tail, data[:-n]
                    break
        return data


def secret_forms(secret: bytes, scheme: str) -> tuple[bytes, ...]:
    """The forms an upstream might echo the injected credential in."""
    forms = [secret, urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode()]
    if scheme == "basic":
        forms.append(base64.b64encode(secret))
    return tuple(forms)


class Decryptor(Protocol):
    """The credential service as the proxy uses it: in this process, or the primary's over a worker link."""

    def decrypt_cached(self, *, session_id: str, vault_id: str, credential_id: str) -> bytearray | None: ...

    def decrypt(self, *, session_id: str, vault_id: str, credential_id: str) -> bytearray: ...


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
        self.pending: dict[str, Pending] = {}

    # --- connection-level hooks ---------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        token = _proxy_token(flow.request.headers.get("proxy-authorization", ""))
        flow.request.headers.pop("proxy-authorization", None)
        if token is None:
            flow.response = problems.response(
                Refusal(problems.PROXY_AUTH_REQUIRED, "the CONNECT carried no session token"), request_id=_rid()
            )
            return
        try:
            await self.sessions.get(token)
        except Refusal as refusal:
            flow.response = problems.response(refusal, request_id=_rid())
            return
        self.tunnels[flow.client_conn.id] = Tunnel(token, _norm_host(flow.request.host), flow.request.port)

    def refuse_head(self, client: connection.Client, request: http.Request, refusal: Refusal) -> http.Response:
        """Answer a request refused while its head was read (no hook ran), audited in its tunnel's session."""
        tunnel = self.tunnels.get(client.id)
        live = self.sessions.cached(tunnel.token) if tunnel is not None else None
        if tunnel is None or live is None:
            return problems.response(refusal, request_id=_rid())
        flow = http.HTTPFlow(client, connection.Server(address=None))
        flow.request = request
        self._refuse(flow, Pending(_rid(), time.perf_counter(), live, kind="refused", host=tunnel.host), refusal)
        assert flow.response is not None  # noqa: S101 (_refuse always answers)
        return flow.response

    def client_disconnected(self, client: connection.Client) -> None:
        self.tunnels.pop(client.id, None)

    def certstore_for(self, client_id: str) -> CertStore:
        tunnel = self.tunnels.get(client_id)
        live = self.sessions.cached(tunnel.token) if tunnel else None
        if live is None:
            raise ConnectionError("TLS from a client without a live session tunnel")
        return live.certstore

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Connect only to the address this proxy resolved and checked for the tunnel (no DNS rebinding)."""
        tunnel = self.tunnels.get(data.client.id)
        if tunnel is None or tunnel.target is None or data.server.address is None:
            data.server.error = "aileron: no checked destination for this connection"
            return
        host, port = data.server.address
        if str(host) != tunnel.target.address or port != tunnel.target.port:
            data.server.error = "aileron: destination differs from the checked one"
            return
        data.server.sni = tunnel.host

    # --- request hooks ------------------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        request_id = _rid()
        started = time.perf_counter()
        tunnel = self.tunnels.get(flow.client_conn.id)
        try:
            if tunnel is None:
                if flow.request.scheme == "http" and _norm_host(flow.request.pretty_host) == CA_HOST:
                    if flow.request.path.split("?", 1)[0] == shell_audit.PATH:
                        # the sandbox's mediated shell reporting a command it ran or refused
                        token = _proxy_token(flow.request.headers.get("proxy-authorization", ""))
                        await shell_audit.serve(
                            flow, token=token, sessions=self.sessions, spool=self.spool, request_id=request_id
                        )
                        return
                    await self._serve_ca(flow)
                    return
                raise Refusal(problems.HTTPS_ONLY, "plain HTTP is not forwarded; use https:// through CONNECT")
            live = await self.sessions.get(tunnel.token)
        except Refusal as refusal:
            stale = self.sessions.cached(tunnel.token) if tunnel is not None else None
            if tunnel is not None and stale is not None and refusal.kind is problems.CONTROL_PLANE_UNAVAILABLE:
                # The session was live a moment ago: refuse, and keep the refusal in its audit trail.
                self._refuse(flow, Pending(request_id, started, stale, kind="refused", host=tunnel.host), refusal)
            else:
                flow.response = problems.response(refusal, request_id=request_id)
            return
        pending = Pending(request_id, started, live, kind="refused", host=tunnel.host)
        if flow.error is not None:
            # mitmproxy's own framing checks (validate_inbound_headers) refused it and answer 400 themselves:
            # keep the attempt in the session's audit trail.
            record = self._attempt(
                flow,
                pending,
                decision="deny",
                reason=flow.error.msg[:300],
                problem_type=problems.REQUEST_SMUGGLING.slug,
            )
            self.spool.record(record)
            return
        self.pending[flow.id] = pending
        try:
            await self._screen(flow, tunnel, pending)
        except Refusal as refusal:
            self._refuse(flow, pending, refusal)
            return
        if flow.response is None and not flow.metadata.get("aileron_decide_with_body") and tunnel.target:
            _pin_request(flow.request, tunnel.target)

    async def request(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        if pending is None or flow.response is not None or not flow.metadata.get("aileron_decide_with_body"):
            return
        try:
            await self._decide(flow, pending, body=flow.request.raw_content or b"")
        except Refusal as refusal:
            self._refuse(flow, pending, refusal)
            return
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is not None and tunnel.target is not None:
            _pin_request(flow.request, tunnel.target)

    async def _serve_ca(self, flow: http.HTTPFlow) -> None:
        token = _proxy_token(flow.request.headers.get("proxy-authorization", ""))
        if token is None:
            raise Refusal(problems.PROXY_AUTH_REQUIRED, "asking for the session CA needs the session token")
        live = await self.sessions.get(token)
        if flow.request.path.split("?", 1)[0] != "/ca.pem":
            raise Refusal(problems.HTTPS_ONLY, f"http://{CA_HOST}/ serves only /ca.pem")
        flow.response = http.Response.make(
            200, live.ca_pem, {"Content-Type": "application/x-pem-file", "Cache-Control": "no-store"}
        )

    async def _screen(self, flow: http.HTTPFlow, tunnel: Tunnel, pending: Pending) -> None:
        request = flow.request
        if request.scheme != "https" or not flow.client_conn.tls_established:
            # Plaintext inside a CONNECT tunnel: never forwarded (and never given a credential).
            raise Refusal(problems.HTTPS_ONLY, "the tunnel carried plain HTTP; only HTTPS is forwarded")
        # 2. destination binding
        authority = request.host_header or ""
        host, port = _split_authority(authority, default_port=tunnel.port)
        sni = flow.client_conn.sni
        if host != tunnel.host or port != tunnel.port or (sni is not None and _norm_host(sni) != tunnel.host):
            raise Refusal(
                problems.DESTINATION_MISMATCH,
                f"the tunnel goes to {tunnel.host}:{tunnel.port} but the request names {authority or 'no host'}"
                + (f" (SNI {sni})" if sni and _norm_host(sni) != tunnel.host else ""),
            )
        # framing: one unambiguous body length (one pass over the headers: this runs for every request)
        names: set[bytes] = set()
        lengths: set[bytes] = set()
        for name, value in request.headers.fields:
            lowered = name.lower()
            names.add(lowered)
            if lowered == b"content-length":
                lengths.add(value.strip())
        if b"content-length" in names and b"transfer-encoding" in names:
            raise Refusal(problems.REQUEST_SMUGGLING, "the request has both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            raise Refusal(problems.REQUEST_SMUGGLING, "the request's Content-Length is repeated or not a number")
        connector = self.by_host.get(tunnel.host)
        if connector is None:
            await self._egress(flow, tunnel, pending)
            return
        pending.kind = "credentialed"
        pending.connector = connector.name
        for override in METHOD_OVERRIDE_HEADERS:
            if override.encode() in names:
                raise Refusal(problems.METHOD_OVERRIDE, f"the {override} header is refused on {connector.name}'s host")
        _strip_auth(request, connector, names)
        if b"transfer-encoding" in names:
            raise Refusal(problems.LENGTH_REQUIRED, "a chunked body cannot be bounded before it is read")
        length = int(next(iter(lengths), b"0"))
        if length > self.max_body:
            raise Refusal(
                problems.BODY_TOO_LARGE,
                f"the body is {length} bytes; at most {self.max_body} are read",
                {"limit": self.max_body},
            )
        tunnel.target = tunnel.target or await self._resolve(tunnel)
        if length > 0:
            if not self.budget.reserve(flow.id, length):
                raise Refusal(
                    problems.BODY_BUDGET_EXHAUSTED,
                    f"{self.budget.in_use} of {self.budget.capacity} bytes of bodies are in flight; this one has "
                    f"{length}",
                    {"retry_after_seconds": 2},
                )
            flow.metadata["aileron_decide_with_body"] = True  # buffered (not streamed): decided in `request`
            return
        await self._decide(flow, pending, body=b"")

    async def _resolve(self, tunnel: Tunnel) -> Target:
        try:
            return await self.resolver.resolve(tunnel.host, tunnel.port)
        except Blocked as exc:
            raise Refusal(problems.PRIVATE_ADDRESS, str(exc)) from None
        except Unresolvable as exc:
            raise Refusal(problems.UNRESOLVABLE, str(exc)) from None

    async def _egress(self, flow: http.HTTPFlow, tunnel: Tunnel, pending: Pending) -> None:
        live = pending.live
        pending.kind = "egress"
        if live.context.egress_mode == "allowlist" and not egress_allows(live.context.egress_allow, tunnel.host):
            raise Refusal(problems.EGRESS_DENIED, f"{tunnel.host} is not on your organization's egress allowlist")
        tunnel.target = tunnel.target or await self._resolve(tunnel)
        flow.request.stream = True
        self.spool.record(self._attempt(flow, pending, decision="allow", reason="uncredentialed egress"))

    async def _decide(self, flow: http.HTTPFlow, pending: Pending, *, body: bytes) -> None:
        request = flow.request
        live = pending.live
        ctx_ = live.context
        path, _, query = request.path.partition("?")
        try:
            found = self.catalog.identify(
                host=pending.host,
                method=request.method,
                path=path,
                query=query,
                headers=request.headers,
                body=body,
            )
        except Refused as exc:
            raise Refusal(problems.AMBIGUOUS_REQUEST, str(exc)) from None
        if not found:
            raise Refusal(
                problems.UNMATCHED_ACTION,
                f"{request.method} {path} is not an action of the {pending.connector} connector",
            )
        pending.action = found[0].action if len(found) == 1 else ",".join(i.action for i in found)
        args = _merge_args(found)
        flow.metadata["aileron_args"] = args
        if pending.connector not in ctx_.connectors:
            raise Refusal(problems.CONNECTOR_DISABLED, f"the {pending.connector} connector is not enabled for you")
        outcome = "allow"
        reasons = []
        for item in found:
            action = self.actions[item.action]
            decision = live.engine.decide(
                user_id=ctx_.user_id,
                team_ids=ctx_.team_ids,
                session_id=ctx_.session_id,
                agent=ctx_.agent,
                project_id=ctx_.project_id,
                connector=item.connector,
                action=item.action,
                args=item.args,
                default_approval=action.approval_required(item.args),
            )
            if decision.outcome == "deny" or (decision.outcome == "approval_required" and outcome == "allow"):
                outcome = decision.outcome
            reasons.append(decision.reason)
        reason = "; ".join(r for r in reasons if r) or "allowed"
        flow.metadata["aileron_decision"] = (outcome, reason)
        if outcome == "deny":
            raise Refusal(problems.POLICY_DENIED, reason, {"action": pending.action})
        ref = ctx_.credentials.get(pending.connector)
        if ref is None:
            raise Refusal(problems.NO_CREDENTIAL, f"none of your vaults holds a credential for {pending.connector}")
        approval: ApprovalTicket | None = None
        if outcome == "approval_required":
            # Held until people decide (other traffic keeps flowing: this only awaits).
            approval = await self._approval(flow, pending, ref, path=found[0].path, query=query, body=body, why=reason)
            reason = f"{reason}; granted by {', '.join(approval.approvers) or 'an approver'}"
        # 4. durable attempt record, before any credential exists in this request
        attempt = self._attempt(flow, pending, decision="allow", reason=reason, credential_id=ref.credential_id)
        if approval is not None:
            attempt["approval_id"] = approval.id
            attempt["approvers"] = list(approval.approvers)
        try:
            await self.spool.record_durable(attempt)
        except SpoolError as exc:
            raise Refusal(problems.AUDIT_UNAVAILABLE, str(exc)) from None
        flow.metadata["aileron_attempt_recorded"] = True
        # 5. decrypt, strip, inject
        plaintext = await self._decrypt(ctx_.session_id, ref.vault_id, ref.credential_id)
        try:
            secret = bytes(plaintext)
        finally:
            crypto.wipe(plaintext)
        connector = self.by_host[pending.host]
        _inject(request, connector, secret)
        if found[0].path != path:
            request.path = found[0].path + (f"?{query}" if query else "")
        request.headers["accept-encoding"] = "identity"  # so echoes can be redacted and usage read while streaming
        pending.secret = secret
        pending.scheme = connector.auth.scheme
        pending.provider = provider_for(pending.connector, found[0].action.split(".", 1)[-1])
        pending.model = _model_of(args)

    async def _approval(
        self,
        flow: http.HTTPFlow,
        pending: Pending,
        ref: CredentialRef,
        *,
        path: str,
        query: str,
        body: bytes,
        why: str,
    ) -> ApprovalTicket:
        """Ask for the exact request's approval and wait up to its window; the used grant, or a Refusal."""
        ctx_ = pending.live.context
        action = self.actions.get(pending.action)
        held = {
            "session_id": ctx_.session_id,
            "request_id": pending.request_id,
            "connector": pending.connector,
            "action": pending.action,
            "args": redact_args(flow.metadata.get("aileron_args") or {}, action.sensitive if action else ()),
            "method": flow.request.method,
            "host": pending.host,
            "path": path,
            "query": query,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_bytes": len(body),
            "credential_id": ref.credential_id,
            "reason": why[:4000],
        }
        ticket = await self._claim(held)
        if ticket.state == "pending":
            flow.metadata["aileron_approval_id"] = ticket.id
            log.info("request %s (%s) held for approval %s", pending.request_id, pending.action, ticket.id)
            try:
                ticket = await self.control.approval_wait(
                    ticket.id, timeout=float(ticket.window_seconds), request_id=pending.request_id
                )
            except NotFoundError:
                gone = {"approval_id": ticket.id}
                raise Refusal(problems.APPROVAL_LAPSED, f"approval {ticket.id} is gone", gone) from None
            except ControlPlaneError as exc:
                raise Refusal(problems.CONTROL_PLANE_UNAVAILABLE, f"cannot wait for the approval: {exc}") from None
            if ticket.used_now and not flow.client_conn.connected:
                # The agent went away while it waited: give the grant back for its identical retry.
                try:
                    await asyncio.to_thread(self.control.approval_release, ticket.id, request_id=pending.request_id)
                except ControlPlaneError:
                    log.warning("request %s: could not give back approval %s", pending.request_id, ticket.id)
                raise Refusal(
                    problems.APPROVAL_PENDING, "the agent disconnected before the grant", {"approval_id": ticket.id}
                )
        if ticket.state == "granted" and ticket.used_now:
            return ticket
        extra: dict[str, Any] = {"approval_id": ticket.id, "action": pending.action}
        if ticket.state == "pending":
            raise Refusal(
                problems.APPROVAL_PENDING,
                f"no approver decided within {ticket.window_seconds} s; approval {ticket.id} stays pending until "
                f"{ticket.expires_at}: send the identical request again once it is granted",
                {**extra, "expires_at": ticket.expires_at, "retry_after_seconds": RETRY_AFTER_SECONDS},
            )
        if ticket.state == "rejected":
            who = ", ".join(ticket.approvers) or "an approver"
            raise Refusal(
                problems.APPROVAL_REJECTED,
                f"{who} rejected {pending.action}: {ticket.decision_reason}",
                {**extra, "reason": ticket.decision_reason, "approvers": list(ticket.approvers)},
            )
        if ticket.state in ("used", "granted"):
            raise Refusal(
                problems.APPROVAL_LAPSED,
                f"approval {ticket.id} was used by an identical request; send again to ask anew",
                extra,
            )
        raise Refusal(problems.APPROVAL_LAPSED, f"approval {ticket.id} is {ticket.state}", extra)

    async def _claim(self, held: dict[str, Any]) -> ApprovalTicket:
        try:
            return await asyncio.to_thread(self.control.approval_claim, held)
        except NotFoundError:
            raise Refusal(problems.PROXY_AUTH_REQUIRED, "the session ended while its request waited") from None
        except ControlPlaneError as exc:
            raise Refusal(problems.CONTROL_PLANE_UNAVAILABLE, f"cannot ask for approval: {exc}") from None

    async def _decrypt(self, session_id: str, vault_id: str, credential_id: str) -> bytearray:
        try:
            cached = self.credentials.decrypt_cached(
                session_id=session_id, vault_id=vault_id, credential_id=credential_id
            )
            if cached is not None:
                return cached
            return await asyncio.to_thread(
                self.credentials.decrypt, session_id=session_id, vault_id=vault_id, credential_id=credential_id
            )
        except SessionUnknown:
            raise Refusal(problems.SESSION_LOCKED, "the session's keys are not unlocked here") from None
        except NotFoundError:
            raise Refusal(problems.NO_CREDENTIAL, "the credential is gone or no longer shared with you") from None
        except (ControlPlaneError, CredentialServiceError, crypto.CryptoError) as exc:
            raise Refusal(
                problems.CREDENTIALS_UNAVAILABLE, f"cannot decrypt the credential ({exc.__class__.__name__})"
            ) from None

    # --- response hooks -----------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        pending = self.pending.get(flow.id)
        response = flow.response
        if pending is None or response is None or pending.kind == "refused":
            return
        if pending.kind == "egress":
            response.stream = True
            return
        forms = secret_forms(pending.secret, pending.scheme) if pending.secret else ()
        redactor = Redactor(*forms)
        if forms:
            fields = [(name, redactor.redact(value)) for name, value in response.headers.fields]
            if fields != list(response.headers.fields):
                response.headers.fields = tuple(fields)
            has_body = flow.request.method != "HEAD" and response.status_code not in (204, 304)
            if has_body and "content-length" in response.headers:
                # Redaction may change the body's length: frame it with chunks instead.
                del response.headers["content-length"]
                response.headers["transfer-encoding"] = "chunked"
        if pending.provider is not None:
            pending.usage = UsageParser(
                provider=pending.provider,
                content_type=response.headers.get("content-type", ""),
                request_model=pending.model,
            )
        parser = pending.usage

        def count(chunk: bytes) -> None:
            pending.response_bytes += len(chunk)
            if parser is not None:
                parser.feed(chunk)

        redactor.on_chunk = count
        pending.redactor = redactor
        response.stream = redactor

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        self.budget.release(flow.id)
        pending = self.pending.pop(flow.id, None)
        if pending is None:
            return
        pending.secret = None
        if pending.redactor is not None and pending.redactor.count:
            # Worth an operator's attention: the upstream sent the credential back (never logged itself).
            log.warning(
                "request %s (%s): the upstream echoed the credential %d time(s); redacted before the agent saw it",
                pending.request_id,
                pending.action,
                pending.redactor.count,
            )
        if pending.kind == "refused" or not (flow.metadata.get("aileron_attempt_recorded") or pending.kind == "egress"):
            return
        response = flow.response
        usage = pending.usage.result() if pending.usage is not None else None
        if usage is not None:
            usage.cost_usd = self.prices.cost(usage)
        self.spool.record(
            {
                "id": pending.request_id,
                "phase": "outcome",
                "session_id": pending.live.context.session_id,
                "at": _now(),
                "upstream_status": response.status_code if response is not None else None,
                "latency_ms": round((time.perf_counter() - pending.started) * 1000, 3),
                "request_bytes": len(flow.request.raw_content or b"") if not flow.request.stream else None,
                "response_bytes": pending.response_bytes or (len(response.raw_content or b"") if response else 0),
                "usage": usage.as_dict() if usage is not None else None,
                "error": flow.error.msg if flow.error else None,
                "completed_at": _now(),
            }
        )

    # --- audit --------------------------------------------------------------------------------------------

    def _attempt(
        self,
        flow: http.HTTPFlow,
        pending: Pending,
        *,
        decision: str,
        reason: str,
        credential_id: str | None = None,
        problem_type: str = "",
    ) -> dict[str, Any]:
        request = flow.request
        args = flow.metadata.get("aileron_args") or {}
        action = self.actions.get(pending.action)
        return {
            "id": pending.request_id,
            "phase": "attempt",
            "session_id": pending.live.context.session_id,
            "at": _now(),
            "kind": pending.kind,
            "connector": pending.connector,
            "action": pending.action,
            "method": request.method,
            "host": pending.host or _norm_host(request.host),
            "path": request.path.split("?", 1)[0][:2048],
            "args": redact_args(args, action.sensitive if action else ()),
            "decision": decision,
            "reason": reason[:1000],
            "problem_type": problem_type,
            "credential_id": credential_id,
        }

    def _refuse(self, flow: http.HTTPFlow, pending: Pending, refusal: Refusal) -> None:
        """Answer the agent with the problem, never forward, and audit the refusal (durably, best effort)."""
        pending.secret = None
        flow.request.stream = False
        flow.response = problems.response(refusal, request_id=pending.request_id)
        decision = "approval_required" if refusal.kind is problems.APPROVAL_PENDING else "deny"
        record = self._attempt(flow, pending, decision=decision, reason=refusal.detail, problem_type=refusal.kind.slug)
        if "approval_id" in refusal.extra:
            record["approval_id"] = refusal.extra["approval_id"]
            record["approvers"] = list(refusal.extra.get("approvers", []))
        record["kind"] = "refused" if pending.kind != "credentialed" else "credentialed"
        record["upstream_status"] = None
        self.spool.record(record)
        self.pending.pop(flow.id, None)


class SessionTlsConfig(TlsConfig):
    """mitmproxy's TLS setup, with each client's certificate minted by its own session's CA."""

    def __init__(self, proxy: AileronProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def configure(self, updated: set[str]) -> None:
        super().configure(updated)  # type: ignore[no-untyped-call]
        if getattr(self, "certstore", None) is not None:
            self.proxy.sessions.dhparams = self.certstore.dhparams

    def get_cert(self, conn_context: context.Context) -> CertStoreEntry:
        store = self.proxy.certstore_for(conn_context.client.id)
        tunnel = self.proxy.tunnels[conn_context.client.id]
        name = conn_context.client.sni or tunnel.host
        from mitmproxy.addons.tlsconfig import _ip_or_dns_name

        return store.get_cert(name, [_ip_or_dns_name(name)], "Aileron")

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        if tls_start.context.client.id not in self.proxy.tunnels:
            raise ConnectionError("aileron: TLS without an authenticated tunnel")
        super().tls_start_client(tls_start)


def redact_args(args: dict[str, Any], sensitive: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Arguments as audited: sensitive ones replaced, long strings cut, the whole bounded in size."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in sensitive:
            out[key] = "[redacted]"
        else:
            out[key] = _bounded(value, depth=0)
    if len(out) <= 16 and all(len(k) <= 100 and isinstance(v, str | int | float | bool | None) for k, v in out.items()):
        return out  # at most 16 short names with scalars of at most 256 characters: within the limit, unmeasured
    text = json.dumps(out, default=str)
    if len(text) > ARGS_JSON_LIMIT:
        return {"_truncated": True, "keys": sorted(out)[:100]}
    return out


def _bounded(value: Any, *, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= ARG_STRING_LIMIT else value[:ARG_STRING_LIMIT] + "…"
    if depth > 3:
        return "…"
    if isinstance(value, dict):
        return {str(k)[:100]: _bounded(v, depth=depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_bounded(v, depth=depth + 1) for v in value[:50]]
    return value


def _merge_args(found: list[Identified]) -> dict[str, Any]:
    if len(found) == 1:
        return dict(found[0].args)
    return {item.action: item.args for item in found}


def _model_of(args: dict[str, Any]) -> str | None:
    model = args.get("model")
    return str(model) if isinstance(model, str) else None


def _strip_auth(request: http.Request, connector: Connector, present: set[bytes]) -> None:
    """Remove every auth header the agent may have sent (`present`: the request's lower-cased header names)."""
    auth = connector.auth
    own = (auth.name.lower(),) if auth.scheme == "header" and auth.name else ()
    for name in (*AUTH_HEADERS, *own, *auth.strip_headers):
        if name.encode() in present:
            del request.headers[name]
    for param in (*((auth.name,) if auth.scheme == "query" and auth.name else ()), *auth.strip_query):
        _drop_query(request, param)


def _drop_query(request: http.Request, name: str) -> None:
    path, sep, query = request.path.partition("?")
    if not sep:
        return
    kept = [p for p in query.split("&") if urllib.parse.unquote_plus(p.split("=", 1)[0]) != name]
    request.path = path + ("?" + "&".join(kept) if kept else "")


def _inject(request: http.Request, connector: Connector, secret: bytes) -> None:
    text = secret.decode("utf-8", errors="strict") if secret.isascii() else secret.decode("latin-1")
    scheme = connector.auth.scheme
    if scheme == "bearer":
        request.headers["authorization"] = f"Bearer {text}"
    elif scheme == "basic":
        request.headers["authorization"] = "Basic " + base64.b64encode(secret).decode("ascii")
    elif scheme == "header" and connector.auth.name:
        request.headers[connector.auth.name] = text
    elif scheme == "query" and connector.auth.name:
        path, sep, query = request.path.partition("?")
        pair = f"{urllib.parse.quote(connector.auth.name)}={urllib.parse.quote(text, safe='')}"
        request.path = f"{path}?{query}&{pair}" if sep and query else f"{path}?{pair}"


def _proxy_token(value: str) -> str | None:
    """The session token from `Proxy-Authorization: Basic base64(aileron:TOKEN)` (or Bearer TOKEN)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, _, token = decoded.partition(":")
    else:
        return None
    return token if token.startswith("ail_ses_") and len(token) < 200 else None


def _norm_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _split_authority(authority: str, *, default_port: int) -> tuple[str, int]:
    text = authority.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            host, port_text = text, ""
    port = int(port_text) if port_text.isdigit() else default_port
    return _norm_host(host), port


def _pin_request(request: http.Request, target: Target) -> None:
    """Send the request to the checked address itself (keeping Host), so mitmproxy reuses the connection."""
    host_header = request.host_header
    request.host = target.address
    request.port = target.port
    request.host_header = host_header


def _rid() -> str:
    return str(uuid.uuid4())


def _now() -> str:
    return datetime.now(UTC).isoformat()
