"""The OpenAPI schema as a product: a summary, a description and a tag per area for every operation, the
permission it needs, and the data plane's internal endpoints left out.

Summaries of the plain operations (list, create, get, update, delete) are made from the path; the rest are named
in SUMMARIES. A description is the handler's own docstring, else its view's own (never one inherited from a
base class), followed by the permission the caller's role needs.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample

PREFIX = "/api/v1/"
INTERNAL = "/api/v1/dataplane/"

# Area of the first path segment (after /orgs/{org_id}/ for organization resources): the operation's tag.
TAGS = {
    "orgs": "Organizations",
    "members": "Members",
    "invitations": "Members",
    "signup": "Sign-up",
    "teams": "Teams",
    "projects": "Projects",
    "tokens": "Tokens",
    "whoami": "Tokens",
    "session-tokens": "Sessions",
    "key-channel": "Sessions",
    "keys": "Vaults",
    "vaults": "Vaults",
    "credentials": "Vaults",
    "credential-choice": "Vaults",
    "connectors": "Connectors",
    "policies": "Policies",
    "egress": "Policies",
    "shell-policy": "Policies",
    "approvals": "Approvals",
    "approval-rules": "Approvals",
    "approval-links": "Approvals",
    "notification-channels": "Notifications",
    "audit": "Audit",
    "usage": "Audit",
    "health": "Runtime",
}

# "METHOD path" -> summary, for what the path alone does not say.
SUMMARIES = {
    "GET /api/v1/orgs/": "List your organizations",
    "POST /api/v1/orgs/": "Create an organization",
    "GET /api/v1/orgs/{org_id}/": "Get the organization",
    "PATCH /api/v1/orgs/{org_id}/": "Rename the organization",
    "DELETE /api/v1/orgs/{org_id}/": "Delete the organization",
    "POST /api/v1/signup/": "Sign up: a new organization and its first owner",
    "POST /api/v1/invitations/accept/": "Accept an invitation",
    "GET /api/v1/whoami/": "Who the presented token speaks for",
    "GET /api/v1/health/": "Health of the service, its worker and where its proxy is",
    "GET /api/v1/keys/": "Get your key material",
    "PUT /api/v1/keys/": "Store your key material (once)",
    "POST /api/v1/approval-links/open/": "Open a one-time approval link",
    "POST /api/v1/approval-links/decide/": "Decide through a one-time approval link",
    "PUT /api/v1/orgs/{org_id}/connectors/{name}/teams/{team_id}/": "Enable a connector for a team",
    "DELETE /api/v1/orgs/{org_id}/connectors/{name}/teams/{team_id}/": "Disable a connector for a team",
    "GET /api/v1/orgs/{org_id}/egress/": "Get the organization's egress rules",
    "PUT /api/v1/orgs/{org_id}/egress/": "Set the organization's egress rules",
    "GET /api/v1/orgs/{org_id}/projects/{project_id}/egress/": "Get a project's own TCP rules",
    "PUT /api/v1/orgs/{org_id}/projects/{project_id}/egress/": "Set a project's own TCP rules",
    "GET /api/v1/orgs/{org_id}/shell-policy/": "Get the organization's shell policy",
    "PUT /api/v1/orgs/{org_id}/shell-policy/": "Set the organization's shell policy",
    "GET /api/v1/orgs/{org_id}/credential-choice/": "Which credential your sessions would get",
    "GET /api/v1/orgs/{org_id}/credentials/due/": "List credentials due for replacement",
    "POST /api/v1/orgs/{org_id}/teams/{team_id}/members/": "Add a member to a team",
    "DELETE /api/v1/orgs/{org_id}/teams/{team_id}/members/{user_id}/": "Remove a member from a team",
    "GET /api/v1/orgs/{org_id}/teams/{team_id}/members/": "List a team's members",
    "PUT /api/v1/orgs/{org_id}/vaults/{vault_id}/credentials/{credential_id}/": "Replace a credential's value",
    "GET /api/v1/orgs/{org_id}/vaults/{vault_id}/credentials/{credential_id}/ciphertext/": (
        "Get a credential's ciphertext"
    ),
    "GET /api/v1/orgs/{org_id}/vaults/{vault_id}/export/": "Export a vault (ciphertext and your wrapping)",
    "POST /api/v1/orgs/{org_id}/vaults/{vault_id}/members/": "Grant someone a vault",
    "DELETE /api/v1/orgs/{org_id}/vaults/{vault_id}/members/{user_id}/": "Revoke someone from a vault",
    "POST /api/v1/orgs/{org_id}/vaults/{vault_id}/rotations/": "Rotate a vault's key",
    "GET /api/v1/orgs/{org_id}/vaults/{vault_id}/wrapping/": "Get your wrapping of a vault's key",
    "POST /api/v1/orgs/{org_id}/approvals/{approval_id}/grant/": "Grant a held request",
    "POST /api/v1/orgs/{org_id}/approvals/{approval_id}/reject/": "Reject a held request",
    "POST /api/v1/orgs/{org_id}/approvals/{approval_id}/cancel/": "Cancel your held request",
    "POST /api/v1/orgs/{org_id}/notification-channels/{channel_id}/test/": "Send a test message to a channel",
    "GET /api/v1/orgs/{org_id}/audit/": "Search audit records",
    "GET /api/v1/orgs/{org_id}/audit/{record_id}/": "Get an audit record",
    "GET /api/v1/orgs/{org_id}/audit/admin/": "Search admin events (who changed what)",
    "GET /api/v1/orgs/{org_id}/audit/admin/{event_id}/": "Get an admin event",
    "GET /api/v1/orgs/{org_id}/audit/verify/": "Verify the audit hash chain",
    "POST /api/v1/orgs/{org_id}/audit/verify/": "Verify the audit hash chain against an exported checkpoint",
    "GET /api/v1/orgs/{org_id}/audit/checkpoint/": "Get the latest signed audit checkpoint",
    "POST /api/v1/orgs/{org_id}/audit/checkpoint/": "Sign an audit checkpoint now",
    "GET /api/v1/orgs/{org_id}/audit/retention/": "How long audit records are kept",
    "GET /api/v1/orgs/{org_id}/usage/": "Usage and spend per team, project, agent, user, connector, action or model",
    "PUT /api/v1/orgs/{org_id}/audit/retention/": "Set how long audit records are kept",
    "PATCH /api/v1/orgs/{org_id}/members/{member_id}/": "Change a member's role",
    "DELETE /api/v1/orgs/{org_id}/members/{member_id}/": "Remove a member (or leave)",
    "DELETE /api/v1/orgs/{org_id}/invitations/{invitation_id}/": "Revoke an invitation",
    "POST /api/v1/orgs/{org_id}/invitations/": "Invite someone",
    "POST /api/v1/orgs/{org_id}/session-tokens/": "Start an agent session (mint its token)",
    "DELETE /api/v1/orgs/{org_id}/session-tokens/{token_id}/": "Revoke a session token",
    "GET /api/v1/tokens/": "List your personal tokens",
    "POST /api/v1/tokens/": "Create a personal token",
    "GET /api/v1/tokens/{token_id}/": "Get a personal token",
    "DELETE /api/v1/tokens/{token_id}/": "Revoke a personal token",
    "POST /api/v1/orgs/{org_id}/vaults/{vault_id}/credentials/": "Add a credential (encrypted by your CLI)",
}

# Request bodies people send most, as they send them.
EXAMPLES = {
    "POST /api/v1/signup/": {"organization": "Acme", "email": "alice@example.com", "name": "Alice"},
    "POST /api/v1/orgs/{org_id}/teams/": {"name": "Support"},
    "POST /api/v1/orgs/{org_id}/teams/{team_id}/members/": {"email": "bob@example.com"},
    "POST /api/v1/orgs/{org_id}/invitations/": {"email": "bob@example.com", "role": "member"},
    "PATCH /api/v1/orgs/{org_id}/members/{member_id}/": {"role": "approver"},
    "POST /api/v1/orgs/{org_id}/session-tokens/": {"name": "claude", "expires_in_minutes": 480},
    "POST /api/v1/orgs/{org_id}/approval-rules/": {"action": "stripe.create-refund"},
    "POST /api/v1/orgs/{org_id}/approvals/{approval_id}/reject/": {"reason": "Not this customer."},
    "POST /api/v1/orgs/{org_id}/policies/": {
        "name": "No deleting repositories",
        "cedar": 'forbid(principal, action == Aileron::Action::"github.delete-repo", resource);',
    },
    "POST /api/v1/orgs/{org_id}/notification-channels/": {
        "name": "on-call",
        "kind": "webhook",
        "target": "https://hooks.example.com/aileron",
    },
}

_IRREGULAR = {"policies": "policy", "approval-rules": "approval rule", "session-tokens": "session token"}
_VERBS = {"get": ("List", "Get"), "post": ("Create", "Create"), "patch": ("Update",) * 2, "delete": ("Delete",) * 2}
_VERBS["put"] = ("Replace", "Replace")


def exclude_internal(endpoints: list[tuple[str, str, str, Any]], **_: Any) -> list[tuple[str, str, str, Any]]:
    """Preprocessing hook: the data plane's own endpoints (service token only) are not part of the public API."""
    return [e for e in endpoints if not e[0].startswith(INTERNAL)]


