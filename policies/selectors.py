"""Reading policies, the egress setting and the shell policy, and everything the data plane needs for one session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django_scopes import scope

from aileron_site.problems import NotFound
from connectors.models import ConnectorEnablement
from policies.models import EgressMode, EgressPolicy, Policy, ProjectEgress, ShellMode, ShellPolicy
from tenants.models import Membership, Organization, Project, TeamMembership


def policy_list(*, organization: Organization) -> QuerySet[Policy]:
    return Policy.objects.filter(organization=organization)


def policy_get(*, organization: Organization, policy_id: uuid.UUID) -> Policy:
    policy = policy_list(organization=organization).select_related("team").filter(pk=policy_id).first()
    if policy is None:
        raise NotFound("No such policy.")
    return policy


def egress_get(*, organization: Organization) -> EgressPolicy:
    """The organization's egress setting; an unsaved open one until it is first changed."""
    found = EgressPolicy.objects.filter(organization=organization).first()
    return found if found is not None else EgressPolicy(organization=organization, mode=EgressMode.OPEN, allow=[])


def project_egress_get(*, project: Project) -> ProjectEgress:
    """The project's own TCP rules; an unsaved empty set until they are first changed."""
    found = ProjectEgress.objects.filter(organization_id=project.organization_id, project=project).first()
    return found if found is not None else ProjectEgress(organization_id=project.organization_id, project=project)


def shell_policy_get(*, organization: Organization) -> ShellPolicy:
    """The organization's shell policy; an unsaved empty one (nothing listed) until it is first changed."""
    found = ShellPolicy.objects.filter(organization=organization).first()
    if found is not None:
        return found
    return ShellPolicy(organization=organization, mode=ShellMode.ENFORCE, deny=[], allow=[], record_allowed=False)


# --- the data plane's view of one agent session --------------------------------------------------------------


# How specific a credential's binding is to a session, most specific first (an `action_bindings` match beats
# all but a pin, per request, in the data plane): see credential_candidates.
BINDINGS = ("pinned", "project", "team", "shared", "personal")


@dataclass(frozen=True, slots=True)
class SessionCredential:
    connector: str
    vault_id: str
    credential_id: str
    name: str
    binding: str = "personal"  # one of BINDINGS
    actions: tuple[str, ...] = ()  # its action_bindings: used only for these actions (unless pinned)
    vault_name: str = ""


@dataclass(frozen=True, slots=True)
class SessionContext:
    session_id: uuid.UUID
    user_id: uuid.UUID
    user_email: str
    organization_id: uuid.UUID
    agent: str
    project_id: uuid.UUID | None
    team_ids: list[uuid.UUID]
    expires_at: datetime
    connectors: list[str]
    credentials: list[SessionCredential]
    policies: list[Policy]
    egress_mode: str
    egress_allow: list[str] = field(default_factory=list)
    egress_plain_http: list[str] = field(default_factory=list)
    egress_tcp: list[str] = field(default_factory=list)
    project_tcp: list[str] = field(default_factory=list)  # the session's project's own rules, besides egress_tcp
    shell_policy: dict[str, Any] = field(default_factory=dict)  # policies.shell_rules.ShellRules.as_dict()
    waiting: dict[str, str] = field(default_factory=dict)  # connector -> team vault that awaits confirming the user


def session_context(*, session_token: str) -> SessionContext:
    """Who a live agent session acts for and what applies to it: teams, enabled connectors, the credential the
    proxy injects per connector, the enabled policies (the organization's and the user's teams') and egress.

    NotFound, the same for all, for an unknown, revoked or expired token, or a user no longer a member."""
    from tenants.selectors import may_work_in, token_authenticate

    token = token_authenticate(raw=session_token)
    if token is None or token.kind != "ses" or token.user is None or token.organization is None:
        raise NotFound("No live session for that token.")
    user, organization = token.user, token.organization
    with scope(organization=organization):
        membership = Membership.objects.filter(organization=organization, user=user).select_related("user").first()
        if membership is None:
            raise NotFound("No live session for that token.")
        project_id = token.project_id
        if token.project is not None and not may_work_in(membership=membership, project=token.project):
            project_id = None  # they left the project's team: its rules and vaults no longer reach this session
        team_ids = sorted(
            TeamMembership.objects.filter(organization=organization, user=user).values_list("team_id", flat=True)
        )
        connectors = sorted(
            set(
                ConnectorEnablement.objects.filter(organization=organization, team_id__in=team_ids).values_list(
                    "connector", flat=True
                )
            )
        )
        policies = list(
            Policy.objects.filter(organization=organization, enabled=True)
            .filter(Q(team__isnull=True) | Q(team_id__in=team_ids))
            .order_by("team_id", "created_at", "id")
        )
        egress = egress_get(organization=organization)
        project_tcp = (
            list(
                ProjectEgress.objects.filter(organization=organization, project_id=project_id)
                .values_list("tcp", flat=True)
                .first()
                or []
            )
            if project_id is not None
            else []
        )
        shell = shell_policy_get(organization=organization)
        credentials, waiting = credential_candidates(
            membership=membership, team_ids=set(team_ids), project_id=project_id, pins=set(token.pins or [])
        )
    return SessionContext(
        session_id=token.pk,
        user_id=user.pk,
        user_email=user.email,
        organization_id=organization.pk,
        agent=token.name,
        project_id=project_id,
        team_ids=team_ids,
        expires_at=token.expires_at,
        connectors=connectors,
        credentials=credentials,
        policies=policies,
        egress_mode=egress.mode,
        egress_allow=list(egress.allow),
        egress_plain_http=list(egress.plain_http),
        egress_tcp=list(egress.tcp),
        project_tcp=project_tcp,
        waiting=waiting,
        shell_policy={
            "mode": shell.mode,
            "deny": list(shell.deny),
            "allow": list(shell.allow),
            "record_allowed": shell.record_allowed,
        },
    )


