"""Tenant data: every row that belongs to an organization carries it and is reachable only inside a scope.

Models with `ScopedManager` raise `ScopeError` when queried outside `django_scopes.scope(organization=...)`,
so a forgotten filter fails loudly instead of returning another tenant's rows.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django_scopes import ScopedManager

from tenants.roles import Role

if TYPE_CHECKING:
    from django_stubs_ext.db.models.manager import RelatedManager

__all__ = [
    "ApiToken",
    "Invitation",
    "Membership",
    "Organization",
    "Project",
    "Role",
    "Team",
    "TeamMembership",
    "TokenKind",
    "User",
]


class UserManager(BaseUserManager["User"]):
    def create_user(self, email: str, name: str = "", **extra: Any) -> User:
        user = self.model(email=self.normalize_email(email).lower(), name=name, **extra)
        user.set_unusable_password()
        user.save(using=self._db)
        return user


class User(AbstractBaseUser):
    """A person. Users are global; what they may see comes from their memberships."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects = UserManager()

    if TYPE_CHECKING:
        memberships: RelatedManager[Membership]
        team_memberships: RelatedManager[TeamMembership]

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    """The tenant."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    if TYPE_CHECKING:
        memberships: RelatedManager[Membership]
        teams: RelatedManager[Team]
        projects: RelatedManager[Project]
        invitations: RelatedManager[Invitation]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Membership] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="membership_org_user_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organization_id}:{self.role}"


class Team(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60)
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Team] = ScopedManager(organization="organization")

    if TYPE_CHECKING:
        memberships: RelatedManager[TeamMembership]
        projects: RelatedManager[Project]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "slug"], name="team_org_slug_unique")]

    def __str__(self) -> str:
        return self.slug


class TeamMembership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="team_memberships")
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[TeamMembership] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.team_id}"


class Project(models.Model):
    """A unit of spend and usage attribution inside an organization."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="projects")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60)
    description = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[Project] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "slug"], name="project_org_slug_unique")]

    def __str__(self) -> str:
        return self.slug


class TokenKind(models.TextChoices):
    PERSONAL = "pat", "Personal access token"
    SESSION = "ses", "Agent session token"
    SERVICE = "svc", "Data-plane service token"


class ApiToken(models.Model):
    """A bearer token, stored as an HMAC digest and found by its non-secret lookup part.

    Personal tokens belong to a user across organizations; session tokens to one user in one organization
    (and optionally a project); service tokens to the installation (the data plane). Reached only through
    tenants.selectors, never listed unfiltered.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=3, choices=TokenKind.choices)
    name = models.CharField(max_length=100)
    lookup = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    user = models.ForeignKey(User, on_delete=models.CASCADE, null=True, blank=True, related_name="tokens")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # A session's pinned credentials (ids; `aileron launch --credential NAME`): each wins for its connector.
    pins = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(kind="pat", user__isnull=False, organization__isnull=True)
                    | models.Q(kind="ses", user__isnull=False, organization__isnull=False)
                    | models.Q(kind="svc", user__isnull=True, organization__isnull=True)
                ),
                name="token_kind_owner_shape",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.lookup}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class Invitation(models.Model):
    """An offer to join an organization with a role; its secret is shown once, to the inviter."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    lookup = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Joining makes the person a member of these teams too (a team deleted meanwhile is simply gone from here).
    teams = models.ManyToManyField(Team, blank=True, related_name="+")

    objects: models.Manager[Invitation] = ScopedManager(organization="organization")

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.organization_id}"

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"
