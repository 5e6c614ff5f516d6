"""Step 5 of a request: whatever auth the agent sent is stripped, the credential decrypted and injected."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from typing import Protocol

from mitmproxy import http

from connectors.package import Connector
from dataplane import problems
from dataplane import strip_auth as auth_strip
from dataplane.control import ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialServiceError, Plaintext, SessionUnknown
from dataplane.problems import Refusal
from vaults import crypto


class Decryptor(Protocol):
    """The credential service as the proxy uses it: in this process, or the primary's over a worker link."""

    def decrypt_cached(self, *, session_id: str, vault_id: str, credential_id: str) -> Plaintext | None: ...

    def decrypt(self, *, session_id: str, vault_id: str, credential_id: str) -> Plaintext: ...


async def decrypt(credentials: Decryptor, session_id: str, vault_id: str, credential_id: str) -> Plaintext:
    """The credential's plaintext (the caller wipes it), or a Refusal saying why it cannot be had."""
    try:
        cached = credentials.decrypt_cached(session_id=session_id, vault_id=vault_id, credential_id=credential_id)
        if cached is not None:
            return cached
        return await asyncio.to_thread(
            credentials.decrypt, session_id=session_id, vault_id=vault_id, credential_id=credential_id
        )
    except SessionUnknown:
        raise Refusal(problems.SESSION_LOCKED, "the session's keys are not unlocked here") from None
    except NotFoundError:
        raise Refusal(problems.NO_CREDENTIAL, "the credential is gone or no longer shared with you") from None
    except (ControlPlaneError, CredentialServiceError, crypto.CryptoError) as exc:
        raise Refusal(
            problems.CREDENTIALS_UNAVAILABLE, f"cannot decrypt the credential ({exc.__class__.__name__})"
        ) from None


def strip_auth(request: http.Request, connector: Connector, present: set[bytes]) -> None:
    """Remove every credential the agent may have sent, however named, cased or repeated (`present`: the
    request's lower-cased header names)."""
    names = auth_strip.header_names(connector.auth)
    if not names.isdisjoint(present):
        request.headers.fields = auth_strip.without_headers(request.headers.fields, names)
    params = auth_strip.query_names(connector.auth)
    if params and "?" in request.path:
        request.path = auth_strip.without_query(request.path, params)


def inject(request: http.Request, connector: Connector, secret: bytes) -> None:
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
