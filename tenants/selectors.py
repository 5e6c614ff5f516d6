"""Reads of tenant data. Each `*_get` is the one access function for its object: missing and forbidden
both raise NotFound, so an outsider learns nothing from an id."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from aileron_shared import tokens
from aileron_site.problems import NotFound
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


def token_key() -> bytes:
    return tokens.derive_key(settings.SECRET_KEY)


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).distinct()


def roles_for_user(*, user: User) -> dict[uuid.UUID, str]:
    """The user's role in each of their organizations: a cross-tenant read about the user themself."""
    with scopes_disabled():
        return dict(Membership.objects.filter(user=user).values_list("organization_id", "role"))


def organization_get_for_user(*, user: User, organization_id: uuid.UUID) -> Membership:
    """The caller's membership in the organization (with the organization), or NotFound."""
    with scope(organization=organization_id):
        membership = Membership.objects.select_related("organization").filter(user=user).first()
    if membership is None:
        raise NotFound("No such organization.")
    return membership


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user")


def membership_get(*, organization: Organization, membership_id: uuid.UUID) -> Membership:
    membership = membership_list(organization=organization).filter(pk=membership_id).first()
    if membership is None:
        raise NotFound("No such member.")
    return membership


def membership_for_user(*, organization: Organization, user_id: uuid.UUID) -> Membership | None:
    return Membership.objects.filter(organization=organization, user_id=user_id).first()


def membership_by_email(*, organization: Organization, email: str) -> Membership | None:
    """The organization's member with this email (case-insensitive), or None."""
    return membership_list(organization=organization).filter(user__email__iexact=email.strip()).first()


def team_list(*, organization: Organization) -> QuerySet[Team]:
    return Team.objects.filter(organization=organization)


def team_get(*, organization: Organization, team_id: uuid.UUID) -> Team:
    team = team_list(organization=organization).filter(pk=team_id).first()
    if team is None:
        raise NotFound("No such team.")
    return team


def team_member_list(*, team: Team) -> QuerySet[TeamMembership]:
    return TeamMembership.objects.filter(organization_id=team.organization_id, team=team).select_related("user")


def team_member_get(*, team: Team, user_id: uuid.UUID) -> TeamMembership:
    found = team_member_list(team=team).filter(user_id=user_id).first()
    if found is None:
        raise NotFound("No such team member.")
    return found


def project_list(*, organization: Organization) -> QuerySet[Project]:
    return Project.objects.filter(organization=organization)


def project_get(*, organization: Organization, project_id: uuid.UUID) -> Project:
    project = project_list(organization=organization).filter(pk=project_id).first()
    if project is None:
        raise NotFound("No such project.")
    return project


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organization=organization)


def invitation_get(*, organization: Organization, invitation_id: uuid.UUID) -> Invitation:
    invitation = invitation_list(organization=organization).filter(pk=invitation_id).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation


def invitation_find_by_token(*, raw: str) -> Invitation | None:
    """The pending invitation this secret opens, or None (unknown, wrong, used, revoked or expired)."""
    try:
        parsed = tokens.parse(raw)
    except tokens.MalformedToken:
        return None
    if parsed.kind != "inv":
        return None
    with scopes_disabled():
        invitation = Invitation.objects.select_related("organization").filter(lookup=parsed.lookup).first()
    if invitation is None or not tokens.verify(token_key(), raw, invitation.digest):
        return None
    if invitation.state != "pending":
        return None
    return invitation


def personal_token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(kind=TokenKind.PERSONAL, user=user)


def personal_token_get(*, user: User, token_id: uuid.UUID) -> ApiToken:
    token = personal_token_list(user=user).filter(pk=token_id).first()
    if token is None:
        raise NotFound("No such token.")
    return token


def session_token_list(*, organization: Organization, user: User, see_all: bool) -> QuerySet[ApiToken]:
    qs = ApiToken.objects.filter(kind=TokenKind.SESSION, organization=organization).select_related("user")
    return qs if see_all else qs.filter(user=user)


def session_token_get(*, organization: Organization, user: User, see_all: bool, token_id: uuid.UUID) -> ApiToken:
    token = session_token_list(organization=organization, user=user, see_all=see_all).filter(pk=token_id).first()
    if token is None:
        raise NotFound("No such session token.")
    return token


def token_authenticate(*, raw: str) -> ApiToken | None:
    """The live token this bearer string is, or None. Constant-time on the secret part."""
    try:
        parsed = tokens.parse(raw)
    except tokens.MalformedToken:
        return None
    if parsed.kind in ("inv", "apl"):  # an invitation or an approval link is never a bearer token
        return None
    token = (
        ApiToken.objects.select_related("user", "organization").filter(lookup=parsed.lookup, kind=parsed.kind).first()
    )
    if token is None or not tokens.verify(token_key(), raw, token.digest):
        return None
    if token.revoked_at is not None or token.expires_at <= timezone.now():
        return None
    if token.user is not None and not token.user.is_active:
        return None
    return token


def may_work_in(*, membership: Membership, project: Project) -> bool:
    """Whether MEMBERSHIP may start (and keep) sessions for PROJECT: its team's members, or whoever manages
    projects; anyone for a project without a team. Such sessions get the project's TCP rules and vaults."""
    if project.team_id is None or role_has(membership.role, Perm.PROJECT_MANAGE):
        return True
    with scope(organization=membership.organization_id):
        return TeamMembership.objects.filter(team_id=project.team_id, user_id=membership.user_id).exists()
