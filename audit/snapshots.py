"""What an admin event keeps of its target, before and after: plain fields by name, never a secret.

Each function lists the fields it keeps rather than walking the model: a field added to a model later (a new
digest, a wrapped key) stays out of the audit stream until someone decides it belongs there. Values are JSON
plain (ids and times as strings). Nothing here reads the database beyond the object it is given and the
relations named (an invitation's teams), so it costs little to call inside a service's transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django_scopes import scopes_disabled

if TYPE_CHECKING:
    from approvals.models import ApprovalRule, NotificationChannel
    from connectors.models import ConnectorEnablement
    from policies.models import EgressPolicy, Policy, ProjectEgress, ShellPolicy
    from tenants.models import ApiToken, Invitation, Membership, Organization, Project, Team, TeamMembership
    from vaults.models import Vault
    from vaults.store import CredentialMeta, VaultMeta

Snapshot = dict[str, Any]


def _plain(value: object) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _pick(obj: object, *names: str) -> Snapshot:
    return {name: _plain(getattr(obj, name)) for name in names}


def organization_snapshot(organization: Organization) -> Snapshot:
    return _pick(organization, "name", "slug")


def membership_snapshot(membership: Membership) -> Snapshot:
    return {"user_id": str(membership.user_id), "email": membership.user.email, "role": membership.role}


def invitation_snapshot(invitation: Invitation) -> Snapshot:
    """Who was invited and how; the invitation's secret (and its lookup and digest) never."""
    snapshot = _pick(invitation, "email", "role", "expires_at", "accepted_at", "revoked_at")
    # Teams are scoped: the invitation in hand was already reached through its organization, so its teams may be
    # read from any caller (a service running outside a request's scope included).
    with scopes_disabled():
        snapshot["teams"] = sorted(t.slug for t in invitation.teams.all())
    return snapshot


def team_snapshot(team: Team) -> Snapshot:
    return _pick(team, "name", "slug")


def team_member_snapshot(team_membership: TeamMembership) -> Snapshot:
    return {
        "team_id": str(team_membership.team_id),
        "team": team_membership.team.slug,
        "user_id": str(team_membership.user_id),
        "email": team_membership.user.email,
    }


def project_snapshot(project: Project) -> Snapshot:
    snapshot = _pick(project, "name", "slug", "description")
    snapshot["team_id"] = _plain(project.team_id)
    return snapshot


def token_snapshot(token: ApiToken) -> Snapshot:
    """A token's kind, name, owner and lifetime; never its plaintext, lookup part or digest."""
    snapshot = _pick(token, "kind", "name", "expires_at", "revoked_at")
    snapshot |= {
        "user_id": _plain(token.user_id),
        "organization_id": _plain(token.organization_id),
        "project_id": _plain(token.project_id),
        "pins": list(token.pins),  # vault_id:credential_id pairs: which credentials, never their values
    }
    return snapshot


def policy_snapshot(policy: Policy) -> Snapshot:
    snapshot = _pick(policy, "name", "description", "cedar", "enabled")
    snapshot["team_id"] = _plain(policy.team_id)
    return snapshot


def egress_snapshot(egress: EgressPolicy) -> Snapshot:
    return {
        "mode": egress.mode,
        "allow": list(egress.allow),
        "plain_http": list(egress.plain_http),
        "tcp": list(egress.tcp),
    }


def project_egress_snapshot(egress: ProjectEgress) -> Snapshot:
    return {"tcp": list(egress.tcp)}


def shell_policy_snapshot(shell: ShellPolicy) -> Snapshot:
    return {
        "mode": shell.mode,
        "deny": list(shell.deny),
        "allow": list(shell.allow),
        "record_allowed": shell.record_allowed,
    }


def connector_enablement_snapshot(enablement: ConnectorEnablement) -> Snapshot:
    return {"connector": enablement.connector, "team_id": str(enablement.team_id), "team": enablement.team.slug}


def approval_rule_snapshot(rule: ApprovalRule) -> Snapshot:
    return _pick(rule, "action", "four_eyes", "approvers_required", "window_seconds")


def notification_channel_snapshot(channel: NotificationChannel) -> Snapshot:
    """Where a channel points, but of a URL only its scheme and host: a Slack webhook's path is its secret, and a
    webhook's path or query may hold one too (auditors read this, and they may not read channels). The signing
    secret never."""
    target = channel.target
    if channel.kind != "email":
        parts = urlsplit(target)
        target = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"
    snapshot = _pick(channel, "name", "kind", "enabled")
    # A fingerprint of the whole target, so a change of path (the secret part) shows as a change without
    # showing the path: 48 bits of a SHA-256 over a URL whose secret part alone has far more entropy.
    fingerprint = hashlib.sha256(channel.target.encode()).hexdigest()[:12]
    snapshot |= {"target": target, "target_fingerprint": fingerprint, "events": list(channel.events)}
    return snapshot


def vault_snapshot(vault: Vault, meta: VaultMeta) -> Snapshot:
    """A vault's name, kind, owner team or project and key version; never a wrapping, a key or a ciphertext."""
    return {
        "name": meta.name,
        "type": meta.type,
        "team_id": _plain(vault.team_id),
        "project_id": _plain(vault.project_id),
        "key_version": meta.key_version,
    }


def credential_snapshot(meta: CredentialMeta) -> Snapshot:
    """A credential's name, connector, bindings, version and schedule; never its value or ciphertext."""
    return {
        "id": meta.id,
        "name": meta.name,
        "connector": meta.connector,
        "action_bindings": list(meta.action_bindings),
        "version": meta.version,
        "key_version": meta.key_version,
        "expires_at": meta.expires_at,
        "rotate_every_days": meta.rotate_every_days,
    }


def vault_member_snapshot(user_id: object, role: str) -> Snapshot:
    return {"user_id": str(user_id), "role": role}
