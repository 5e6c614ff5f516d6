"""Writes to tenant data: typed, keyword-only, transactional. Views call these and nothing else writes."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from django_scopes import scope, scopes_disabled

from aileron_shared import tokens
from aileron_site.problems import Conflict, Forbidden, InvalidInput
from audit import snapshots
from audit.services import admin_event_record
from tenants.models import (
    ApiToken,
    Invitation,
    Membership,
    Organization,
    Project,
    Team,
    TeamMembership,
    TokenKind,
    User,
)
from tenants.permissions import Perm, role_has
from tenants.roles import Role
from tenants.selectors import may_work_in, membership_for_user, token_key

PERSONAL_TOKEN_MAX_DAYS = 365
SESSION_TOKEN_MAX_MINUTES = 24 * 60
SERVICE_TOKEN_MAX_DAYS = 366
INVITATION_MAX_DAYS = 30


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly minted token: the row, and the plaintext shown exactly once."""

    token: ApiToken
    plaintext: str


@dataclass(frozen=True, slots=True)
class Onboarded:
    organization: Organization
    user: User
    membership: Membership
    issued: IssuedToken | None
    teams: tuple[Team, ...] = ()  # the teams the invitation made the person a member of


def _unique_slug(model: type[Organization] | type[Team] | type[Project], base: str, **filters: object) -> str:
    root = (slugify(base) or model.__name__.lower())[:50].strip("-") or model.__name__.lower()
    candidate = root
    with scopes_disabled():
        while model.objects.filter(slug=candidate, **filters).exists():
            candidate = f"{root}-{secrets.token_hex(2)}"
    return candidate


def _check_in_organization(acting: Membership, organization_id: uuid.UUID | None) -> None:
    """The acting membership's organization is the one whose change is recorded: the target must be in it."""
    if organization_id != acting.organization_id:
        raise InvalidInput("That is not in this organization.")


def _check_slug_free(
    model: type[Team] | type[Project], organization: Organization, slug: str, exclude_pk: uuid.UUID | None = None
) -> None:
    qs = model.objects.filter(organization=organization, slug=slug)
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    if qs.exists():
        raise Conflict(f"A {model.__name__.lower()} with slug {slug!r} already exists in this organization.")


# --- tokens -------------------------------------------------------------------------------------------


def _token_issue(
    *,
    kind: TokenKind,
    name: str,
    expires_at: datetime,
    user: User | None = None,
    organization: Organization | None = None,
    project: Project | None = None,
) -> IssuedToken:
    new = tokens.generate(kind.value, token_key())
    token = ApiToken.objects.create(
        kind=kind,
        name=name,
        lookup=new.lookup,
        digest=new.digest,
        user=user,
        organization=organization,
        project=project,
        expires_at=expires_at,
    )
    return IssuedToken(token=token, plaintext=new.plaintext)


def _token_created_event(*, acting: User | None, token: ApiToken) -> None:
    """Personal and service tokens belong to no organization, so neither do their events."""
    admin_event_record(
        acting=acting,
        organization=None,
        action="token.create",
        target_type="token",
        target_id=token.pk,
        target_label=token.name,
        after=snapshots.token_snapshot(token),
    )


@transaction.atomic
def personal_token_create(*, user: User, name: str, expires_in_days: int = 90) -> IssuedToken:
    """A personal token for USER, minted by USER (nobody mints one for someone else, so USER is the actor)."""
    if not 1 <= expires_in_days <= PERSONAL_TOKEN_MAX_DAYS:
        raise InvalidInput(f"expires_in_days must be between 1 and {PERSONAL_TOKEN_MAX_DAYS}.")
    issued = _token_issue(
        kind=TokenKind.PERSONAL,
        name=name,
        user=user,
        expires_at=timezone.now() + timedelta(days=expires_in_days),
    )
    _token_created_event(acting=user, token=issued.token)
    return issued


