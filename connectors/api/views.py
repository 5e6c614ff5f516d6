"""Installed connectors and their per-team enablement."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from connectors import services
from connectors.models import ConnectorEnablement
from tenants import selectors
from tenants.api.views import OrgScopedViewSet
from tenants.permissions import Perm


class ConnectorSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField()
    hosts = serializers.ListField(child=serializers.CharField())
    auth = serializers.CharField()
    actions = serializers.ListField(child=serializers.DictField())
    teams = serializers.ListField(child=serializers.UUIDField(), help_text="Teams that may use it.")


class ConnectorViewSet(OrgScopedViewSet):
    serializer_class = ConnectorSerializer
    queryset = ConnectorEnablement.objects.none()  # for the schema's path parameters only
    permission_map = {
        "list": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "enable": Perm.CONNECTOR_MANAGE,
        "disable": Perm.CONNECTOR_MANAGE,
    }
    pagination_class = None

    def _body(self, connector: Any) -> dict[str, Any]:
        teams = ConnectorEnablement.objects.filter(organization=self.organization, connector=connector.name)
        return dict(
            ConnectorSerializer(
                {
                    "name": connector.name,
                    "description": connector.description,
                    "hosts": list(connector.hosts),
                    "auth": connector.auth.scheme,
                    "actions": [a.manifest_entry() for a in connector.actions],
                    "teams": [e.team_id for e in teams],
                }
            ).data
        )

    @extend_schema(responses=ConnectorSerializer(many=True))
    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response([self._body(c) for c in services.connectors_installed()])

    def retrieve(self, request: Request, org_id: uuid.UUID, name: str) -> Response:
        return Response(self._body(services.connector_get(name=name)))

    @extend_schema(request=None, responses={201: ConnectorSerializer})
    def enable(self, request: Request, org_id: uuid.UUID, name: str, team_id: uuid.UUID) -> Response:
        team = selectors.team_get(organization=self.organization, team_id=team_id)
        if request.data != {}:  # nothing to send; refuse anything else rather than ignore it
            raise exceptions.ValidationError({"non_field_errors": ["This request takes no body (or {})."]})
        services.connector_enable(acting=self.membership, team=team, name=name)
        return Response(self._body(services.connector_get(name=name)), status=status.HTTP_201_CREATED)

    def disable(self, request: Request, org_id: uuid.UUID, name: str, team_id: uuid.UUID) -> Response:
        team = selectors.team_get(organization=self.organization, team_id=team_id)
        services.connector_disable(acting=self.membership, team=team, name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)
