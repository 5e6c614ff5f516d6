"""Request and response shapes of the tenants API. Validation only; writes go through tenants.services."""

from __future__ import annotations

import base64
from typing import Any

from rest_framework import serializers

from tenants.models import ApiToken, Invitation, Membership, Organization, Project, Team, TeamMembership, User
from tenants.roles import Role
from tenants.services import (
    INVITATION_MAX_DAYS,
    PERSONAL_TOKEN_MAX_DAYS,
    SESSION_TOKEN_MAX_MINUTES,
)


def name_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=100, trim_whitespace=True, allow_blank=False, **kwargs)


class UserBriefSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ["id", "email", "name"]


class OrganizationSerializer(serializers.ModelSerializer[Organization]):
    role = serializers.SerializerMethodField(help_text="The caller's role in this organization.")

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at", "role"]
        read_only_fields = ["id", "slug", "created_at", "role"]

    def get_role(self, organization: Organization) -> str | None:
        roles: dict[Any, str] = self.context.get("roles", {})
        return roles.get(organization.pk)


class OrganizationCreateSerializer(serializers.Serializer[Any]):
    name = name_field()
    slug = serializers.SlugField(max_length=60, required=False)


class OrganizationUpdateSerializer(serializers.Serializer[Any]):
    name = name_field()


class SignupSerializer(serializers.Serializer[Any]):
    organization = name_field(help_text="Name of the new organization.")
    email = serializers.EmailField(max_length=254)
    name = serializers.CharField(max_length=150, required=False, default="", allow_blank=True)


class OnboardedSerializer(serializers.Serializer[Any]):
    organization = OrganizationSerializer()
    user = UserBriefSerializer()
    role = serializers.ChoiceField(choices=Role.choices)
    token = serializers.CharField(allow_null=True, help_text="A new personal access token, shown once.")
    teams = serializers.ListField(
        child=serializers.CharField(), default=list, help_text="Slugs of the teams joined with the invitation."
    )


class MembershipSerializer(serializers.ModelSerializer[Membership]):
    user = UserBriefSerializer(read_only=True)
    public_key = serializers.SerializerMethodField(help_text="The member's X25519 public key (base64), if set.")

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at", "public_key"]
        read_only_fields = ["id", "user", "created_at", "public_key"]

    def get_public_key(self, membership: Membership) -> str | None:
        keys = getattr(membership.user, "keys", None)
        return base64.b64encode(bytes(keys.public_key)).decode("ascii") if keys is not None else None


class MembershipUpdateSerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer[Invitation]):
    state = serializers.CharField(read_only=True)
    invited_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="email", read_only=True)
    teams: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(
        slug_field="slug", many=True, read_only=True, help_text="Slugs of the teams joining makes the person join."
    )

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "teams",
            "state",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=INVITATION_MAX_DAYS, default=7)
    teams = serializers.ListField(
        child=serializers.UUIDField(),
        max_length=50,
        default=list,
        help_text="Ids of teams the person joins with the invitation.",
    )


class InvitationCreatedSerializer(InvitationSerializer):
    token = serializers.CharField(read_only=True, help_text="The invitation secret, shown once.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token"]
        read_only_fields = fields


class InvitationAcceptSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=150, required=False, default="", allow_blank=True)


class TeamSerializer(serializers.ModelSerializer[Team]):
    class Meta:
        model = Team
        fields = ["id", "name", "slug", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"slug": {"required": False}, "name": {"allow_blank": False}}


class TeamMemberSerializer(serializers.ModelSerializer[TeamMembership]):
    user = UserBriefSerializer(read_only=True)

    class Meta:
        model = TeamMembership
        fields = ["user", "created_at"]
        read_only_fields = fields


class TeamMemberAddSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField(required=False, help_text="The member's user id; or give `email`.")
    email = serializers.EmailField(max_length=254, required=False, help_text="The member's email; or `user_id`.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("user_id" in attrs) == ("email" in attrs):
            raise serializers.ValidationError("Give the member's email or user_id (one of them).")
        return attrs


class ProjectSerializer(serializers.ModelSerializer[Project]):
    team = serializers.UUIDField(
        source="team_id", allow_null=True, required=False, help_text="Id of the team that owns the project."
    )

    class Meta:
        model = Project
        fields = ["id", "name", "slug", "description", "team", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"slug": {"required": False}, "name": {"allow_blank": False}}


class TokenSerializer(serializers.ModelSerializer[ApiToken]):
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "created_at", "expires_at", "last_used_at", "revoked_at", "active"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer[Any]):
    name = name_field()
    expires_in_days = serializers.IntegerField(min_value=1, max_value=PERSONAL_TOKEN_MAX_DAYS, default=90)


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The token, shown once.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class SessionTokenSerializer(TokenSerializer):
    user = UserBriefSerializer(read_only=True)
    project = serializers.UUIDField(source="project_id", read_only=True, allow_null=True)
    pins = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text='Credentials pinned ("vault_id:credential_id").'
    )

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "user", "project", "pins"]
        read_only_fields = fields


class SessionTokenCreateSerializer(serializers.Serializer[Any]):
    name = name_field()
    project = serializers.UUIDField(required=False, allow_null=True)
    expires_in_minutes = serializers.IntegerField(min_value=1, max_value=SESSION_TOKEN_MAX_MINUTES, default=720)
    pins = serializers.ListField(
        child=serializers.RegexField(
            r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$",
            help_text="vault_id:credential_id",
        ),
        max_length=50,
        default=list,
        help_text='Credentials ("vault_id:credential_id", in your vaults) the session uses first for their connectors.',
    )


class SessionTokenCreatedSerializer(SessionTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The session token (AILERON_TOKEN), shown once.")

    class Meta(SessionTokenSerializer.Meta):
        fields = [*SessionTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class WhoAmISerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=["pat", "ses", "svc"])
    token_id = serializers.UUIDField()
    token_name = serializers.CharField()
    expires_at = serializers.DateTimeField()
    user = UserBriefSerializer(allow_null=True)
    organization = serializers.UUIDField(allow_null=True)
    project = serializers.UUIDField(allow_null=True)
    memberships = serializers.ListField(child=serializers.DictField(), required=False)