@transaction.atomic
def session_token_create(
    *,
    membership: Membership,
    name: str,
    project: Project | None = None,
    expires_in_minutes: int = 12 * 60,
    pins: Sequence[str] = (),
) -> IssuedToken:
    if not 1 <= expires_in_minutes <= SESSION_TOKEN_MAX_MINUTES:
        raise InvalidInput(f"expires_in_minutes must be between 1 and {SESSION_TOKEN_MAX_MINUTES}.")
    if project is not None and project.organization_id != membership.organization_id:
        raise InvalidInput("That project is not in this organization.")
    if project is not None and not may_work_in(membership=membership, project=project):
        # A session for a project gets the project's own egress rules: only its team (or whoever manages
        # projects) may start one.
        raise Forbidden(f"Only members of the {project.slug} project's team may start sessions for it.")
    pins = list(dict.fromkeys(pins))
    if pins:
        from vaults.services import credentials_readable, pins_for_other_projects

        readable = credentials_readable(membership=membership, pins=pins)
        unknown = [p for p in pins if p not in readable]
        if unknown:
            raise InvalidInput(f"No credential {unknown[0]} in your vaults to pin (pins are vault_id:credential_id).")
        elsewhere = pins_for_other_projects(organization=membership.organization, pins=pins, project=project)
        if elsewhere:
            raise InvalidInput(
                f"The credential {elsewhere[0]} is in another project's vault: it serves no session here."
            )
    issued = _token_issue(
        kind=TokenKind.SESSION,
        name=name,
        user=membership.user,
        organization=membership.organization,
        project=project,
        expires_at=timezone.now() + timedelta(minutes=expires_in_minutes),
    )
    if pins:
        issued.token.pins = pins
        issued.token.save(update_fields=["pins"])
    admin_event_record(
        acting=membership,
        organization=membership.organization,
        action="token.create",
        target_type="token",
        target_id=issued.token.pk,
        target_label=issued.token.name,
        after=snapshots.token_snapshot(issued.token),
    )
    return issued


@transaction.atomic
def service_token_create(*, name: str, expires_in_days: int = 365) -> IssuedToken:
    """The data plane's token. Only the operator's command and `aileron service` mint one: the system acts."""
    if not 1 <= expires_in_days <= SERVICE_TOKEN_MAX_DAYS:
        raise InvalidInput(f"expires_in_days must be between 1 and {SERVICE_TOKEN_MAX_DAYS}.")
    issued = _token_issue(
        kind=TokenKind.SERVICE, name=name, expires_at=timezone.now() + timedelta(days=expires_in_days)
    )
    _token_created_event(acting=None, token=issued.token)
    return issued


@transaction.atomic
def token_revoke(*, acting: Membership | User | None, token: ApiToken) -> ApiToken:
    """Revoke TOKEN. ACTING is whoever asked: the membership (a session's), the user (their own personal token), or
    None when the system does it (`aileron service` replacing its data plane's token). The event belongs to the
    token's organization if it has one (a session's); installation-wide tokens' events to none."""
    if token.revoked_at is None:
        before = snapshots.token_snapshot(token)
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        admin_event_record(
            acting=acting,
            organization=token.organization,
            action="token.revoke",
            target_type="token",
            target_id=token.pk,
            target_label=token.name,
            before=before,
            after=snapshots.token_snapshot(token),
        )
        if token.kind == TokenKind.SESSION:
            from approvals.services import approvals_cancel_for_session

            # Its held requests can no longer be answered, and its unused grants must never be used.
            approvals_cancel_for_session(session_id=token.pk)
    return token


