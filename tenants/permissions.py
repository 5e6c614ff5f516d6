"""The permission matrix: which organization role may do what. The one place roles are interpreted.

The README's matrix is generated from ROLE_PERMISSIONS (`python -m tenants.permissions`) and a test keeps
the two equal.
"""

from __future__ import annotations

from enum import StrEnum

from tenants.roles import Role


class Perm(StrEnum):
    ORG_VIEW = "org.view"
    ORG_UPDATE = "org.update"
    ORG_DELETE = "org.delete"
    MEMBER_VIEW = "member.view"
    MEMBER_INVITE = "member.invite"
    MEMBER_MANAGE = "member.manage"
    OWNER_MANAGE = "owner.manage"
    TEAM_VIEW = "team.view"
    TEAM_MANAGE = "team.manage"
    PROJECT_VIEW = "project.view"
    PROJECT_MANAGE = "project.manage"
    SESSION_CREATE = "session.create"
    SESSION_VIEW_ALL = "session.view_all"
    SESSION_REVOKE_ALL = "session.revoke_all"
    CONNECTOR_MANAGE = "connector.manage"
    POLICY_MANAGE = "policy.manage"
    VAULT_CREATE = "vault.create"
    VAULT_VIEW_ALL = "vault.view_all"
    APPROVAL_DECIDE = "approval.decide"
    AUDIT_READ = "audit.read"
    AUDIT_RETENTION = "audit.retention"
    NOTIFY_MANAGE = "notify.manage"


DESCRIPTIONS: dict[Perm, str] = {
    Perm.ORG_VIEW: "See the organization",
    Perm.ORG_UPDATE: "Rename the organization",
    Perm.ORG_DELETE: "Delete the organization and everything in it",
    Perm.MEMBER_VIEW: "List members and their roles",
    Perm.MEMBER_INVITE: "Invite people, list and revoke invitations",
    Perm.MEMBER_MANAGE: "Change roles and remove members (not owners)",
    Perm.OWNER_MANAGE: "Grant, change or remove the owner role",
    Perm.TEAM_VIEW: "List teams and team members",
    Perm.TEAM_MANAGE: "Create, rename, delete teams; add and remove team members",
    Perm.PROJECT_VIEW: "List projects",
    Perm.PROJECT_MANAGE: "Create, change, delete projects",
    Perm.SESSION_CREATE: "Start agent sessions (mint session tokens) as oneself",
    Perm.SESSION_VIEW_ALL: "See everyone's agent session tokens",
    Perm.SESSION_REVOKE_ALL: "Revoke anyone's agent session tokens",
    Perm.CONNECTOR_MANAGE: "Enable or disable installed connectors for teams",
    Perm.POLICY_MANAGE: "Create, change, delete organization and team policies; set egress",
    Perm.VAULT_CREATE: "Create shared vaults (one's personal vault is always allowed)",
    Perm.VAULT_VIEW_ALL: "See every vault's metadata (names, members, credential names; never ciphertext)",
    Perm.APPROVAL_DECIDE: "Grant or reject held actions, and see everyone's (others see their own)",
    Perm.AUDIT_READ: "Read every member's audit records (others read only their own) and the admin events",
    Perm.AUDIT_RETENTION: "Set how long audit records are kept (older ones are pruned, after a signed checkpoint)",
    Perm.NOTIFY_MANAGE: "Set up the notification channels (webhook, Slack, email) the worker sends approvals to",
}

_EVERYONE = frozenset({Perm.ORG_VIEW, Perm.MEMBER_VIEW, Perm.TEAM_VIEW, Perm.PROJECT_VIEW})
_AGENT_USER = _EVERYONE | {Perm.SESSION_CREATE, Perm.VAULT_CREATE}
_ADMIN = (
    _AGENT_USER
    | {Perm.ORG_UPDATE, Perm.MEMBER_INVITE, Perm.MEMBER_MANAGE, Perm.TEAM_MANAGE, Perm.PROJECT_MANAGE}
    | {Perm.CONNECTOR_MANAGE, Perm.POLICY_MANAGE, Perm.NOTIFY_MANAGE}
    | {Perm.SESSION_VIEW_ALL, Perm.SESSION_REVOKE_ALL, Perm.APPROVAL_DECIDE, Perm.AUDIT_READ, Perm.VAULT_VIEW_ALL}
)

ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.OWNER: _ADMIN | {Perm.ORG_DELETE, Perm.OWNER_MANAGE, Perm.AUDIT_RETENTION},
    Role.ADMIN: _ADMIN,
    Role.APPROVER: _AGENT_USER | {Perm.APPROVAL_DECIDE},
    Role.MEMBER: _AGENT_USER,
    Role.AUDITOR: _EVERYONE | {Perm.SESSION_VIEW_ALL, Perm.AUDIT_READ, Perm.VAULT_VIEW_ALL},
}


def role_has(role: str, perm: Perm) -> bool:
    try:
        return perm in ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False


def matrix_markdown() -> str:
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(r.value for r in roles) + " | what it allows |",
        "|---|" + "---|" * len(roles) + "---|",
    ]
    for perm in Perm:
        cells = " | ".join("yes" if perm in ROLE_PERMISSIONS[r] else "·" for r in roles)
        lines.append(f"| `{perm.value}` | {cells} | {DESCRIPTIONS[perm]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(matrix_markdown())
