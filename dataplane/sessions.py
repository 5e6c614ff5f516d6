"""Step 1 of a request: the session behind a tunnel's token, live or refused (cached briefly, fails closed)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mitmproxy import http
from mitmproxy.certs import CertStore

from aileron_shared import tokens
from dataplane import problems, session_ca
from dataplane.control import ControlPlane, ControlPlaneError, NotFoundError, SessionContext
from dataplane.problems import Refusal
from dataplane.refusals import Bucket
from policies.engine import Engine, PolicyDoc, PolicyError

LOOKUPS_PER_SECOND = 50.0  # control-plane checks of tokens not seen live, on average
LOOKUP_BURST = 500.0  # and at once: every agent reconnecting after a restart of the data plane
CA_HOST = "aileron.proxy"  # /ca.pem: the session CA; /shell-audit: dataplane.shell_audit; /healthz: dataplane.health


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
        self.lookups = Bucket(LOOKUPS_PER_SECOND, LOOKUP_BURST)  # checks of tokens not seen live
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
        if found is None:
            # A token not seen live: only a well-formed session token is worth a call to the control plane, and
            # only so many a second (a flood of made-up tokens must not become a flood of lookups).
            try:
                if tokens.parse(token).kind != "ses":
                    raise tokens.MalformedToken("not a session token")
            except tokens.MalformedToken:
                raise Refusal(problems.PROXY_AUTH_REQUIRED, "that is not a session token") from None
            if not self.lookups.take():
                raise Refusal(problems.SESSION_CHECKS_BUSY, "too many unknown session tokens to check right now")
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


def proxy_token(value: str) -> str | None:
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


async def serve_ca(flow: http.HTTPFlow, sessions: Sessions) -> None:
    """Answer http://aileron.proxy/ca.pem with the CA of the session whose token the request carries."""
    token = proxy_token(flow.request.headers.get("proxy-authorization", ""))
    if token is None:
        raise Refusal(problems.PROXY_AUTH_REQUIRED, "asking for the session CA needs the session token")
    live = await sessions.get(token)
    if flow.request.path.split("?", 1)[0] != "/ca.pem":
        raise Refusal(problems.HTTPS_ONLY, f"http://{CA_HOST}/ serves only /ca.pem")
    flow.response = http.Response.make(
        200, live.ca_pem, {"Content-Type": "application/x-pem-file", "Cache-Control": "no-store"}
    )