def token_touch(*, token: ApiToken) -> None:
    """Record use, at most once a minute per token so authentication does not write on every request."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def tokens_purge_expired(*, older_than: timedelta = timedelta(days=30)) -> int:
    """Delete tokens and invitations that expired or were revoked more than OLDER_THAN ago."""
    cutoff = timezone.now() - older_than
    from django.db.models import Q

    deleted, _ = ApiToken.objects.filter(Q(expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff)).delete()
    with scopes_disabled():
        inv_deleted, _ = Invitation.objects.filter(
            Q(expires_at__lt=cutoff) | Q(revoked_at__lt=cutoff) | Q(accepted_at__lt=cutoff)
        ).delete()
    return deleted + inv_deleted


# --- organizations and onboarding ----------------------------------------------------------------------


@transaction.atomic
def organization_create(*, owner: User, name: str, slug: str | None = None) -> Membership:
    if slug:
        if Organization.objects.filter(slug=slug).exists():
            raise Conflict(f"The organization slug {slug!r} is taken.")
    else:
        slug = _unique_slug(Organization, name)
    try:
        with transaction.atomic():
            organization = Organization.objects.create(name=name, slug=slug)
    except IntegrityError:
        raise Conflict(f"The organization slug {slug!r} is taken.") from None
    with scope(organization=organization):
        membership = Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    admin_event_record(
        acting=membership,
        organization=organization,
        action="organization.create",
        target_type="organization",
        target_id=organization.pk,
        target_label=organization.name,
        after=snapshots.organization_snapshot(organization),
    )
    return membership


@transaction.atomic
def signup(*, organization_name: str, email: str, name: str = "") -> Onboarded:
    """Create an organization, its first owner, and the owner's first personal token."""
    email = email.strip().lower()
    if User.objects.filter(email__iexact=email).exists():
        raise Conflict(
            "A user with this email exists. Sign in with that user's token and create the organization "
            "with POST /api/v1/orgs/."
        )
    user = User.objects.create_user(email=email, name=name)
    membership = organization_create(owner=user, name=organization_name)
    issued = personal_token_create(user=user, name="aileron init")
    return Onboarded(organization=membership.organization, user=user, membership=membership, issued=issued)


@transaction.atomic
def organization_update(*, acting: Membership, name: str) -> Organization:
    organization = acting.organization
    before = snapshots.organization_snapshot(organization)
    organization.name = name
    organization.save(update_fields=["name"])
    admin_event_record(
        acting=acting,
        organization=organization,
        action="organization.update",
        target_type="organization",
        target_id=organization.pk,
        target_label=organization.name,
        before=before,
        after=snapshots.organization_snapshot(organization),
    )
    return organization


@transaction.atomic
def organization_delete(*, acting: Membership) -> None:
    """Delete ACTING's organization and everything in it but its admin events, which keep its id (and this one
    says who deleted it)."""
    from vaults.services import vaults_drop_for_organization

    organization = acting.organization
    admin_event_record(
        acting=acting,
        organization=organization,
        action="organization.delete",
        target_type="organization",
        target_id=organization.pk,
        target_label=organization.name,
        before=snapshots.organization_snapshot(organization),
    )

    vaults_drop_for_organization(organization=organization)
    ApiToken.objects.filter(organization=organization).delete()
    with scope(organization=organization):
        organization.delete()


# --- members ---------------------------------------------------------------------------------------------


