"""Extra proxy worker processes: the proxy scales with traffic, the credential service stays in one place.

`aileron dataplane --workers N` runs the primary process (credential service, key channel, a proxy) and N-1
proxy-only workers listening on the same port (SO_REUSEPORT: the kernel spreads connections over them).
Session CAs are derived from the shared seed, so every worker mints the same session's certificates. A worker
asks the primary for each decryption over a socketpair it inherited at start: there is no path on disk, so no
other process (an unsandboxed agent of the same user included) can connect to it. One JSON line each way:

    {"session_id": …, "vault_id": …, "credential_id": …}  ->  {"ok": true, "value": "<base64>"}
                                                               {"ok": false, "error": "session-unknown" | …}

Imports no Django.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from typing import Any

from dataplane.control import ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialService, CredentialServiceError, Plaintext, SessionUnknown
from vaults import crypto

MAX_LINE = 64 * 1024


async def serve_worker(service: CredentialService, sock: socket.socket) -> None:
    """The primary's side of one worker's link: answer decryptions until the worker goes away."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
    try:
        while line := await reader.readline():
            answer = await _answer(service, line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def _answer(service: CredentialService, line: bytes) -> dict[str, Any]:
    try:
        ask = json.loads(line)
        ids = {k: str(ask[k]) for k in ("session_id", "vault_id", "credential_id")}
        number = int(ask["id"])
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "error": "malformed"}
    value = bytearray()
    try:
        cached = service.decrypt_cached(**ids)
        value = cached if cached is not None else await asyncio.to_thread(service.decrypt, **ids)
        version = getattr(value, "version", 1)
        return {"id": number, "ok": True, "value": base64.b64encode(value).decode("ascii"), "version": version}
    except SessionUnknown:
        return {"id": number, "ok": False, "error": "session-unknown"}
    except NotFoundError:
        return {"id": number, "ok": False, "error": "not-found"}
    except (ControlPlaneError, CredentialServiceError, crypto.CryptoError) as exc:
        return {"id": number, "ok": False, "error": "unavailable", "detail": exc.__class__.__name__}
    finally:
        crypto.wipe(value)


class RemoteCredentials:
    """A worker's stand-in for the CredentialService: decryptions come from the primary over the link."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.file = sock.makefile("rwb")
        self.lock = threading.Lock()  # one question at a time on the link; callers are worker threads
        self.asked = 0
        self.broken = False

    def decrypt_cached(self, **_: str) -> Plaintext | None:
        return None  # nothing is held in a worker; the primary's cache answers without the control plane

    def decrypt(self, *, session_id: str, vault_id: str, credential_id: str) -> Plaintext:
        with self.lock:
            if self.broken:
                raise CredentialServiceError("the link to the primary data plane process is broken")
            self.asked += 1
            ask = {"id": self.asked, "session_id": session_id, "vault_id": vault_id, "credential_id": credential_id}
            try:
                self.file.write(json.dumps(ask).encode() + b"\n")
                self.file.flush()
                answer = json.loads(self.file.readline(MAX_LINE))
                if not isinstance(answer, dict) or answer.get("id") != self.asked:
                    raise ValueError("out of step")
            except (OSError, ValueError) as exc:
                # A late or garbled answer could belong to another request: never read this link again.
                self.broken = True
                self.sock.close()
                raise CredentialServiceError(f"the primary data plane process does not answer ({exc})") from None
        if answer.get("ok"):
            return Plaintext(base64.b64decode(answer["value"]), version=int(answer.get("version", 1)))
        error = answer.get("error")
        if error == "session-unknown":
            raise SessionUnknown("no unlocked session with that id")
        if error == "not-found":
            raise NotFoundError("the credential is gone or no longer shared")
        raise CredentialServiceError(f"the credential service cannot answer ({answer.get('detail', error)})")

    def close_all(self) -> int:
        self.file.close()
        self.sock.close()
        return 0
