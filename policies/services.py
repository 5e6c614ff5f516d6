"""Writing policies (Cedar, checked by policies.engine), the egress setting and the shell policy (shell_rules)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from aileron_site.problems import Conflict, InvalidInput
from audit import snapshots
from audit.services import admin_event_record
from connectors.names import UnknownName, action_id_check, connector_name_check
from connectors.services import connectors_installed
from policies.engine import (
    ACTION,
    CONNECTOR,
    PolicyError,
    egress_pattern_validate,
    policy_references,
    policy_validate,
    tcp_rule_parse,
)
from policies.models import EGRESS_MAX_PATTERNS, EgressMode, EgressPolicy, Policy, ProjectEgress, ShellPolicy
from policies.selectors import egress_get, project_egress_get, shell_policy_get
from policies.shell_rules import ShellRuleError, shell_rules_parse
from tenants.models import Membership, Organization, Project, Team


def _validated(cedar: str, name: str) -> str:
    """CEDAR, if Aileron accepts it and every action and connector it names is installed (else it never
    matches: `github.create-isue` is refused with `github.create-issue` as a suggestion)."""
    try:
        policy_validate(cedar, name=name)
        references = policy_references(cedar, name=name)
    except PolicyError as exc:
        raise InvalidInput(str(exc), errors=[{"detail": str(exc), "pointer": "/cedar"}]) from None
    connectors = connectors_installed() if any(kind in (ACTION, CONNECTOR) for kind, _ in references) else []
    for kind, ref in references:
        try:
            if kind == ACTION:
                action_id_check(ref, connectors)
            elif kind == CONNECTOR:
                connector_name_check(ref, connectors)
        except UnknownName as exc:
            detail = f'policy "{name}": {exc}'
            raise InvalidInput(
                detail, errors=[{"detail": detail, "pointer": "/cedar"}], suggestions=exc.suggestions
            ) from None
    return cedar


def _name_taken(*, organization: Organization, team: Team | None, name: str, exclude: Policy | None = None) -> bool:
    same = Policy.objects.filter(organization=organization, team=team, name=name)
    if exclude is not None:
        same = same.exclude(pk=exclude.pk)
    return same.exists()


def _save(policy: Policy, *, creating: bool) -> Policy:
    try:
        with transaction.atomic():
            if creating:
                policy.save(force_insert=True)
            else:
                policy.save()
    except IntegrityError:
        raise Conflict(f"A policy named {policy.name!r} exists at this level; choose another name.") from None
    return policy


def _policy_event(*, acting: Membership, action: str, policy: Policy, before: snapshots.Snapshot | None) -> None:
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="policy",
        target_id=policy.pk,
        target_label=policy.name,
        before=before,
        after=None if action == "policy.delete" else snapshots.policy_snapshot(policy),
    )


def _setting_event(
    *,
    acting: Membership,
    action: str,
    target_type: str,
    target_id: object,
    label: str,
    before: snapshots.Snapshot,
    after: snapshots.Snapshot,
) -> None:
    """An organization's (or a project's) single setting replaced: egress, TCP rules, the shell policy."""
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_label=label,
        before=before,
        after=after,
    )


@transaction.atomic
def policy_create(
    *,
    acting: Membership,
    team: Team | None,
    name: str,
    cedar: str,
    description: str = "",
    enabled: bool = True,
) -> Policy:
    """A policy of ACTING's organization (or of TEAM, which must be one of its teams)."""
    organization = acting.organization
    if team is not None and team.organization_id != organization.pk:
        raise InvalidInput("That team is not in this organization.")
    _validated(cedar, name)
    if _name_taken(organization=organization, team=team, name=name):
        raise Conflict(f"A policy named {name!r} exists at this level; choose another name.")
    policy = Policy(
        organization=organization,
        team=team,
        name=name,
        description=description,
        cedar=cedar,
        enabled=enabled,
        created_by=acting.user,
    )
    _save(policy, creating=True)
    _policy_event(acting=acting, action="policy.create", policy=policy, before=None)
    return policy