def _owner_count(organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


def _check_may_manage(*, acting: Membership, target: Membership, new_role: str | None) -> None:
    touches_owner = target.role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and not role_has(acting.role, Perm.OWNER_MANAGE):
        raise Forbidden("Only an owner may grant, change or remove the owner role.")


def _membership_event(
    *, acting: Membership, action: str, membership: Membership, before: snapshots.Snapshot | None
) -> None:
    removed = action == "member.remove"
    admin_event_record(
        acting=acting,
        organization=membership.organization,
        action=action,
        target_type="member",
        target_id=membership.user_id,
        target_label=membership.user.email,
        before=before,
        after=None if removed else snapshots.membership_snapshot(membership),
    )


@transaction.atomic
def membership_update_role(*, acting: Membership, membership: Membership, role: str) -> Membership:
    _check_may_manage(acting=acting, target=membership, new_role=role)
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(membership.organization) == 1:
        raise Conflict("This is the last owner; make someone else owner first.")
    before = snapshots.membership_snapshot(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    _membership_event(acting=acting, action="member.role_change", membership=membership, before=before)
    return membership


@transaction.atomic
def membership_remove(*, acting: Membership, membership: Membership) -> None:
    """Remove a member (or let one leave): their team places go and their agent sessions are revoked."""
    leaving = acting.pk == membership.pk
    if not leaving:
        if not role_has(acting.role, Perm.MEMBER_MANAGE):
            raise Forbidden("You may not remove members.")
        _check_may_manage(acting=acting, target=membership, new_role=None)
    if membership.role == Role.OWNER and _owner_count(membership.organization) == 1:
        raise Conflict("This is the last owner; make someone else owner first.")
    organization = membership.organization
    from vaults.services import vaults_member_leave

    vaults_member_leave(acting=acting, organization=organization, user_id=membership.user_id)
    TeamMembership.objects.filter(organization=organization, user_id=membership.user_id).delete()
    for session in ApiToken.objects.filter(
        kind=TokenKind.SESSION, organization=organization, user_id=membership.user_id, revoked_at__isnull=True
    ):
        token_revoke(acting=acting, token=session)  # and its pending approvals are withdrawn
    _membership_event(
        acting=acting, action="member.remove", membership=membership, before=snapshots.membership_snapshot(membership)
    )
    membership.delete()


def _invitation_event(
    *, acting: Membership, action: str, invitation: Invitation, before: snapshots.Snapshot | None
) -> None:
    admin_event_record(
        acting=acting,
        organization=invitation.organization,
        action=action,
        target_type="invitation",
        target_id=invitation.pk,
        target_label=invitation.email,
        before=before,
        after=snapshots.invitation_snapshot(invitation),
    )


@transaction.atomic
def invitation_create(
    *,
    acting: Membership,
    email: str,
    role: str = Role.MEMBER,
    expires_in_days: int = 7,
    teams: Sequence[Team] = (),
) -> tuple[Invitation, str]:
    """An invitation to the organization with ROLE and, on joining, membership of TEAMS; its secret, once."""
    if role == Role.OWNER and not role_has(acting.role, Perm.OWNER_MANAGE):
        raise Forbidden("Only an owner may invite an owner.")
    if teams and not role_has(acting.role, Perm.TEAM_MANAGE):
        raise Forbidden("Only those who manage teams may invite into teams.")
    if any(t.organization_id != acting.organization_id for t in teams):
        raise InvalidInput("A team is not in this organization.")
    if not 1 <= expires_in_days <= INVITATION_MAX_DAYS:
        raise InvalidInput(f"expires_in_days must be between 1 and {INVITATION_MAX_DAYS}.")
    organization = acting.organization
    email = email.strip().lower()
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise Conflict("That person is already a member.")
    now = timezone.now()
    pending = Invitation.objects.filter(
        organization=organization,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=now,
    )
    if pending.exists():
        raise Conflict("That person already has a pending invitation; revoke it to send a new one.")
    new = tokens.generate("inv", token_key())
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        lookup=new.lookup,
        digest=new.digest,
        invited_by=acting.user,
        expires_at=now + timedelta(days=expires_in_days),
    )
    if teams:
        invitation.teams.set(teams)
    _invitation_event(acting=acting, action="invitation.create", invitation=invitation, before=None)
    return invitation, new.plaintext


@transaction.atomic
def invitation_revoke(*, acting: Membership, invitation: Invitation) -> Invitation:
    if invitation.state != "pending":
        raise Conflict(f"The invitation is {invitation.state}.")
    before = snapshots.invitation_snapshot(invitation)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    _invitation_event(acting=acting, action="invitation.revoke", invitation=invitation, before=before)
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, acting_user: User | None, name: str = "") -> Onboarded:
    """Join the invitation's organization.

    A new person gets a user and a first personal token. An existing user must be signed in as that user:
    otherwise anyone holding the invitation could mint a token for someone else's account.
    """
    organization = invitation.organization
    existing = User.objects.filter(email__iexact=invitation.email).first()
    issued: IssuedToken | None = None
    if existing is not None:
        if acting_user is None or acting_user.pk != existing.pk:
            raise Forbidden("This invitation is for an existing user: accept it signed in as that user.")
        user = existing
    else:
        if acting_user is not None:
            raise Forbidden("This invitation is for another email address.")
        user = User.objects.create_user(email=invitation.email, name=name)
        issued = personal_token_create(user=user, name=f"joined {organization.slug}")
    with scope(organization=organization):
        locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if locked.state != "pending":
            raise Conflict(f"The invitation is {locked.state}.")
        if membership_for_user(organization=organization, user_id=user.pk) is not None:
            raise Conflict("You are already a member.")
        membership = Membership.objects.create(organization=organization, user=user, role=locked.role)
        before = snapshots.invitation_snapshot(locked)
        locked.accepted_at = timezone.now()
        locked.save(update_fields=["accepted_at"])
        # The person who joins is the actor: nobody else acted, and the inviter's part is the create event.
        _invitation_event(acting=membership, action="invitation.accept", invitation=locked, before=before)
        teams = tuple(locked.teams.order_by("slug"))
        for team in teams:
            team_member_add(acting=membership, team=team, user_id=user.pk)
    return Onboarded(organization=organization, user=user, membership=membership, issued=issued, teams=teams)


