"""Thin views over tenants.services and tenants.selectors.

Every organization-scoped view derives from OrgScopedViewSet, which resolves the caller's membership
(404 for missing and forbidden alike), activates the tenant scope and checks the role against the
permission matrix before any handler runs. An action missing from `permission_map` is refused.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import QuerySet
from django_scopes import scope
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.problems import Forbidden, NotFound
from aileron_site.throttles import Throttle
from tenants import selectors, services
from tenants.api import serializers as s
from tenants.api.permissions import IsAnyToken
from tenants.authentication import BearerTokenAuthentication, token_of
from tenants.models import ApiToken, Invitation, Membership, Organization, Project, Team, TeamMembership, User
from tenants.permissions import Perm, role_has

ORDER_BY_CREATED = ["created_at", "id"]


def request_user(request: Request) -> User:
    user = request.user
    if not isinstance(user, User):
        raise exceptions.PermissionDenied("This endpoint is for users.")
    return user


def _onboarded_response(onboarded: services.Onboarded) -> Response:
    body = s.OnboardedSerializer(
        {
            "organization": onboarded.organization,
            "user": onboarded.user,
            "role": onboarded.membership.role,
            "token": onboarded.issued.plaintext if onboarded.issued else None,
            "teams": [t.slug for t in onboarded.teams],
        },
        context={"roles": {onboarded.organization.pk: onboarded.membership.role}},
    ).data
    return Response(body, status=status.HTTP_201_CREATED)


class OrgScopedViewSet(viewsets.GenericViewSet[Any]):
    """Base for everything under /orgs/{org_id}/."""

    permission_map: ClassVar[dict[str, Perm]] = {}
    membership: Membership
    organization: Organization

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        with ExitStack() as stack:
            self._scope_stack = stack
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.membership = selectors.organization_get_for_user(
            user=request_user(request), organization_id=kwargs["org_id"]
        )
        self.organization = self.membership.organization
        self._scope_stack.enter_context(scope(organization=self.organization))
        perm = self.permission_map.get(self.action or "")
        if perm is None:
            raise exceptions.PermissionDenied("This action is not allowed.")
        if not role_has(self.membership.role, perm):
            raise exceptions.PermissionDenied(f"Your role ({self.membership.role}) lacks {perm.value}.")

    def may(self, perm: Perm) -> bool:
        return role_has(self.membership.role, perm)

    @property
    def fake(self) -> bool:
        return bool(getattr(self, "swagger_fake_view", False))


# --- public and identity endpoints ---------------------------------------------------------------------


class SignupView(APIView):
    """Create an organization and its first owner. Open on the embedded default, closed in production."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [Throttle]
    throttle_scope = "signup"

    @extend_schema(request=s.SignupSerializer, responses={201: s.OnboardedSerializer})
    def post(self, request: Request) -> Response:
        if not settings.AILERON_OPEN_SIGNUP:
            raise Forbidden(
                "Creating organizations is closed on this server (AILERON_OPEN_SIGNUP is off). "
                "Ask an operator, or join one by invitation."
            )
        data = s.SignupSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _onboarded_response(
            services.signup(
                organization_name=data.validated_data["organization"],
                email=data.validated_data["email"],
                name=data.validated_data["name"],
            )
        )


