"""ASGI middleware for the approvals websocket: a same-origin check, then who the bearer token speaks for.

Browsers cannot set headers on a WebSocket, so besides `Authorization: Bearer <token>` (the CLI) a token may
ride in the offered subprotocols as `bearer.<token>` next to `aileron.v1`. That entry is removed from the scope
here, so nothing downstream can echo or log it. Authorization (which organization, which groups) is the
consumer's job, in connect().
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from tenants.models import ApiToken, TokenKind, User
from tenants.selectors import token_authenticate
from tenants.services import token_touch

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SUBPROTOCOL = "aileron.v1"
BEARER_PREFIX = "bearer."


class Refusal(StrEnum):
    """Why the scope carries no user; the consumer turns it into a close code the client can act on."""

    UNAUTHENTICATED = "unauthenticated"  # no token, or an invalid, expired or revoked one
    NOT_A_PERSON = "not-a-person"  # a session (agent) or service (data plane) token


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            try:
                return bytes(value).decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None


def origin_allowed(scope: Scope) -> bool:
    """A browser's Origin must be this site: the Host it connected to (itself one of ALLOWED_HOSTS, as Django
    checks for HTTP; websockets bypass that check) or a CSRF_TRUSTED_ORIGINS entry. No Origin means a
    non-browser client, which cannot be made to connect by another site's page."""
    host = header(scope, b"host")
    if not host:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    origin = header(scope, b"origin")
    if origin is None:
        return True
    if origin.lower() in {o.lower() for o in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    parts = urlsplit(origin)
    # Browsers send the Origin and the Host without a default port, so the two serialisations compare as is.
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower() and not parts.path.strip("/")


class SameOriginMiddleware:
    """Refuses the handshake (HTTP 403) from another site's page: cross-site websocket hijacking."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close"})  # before accept: the server answers 403
            return
        await self.inner(scope, receive, send)


def bearer_token(scope: Scope) -> str | None:
    """The token from the Authorization header, else from a `bearer.<token>` subprotocol."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, raw = authorization.strip().partition(" ")
        return raw.strip() if scheme.lower() == "bearer" and raw.strip() else ""
    for offered in scope.get("subprotocols", []):
        if offered.startswith(BEARER_PREFIX):
            return str(offered[len(BEARER_PREFIX) :])
    return None


def _authenticate(raw: str) -> tuple[User | None, uuid.UUID | None, Refusal | None]:
    token: ApiToken | None = token_authenticate(raw=raw)
    if token is None:
        return None, None, Refusal.UNAUTHENTICATED
    if token.kind != TokenKind.PERSONAL or token.user is None:
        return None, None, Refusal.NOT_A_PERSON
    token_touch(token=token)
    return token.user, token.pk, None


class TokenAuthMiddleware:
    """Puts `user` (a person, or None), `token_id` and, when there is no user, `auth_refusal` into the scope."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        raw = bearer_token(scope)
        offered = [p for p in scope.get("subprotocols", []) if not p.startswith(BEARER_PREFIX)]
        user: User | None = None
        token_id: uuid.UUID | None = None
        refusal: Refusal | None = Refusal.UNAUTHENTICATED
        if raw:
            user, token_id, refusal = await database_sync_to_async(_authenticate)(raw)
        scope = {**scope, "subprotocols": offered, "user": user, "token_id": token_id, "auth_refusal": refusal}
        await self.inner(scope, receive, send)


def websocket_stack(inner: ASGIApp) -> ASGIApp:
    """The websocket side of the ASGI app: origin first (no database work for a hijacking page), then the token."""
    return SameOriginMiddleware(TokenAuthMiddleware(inner))
