"""The local key channel: how a user's CLI hands the credential service a master key for one session.

A unix socket, 0600 in a 0700 folder of AILERON_HOME, never mounted into an agent container; the server
also checks the peer's uid. One JSON request line, one JSON response line. Imports no Django.

    {"op": "open", "session_token": "ail_ses_…", "master_key": "<base64>"}  -> {"ok": true, "session_id": …}
    {"op": "status", "session_id": "…"}                                   -> {"ok": true, "open": true, …}
    {"op": "close", "session_id": "…"}                                    -> {"ok": true, "closed": true}
    {"op": "rotate", "session_id": "…", "vault_id": "…"}                  -> {"ok": true, "key_version": 3}

`rotate` is how the control plane's worker gets a pending key rotation done: with the unlocked keys of a
vault owner's live session, here, since the control plane itself can decrypt nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from dataplane.control import ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialService, CredentialServiceError, SessionUnknown, WrongKey
from vaults import crypto

MAX_LINE = 16 * 1024


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def _handle(service: CredentialService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if _peer_uid(writer) != os.getuid():
            await _reply(writer, {"ok": False, "error": "forbidden"})
            return
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            await _reply(writer, {"ok": False, "error": "request too large"})
            return
        try:
            request = json.loads(line)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            await _reply(writer, {"ok": False, "error": "malformed request"})
            return
        await _reply(writer, await _dispatch(service, op, request))
    finally:
        writer.close()


async def _dispatch(service: CredentialService, op: str, request: dict[str, Any]) -> dict[str, Any]:
    if op == "open":
        master = bytearray()
        try:
            master = bytearray(base64.b64decode(str(request["master_key"]), validate=True))
            info = await asyncio.to_thread(service.open, session_token=str(request["session_token"]), master_key=master)
        except (KeyError, ValueError):
            return {"ok": False, "error": "malformed request"}
        except WrongKey:
            return {"ok": False, "error": "wrong passphrase"}
        except NotFoundError:
            return {"ok": False, "error": "no live session for that token"}
        except ControlPlaneError:
            return {"ok": False, "error": "the control plane is unreachable"}
        finally:
            crypto.wipe(master)
        return {"ok": True, "session_id": info.session_id, "expires_in": round(info.expires_in)}
    if op == "status":
        found = service.status(str(request.get("session_id", "")))
        return {"ok": True, "open": found is not None, "expires_in": round(found.expires_in) if found else None}
    if op == "rotate":
        try:
            version = await asyncio.to_thread(
                service.rotate, session_id=str(request["session_id"]), vault_id=str(request["vault_id"])
            )
        except KeyError:
            return {"ok": False, "error": "malformed request"}
        except (SessionUnknown, NotFoundError) as exc:
            return {"ok": False, "error": str(exc)}
        except (ControlPlaneError, CredentialServiceError, crypto.CryptoError) as exc:
            return {"ok": False, "error": f"rotation failed: {exc.__class__.__name__}"}
        return {"ok": True, "key_version": version}
    if op == "close":
        return {"ok": True, "closed": service.close(str(request.get("session_id", "")))}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def _reply(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    writer.write(json.dumps(body).encode() + b"\n")
    await writer.drain()


class ChannelError(RuntimeError):
    """The key channel cannot be opened safely."""


def _prepare_socket_path(path: Path) -> None:
    """The socket's folder must be ours and private; a live socket there is another credential service."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ChannelError(f"{folder} must be a folder of this user's with mode 0700")
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket from a process that died
        else:
            raise ChannelError(f"another credential service is listening on {path}")
        finally:
            probe.close()


async def serve(service: CredentialService, path: Path, *, sweep_every: float = 30.0) -> None:
    _prepare_socket_path(path)
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(lambda r, w: _handle(service, r, w), path=str(path), limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            service.sweep()

    task = asyncio.create_task(sweeper())
    try:
        async with server:
            await server.serve_forever()
    finally:
        task.cancel()


def request(path: Path, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Client side (the CLI): one request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(body).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))
