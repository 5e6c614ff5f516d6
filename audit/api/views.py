"""Reading the audit log: every member sees their own records; audit.read shows the organization's."""

from __future__ import annotations

import uuid
from typing import ClassVar

import django_filters
from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response

from aileron_site.api import UtcDateTimeFilter
from audit import selectors
from audit.api.serializers import AuditRecordSerializer
from audit.models import AuditDecision, AuditRecord, AuditSeverity
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
        if value.endswith("*"):
            return queryset.filter(action__startswith=value[:-1])
        return queryset.filter(action=value)


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
