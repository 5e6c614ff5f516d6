"""Thin views over policies.services and policies.selectors."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from aileron_site.problems import NotFound
from policies import selectors, services
from policies.api import serializers as s
from policies.models import EgressPolicy, Policy, ProjectEgress, ShellPolicy
from tenants import selectors as tenant_selectors
from tenants.api.views import ORDER_BY_CREATED, OrgScopedViewSet
from tenants.models import Team
from tenants.permissions import Perm


class PolicyViewSet(OrgScopedViewSet):
    serializer_class = s.PolicySerializer
    permission_map = {
        "list": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "create": Perm.POLICY_MANAGE,
        "partial_update": Perm.POLICY_MANAGE,
        "destroy": Perm.POLICY_MANAGE,
    }
    filterset_fields: ClassVar[list[str]] = ["team", "enabled", "name"]
    ordering_fields: ClassVar[list[str]] = ["created_at", "updated_at", "name"]
    ordering: ClassVar[list[str]] = ORDER_BY_CREATED

    def get_queryset(self) -> QuerySet[Policy]:
        if self.fake:
            return Policy.objects.none()
        return selectors.policy_list(organization=self.organization)

    def _team(self, team_id: uuid.UUID | None) -> Team | None:
        if team_id is None:
            return None
        try:
            return tenant_selectors.team_get(organization=self.organization, team_id=team_id)
        except NotFound:
            raise NotFound("No such team in this organization.") from None

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.PolicySerializer(page, many=True).data)

    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.PolicySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        team = self._team(fields.pop("team_id", None))
        policy = services.policy_create(acting=self.membership, team=team, **fields)
        return Response(s.PolicySerializer(policy).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, policy_id: uuid.UUID) -> Response:
        return Response(
            s.PolicySerializer(selectors.policy_get(organization=self.organization, policy_id=policy_id)).data
        )

    @extend_schema(request=s.PolicyUpdateSerializer, responses=s.PolicySerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID, policy_id: uuid.UUID) -> Response:
        policy = selectors.policy_get(organization=self.organization, policy_id=policy_id)
        data = s.PolicyUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.policy_update(acting=self.membership, policy=policy, **data.validated_data)
        return Response(s.PolicySerializer(policy).data)

    def destroy(self, request: Request, org_id: uuid.UUID, policy_id: uuid.UUID) -> Response:
        services.policy_delete(
            acting=self.membership,
            policy=selectors.policy_get(organization=self.organization, policy_id=policy_id),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class EgressViewSet(OrgScopedViewSet):
    serializer_class = s.EgressSerializer
    queryset = EgressPolicy.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.ORG_VIEW, "update": Perm.POLICY_MANAGE}
    pagination_class = None

    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(s.EgressSerializer(selectors.egress_get(organization=self.organization)).data)

    def update(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.EgressSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        egress = services.egress_set(
            acting=self.membership,
            mode=data.validated_data["mode"],
            allow=data.validated_data.get("allow", []),
            plain_http=data.validated_data.get("plain_http", []),
            tcp=data.validated_data.get("tcp", []),
        )
        return Response(s.EgressSerializer(egress).data)


class ProjectEgressViewSet(OrgScopedViewSet):
    """A project's own TCP rules (see policies.models.ProjectEgress); 404 for a project of another organization."""

    serializer_class = s.ProjectEgressSerializer
    queryset = ProjectEgress.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.PROJECT_VIEW, "update": Perm.POLICY_MANAGE}
    pagination_class = None

    def retrieve(self, request: Request, org_id: uuid.UUID, project_id: uuid.UUID) -> Response:
        project = tenant_selectors.project_get(organization=self.organization, project_id=project_id)
        return Response(s.ProjectEgressSerializer(selectors.project_egress_get(project=project)).data)

    def update(self, request: Request, org_id: uuid.UUID, project_id: uuid.UUID) -> Response:
        project = tenant_selectors.project_get(organization=self.organization, project_id=project_id)
        data = s.ProjectEgressSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        egress = services.project_egress_set(acting=self.membership, project=project, tcp=data.validated_data["tcp"])
        return Response(s.ProjectEgressSerializer(egress).data)


class CredentialChoiceView(OrgScopedViewSet):
    """Which credential your sessions would get, per connector (and per action where one is bound to it)."""

    queryset = EgressPolicy.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.ORG_VIEW}
    pagination_class = None

    @extend_schema(
        parameters=[OpenApiParameter("project", uuid.UUID, description="For a session of this project.")],
        responses=s.CredentialChoiceSerializer(many=True),
    )
    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        project_id = None
        raw = request.query_params.get("project")
        if raw:
            try:
                project_id = tenant_selectors.project_get(organization=self.organization, project_id=uuid.UUID(raw)).pk
            except (ValueError, NotFound):
                raise exceptions.ValidationError({"project": ["No such project in this organization."]}) from None
        found = selectors.credential_choice(membership=self.membership, project_id=project_id)
        return Response(s.CredentialChoiceSerializer(found, many=True).data)


class ShellPolicyViewSet(OrgScopedViewSet):
    serializer_class = s.ShellPolicySerializer
    queryset = ShellPolicy.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.ORG_VIEW, "update": Perm.POLICY_MANAGE}
    pagination_class = None

    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(s.ShellPolicySerializer(selectors.shell_policy_get(organization=self.organization)).data)

    def update(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.ShellPolicySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        shell = services.shell_policy_set(
            acting=self.membership,
            mode=data.validated_data["mode"],
            deny=data.validated_data.get("deny", []),
            allow=data.validated_data.get("allow", []),
            record_allowed=data.validated_data.get("record_allowed", False),
        )
        return Response(s.ShellPolicySerializer(shell).data)
