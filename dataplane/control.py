"""The data plane's client of the control plane REST API (service token). Imports no Django."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx


class ControlPlaneError(Exception):
    """The control plane could not answer; the data plane must fail closed."""


class BadRequestError(ControlPlaneError):
    """The control plane refused what was sent as malformed."""


class NotFoundError(ControlPlaneError):
    """The control plane says no: unknown, expired or forbidden (it does not say which)."""


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session_id: str
    user_id: str
    organization_id: str
    expires_at: str
    sealed_private_key: bytes
    kdf: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Bundle:
    organization_id: str
    vault_id: str
    credential_id: str
    key_version: int
    wrapping: bytes
    ciphertext: bytes
    connector: str


@dataclass(frozen=True, slots=True)
class RotationExport:
    organization_id: str
    key_version: int
    wrapping: bytes
    member_public_keys: dict[str, bytes]
    credentials: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class CredentialRef:
    connector: str
    vault_id: str
    credential_id: str
    name: str


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What the proxy needs to decide a session's requests, fetched once and cached for a few seconds."""

    session_id: str
    user_id: str
    user_email: str
    organization_id: str
    agent: str
    project_id: str | None
    team_ids: tuple[str, ...]
    expires_at: str
    connectors: frozenset[str]
    credentials: dict[str, CredentialRef]
    policies: tuple[dict[str, str], ...]
    egress_mode: str
    egress_allow: tuple[str, ...]


class ControlPlane:
    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {service_token}", "Accept": "application/json"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
        try:
            if isinstance(body, bytes):
                response = self._http.post(path, content=body, headers={"Content-Type": "application/json"})
            else:
                response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"control plane unreachable: {exc.__class__.__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            raise ControlPlaneError(f"control plane answered {response.status_code} without JSON") from None
        if response.status_code == 404:
            raise NotFoundError(str(answer.get("detail", "not found")) if isinstance(answer, dict) else "not found")
        if response.status_code == 400:
            raise BadRequestError(str(answer.get("detail", "bad request")) if isinstance(answer, dict) else "")
        if response.status_code != 200 or not isinstance(answer, dict):
            raise ControlPlaneError(f"control plane answered {response.status_code}")
        return answer

    def session_resolve(self, session_token: str) -> SessionKeys:
        body = self._post("/api/v1/dataplane/sessions/resolve/", {"session_token": session_token})
        return SessionKeys(
            session_id=body["session_id"],
            user_id=body["user_id"],
            organization_id=body["organization_id"],
            expires_at=body["expires_at"],
            sealed_private_key=base64.b64decode(body["sealed_private_key"]),
            kdf=body["kdf"],
        )

    def session_context(self, session_token: str) -> SessionContext:
        body = self._post("/api/v1/dataplane/sessions/context/", {"session_token": session_token})
        try:
            egress = body.get("egress") or {}
            return SessionContext(
                session_id=str(body["session_id"]),
                user_id=str(body["user_id"]),
                user_email=str(body.get("user_email", "")),
                organization_id=str(body["organization_id"]),
                agent=str(body.get("agent", "")),
                project_id=str(body["project_id"]) if body.get("project_id") else None,
                team_ids=tuple(str(t) for t in body.get("team_ids", [])),
                expires_at=str(body["expires_at"]),
                connectors=frozenset(str(c) for c in body.get("connectors", [])),
                credentials={
                    str(c["connector"]): CredentialRef(
                        str(c["connector"]), str(c["vault_id"]), str(c["credential_id"]), str(c.get("name", ""))
                    )
                    for c in body.get("credentials", [])
                },
                policies=tuple(
                    {"id": str(p["id"]), "name": str(p["name"]), "cedar": str(p["cedar"])}
                    for p in body.get("policies", [])
                ),
                egress_mode=str(egress.get("mode", "open")),
                egress_allow=tuple(str(a) for a in egress.get("allow", [])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ControlPlaneError(f"the session context is malformed ({exc.__class__.__name__})") from None

    def bundle(self, *, session_id: str, vault_id: str, credential_id: str) -> Bundle:
        body = self._post(
            "/api/v1/dataplane/bundles/",
            {"session_id": session_id, "vault_id": vault_id, "credential_id": credential_id},
        )
        return Bundle(
            organization_id=body["organization_id"],
            vault_id=body["vault_id"],
            credential_id=body["credential_id"],
            key_version=int(body["key_version"]),
            wrapping=base64.b64decode(body["wrapping"]),
            ciphertext=base64.b64decode(body["ciphertext"]),
            connector=body["connector"],
        )

    def rotation_export(self, *, session_id: str, vault_id: str) -> RotationExport:
        body = self._post("/api/v1/dataplane/rotations/export/", {"session_id": session_id, "vault_id": vault_id})
        return RotationExport(
            organization_id=body["organization_id"],
            key_version=int(body["key_version"]),
            wrapping=base64.b64decode(body["wrapping"]),
            member_public_keys={m["user_id"]: base64.b64decode(m["public_key"]) for m in body["members"]},
            credentials={cid: base64.b64decode(blob) for cid, blob in body["credentials"].items()},
        )

    def rotation_commit(
        self,
        *,
        session_id: str,
        vault_id: str,
        from_version: int,
        credentials: dict[str, bytes],
        wrappings: dict[str, bytes],
    ) -> int:
        def enc(data: dict[str, bytes]) -> dict[str, str]:
            return {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}

        body = self._post(
            "/api/v1/dataplane/rotations/commit/",
            {
                "session_id": session_id,
                "vault_id": vault_id,
                "from_version": from_version,
                "credentials": enc(credentials),
                "wrappings": enc(wrappings),
            },
        )
        return int(body["key_version"])

    def session_alive(self, session_id: str) -> bool:
        """Whether the control plane still serves this session (live token, active user, still a member)."""
        try:
            self._post("/api/v1/dataplane/sessions/alive/", {"session_id": session_id})
        except NotFoundError:
            return False
        return True

    def audit_ship(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Post a batch of audit records (at most 1000); the answer is {"accepted": n, "rejected": [...]}.

        Ingest is idempotent by record id, so a batch whose answer was lost may simply be sent again.
        """
        return self._post("/api/v1/dataplane/audit/", {"records": records})

    def audit_ship_lines(self, lines: list[bytes]) -> dict[str, Any]:
        """The same, from spool lines (each one JSON object), without decoding and re-encoding them."""
        return self._post("/api/v1/dataplane/audit/", b'{"records":[' + b",".join(lines) + b"]}")