# --- teams and projects ------------------------------------------------------------------------------------


def _team_event(*, acting: Membership, action: str, team: Team, before: snapshots.Snapshot | None) -> None:
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="team",
        target_id=team.pk,
        target_label=team.name,
        before=before,
        after=None if action == "team.delete" else snapshots.team_snapshot(team),
    )


@transaction.atomic
def team_create(*, acting: Membership, name: str, slug: str | None = None) -> Team:
    organization = acting.organization
    slug = slug or _unique_slug(Team, name, organization=organization)
    _check_slug_free(Team, organization, slug)
    team = Team.objects.create(organization=organization, name=name, slug=slug)
    _team_event(acting=acting, action="team.create", team=team, before=None)
    return team


@transaction.atomic
def team_update(*, acting: Membership, team: Team, name: str | None = None, slug: str | None = None) -> Team:
    _check_in_organization(acting, team.organization_id)
    before = snapshots.team_snapshot(team)
    if slug is not None and slug != team.slug:
        _check_slug_free(Team, team.organization, slug, exclude_pk=team.pk)
        team.slug = slug
    if name is not None:
        team.name = name
    team.save(update_fields=["name", "slug"])
    _team_event(acting=acting, action="team.update", team=team, before=before)
    return team


@transaction.atomic
def team_delete(*, acting: Membership, team: Team) -> None:
    """Delete a team that owns no project and no vault: those decide who may reach a project's rules and a team
    vault's secrets, and must not silently pass to everyone (or keep readers nobody can see) when it goes."""
    from vaults.models import Vault

    _check_in_organization(acting, team.organization_id)
    projects = sorted(
        Project.objects.filter(organization_id=team.organization_id, team=team).values_list("slug", flat=True)
    )
    with scope(organization=team.organization_id):
        vaults = Vault.objects.filter(organization_id=team.organization_id, team=team).count()
    if projects or vaults:
        owned = [f"project(s) {', '.join(projects)}"] if projects else []
        owned += [f"{vaults} team vault(s)"] if vaults else []
        raise Conflict(f"The team owns {' and '.join(owned)}: move or delete them first.")
    _team_event(acting=acting, action="team.delete", team=team, before=snapshots.team_snapshot(team))
    TeamMembership.objects.filter(organization_id=team.organization_id, team=team).delete()
    team.delete()


