"""The data plane's client of the control plane REST API (service token). Imports no Django."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import httpx

from policies.shell_rules import ShellRuleError, ShellRules, shell_rules_parse


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
    lookup: str = ""  # the session token's non-secret part (what a sealed master key is bound to)


@dataclass(frozen=True, slots=True)
class Bundle:
    organization_id: str
    vault_id: str
    credential_id: str
    key_version: int
    wrapping: bytes
    ciphertext: bytes
    connector: str
    credential_version: int = 1  # the value's version (`aileron secret update`)


@dataclass(frozen=True, slots=True)
class RotationExport:
    organization_id: str
    key_version: int
    wrapping: bytes
    member_public_keys: dict[str, bytes]
    credentials: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class ConfirmExport:
    """What an owner's session needs to let waiting team members into a team vault."""

    organization_id: str
    key_version: int
    wrapping: bytes  # the owner's
    waiting: dict[str, bytes]  # user id -> public key


@dataclass(frozen=True, slots=True)
class CredentialRef:
    connector: str
    vault_id: str
    credential_id: str
    name: str
    binding: str = "personal"  # pinned, project, team, shared or personal (policies.selectors.BINDINGS)
    actions: frozenset[str] = frozenset()  # its action_bindings: only for these actions, unless pinned


def credential_for(candidates: tuple[CredentialRef, ...], action: str) -> CredentialRef | None:
    """The credential a request for ACTION gets: the first candidate (most specific first) that is pinned or
    bound to the action, else the first bound to no action; None when every one is bound to other actions."""
    fallback = None
    for ref in candidates:
        if ref.binding == "pinned" or action in ref.actions:
            return ref
        if fallback is None and not ref.actions:
            fallback = ref
    return fallback


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
    credentials: dict[str, tuple[CredentialRef, ...]]  # per connector, most specific first (credential_for)
    policies: tuple[dict[str, str], ...]
    egress_mode: str
    egress_allow: tuple[str, ...]
    egress_plain_http: tuple[str, ...] = ()  # hosts reachable over plain HTTP (package mirrors)
    egress_tcp: tuple[str, ...] = ()  # "host:port" rules for raw TCP through the proxy (SSH, databases)
    project_tcp: tuple[str, ...] = ()  # the session's project's own rules, besides the organization's
    shell_policy: ShellRules = ShellRules()  # what the sandbox's mediated shell was told to enforce
    waiting: dict[str, str] = field(default_factory=dict)  # connector -> team vault awaiting an owner's confirm
    # Every (vault, credential) of `credentials`, sorted: what the outbound scan looks for (dataplane.exfil).
    credential_refs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovalTicket:
    """The control plane's answer about one held request's approval."""

    id: str
    state: str  # pending | granted | rejected | expired | cancelled | used (someone else's identical request)
    used_now: bool  # this claim used the grant: forward the request, once
    window_seconds: int
    expires_at: str
    approvers: tuple[str, ...]
    decision_reason: str
    action: str


