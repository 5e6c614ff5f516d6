"""Reading the audit log: every member sees their own records; audit.read shows the organization's, and the
admin events (who changed what in the organization)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import django_filters
from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response

from aileron_site.api import UtcDateTimeFilter
from audit import selectors
from audit.api.serializers import AdminEventSerializer, AuditRecordSerializer
from audit.models import AdminEvent, AuditDecision, AuditRecord, AuditSeverity
from tenants.api.views import OrgScopedViewSet
from tenants.permissions import Perm


class AuditRecordFilter(django_filters.FilterSet):  # type: ignore[misc]
    action = django_filters.CharFilter(
        method="filter_action", help_text="An action (stripe.charges.create), or a prefix ending in * (stripe.*)."
    )
    connector = django_filters.CharFilter()
    decision = django_filters.ChoiceFilter(choices=AuditDecision.choices)
    severity = django_filters.ChoiceFilter(
        choices=[c for c in AuditSeverity.choices if c[0]],
        help_text="critical: requests that carried a credential the agent should never hold.",
    )
    session = django_filters.UUIDFilter(field_name="session_uuid", help_text="A session token's id.")
    user = django_filters.UUIDFilter(field_name="user_id", help_text="A user's id.")
    since = UtcDateTimeFilter(field_name="at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    until = UtcDateTimeFilter(field_name="at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = AuditRecord
        fields: ClassVar[list[str]] = []

    def filter_action(self, queryset: QuerySet[AuditRecord], name: str, value: str) -> QuerySet[AuditRecord]:
        return _action_match(queryset, value)


class AuditRecordViewSet(OrgScopedViewSet):
    serializer_class = AuditRecordSerializer
    # Everyone may read their own agents' records; the queryset narrows to those without audit.read.
    permission_map = {"list": Perm.ORG_VIEW, "retrieve": Perm.ORG_VIEW}
    filterset_class = AuditRecordFilter
    ordering_fields: ClassVar[list[str]] = ["at", "completed_at", "latency_ms"]
    ordering: ClassVar[list[str]] = ["-at", "-id"]

    def get_queryset(self) -> QuerySet[AuditRecord]:
        if self.fake:
            return AuditRecord.objects.none()
        return selectors.audit_record_list(
            organization=self.organization, user=self.membership.user, see_all=self.may(Perm.AUDIT_READ)
        )

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(AuditRecordSerializer(page, many=True).data)

    def retrieve(self, request: Request, org_id: uuid.UUID, record_id: uuid.UUID) -> Response:
        record = selectors.audit_record_get(
            organization=self.organization,
            user=self.membership.user,
            see_all=self.may(Perm.AUDIT_READ),
            record_id=record_id,
        )
        return Response(AuditRecordSerializer(record).data)


def _action_match(queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
    if value.endswith("*"):
        return queryset.filter(action__startswith=value[:-1])
    return queryset.filter(action=value)


class AdminEventFilter(django_filters.FilterSet):  # type: ignore[misc]
    actor = django_filters.CharFilter(field_name="actor_email", lookup_expr="iexact", help_text="The actor's email.")
    action = django_filters.CharFilter(
        method="filter_action", help_text="An action (member.role_change), or a prefix ending in * (team.*)."
    )
    target_type = django_filters.CharFilter(help_text="member, invitation, team, project, token, policy...")
    target_id = django_filters.CharFilter(help_text="The target's id.")
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = AdminEvent
        fields: ClassVar[list[str]] = []

    def filter_action(self, queryset: QuerySet[AdminEvent], name: str, value: str) -> QuerySet[AdminEvent]:
        return _action_match(queryset, value)


class AdminEventViewSet(OrgScopedViewSet):
    """Who changed what in the organization (roles, members, teams, projects, tokens, policies...), when, and the
    target before and after. Only audit.read holders read them: a member without it is refused, not narrowed."""

    serializer_class = AdminEventSerializer
    permission_map = {"list": Perm.AUDIT_READ, "retrieve": Perm.AUDIT_READ}
    filterset_class = AdminEventFilter
    ordering_fields: ClassVar[list[str]] = ["created_at"]
    ordering: ClassVar[list[str]] = ["-created_at", "-id"]

    def get_queryset(self) -> QuerySet[AdminEvent]:
        if self.fake:
            return AdminEvent.objects.none()
        return selectors.admin_event_list(organization=self.organization)

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(AdminEventSerializer(page, many=True).data)

    def retrieve(self, request: Request, org_id: uuid.UUID, event_id: uuid.UUID) -> Response:
        event = selectors.admin_event_get(organization=self.organization, event_id=event_id)
        return Response(AdminEventSerializer(event).data)