class InvitationAcceptView(APIView):
    """Join an organization with an invitation secret. New people get their first personal token."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [Throttle]
    throttle_scope = "invitation-accept"

    @extend_schema(request=s.InvitationAcceptSerializer, responses={201: s.OnboardedSerializer})
    def post(self, request: Request) -> Response:
        data = s.InvitationAcceptSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token = token_of(request)
        if token is not None and token.kind != "pat":
            raise exceptions.PermissionDenied("Accept invitations with a personal access token or none.")
        invitation = selectors.invitation_find_by_token(raw=data.validated_data["token"])
        if invitation is None:
            raise exceptions.NotFound("No pending invitation matches that token.")
        acting_user = request.user if isinstance(request.user, User) else None
        return _onboarded_response(
            services.invitation_accept(invitation=invitation, acting_user=acting_user, name=data.validated_data["name"])
        )


class WhoAmIView(APIView):
    """Who the presented token speaks for. Works for every kind of token."""

    permission_classes = [IsAnyToken]

    @extend_schema(responses=s.WhoAmISerializer)
    def get(self, request: Request) -> Response:
        token = token_of(request)
        assert token is not None  # noqa: S101  (IsAnyToken)
        body: dict[str, Any] = {
            "kind": token.kind,
            "token_id": token.pk,
            "token_name": token.name,
            "expires_at": token.expires_at,
            "user": s.UserBriefSerializer(token.user).data if token.user else None,
            "organization": token.organization_id,
            "project": token.project_id,
        }
        if token.kind == "pat" and token.user is not None:
            orgs = selectors.organization_list_for_user(user=token.user)
            roles = selectors.roles_for_user(user=token.user)
            body["memberships"] = [
                {"organization": str(o.pk), "slug": o.slug, "name": o.name, "role": roles.get(o.pk)} for o in orgs
            ]
        return Response(body)


# --- organizations -------------------------------------------------------------------------------------


class OrganizationListView(mixins.ListModelMixin, viewsets.GenericViewSet[Organization]):
    serializer_class = s.OrganizationSerializer
    ordering_fields: ClassVar[list[str]] = ["created_at", "name", "slug"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED
    filterset_fields: ClassVar[list[str]] = ["slug"]

    def get_queryset(self) -> QuerySet[Organization]:
        if getattr(self, "swagger_fake_view", False):
            return Organization.objects.none()
        return selectors.organization_list_for_user(user=request_user(self.request))

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if not getattr(self, "swagger_fake_view", False):
            context["roles"] = selectors.roles_for_user(user=request_user(self.request))
        return context

    @extend_schema(request=s.OrganizationCreateSerializer, responses={201: s.OrganizationSerializer})
    def create(self, request: Request) -> Response:
        if not settings.AILERON_OPEN_SIGNUP:
            raise Forbidden("Creating organizations is closed on this server (AILERON_OPEN_SIGNUP is off).")
        data = s.OrganizationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.organization_create(owner=request_user(request), **data.validated_data)
        body = s.OrganizationSerializer(
            membership.organization, context={"roles": {membership.organization_id: membership.role}}
        ).data
        return Response(body, status=status.HTTP_201_CREATED)


class OrganizationViewSet(OrgScopedViewSet):
    serializer_class = s.OrganizationSerializer
    permission_map = {
        "retrieve": Perm.ORG_VIEW,
        "partial_update": Perm.ORG_UPDATE,
        "destroy": Perm.ORG_DELETE,
    }

    def _body(self) -> dict[str, Any]:
        return dict(
            s.OrganizationSerializer(
                self.organization, context={"roles": {self.organization.pk: self.membership.role}}
            ).data
        )

    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(self._body())

    @extend_schema(request=s.OrganizationUpdateSerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.OrganizationUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.organization_update(acting=self.membership, **data.validated_data)
        return Response(self._body())

    def destroy(self, request: Request, org_id: uuid.UUID) -> Response:
        services.organization_delete(acting=self.membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- members and invitations ------------------------------------------------------------------------


class MemberViewSet(OrgScopedViewSet):
    serializer_class = s.MembershipSerializer
    permission_map = {
        "list": Perm.MEMBER_VIEW,
        "retrieve": Perm.MEMBER_VIEW,
        "partial_update": Perm.MEMBER_MANAGE,
        "destroy": Perm.MEMBER_VIEW,
    }
    filterset_fields: ClassVar[list[str]] = ["role"]
    ordering_fields: ClassVar[list[str]] = ["created_at", "role", "user__email"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED

    def get_queryset(self) -> QuerySet[Membership]:
        if self.fake:
            return Membership.objects.none()
        found = selectors.membership_list(organization=self.organization)
        email = self.request.query_params.get("email")
        return found.filter(user__email__iexact=email.strip()) if email else found

    @extend_schema(parameters=[OpenApiParameter("email", str, description="Only the member with this email.")])
    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.MembershipSerializer(page, many=True).data)

    def retrieve(self, request: Request, org_id: uuid.UUID, member_id: uuid.UUID) -> Response:
        member = selectors.membership_get(organization=self.organization, membership_id=member_id)
        return Response(s.MembershipSerializer(member).data)

    @extend_schema(request=s.MembershipUpdateSerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID, member_id: uuid.UUID) -> Response:
        member = selectors.membership_get(organization=self.organization, membership_id=member_id)
        data = s.MembershipUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.membership_update_role(acting=self.membership, membership=member, role=data.validated_data["role"])
        return Response(s.MembershipSerializer(member).data)

    def destroy(self, request: Request, org_id: uuid.UUID, member_id: uuid.UUID) -> Response:
        # Anyone may leave; removing others needs member.manage (checked by the service).
        member = selectors.membership_get(organization=self.organization, membership_id=member_id)
        services.membership_remove(acting=self.membership, membership=member)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationViewSet(OrgScopedViewSet):
    serializer_class = s.InvitationSerializer
    permission_map = {
        "list": Perm.MEMBER_INVITE,
        "retrieve": Perm.MEMBER_INVITE,
        "create": Perm.MEMBER_INVITE,
        "destroy": Perm.MEMBER_INVITE,
    }
    filterset_fields: ClassVar[list[str]] = ["email", "role"]
    ordering_fields: ClassVar[list[str]] = ["created_at", "email", "expires_at"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED

    def get_queryset(self) -> QuerySet[Invitation]:
        if self.fake:
            return Invitation.objects.none()
        return selectors.invitation_list(organization=self.organization).select_related("invited_by")

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.InvitationSerializer(page, many=True).data)

    @extend_schema(request=s.InvitationCreateSerializer, responses={201: s.InvitationCreatedSerializer})
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.InvitationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        teams = []
        for n, team_id in enumerate(dict.fromkeys(fields.pop("teams"))):
            try:
                teams.append(selectors.team_get(organization=self.organization, team_id=team_id))
            except NotFound:
                raise exceptions.ValidationError({"teams": {str(n): ["No such team in this organization."]}}) from None
        invitation, secret = services.invitation_create(acting=self.membership, teams=teams, **fields)
        body = dict(s.InvitationSerializer(invitation).data)
        body["token"] = secret
        return Response(body, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, invitation_id: uuid.UUID) -> Response:
        invitation = selectors.invitation_get(organization=self.organization, invitation_id=invitation_id)
        return Response(s.InvitationSerializer(invitation).data)

    def destroy(self, request: Request, org_id: uuid.UUID, invitation_id: uuid.UUID) -> Response:
        invitation = selectors.invitation_get(organization=self.organization, invitation_id=invitation_id)
        services.invitation_revoke(acting=self.membership, invitation=invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- teams ------------------------------------------------------------------------------------------------


class TeamViewSet(OrgScopedViewSet):
    serializer_class = s.TeamSerializer
    permission_map = {
        "list": Perm.TEAM_VIEW,
        "retrieve": Perm.TEAM_VIEW,
        "create": Perm.TEAM_MANAGE,
        "partial_update": Perm.TEAM_MANAGE,
        "destroy": Perm.TEAM_MANAGE,
    }
    filterset_fields: ClassVar[list[str]] = ["slug"]
    ordering_fields: ClassVar[list[str]] = ["created_at", "name", "slug"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED

    def get_queryset(self) -> QuerySet[Team]:
        if self.fake:
            return Team.objects.none()
        return selectors.team_list(organization=self.organization)

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.TeamSerializer(page, many=True).data)

    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.TeamSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = services.team_create(acting=self.membership, **data.validated_data)
        return Response(s.TeamSerializer(team).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID) -> Response:
        return Response(s.TeamSerializer(selectors.team_get(organization=self.organization, team_id=team_id)).data)

    def partial_update(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID) -> Response:
        team = selectors.team_get(organization=self.organization, team_id=team_id)
        data = s.TeamSerializer(team, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.team_update(acting=self.membership, team=team, **data.validated_data)
        return Response(s.TeamSerializer(team).data)

    def destroy(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID) -> Response:
        services.team_delete(
            acting=self.membership, team=selectors.team_get(organization=self.organization, team_id=team_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamMemberViewSet(OrgScopedViewSet):
    serializer_class = s.TeamMemberSerializer
    permission_map = {"list": Perm.TEAM_VIEW, "create": Perm.TEAM_MANAGE, "destroy": Perm.TEAM_MANAGE}
    ordering_fields: ClassVar[list[str]] = ["created_at", "user__email"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED
    filterset_fields: ClassVar[list[str]] = ["user"]

    def get_queryset(self) -> QuerySet[TeamMembership]:
        if self.fake:
            return TeamMembership.objects.none()
        team = selectors.team_get(organization=self.organization, team_id=self.kwargs["team_id"])
        return selectors.team_member_list(team=team)

    def list(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.TeamMemberSerializer(page, many=True).data)

    @extend_schema(request=s.TeamMemberAddSerializer, responses={201: s.TeamMemberSerializer})
    def create(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID) -> Response:
        team = selectors.team_get(organization=self.organization, team_id=team_id)
        data = s.TeamMemberAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user_id = data.validated_data.get("user_id")
        if user_id is None:
            email = data.validated_data["email"]
            found = selectors.membership_by_email(organization=self.organization, email=email)
            if found is None:
                raise exceptions.ValidationError({"email": [f"{email} is not a member of this organization."]})
            user_id = found.user_id
        added = services.team_member_add(acting=self.membership, team=team, user_id=user_id)
        return Response(s.TeamMemberSerializer(added).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, org_id: uuid.UUID, team_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        team = selectors.team_get(organization=self.organization, team_id=team_id)
        services.team_member_remove(
            acting=self.membership, team_membership=selectors.team_member_get(team=team, user_id=user_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- projects ---------------------------------------------------------------------------------------------


class ProjectViewSet(OrgScopedViewSet):
    serializer_class = s.ProjectSerializer
    permission_map = {
        "list": Perm.PROJECT_VIEW,
        "retrieve": Perm.PROJECT_VIEW,
        "create": Perm.PROJECT_MANAGE,
        "partial_update": Perm.PROJECT_MANAGE,
        "destroy": Perm.PROJECT_MANAGE,
    }
    filterset_fields: ClassVar[list[str]] = ["slug", "team"]
    ordering_fields: ClassVar[list[str]] = ["created_at", "name", "slug"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED

    def get_queryset(self) -> QuerySet[Project]:
        if self.fake:
            return Project.objects.none()
        return selectors.project_list(organization=self.organization)

    def _team(self, fields: dict[str, Any]) -> None:
        if "team_id" in fields:
            team_id = fields.pop("team_id")
            if team_id is None:
                fields["team"] = None
            else:
                try:
                    fields["team"] = selectors.team_get(organization=self.organization, team_id=team_id)
                except NotFound:
                    raise exceptions.ValidationError({"team": ["No such team in this organization."]}) from None

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.ProjectSerializer(page, many=True).data)

    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.ProjectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        self._team(fields)
        project = services.project_create(acting=self.membership, **fields)
        return Response(s.ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, project_id: uuid.UUID) -> Response:
        project = selectors.project_get(organization=self.organization, project_id=project_id)
        return Response(s.ProjectSerializer(project).data)

    def partial_update(self, request: Request, org_id: uuid.UUID, project_id: uuid.UUID) -> Response:
        project = selectors.project_get(organization=self.organization, project_id=project_id)
        data = s.ProjectSerializer(project, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        self._team(fields)
        services.project_update(acting=self.membership, project=project, fields=fields)
        return Response(s.ProjectSerializer(project).data)

    def destroy(self, request: Request, org_id: uuid.UUID, project_id: uuid.UUID) -> Response:
        services.project_delete(
            acting=self.membership,
            project=selectors.project_get(organization=self.organization, project_id=project_id),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- tokens -------------------------------------------------------------------------------------------------


class PersonalTokenViewSet(viewsets.GenericViewSet[ApiToken]):
    """The caller's own personal access tokens."""

    serializer_class = s.TokenSerializer
    ordering_fields: ClassVar[list[str]] = ["created_at", "name", "expires_at", "last_used_at"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED
    filterset_fields: ClassVar[list[str]] = ["name"]
    throttle_scope = "token-create"

    def get_throttles(self) -> list[Any]:
        return [Throttle()] if self.action == "create" else []  # minting, not listing or revoking

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return selectors.personal_token_list(user=request_user(self.request))

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.TokenSerializer(page, many=True).data)

    @extend_schema(request=s.TokenCreateSerializer, responses={201: s.TokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        data = s.TokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.personal_token_create(user=request_user(request), **data.validated_data)
        body = dict(s.TokenSerializer(issued.token).data)
        body["token"] = issued.plaintext
        return Response(body, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, token_id: uuid.UUID) -> Response:
        return Response(
            s.TokenSerializer(selectors.personal_token_get(user=request_user(request), token_id=token_id)).data
        )

    def destroy(self, request: Request, token_id: uuid.UUID) -> Response:
        user = request_user(request)
        services.token_revoke(acting=user, token=selectors.personal_token_get(user=user, token_id=token_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionTokenViewSet(OrgScopedViewSet):
    """Agent session tokens (AILERON_TOKEN): minted by a member for themself, narrow and short-lived."""

    serializer_class = s.SessionTokenSerializer
    permission_map = {
        "list": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "create": Perm.SESSION_CREATE,
        "destroy": Perm.ORG_VIEW,
    }
    ordering_fields: ClassVar[list[str]] = ["created_at", "name", "expires_at"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED
    filterset_fields: ClassVar[list[str]] = ["user", "project"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        if self.fake:
            return ApiToken.objects.none()
        return selectors.session_token_list(
            organization=self.organization, user=self.membership.user, see_all=self.may(Perm.SESSION_VIEW_ALL)
        )

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.SessionTokenSerializer(page, many=True).data)

    @extend_schema(request=s.SessionTokenCreateSerializer, responses={201: s.SessionTokenCreatedSerializer})
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.SessionTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = None
        if data.validated_data.get("project"):
            try:
                project = selectors.project_get(
                    organization=self.organization, project_id=data.validated_data["project"]
                )
            except NotFound:
                raise exceptions.ValidationError({"project": ["No such project in this organization."]}) from None
        issued = services.session_token_create(
            membership=self.membership,
            name=data.validated_data["name"],
            project=project,
            expires_in_minutes=data.validated_data["expires_in_minutes"],
            pins=list(data.validated_data["pins"]),
        )
        body = dict(s.SessionTokenSerializer(issued.token).data)
        body["token"] = issued.plaintext
        return Response(body, status=status.HTTP_201_CREATED)

    def _get(self, token_id: uuid.UUID) -> ApiToken:
        return selectors.session_token_get(
            organization=self.organization,
            user=self.membership.user,
            see_all=self.may(Perm.SESSION_VIEW_ALL),
            token_id=token_id,
        )

    def retrieve(self, request: Request, org_id: uuid.UUID, token_id: uuid.UUID) -> Response:
        return Response(s.SessionTokenSerializer(self._get(token_id)).data)

    def destroy(self, request: Request, org_id: uuid.UUID, token_id: uuid.UUID) -> Response:
        token = self._get(token_id)
        if token.user_id != self.membership.user_id and not self.may(Perm.SESSION_REVOKE_ALL):
            raise exceptions.PermissionDenied(f"Your role ({self.membership.role}) lacks session.revoke_all.")
        services.token_revoke(acting=self.membership, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)
