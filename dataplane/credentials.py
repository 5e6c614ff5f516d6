"""The credential service: session-keyed key material in memory, one decryption per request.

Holds, per agent session, the user's unsealed X25519 private key and the vault keys unwrapped with it,
for at most the session's lifetime (and a TTL). Ending the session, or the TTL, wipes those buffers.
It fetches ciphertext and wrappings from the control plane with the data plane's service token; the
plaintext it returns lives only as long as the caller keeps it, and the caller wipes it. Imports no Django.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from dataplane.control import Bundle, ControlPlane, ControlPlaneError, NotFoundError, SessionKeys
from vaults import crypto
from vaults.rotation import rotation_prepare

DEFAULT_TTL_SECONDS = 12 * 3600
# How long a fetched ciphertext bundle is reused. A revoked member or deleted credential stops decrypting within
# this window (the proxy re-checks the session itself on the same cadence).
DEFAULT_BUNDLE_TTL_SECONDS = 10.0


class CredentialServiceError(Exception):
    pass


class Plaintext(bytearray):
    """A decrypted credential and the version of it that was decrypted (`aileron secret update` adds one), so
    the audit names exactly the value a request carried. Wiped like any bytearray (crypto.wipe)."""

    def __init__(self, value: bytes | bytearray, *, version: int) -> None:
        super().__init__(value)
        self.version = version


class SessionUnknown(CredentialServiceError):
    """No unlocked session with that id here (never opened, ended, or expired)."""


class WrongKey(CredentialServiceError):
    """The delivered master key does not open the user's private key."""


@dataclass
class _Session:
    session_id: str
    user_id: str
    organization_id: str
    private_key: bytearray
    expires_at: float
    vault_keys: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    # Ciphertext bundles (never plaintext), cached briefly so a request does not wait on the control plane.
    bundles: dict[tuple[str, str], tuple[float, Bundle]] = field(default_factory=dict)

    def wipe(self) -> None:
        crypto.wipe(self.private_key)
        for key in self.vault_keys.values():
            crypto.wipe(key)
        self.vault_keys.clear()
        self.bundles.clear()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    user_id: str
    organization_id: str
    expires_in: float