@transaction.atomic
def team_member_add(*, acting: Membership, team: Team, user_id: uuid.UUID) -> TeamMembership:
    _check_in_organization(acting, team.organization_id)
    membership = Membership.objects.filter(organization_id=team.organization_id, user_id=user_id).first()
    if membership is None:
        raise InvalidInput("That user is not a member of this organization.")
    if TeamMembership.objects.filter(organization_id=team.organization_id, team=team, user_id=user_id).exists():
        raise Conflict("That user is already in the team.")
    added = TeamMembership.objects.create(organization_id=team.organization_id, team=team, user_id=user_id)
    from vaults.services import team_vaults_member_joined

    team_vaults_member_joined(team=team, user_id=user_id)  # they wait for an owner to wrap the key to them
    _team_member_event(acting=acting, action="team.member_add", team_membership=added)
    return added


def _team_member_event(*, acting: Membership, action: str, team_membership: TeamMembership) -> None:
    snapshot = snapshots.team_member_snapshot(team_membership)
    removed = action == "team.member_remove"
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="team_member",
        target_id=team_membership.user_id,
        target_label=f"{snapshot['email']} in {snapshot['team']}",
        before=snapshot if removed else None,
        after=None if removed else snapshot,
    )


@transaction.atomic
def team_member_remove(*, acting: Membership, team_membership: TeamMembership) -> None:
    """Take someone out of a team: they leave its vaults too (revoked, each then rotates)."""
    from vaults.services import team_vaults_member_left

    _check_in_organization(acting, team_membership.organization_id)
    team_vaults_member_left(acting=acting, team=team_membership.team, user_id=team_membership.user_id)
    _team_member_event(acting=acting, action="team.member_remove", team_membership=team_membership)
    team_membership.delete()


def _project_event(*, acting: Membership, action: str, project: Project, before: snapshots.Snapshot | None) -> None:
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="project",
        target_id=project.pk,
        target_label=project.name,
        before=before,
        after=None if action == "project.delete" else snapshots.project_snapshot(project),
    )


@transaction.atomic
def project_create(
    *,
    acting: Membership,
    name: str,
    slug: str | None = None,
    team: Team | None = None,
    description: str = "",
) -> Project:
    organization = acting.organization
    if team is not None:
        _check_in_organization(acting, team.organization_id)
    slug = slug or _unique_slug(Project, name, organization=organization)
    _check_slug_free(Project, organization, slug)
    project = Project.objects.create(
        organization=organization, name=name, slug=slug, team=team, description=description
    )
    _project_event(acting=acting, action="project.create", project=project, before=None)
    return project


@transaction.atomic
def project_update(*, acting: Membership, project: Project, fields: dict[str, object]) -> Project:
    _check_in_organization(acting, project.organization_id)
    before = snapshots.project_snapshot(project)
    slug = fields.get("slug")
    if isinstance(slug, str) and slug != project.slug:
        _check_slug_free(Project, project.organization, slug, exclude_pk=project.pk)
    for key, value in fields.items():
        setattr(project, key, value)
    project.save()
    _project_event(acting=acting, action="project.update", project=project, before=before)
    return project


@transaction.atomic
def project_delete(*, acting: Membership, project: Project) -> None:
    """Delete a project without vaults (a project vault's credentials must not start serving every session of
    its members as a plain shared vault); its sessions keep running without a project."""
    from vaults.models import Vault

    _check_in_organization(acting, project.organization_id)
    with scope(organization=project.organization_id):
        vaults = Vault.objects.filter(organization_id=project.organization_id, project=project).count()
    if vaults:
        raise Conflict(f"The project has {vaults} project vault(s): delete them first.")
    _project_event(acting=acting, action="project.delete", project=project, before=snapshots.project_snapshot(project))
    ApiToken.objects.filter(project=project).update(project=None)
    project.delete()
