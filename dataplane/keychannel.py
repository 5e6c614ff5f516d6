"""The local key channel: how a user's CLI hands the credential service a master key for one session.

A unix socket, 0600 in a 0700 folder of AILERON_HOME, never mounted into an agent container; the server
also checks the peer's uid. One JSON request line, one JSON response line. Imports no Django.

    {"op": "attest", "nonce": "<base64, 32 bytes>"}                        -> {"ok": true, "report": {…}}
    {"op": "open", "session_token": "ail_ses_…", "nonce": "<base64>",
     "sealed_master_key": "<base64>"}                                     -> {"ok": true, "session_id": …}
    (relayed: "session_id" instead of "session_token", which never leaves the CLI's machine)
    {"op": "status", "session_id": "…"}                                   -> {"ok": true, "open": true, …}
    {"op": "close", "session_id": "…"}                                    -> {"ok": true, "closed": true}
    {"op": "rotate", "session_id": "…", "vault_id": "…"}                  -> {"ok": true, "key_version": 3}
    {"op": "confirm", "session_id": "…", "vault_id": "…"}                 -> {"ok": true, "confirmed": 2}

The master key never crosses the channel in the clear: the client asks for an attestation report for a fresh
nonce, verifies it (dataplane.attestation), and sends the master key HPKE-sealed to the report's public key,
bound to the session token's lookup part and that nonce; `open_session` below is that client. A nonce opens
at most one session, and only within the report's lifetime. Whoever hosts the channel (the credential
service, or the proxy) passes in the provider and the X25519 key the reports are for.

`rotate` is how the control plane's worker gets a pending key rotation done: with the unlocked keys of a
vault owner's live session, here, since the control plane itself can decrypt nothing.

A CLI on another machine cannot reach the socket: it posts the same requests to the control plane, which
relays them (vaults.keyrelay); `relay` below pulls them and answers with the same code. Only attest, open,
status and close are relayed; rotate and confirm stay the worker's, on this machine's socket.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from aileron_shared import tokens
from aileron_shared.keychannel import request as request  # the client: open_session below, and callers of this module
from dataplane import attestation
from dataplane.control import ControlPlane, ControlPlaneError, NotFoundError
from dataplane.credentials import CredentialService, CredentialServiceError, SessionUnknown, WrongKey
from vaults import crypto

log = logging.getLogger("aileron.keychannel")

MAX_LINE = 16 * 1024
RELAYED_OPS = frozenset({"attest", "open", "status", "close"})
RELAY_POLL_SECONDS = 5.0  # short: an API server shutting down waits for a poll in progress (Django orphans it)
RELAY_MAX_BACKOFF_SECONDS = 15.0
MAX_PENDING_NONCES = 4096
MAX_PENDING_PER_OWNER = 8  # attested nonces one requester may hold: nobody can push another's out
RELAY_CONCURRENCY = 32
UNSEALED_REFUSED = "master key must be sealed to the attested key"


@dataclass
class Channel:
    """What a key channel serves with: the credential service, and the attested key master keys are sealed to."""

    service: CredentialService
    provider: attestation.Provider
    private_key: x25519.X25519PrivateKey
    clock: Callable[[], float] = time.monotonic
    # Nonces this channel has reported for, not yet used by an `open`, with whom they were reported to ("local":
    # the socket's user; else the person the control plane relayed for): each opens at most one session.
    pending: OrderedDict[bytes, tuple[float, str]] = field(default_factory=OrderedDict)

    def remember(self, nonce: bytes, owner: str = "local") -> None:
        """Keep NONCE for an `open`; a requester's oldest go first once they hold MAX_PENDING_PER_OWNER, so one
        requester asking for report after report never pushes out another's."""
        now = self.clock()
        for stale in [n for n, (expires, _) in self.pending.items() if expires <= now]:
            del self.pending[stale]
        self.pending[nonce] = (now + attestation.MAX_AGE_SECONDS, owner)
        mine = [n for n, (_, who) in self.pending.items() if who == owner]
        for oldest in mine[: max(0, len(mine) - MAX_PENDING_PER_OWNER)]:
            del self.pending[oldest]
        while len(self.pending) > MAX_PENDING_NONCES:
            self.pending.popitem(last=False)

    def redeem(self, nonce: bytes) -> bool:
        expires, _ = self.pending.pop(nonce, (None, ""))
        return expires is not None and expires > self.clock()


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def _handle(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        await _reply(writer, await _dispatch(channel, op, request))
    finally:
        writer.close()


def _nonce(request: dict[str, Any]) -> bytes:
    nonce = base64.b64decode(str(request["nonce"]), validate=True)
    if len(nonce) != attestation.NONCE_BYTES:
        raise ValueError("bad nonce")
    return nonce


async def _attest(channel: Channel, request: dict[str, Any], owner: str = "local") -> dict[str, Any]:
    try:
        nonce = _nonce(request)
    except (KeyError, ValueError):
        return {"ok": False, "error": f"malformed request: attest needs a {attestation.NONCE_BYTES}-byte nonce"}
    try:
        report = await asyncio.to_thread(channel.provider.report, nonce)
    except attestation.AttestationError as exc:
        return {"ok": False, "error": f"attestation failed: {exc}"}
    channel.remember(nonce, owner)
    return {"ok": True, "report": report.to_json()}


async def _open(channel: Channel, request: dict[str, Any]) -> dict[str, Any]:
    if "master_key" in request:
        return {"ok": False, "error": UNSEALED_REFUSED}
    master = bytearray()
    try:
        # The session by its token (the socket), or by its id (relayed: the token never leaves the CLI's machine).
        token = str(request["session_token"]) if "session_token" in request else None
        session_id = None if token is not None else str(request["session_id"])
        lookup = tokens.parse(token).lookup if token is not None else ""
        nonce = _nonce(request)
        sealed = base64.b64decode(str(request["sealed_master_key"]), validate=True)
    except (KeyError, ValueError):
        return {"ok": False, "error": "malformed request"}
    if not channel.redeem(nonce):
        return {"ok": False, "error": "no pending attestation for that nonce: ask for a fresh report"}
    try:
        resolved = None
        if session_id is not None:
            resolved = await asyncio.to_thread(channel.service.control.session_resolve, session_id=session_id)
            lookup = resolved.lookup
        master = crypto.master_key_open(sealed, channel.private_key, token_lookup=lookup, nonce=nonce)
        info = await asyncio.to_thread(
            channel.service.open, session_token=token or "", master_key=master, resolved=resolved
        )
    except crypto.DecryptionError:
        return {"ok": False, "error": "the sealed master key does not open here (sealed to another key or token?)"}
    except WrongKey:
        return {"ok": False, "error": "wrong passphrase"}
    except NotFoundError:
        return {"ok": False, "error": "no live session for that token"}
    except ControlPlaneError:
        return {"ok": False, "error": "the control plane is unreachable"}
    finally:
        crypto.wipe(master)
    return {"ok": True, "session_id": info.session_id, "expires_in": round(info.expires_in)}


async def _dispatch(channel: Channel, op: str, request: dict[str, Any], owner: str = "local") -> dict[str, Any]:
    service = channel.service
    if op == "attest":
        return await _attest(channel, request, owner)
    if op == "open":
        return await _open(channel, request)
    if op == "status":
        found = service.status(str(request.get("session_id", "")))
        return {"ok": True, "open": found is not None, "expires_in": round(found.expires_in) if found else None}
    if op == "rotate":
        return await _vault_op(service.rotate, request, what="rotation", answer="key_version")
    if op == "confirm":
        return await _vault_op(service.confirm, request, what="confirming", answer="confirmed")
    if op == "close":
        return {"ok": True, "closed": service.close(str(request.get("session_id", "")))}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def _vault_op(run: Callable[..., int], request: dict[str, Any], *, what: str, answer: str) -> dict[str, Any]:
    """A vault operation through a session's unlocked keys (rotate, confirm): its number, or why not."""
    try:
        result = await asyncio.to_thread(run, session_id=str(request["session_id"]), vault_id=str(request["vault_id"]))
    except KeyError:
        return {"ok": False, "error": "malformed request"}
    except (SessionUnknown, NotFoundError) as exc:
        return {"ok": False, "error": str(exc)}
    except (ControlPlaneError, CredentialServiceError, crypto.CryptoError) as exc:
        return {"ok": False, "error": f"{what} failed: {exc.__class__.__name__}"}
    return {"ok": True, answer: result}


async def relay(channel: Channel, control: ControlPlane, *, poll: float = RELAY_POLL_SECONDS) -> None:
    """Answer key-channel requests relayed through the control plane, until cancelled. An unreachable control
    plane is retried with backoff; a request is answered like the socket's, and refused if not relayable."""
    backoff = 0.0
    slots = asyncio.Semaphore(RELAY_CONCURRENCY)
    running: set[asyncio.Task[None]] = set()

    async def answer(item: dict[str, Any]) -> None:
        try:
            await _answer_relayed(channel, control, item)
        finally:
            slots.release()

    try:
        while True:
            try:
                pulled = await control.keychannel_pull(timeout=poll)
            except ControlPlaneError as exc:
                backoff = min(RELAY_MAX_BACKOFF_SECONDS, backoff * 2 or 0.5)
                if backoff >= RELAY_MAX_BACKOFF_SECONDS / 2:
                    log.warning("key-channel relay: %s; retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            for item in pulled:  # side by side: one slow `open` holds up nobody else's
                await slots.acquire()
                task = asyncio.create_task(answer(item))
                running.add(task)
                task.add_done_callback(running.discard)
    finally:
        for task in running:
            task.cancel()


async def _answer_relayed(channel: Channel, control: ControlPlane, item: dict[str, Any]) -> None:
    op, body, request_id = item.get("op"), item.get("body"), item.get("id")
    owner = f"relayed:{item.get('requester') or ''}"
    if not isinstance(request_id, str):
        return
    if op not in RELAYED_OPS:
        answer: dict[str, Any] = {"ok": False, "error": f"op {op!r} is not relayed"}
    elif not isinstance(body, dict):
        answer = {"ok": False, "error": "malformed request"}
    else:
        try:
            answer = await _dispatch(channel, str(op), {**body, "op": op}, owner)
        except (KeyError, ValueError, TypeError):
            answer = {"ok": False, "error": "malformed request"}
    try:
        await control.keychannel_answer(request_id, answer)
    except NotFoundError:
        pass  # its CLI stopped waiting
    except ControlPlaneError as exc:
        log.warning("key-channel relay: cannot answer %s: %s", request_id, exc)


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


async def serve(
    service: CredentialService,
    path: Path,
    *,
    provider: attestation.Provider | None = None,
    private_key: x25519.X25519PrivateKey | None = None,
    sweep_every: float = 30.0,
    relayed: bool = True,
) -> None:
    """Serve the key channel on `path`; master keys are sealed to `private_key`, which `provider` attests.

    Without them: a fresh key, attested by the software provider with the service's config. `relayed`: also
    answer requests relayed through the control plane from CLIs on other machines.
    """
    if (provider is None) != (private_key is None):
        raise ChannelError("pass both the attestation provider and its private key, or neither")
    if provider is None or private_key is None:
        private_key = x25519.X25519PrivateKey.generate()
        try:
            provider = await asyncio.to_thread(
                attestation.SoftwareProvider,
                public_key=private_key.public_key().public_bytes_raw(),
                config=attestation.dataplane_config(ttl_seconds=service.ttl),
            )
        except (attestation.AttestationError, OSError) as exc:
            raise ChannelError(f"cannot measure the data plane: {exc}") from None
    public = private_key.public_key().public_bytes_raw()
    try:
        probe = await asyncio.to_thread(provider.report, os.urandom(attestation.NONCE_BYTES))
    except attestation.AttestationError as exc:
        raise ChannelError(f"the attestation provider cannot report: {exc}") from None
    if probe.public_key != public:
        raise ChannelError("the attestation provider reports another key than the channel's")
    channel = Channel(service, provider, private_key)
    _prepare_socket_path(path)
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(lambda r, w: _handle(channel, r, w), path=str(path), limit=MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            service.sweep()

    tasks = [asyncio.create_task(sweeper())]
    if relayed:
        tasks.append(asyncio.create_task(relay(channel, service.control)))
    try:
        async with server:
            await server.serve_forever()
    finally:
        for task in tasks:
            task.cancel()


Send = Callable[[dict[str, Any], float], dict[str, Any]]  # one request, its answer (a socket, or the relay)


def open_session(
    path: Path | Send,
    *,
    session_token: str,
    master_key: bytes | bytearray,
    session_id: str | None = None,
    expected_measurement: str | None = None,
    provider: attestation.Provider | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Client side: attest the data plane for a fresh nonce, verify, and open the session with the sealed key.

    Returns the channel's answer to `open`; raises AttestationError when the data plane cannot be trusted with
    the key (nothing was sent then). The expected measurement defaults to this installation's own. `path`: the
    socket, or how to send a request some other way (through the control plane's relay: aileron_cli.sessions).
    """
    send: Send = path if not isinstance(path, Path) else functools.partial(request, path)
    nonce = os.urandom(attestation.NONCE_BYTES)
    answer = send({"op": "attest", "nonce": crypto.b64(nonce)}, timeout)
    if not answer.get("ok"):
        raise attestation.AttestationError(f"the data plane gave no report: {answer.get('error')}")
    report = attestation.Report.from_json(answer.get("report") or {})
    verifier = provider or attestation.SoftwareProvider()
    expected = expected_measurement if expected_measurement is not None else attestation.expected_measurement()
    verifier.verify(report, nonce=nonce, expected_measurement=expected)
    try:
        lookup = tokens.parse(session_token).lookup
        sealed = crypto.master_key_seal(master_key, report.public_key, token_lookup=lookup, nonce=nonce)
    except (ValueError, crypto.CryptoError) as exc:
        raise attestation.AttestationError(f"cannot seal the master key to the reported key: {exc}") from None
    body = {
        "op": "open",
        "session_token": session_token,  # a relay drops it and sends SESSION_ID instead (aileron_cli.sessions)
        **({"session_id": session_id} if session_id else {}),
        "nonce": crypto.b64(nonce),
        "sealed_master_key": crypto.b64(sealed),
    }
    return send(body, timeout)