class CredentialService:
    def __init__(
        self,
        control: ControlPlane,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        bundle_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self.ttl = ttl
        self.bundle_ttl = bundle_ttl
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def open(
        self, *, session_token: str = "", master_key: bytes | bytearray, resolved: SessionKeys | None = None
    ) -> SessionInfo:
        """Unlock a session's key material with the user's master key (delivered over the key channel). RESOLVED:
        the session, already resolved by id (a relayed channel, which never carries the token)."""
        found = resolved or self.control.session_resolve(session_token)
        try:
            private = crypto.open_private_key(found.sealed_private_key, master_key, user_id=found.user_id)
        except crypto.DecryptionError:
            raise WrongKey("the master key does not open this user's private key") from None
        remaining = datetime.fromisoformat(found.expires_at).timestamp() - time.time()
        lifetime = max(0.0, min(self.ttl, remaining))
        session = _Session(found.session_id, found.user_id, found.organization_id, private, self.clock() + lifetime)
        with self._lock:
            old = self._sessions.pop(session.session_id, None)
            if old is not None:
                old.wipe()
            self._sessions[session.session_id] = session
        return SessionInfo(session.session_id, session.user_id, session.organization_id, lifetime)

    def control_says_session_gone(self, session_id: str) -> bool:
        """Whether the control plane no longer recognises the session (as opposed to one unknown credential)."""
        try:
            return not self.control.session_alive(session_id)
        except ControlPlaneError:
            return False

    def close(self, session_id: str) -> bool:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        session.wipe()
        return True

    def close_all(self) -> int:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.wipe()
        return len(sessions)

    def sweep(self) -> int:
        """End every session past its TTL; returns how many."""
        now = self.clock()
        with self._lock:
            expired = [s for s in self._sessions.values() if s.expires_at <= now]
            for session in expired:
                del self._sessions[session.session_id]
        for session in expired:
            session.wipe()
        return len(expired)

    def status(self, session_id: str) -> SessionInfo | None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires_at <= self.clock():
                return None
            return SessionInfo(
                session.session_id, session.user_id, session.organization_id, session.expires_at - self.clock()
            )

    def __len__(self) -> int:
        return len(self._sessions)

    def _live(self, session_id: str) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionUnknown("no unlocked session with that id")
        if session.expires_at <= self.clock():
            self.close(session_id)
            raise SessionUnknown("the session expired")
        return session

    def vault_key(self, session: _Session, *, vault_id: str, key_version: int, wrapping: bytes) -> bytearray:
        cached = session.vault_keys.get((vault_id, key_version))
        if cached is not None:
            return cached
        key = crypto.vault_key_unwrap(
            wrapping, session.private_key, vault_id=vault_id, member_id=session.user_id, key_version=key_version
        )
        with self._lock:
            for stale in [k for k in session.vault_keys if k[0] == vault_id]:
                crypto.wipe(session.vault_keys.pop(stale))
            session.vault_keys[(vault_id, key_version)] = key
        return key

    def is_open(self, session_id: str) -> bool:
        return self.status(session_id) is not None

    def decrypt_cached(self, *, session_id: str, vault_id: str, credential_id: str) -> Plaintext | None:
        """Like decrypt, but only from a cached bundle (no network): None when it would have to fetch."""
        session = self._live(session_id)
        cached = session.bundles.get((vault_id, credential_id))
        if cached is None or cached[0] <= self.clock():
            return None
        return self._open_bundle(session, cached[1], vault_id=vault_id, credential_id=credential_id)

    def decrypt(self, *, session_id: str, vault_id: str, credential_id: str) -> Plaintext:
        """The plaintext credential for one request. The caller must wipe it when the request is done."""
        session = self._live(session_id)
        cached = session.bundles.get((vault_id, credential_id))
        if cached is not None and cached[0] > self.clock():
            return self._open_bundle(session, cached[1], vault_id=vault_id, credential_id=credential_id)
        try:
            bundle = self.control.bundle(session_id=session_id, vault_id=vault_id, credential_id=credential_id)
        except NotFoundError:
            session.bundles.pop((vault_id, credential_id), None)
            if self.control_says_session_gone(session_id):
                self.close(session_id)  # revoked or its user removed: wipe its keys now, not at the TTL
            raise
        if self.bundle_ttl > 0:
            session.bundles[(vault_id, credential_id)] = (self.clock() + self.bundle_ttl, bundle)
        return self._open_bundle(session, bundle, vault_id=vault_id, credential_id=credential_id)

    def _open_bundle(self, session: _Session, bundle: Bundle, *, vault_id: str, credential_id: str) -> Plaintext:
        if bundle.organization_id != session.organization_id:
            raise CredentialServiceError("the control plane returned another organization's credential")
        key = self.vault_key(session, vault_id=vault_id, key_version=bundle.key_version, wrapping=bundle.wrapping)
        plain = crypto.credential_decrypt(
            bundle.ciphertext,
            key,
            organization_id=session.organization_id,
            vault_id=vault_id,
            credential_id=credential_id,
            key_version=bundle.key_version,
        )
        try:
            return Plaintext(plain, version=bundle.credential_version)
        finally:
            crypto.wipe(plain)

    def confirm(self, *, session_id: str, vault_id: str) -> int:
        """Wrap a team vault's key, with this session's unlocked keys (its user must own the vault), to each
        team member waiting for it; how many were let in."""
        session = self._live(session_id)
        export = self.control.confirm_export(session_id=session_id, vault_id=vault_id)
        if export.organization_id != session.organization_id:
            raise CredentialServiceError("the control plane returned another organization's vault")
        if not export.waiting:
            return 0
        key = self.vault_key(session, vault_id=vault_id, key_version=export.key_version, wrapping=export.wrapping)
        wrappings = {
            user_id: crypto.vault_key_wrap(
                key, public_key, vault_id=vault_id, member_id=user_id, key_version=export.key_version
            )
            for user_id, public_key in export.waiting.items()
        }
        return self.control.confirm_commit(
            session_id=session_id, vault_id=vault_id, key_version=export.key_version, wrappings=wrappings
        )

    def rotate(self, *, session_id: str, vault_id: str) -> int:
        """Rotate a vault's key with this session's unlocked keys (its user must own the vault)."""
        session = self._live(session_id)
        export = self.control.rotation_export(session_id=session_id, vault_id=vault_id)
        if export.organization_id != session.organization_id:
            raise CredentialServiceError("the control plane returned another organization's vault")
        old_key = self.vault_key(session, vault_id=vault_id, key_version=export.key_version, wrapping=export.wrapping)
        material = rotation_prepare(
            organization_id=session.organization_id,
            vault_id=vault_id,
            from_version=export.key_version,
            old_key=old_key,
            credentials=export.credentials,
            member_public_keys=export.member_public_keys,
        )
        return self.control.rotation_commit(
            session_id=session_id,
            vault_id=vault_id,
            from_version=export.key_version,
            credentials=material.credentials,
            wrappings=material.wrappings,
        )