def credential_candidates(
    *, membership: Membership, team_ids: set[uuid.UUID], project_id: uuid.UUID | None, pins: set[str]
) -> tuple[list[SessionCredential], dict[str, str]]:
    """Every credential a session of MEMBERSHIP may have injected, most specific first; the data plane takes,
    per request, the first that is pinned or bound to the request's action, else the first bound to no action:

    1. pinned: named by the session (`aileron launch --credential NAME`);
    2. (per request) bound to the action (its `action_bindings`);
    3. project: in a vault of the session's project (another project's vaults serve none of this session);
    4. team: in a team vault of one of the user's teams;
    5. shared: in another shared vault the user is a member of;
    6. personal: in the user's personal vault.

    Ties go to the vault name (then id) and, within a vault, the oldest credential. And, for connectors none of
    them serves, the team vault that has one but waits for an owner to confirm the user: connector -> its name."""
    from vaults.services import credential_list, vault_list_for

    views = vault_list_for(membership=membership)
    ranked: list[tuple[int, str, str, int, SessionCredential]] = []
    for view in views:
        vault = view.vault
        if view.my_role is None or (vault.project_id is not None and vault.project_id != project_id):
            continue
        if vault.project_id is not None:
            binding = "project"
        elif vault.team_id is not None and vault.team_id in team_ids:
            binding = "team"
        elif vault.personal_owner_id == membership.user_id:
            binding = "personal"
        else:
            binding = "shared"
        for n, credential in enumerate(credential_list(view=view)):  # oldest first
            if not credential.connector:
                continue
            chosen = "pinned" if f"{view.id}:{credential.id}" in pins else binding
            ranked.append(
                (
                    BINDINGS.index(chosen),
                    view.meta.name,
                    view.id,
                    n,
                    SessionCredential(
                        connector=credential.connector,
                        vault_id=view.id,
                        credential_id=credential.id,
                        name=credential.name,
                        binding=chosen,
                        actions=tuple(credential.action_bindings),
                        vault_name=view.meta.name,
                    ),
                )
            )
    ranked.sort(key=lambda r: r[:4])
    credentials = [r[4] for r in ranked]
    served = {c.connector for c in credentials if not c.actions or c.binding == "pinned"}
    waiting: dict[str, str] = {}
    for view in sorted((v for v in views if v.i_wait), key=lambda v: (v.meta.name, v.id)):
        for credential in credential_list(view=view):
            if credential.connector and credential.connector not in served:
                waiting.setdefault(credential.connector, view.meta.name)
    return credentials, waiting


def credential_choice(*, membership: Membership, project_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Which credential a session of MEMBERSHIP (for PROJECT_ID) would get, per connector its user may use:
    the default one, and the actions a more specific (action-bound) credential takes over. The data plane's
    rule (dataplane.control.credential_for), for `aileron secret list`."""
    organization = membership.organization
    with scope(organization=organization):
        team_ids = set(
            TeamMembership.objects.filter(organization=organization, user_id=membership.user_id).values_list(
                "team_id", flat=True
            )
        )
        enabled = set(
            ConnectorEnablement.objects.filter(organization=organization, team_id__in=team_ids).values_list(
                "connector", flat=True
            )
        )
        candidates, waiting = credential_candidates(
            membership=membership, team_ids=team_ids, project_id=project_id, pins=set()
        )

    def brief(c: SessionCredential) -> dict[str, Any]:
        return {"name": c.name, "vault": c.vault_name, "binding": c.binding, "credential_id": c.credential_id}

    choice = []
    for connector in sorted(enabled | {c.connector for c in candidates}):
        mine = [c for c in candidates if c.connector == connector]
        default = next((c for c in mine if not c.actions), None)
        by_action: dict[str, dict[str, Any]] = {}
        for c in mine:
            for action in sorted(c.actions):
                by_action.setdefault(action, brief(c))
        choice.append(
            {
                "connector": connector,
                "enabled": connector in enabled,
                "default": brief(default) if default is not None else None,
                "actions": by_action,
                "waiting_for": waiting.get(connector),
            }
        )
    return choice
