"""Vault and credential-service figures: unlock, decrypt per request, memory per session.

    .venv/bin/python bench/vault_bench.py [--sessions 1000]

Prints medians, and each figure beside a baseline measured in the same run (bare AES-GCM, bare Argon2id).
The control plane is replaced by an in-memory stand-in so that the figures are the data plane's own work;
the REST round trip per request is a separate cost (see the note printed at the end).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dataplane.control import Bundle, ControlPlane, SessionKeys
from dataplane.credentials import CredentialService
from vaults import crypto

ORG = str(uuid.uuid4())


class InMemoryControl(ControlPlane):
    """Answers like the control plane, from memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionKeys] = {}
        self.bundles: dict[tuple[str, str, str], Bundle] = {}

    def session_resolve(self, session_token: str | None = None, *, session_id: str | None = None) -> SessionKeys:
        return self.sessions[session_token or ""]

    def bundle(self, *, session_id: str, vault_id: str, credential_id: str) -> Bundle:
        return self.bundles[(session_id, vault_id, credential_id)]


def median_us(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def make_session(control: InMemoryControl, master: bytes, secret: bytes) -> tuple[str, str, str, str]:
    user, session, vault, credential = (str(uuid.uuid4()) for _ in range(4))
    private = x25519.X25519PrivateKey.generate()
    sealed = crypto.seal_private_key(private.private_bytes_raw(), master, user_id=user)
    expires = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
    token = f"tok-{session}"
    control.sessions[token] = SessionKeys(session, user, ORG, expires, sealed, {})
    key = crypto.vault_key_new()
    wrapping = crypto.vault_key_wrap(
        key, private.public_key().public_bytes_raw(), vault_id=vault, member_id=user, key_version=1
    )
    blob = crypto.credential_encrypt(
        secret, key, organization_id=ORG, vault_id=vault, credential_id=credential, key_version=1
    )
    control.bundles[(session, vault, credential)] = Bundle(ORG, vault, credential, 1, wrapping, blob, "github")
    return token, session, vault, credential


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    secret = b"ghp_" + os.urandom(18).hex().encode()  # a GitHub-token-sized credential
    master = os.urandom(32)

    # 1. Unlock: what `aileron session start` pays once per session (Argon2id + unsealing).
    material = crypto.user_keys_create("bench passphrase", user_id="u")
    unlock = median_us(lambda: crypto.wipe(crypto.user_keys_unlock(material, "bench passphrase", user_id="u")), 7)
    argon = median_us(lambda: crypto.derive_master_key("bench passphrase", material.kdf), 7)

    # 2. Decrypt per request.
    control = InMemoryControl()
    service = CredentialService(control)
    token, session, vault, credential = make_session(control, master, secret)
    service.open(session_token=token, master_key=master)

    def request() -> None:
        crypto.wipe(service.decrypt(session_id=session, vault_id=vault, credential_id=credential))

    request()  # warm: the vault key is now unwrapped and cached
    warm = median_us(request, 20000)
    key = bytes(service._sessions[session].vault_keys[(vault, 1)])
    nonce, aad = os.urandom(12), b"a" * 80  # our associated data is about this long
    sealed = AESGCM(key).encrypt(nonce, secret, aad)
    bare = median_us(lambda: AESGCM(key).decrypt(nonce, sealed, aad), 20000)

    def cold() -> None:
        service._sessions[session].vault_keys.clear()
        request()

    first = median_us(cold, 2000)

    # 3. Memory per session.
    gc.collect()
    tracemalloc.start()
    rss_before = rss_kib()
    snap_before = tracemalloc.take_snapshot()
    many = CredentialService(control)
    handles = [make_session(control, master, secret) for _ in range(args.sessions)]
    gc.collect()
    setup_snap = tracemalloc.take_snapshot()
    for tok, sid, vid, cid in handles:
        many.open(session_token=tok, master_key=master)
        crypto.wipe(many.decrypt(session_id=sid, vault_id=vid, credential_id=cid))
    gc.collect()
    after_snap = tracemalloc.take_snapshot()
    rss_after = rss_kib()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after_snap.compare_to(setup_snap, "filename"))
    fixture = sum(s.size_diff for s in setup_snap.compare_to(snap_before, "filename"))
    closed = sum(1 for _, sid, _, _ in handles if many.close(sid))

    print(f"{'figure':<46}{'median':>14}{'baseline':>14}{'ratio':>8}")
    print(
        f"{'passphrase unlock (Argon2id m=64MiB t=3 p=4)':<46}{unlock / 1000:>11.1f} ms{argon / 1000:>11.1f} ms"
        f"{unlock / argon:>8.2f}   baseline: bare Argon2id"
    )
    print(
        f"{'decrypt per request, vault key cached':<46}{warm:>11.1f} us{bare:>11.1f} us{warm / bare:>8.2f}"
        "   baseline: bare AES-256-GCM of the same size"
    )
    print(f"{'decrypt per request, first (HPKE unwrap)':<46}{first:>11.1f} us{bare:>11.1f} us{first / bare:>8.1f}")
    print(f"{'memory held per session (tracemalloc)':<46}{held / args.sessions:>11.0f} B")
    rss_per_session = (rss_after - rss_before) * 1024 / args.sessions
    print(
        f"{'RSS growth per session (incl. test fixtures)':<46}{rss_per_session:>11.0f} B"
        f"   fixtures alone: {fixture / args.sessions:.0f} B/session"
    )
    print(f"sessions: {args.sessions} opened and {closed} closed (wiped)")
    print(
        "note: in the running system each decrypt also makes one REST call to the control plane (service token);"
        " that round trip is not in these figures."
    )


if __name__ == "__main__":
    main()