@transaction.atomic
def policy_update(
    *,
    acting: Membership,
    policy: Policy,
    name: str | None = None,
    cedar: str | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Policy:
    """Change the given fields (None leaves one as it is)."""
    before = snapshots.policy_snapshot(policy)
    if name is not None and name != policy.name:
        if _name_taken(organization=policy.organization, team=policy.team, name=name, exclude=policy):
            raise Conflict(f"A policy named {name!r} exists at this level; choose another name.")
        policy.name = name
    if cedar is not None:
        policy.cedar = _validated(cedar, policy.name)
    if description is not None:
        policy.description = description
    if enabled is not None:
        policy.enabled = enabled
    policy.updated_at = timezone.now()
    _save(policy, creating=False)
    _policy_event(acting=acting, action="policy.update", policy=policy, before=before)
    return policy


@transaction.atomic
def policy_delete(*, acting: Membership, policy: Policy) -> None:
    _policy_event(acting=acting, action="policy.delete", policy=policy, before=snapshots.policy_snapshot(policy))
    policy.delete()


def _egress_patterns(given: list[str], *, field: str) -> list[str]:
    if len(given) > EGRESS_MAX_PATTERNS:
        raise InvalidInput(f"At most {EGRESS_MAX_PATTERNS} egress patterns.")
    patterns: list[str] = []
    for n, pattern in enumerate(given):
        try:
            egress_pattern_validate(pattern)
        except PolicyError as exc:
            raise InvalidInput(str(exc), errors=[{"detail": str(exc), "pointer": f"/{field}/{n}"}]) from None
        if pattern.lower() not in patterns:
            patterns.append(pattern.lower())
    return patterns


def _tcp_rules(given: list[str]) -> list[str]:
    if len(given) > EGRESS_MAX_PATTERNS:
        raise InvalidInput(f"At most {EGRESS_MAX_PATTERNS} TCP rules.")
    rules: list[str] = []
    connector_hosts: dict[str, str] | None = None
    for n, rule in enumerate(given):
        try:
            host, port = tcp_rule_parse(rule)
        except PolicyError as exc:
            raise InvalidInput(str(exc), errors=[{"detail": str(exc), "pointer": f"/tcp/{n}"}]) from None
        if connector_hosts is None:
            connector_hosts = {h.lower(): c.name for c in connectors_installed() for h in c.hosts}
        if host in connector_hosts:
            # The proxy never opens raw TCP to a connector's host (its traffic is mediated HTTPS): say so now.
            detail = f"{host} is the {connector_hosts[host]} connector's host: no raw TCP goes there, on any port"
            raise InvalidInput(detail, errors=[{"detail": detail, "pointer": f"/tcp/{n}"}])
        if f"{host}:{port}" not in rules:
            rules.append(f"{host}:{port}")
    return rules


@transaction.atomic
def egress_set(
    *,
    acting: Membership,
    mode: str,
    allow: list[str],
    plain_http: list[str] | None = None,
    tcp: list[str] | None = None,
) -> EgressPolicy:
    """Replace the organization's egress mode, allow list, plain-HTTP hosts and TCP rules (stored lower-case,
    deduplicated). `plain_http` or `tcp` None keeps the current list."""
    if mode not in EgressMode.values:
        raise InvalidInput(f"mode must be one of {', '.join(EgressMode.values)}.")
    patterns = _egress_patterns(allow, field="allow")
    egress = egress_get(organization=acting.organization)
    before = snapshots.egress_snapshot(egress)
    if plain_http is not None:
        egress.plain_http = _egress_patterns(plain_http, field="plain_http")
    if tcp is not None:
        egress.tcp = _tcp_rules(tcp)
    egress.mode = mode
    egress.allow = patterns
    egress.updated_by = acting.user
    egress.updated_at = timezone.now()
    egress.save()
    _setting_event(
        acting=acting,
        action="egress.update",
        target_type="egress",
        target_id=acting.organization_id,
        label=acting.organization.name,
        before=before,
        after=snapshots.egress_snapshot(egress),
    )
    return egress


@transaction.atomic
def project_egress_set(*, acting: Membership, project: Project, tcp: list[str]) -> ProjectEgress:
    """Replace the project's own TCP rules (checked as the organization's are). Sessions started for the project
    get them besides the organization's; an open tunnel under a removed rule is closed by the proxy."""
    if project.organization_id != acting.organization_id:
        raise InvalidInput("That project is not in this organization.")
    egress = project_egress_get(project=project)
    before = snapshots.project_egress_snapshot(egress)
    egress.tcp = _tcp_rules(tcp)
    egress.updated_by = acting.user
    egress.updated_at = timezone.now()
    egress.save()
    _setting_event(
        acting=acting,
        action="project_egress.update",
        target_type="project",
        target_id=project.pk,
        label=project.name,
        before=before,
        after=snapshots.project_egress_snapshot(egress),
    )
    return egress


@transaction.atomic
def shell_policy_set(
    *, acting: Membership, mode: str, deny: list[str], allow: list[str], record_allowed: bool
) -> ShellPolicy:
    """Replace the organization's shell policy (patterns kept as given, in order, duplicates dropped).

    Agent sessions started afterwards get it; a running sandbox keeps the policy it was launched with."""
    try:
        rules = shell_rules_parse({"mode": mode, "deny": deny, "allow": allow, "record_allowed": record_allowed})
    except ShellRuleError as exc:
        raise InvalidInput(str(exc), errors=[{"detail": str(exc), "pointer": exc.pointer}]) from None
    shell = shell_policy_get(organization=acting.organization)
    before = snapshots.shell_policy_snapshot(shell)
    shell.mode = rules.mode
    shell.deny = list(rules.deny)
    shell.allow = list(rules.allow)
    shell.record_allowed = rules.record_allowed
    shell.updated_by = acting.user
    shell.updated_at = timezone.now()
    shell.save()
    _setting_event(
        acting=acting,
        action="shell_policy.update",
        target_type="shell_policy",
        target_id=acting.organization_id,
        label=acting.organization.name,
        before=before,
        after=snapshots.shell_policy_snapshot(shell),
    )
    return shell
