"""Reading the audit log: every member sees their own records; audit.read shows the organization's, and the
admin events (who changed what in the organization)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any, ClassVar

import django_filters
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from aileron_site.api import UtcDateTimeFilter, json_object_body
from aileron_site.throttles import Throttle
from audit import chain, selectors, services
from audit.api.serializers import (
    AdminEventSerializer,
    AuditRecordSerializer,
    CheckpointSerializer,
    RetentionSerializer,
    UsageQuerySerializer,
    UsageReportSerializer,
    VerificationSerializer,
    VerifyRequestSerializer,
)
from audit.chaining import chain_verify, checkpoint_latest, checkpoint_make
from audit.models import AdminEvent, AuditDecision, AuditRecord, AuditSeverity
from audit.signing import signing_key
from audit.usage import UsageError, usage_report
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


def _public_key_fields() -> dict[str, str]:
    key = signing_key().public_key()
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"key_id": chain.key_id(key), "public_key": base64.b64encode(raw).decode()}


class AuditVerifyViewSet(OrgScopedViewSet):
    """Walk the organization's audit hash chain and say whether it is intact, or name the first record that was
    edited, deleted, reordered or inserted after it was written. Stored checkpoints are checked on the way;
    give an exported checkpoint to catch a chain that was rebuilt or cut short since it was taken."""

    queryset = AuditRecord.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.AUDIT_READ, "create": Perm.AUDIT_READ}
    pagination_class = None
    throttle_classes = [Throttle]
    throttle_scope = "audit-verify"

    def _answer(self, since: datetime | None, against: chain.Checkpoint | None) -> Response:
        result = chain_verify(organization_uuid=self.organization.pk, since=since, against=against)
        return Response(VerificationSerializer({**result.as_dict(), **_public_key_fields()}).data)

    @extend_schema(
        parameters=[OpenApiParameter("since", datetime, description="Start from the first link made at or after.")],
        responses=VerificationSerializer,
    )
    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        data = VerifyRequestSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        return self._answer(data.validated_data.get("since"), None)

    @extend_schema(request=VerifyRequestSerializer, responses=VerificationSerializer)
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        """Verify against a checkpoint exported earlier (the body's `checkpoint`), from `since` if given."""
        data = VerifyRequestSerializer(data=json_object_body(request, frozenset({"since", "checkpoint"})))
        data.is_valid(raise_exception=True)
        against = None
        if "checkpoint" in data.validated_data:
            try:
                against = chain.Checkpoint.from_dict(data.validated_data["checkpoint"])
            except ValueError as exc:
                raise exceptions.ValidationError({"checkpoint": [str(exc)]}) from None
        return self._answer(data.validated_data.get("since"), against)


class AuditCheckpointViewSet(OrgScopedViewSet):
    """Signed checkpoints of the organization's audit chain: keep one outside Aileron (the SIEM export carries
    them) and a chain cut short or rebuilt later no longer verifies against it."""

    queryset = AuditRecord.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.AUDIT_READ, "create": Perm.AUDIT_READ}
    pagination_class = None
    throttle_classes = [Throttle]
    throttle_scope = "audit-checkpoint"

    @extend_schema(responses=CheckpointSerializer)
    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        """The latest checkpoint signed for this organization."""
        found = checkpoint_latest(organization_uuid=self.organization.pk)
        if found is None:
            raise exceptions.NotFound("No checkpoint yet: the organization's audit log is empty, or none was signed.")
        return Response(CheckpointSerializer(found.as_dict()).data)

    @extend_schema(request=None, responses={201: CheckpointSerializer})
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        """Sign the chain's head now and return the checkpoint, to export."""
        json_object_body(request, frozenset())
        made = checkpoint_make(organization_uuid=self.organization.pk, reason="requested")
        if made is None:
            raise exceptions.NotFound("Nothing to sign: the organization's audit log is empty.")
        return Response(CheckpointSerializer(made.as_dict()).data, status=status.HTTP_201_CREATED)


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


class AuditRetentionViewSet(OrgScopedViewSet):
    """How long the organization keeps audit records. A daily task prunes older ones from the start of the hash
    chain, signing a checkpoint of the chain as it was first; verification goes on from the new start."""

    queryset = AuditRecord.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.AUDIT_READ, "update": Perm.AUDIT_RETENTION}
    pagination_class = None

    @extend_schema(responses=RetentionSerializer)
    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(RetentionSerializer(services.audit_retention_get(organization=self.organization)).data)

    @extend_schema(request=RetentionSerializer, responses=RetentionSerializer)
    def update(self, request: Request, org_id: uuid.UUID) -> Response:
        data = RetentionSerializer(data=json_object_body(request, frozenset({"days"})))
        data.is_valid(raise_exception=True)
        setting = services.audit_retention_set(acting=self.membership, days=data.validated_data["days"])
        return Response(RetentionSerializer(setting).data)


class UsageViewSet(OrgScopedViewSet):
    """Requests, refusals, errors, latency, LLM tokens and spend, and approvals, added up per team, project, agent,
    user, connector, action or model over a time range (and per interval if asked). Without audit.read, only
    your own agents' figures."""

    queryset = AuditRecord.objects.none()  # for the schema's path parameters only
    permission_map = {"retrieve": Perm.ORG_VIEW}
    pagination_class = None

    @extend_schema(parameters=[UsageQuerySerializer], responses=UsageReportSerializer)
    def retrieve(self, request: Request, org_id: uuid.UUID) -> Response:
        data = UsageQuerySerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        now = timezone.now()
        until = data.validated_data.get("until") or now
        since = data.validated_data.get("since") or until - timedelta(days=7)
        try:
            report = usage_report(
                organization=self.organization,
                group_by=data.validated_data["group_by"],
                since=since,
                until=until,
                interval=data.validated_data.get("interval"),
                user=None if self.may(Perm.AUDIT_READ) else self.membership.user,
            )
        except UsageError as exc:
            raise exceptions.ValidationError({"detail": [str(exc)]}) from None
        return Response(UsageReportSerializer(report).data)