def _ticket(body: dict[str, Any]) -> ApprovalTicket:
    try:
        return ApprovalTicket(
            id=str(body["id"]),
            state=str(body["state"]),
            used_now=bool(body.get("used_now", False)),
            window_seconds=int(body.get("window_seconds", 120)),
            expires_at=str(body.get("expires_at", "")),
            approvers=tuple(str(a) for a in body.get("approvers", [])),
            decision_reason=str(body.get("decision_reason", "")),
            action=str(body.get("action", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ControlPlaneError(f"the approval answer is malformed ({exc.__class__.__name__})") from None


def _candidates(listed: list[dict[str, Any]]) -> dict[str, tuple[CredentialRef, ...]]:
    """The context's credentials (most specific first) grouped by connector, in order."""
    grouped: dict[str, list[CredentialRef]] = {}
    for c in listed:
        ref = CredentialRef(
            str(c["connector"]),
            str(c["vault_id"]),
            str(c["credential_id"]),
            str(c.get("name", "")),
            str(c.get("binding", "personal")),
            frozenset(str(a) for a in c.get("actions", [])),
        )
        grouped.setdefault(ref.connector, []).append(ref)
    return {connector: tuple(refs) for connector, refs in grouped.items()}


class ControlPlane:
    def __init__(self, base_url: str, service_token: str, timeout: float = 5.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {service_token}", "Accept": "application/json"}
        self._http = httpx.Client(base_url=self._base_url, headers=self._headers, timeout=timeout)
        self._async: httpx.AsyncClient | None = None  # for waits that must not hold a thread: made on first use

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

    def session_resolve(self, session_token: str | None = None, *, session_id: str | None = None) -> SessionKeys:
        """A live session's key material, by its token (the local key channel) or its id (a relayed one)."""
        asked = {"session_id": session_id} if session_id is not None else {"session_token": session_token}
        body = self._post("/api/v1/dataplane/sessions/resolve/", asked)
        return SessionKeys(
            session_id=body["session_id"],
            user_id=body["user_id"],
            organization_id=body["organization_id"],
            expires_at=body["expires_at"],
            sealed_private_key=base64.b64decode(body["sealed_private_key"]),
            kdf=body["kdf"],
            lookup=str(body.get("lookup", "")),
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
                credentials=(candidates := _candidates(body.get("credentials", []))),
                credential_refs=tuple(
                    sorted({(r.vault_id, r.credential_id) for refs in candidates.values() for r in refs})
                ),
                policies=tuple(
                    {"id": str(p["id"]), "name": str(p["name"]), "cedar": str(p["cedar"])}
                    for p in body.get("policies", [])
                ),
                egress_mode=str(egress.get("mode", "open")),
                egress_allow=tuple(str(a) for a in egress.get("allow", [])),
                egress_plain_http=tuple(str(a) for a in egress.get("plain_http", [])),
                egress_tcp=tuple(str(a) for a in egress.get("tcp", [])),
                project_tcp=tuple(str(a) for a in egress.get("project_tcp", [])),
                shell_policy=shell_rules_parse(body.get("shell_policy")),
                waiting={str(k): str(v) for k, v in (body.get("waiting") or {}).items()},
            )
        except (KeyError, TypeError, AttributeError, ShellRuleError) as exc:
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
            credential_version=int(body.get("credential_version", 1)),
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

    def confirm_export(self, *, session_id: str, vault_id: str) -> ConfirmExport:
        body = self._post("/api/v1/dataplane/confirmations/export/", {"session_id": session_id, "vault_id": vault_id})
        return ConfirmExport(
            organization_id=body["organization_id"],
            key_version=int(body["key_version"]),
            wrapping=base64.b64decode(body["wrapping"]),
            waiting={w["user_id"]: base64.b64decode(w["public_key"]) for w in body["waiting"]},
        )

    def confirm_commit(self, *, session_id: str, vault_id: str, key_version: int, wrappings: dict[str, bytes]) -> int:
        body = self._post(
            "/api/v1/dataplane/confirmations/commit/",
            {
                "session_id": session_id,
                "vault_id": vault_id,
                "key_version": key_version,
                "wrappings": {k: base64.b64encode(v).decode("ascii") for k, v in wrappings.items()},
            },
        )
        return int(body["confirmed"])

    def session_alive(self, session_id: str) -> bool:
        """Whether the control plane still serves this session (live token, active user, still a member)."""
        try:
            self._post("/api/v1/dataplane/sessions/alive/", {"session_id": session_id})
        except NotFoundError:
            return False
        return True

    def approval_claim(self, held: dict[str, Any]) -> ApprovalTicket:
        """Ask for the approval of one exact request; a granted answer with used_now has used the grant."""
        return _ticket(self._post("/api/v1/dataplane/approvals/", held))

    async def approval_wait(self, approval_id: str, *, timeout: float, request_id: str | None = None) -> ApprovalTicket:
        """Wait (without a thread) until the approval is decided or `timeout` seconds pass. With `request_id`, a
        grant is used for that request in the same call (used_now); without, nothing is used."""
        try:
            response = await self._async_client().post(
                f"/api/v1/dataplane/approvals/{approval_id}/wait/",
                json={"timeout": timeout, **({"request_id": request_id} if request_id else {})},
                timeout=httpx.Timeout(timeout + 15.0, connect=5.0),
            )
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"control plane unreachable: {exc.__class__.__name__}") from None
        if response.status_code == 404:
            raise NotFoundError("no such approval")
        if response.status_code != 200:
            raise ControlPlaneError(f"control plane answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ControlPlaneError("control plane answered without JSON") from None
        if not isinstance(body, dict):
            raise ControlPlaneError("the approval answer is malformed")
        return _ticket(body)

    def _async_client(self) -> httpx.AsyncClient:
        if self._async is None:
            self._async = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
            )
        return self._async

    async def _async_post(self, path: str, body: dict[str, Any], *, timeout: float) -> httpx.Response:
        try:
            return await self._async_client().post(path, json=body, timeout=httpx.Timeout(timeout, connect=5.0))
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"control plane unreachable: {exc.__class__.__name__}") from None

    async def keychannel_pull(self, *, timeout: float) -> list[dict[str, Any]]:
        """Key-channel requests relayed from CLIs on other machines (vaults.keyrelay): wait up to `timeout`
        seconds for some. Each is {"id", "op", "body"}; each is handed to one puller only."""
        response = await self._async_post(
            "/api/v1/dataplane/key-channel/pull/", {"timeout": timeout}, timeout=timeout + 15.0
        )
        if response.status_code != 200:
            raise ControlPlaneError(f"control plane answered {response.status_code}")
        try:
            listed = response.json()["requests"]
        except (ValueError, KeyError, TypeError):
            raise ControlPlaneError("the relayed requests are malformed") from None
        if not isinstance(listed, list):
            raise ControlPlaneError("the relayed requests are malformed")
        return [r for r in listed if isinstance(r, dict)]

    async def keychannel_answer(self, request_id: str, answer: dict[str, Any]) -> None:
        """Answer one relayed request; NotFoundError when its CLI stopped waiting."""
        response = await self._async_post(
            f"/api/v1/dataplane/key-channel/{request_id}/answer/", {"answer": answer}, timeout=10.0
        )
        if response.status_code == 404:
            raise NotFoundError("nobody waits for that answer")
        if response.status_code != 204:
            raise ControlPlaneError(f"control plane answered {response.status_code}")

    def approval_release(self, approval_id: str, *, request_id: str) -> None:
        """Give back a grant used for a request that was not sent (its agent went away)."""
        self._post(f"/api/v1/dataplane/approvals/{approval_id}/release/", {"request_id": request_id})

    def audit_ship(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Post a batch of audit records (at most 1000); the answer is {"accepted": n, "rejected": [...]}.

        Ingest is idempotent by record id, so a batch whose answer was lost may simply be sent again.
        """
        return self._post("/api/v1/dataplane/audit/", {"records": records})

    def audit_ship_lines(self, lines: list[bytes]) -> dict[str, Any]:
        """The same, from spool lines (each one JSON object), without decoding and re-encoding them."""
        return self._post("/api/v1/dataplane/audit/", b'{"records":[' + b",".join(lines) + b"]}")