def _segments(path: str) -> list[str]:
    return [s for s in path.removeprefix(PREFIX).split("/") if s]


def _noun(segment: str) -> str:
    if segment in _IRREGULAR:
        return _IRREGULAR[segment]
    word = segment.replace("-", " ")
    return word[:-1] if word.endswith("s") else word


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def generated_summary(method: str, path: str) -> str:
    """`List teams`, `Create a team`, `Get a team`, … from the path's last resource."""
    parts = _segments(path)
    if not parts:
        return method.upper()
    item = parts[-1].startswith("{")
    resource = parts[-2] if item and len(parts) > 1 else parts[-1]
    many, one = _VERBS.get(method, (method.capitalize(),) * 2)
    if item:
        return f"{one} {_article(_noun(resource))}"
    if method == "get":
        return f"{many} {resource.replace('-', ' ')}"
    return f"{one} {_article(_noun(resource))}"


def _own_doc(owner: Any, name: str | None = None) -> str:
    """The docstring written on OWNER itself (a class or one of its methods), not inherited."""
    target = owner.__dict__.get(name) if name else owner
    if target is None:
        return ""
    doc = target.__dict__.get("__doc__") if isinstance(target, type) else getattr(target, "__doc__", None)
    return (doc or "").strip()


class AileronAutoSchema(AutoSchema):
    def _key(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def get_tags(self) -> list[str]:
        parts = [p for p in _segments(self.path) if not p.startswith("{")]
        area = parts[1] if parts[:1] == ["orgs"] and len(parts) > 1 else (parts[0] if parts else "")
        return [TAGS.get(area, area.replace("-", " ").capitalize() or "API")]

    def get_summary(self) -> str:
        return SUMMARIES.get(self._key()) or generated_summary(self.method.lower(), self.path)

    def get_examples(self) -> list[OpenApiExample]:
        body = EXAMPLES.get(self._key())
        found = [OpenApiExample("Example", value=body, request_only=True)] if body is not None else []
        return [*super().get_examples(), *found]

    def get_description(self) -> str:  # type: ignore[override]  # as drf-spectacular overrides DRF's
        view = self.view
        action = getattr(view, "action", None) or self.method.lower()
        text = _own_doc(type(view), action) or _own_doc(type(view))
        text = re.sub(r"\n[ \t]+", "\n", text)
        perm = getattr(view, "permission_map", {}).get(action)
        if perm is not None:
            text += ("\n\n" if text else "") + f"Role permission: `{perm.value}` (see the README's role matrix)."
        return text or self.get_summary() + "."


def add_async_views(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Postprocessing hook: the public async views (plain Django views, which the generator cannot see)."""
    problem = {"description": "A problem", "content": {"application/problem+json": {"schema": {"type": "object"}}}}
    result.setdefault("paths", {})["/api/v1/orgs/{org_id}/key-channel/"] = {
        "post": {
            "operationId": "orgs_key_channel_relay",
            "summary": "Relay a key-channel request to the data plane",
            "description": (
                "For a CLI without the data plane's socket (another machine): one key-channel request "
                "(`attest`, `open`, `status` or `close`, as on the socket), answered by the organization's data "
                "plane. `open` carries the master key only HPKE-sealed to the key of an attestation report the "
                "CLI verified; the control plane cannot open it. Only your own sessions; at most 8 requests "
                "waiting per person. The answer is the data plane's, under `answer`."
            ),
            "tags": ["Sessions"],
            "security": [{"bearerAuth": []}],
            "parameters": [
                {"name": "org_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["op"],
                            "properties": {
                                "op": {"type": "string", "enum": ["attest", "open", "status", "close"]},
                                "nonce": {"type": "string", "description": "base64, 32 bytes (attest, open)"},
                                "session_token": {"type": "string", "description": "ail_ses_… (open)"},
                                "sealed_master_key": {"type": "string", "description": "base64 (open)"},
                                "session_id": {"type": "string", "format": "uuid", "description": "status, close"},
                            },
                        },
                        "examples": {
                            "Example": {"value": {"op": "status", "session_id": "00000000-0000-4000-8000-000000000000"}}
                        },
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The data plane's answer",
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"answer": {"type": "object"}}}}
                    },
                },
                **{code: problem for code in ("400", "401", "403", "404", "429", "504")},
            },
        }
    }
    return result
