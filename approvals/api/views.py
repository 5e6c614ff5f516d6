"""Thin views over approvals.services and approvals.selectors (people's side)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.api import UtcDateTimeFilter, json_object_body
from aileron_site.throttles import Throttle
from approvals import links, notifications, selectors, services
from approvals.api import serializers as s
from approvals.models import Approval, ApprovalRule, ApprovalState, NotificationChannel
from tenants.api.views import OrgScopedViewSet
from tenants.permissions import Perm

STATE_CHOICES = [*ApprovalState.choices, ("all", "Every state")]


DECIDE_FIELDS = frozenset({"reason"})
RULE_FIELDS = frozenset({"action", "four_eyes", "approvers_required", "window_seconds"})


class ApprovalFilter(django_filters.FilterSet):  # type: ignore[misc]
    state = django_filters.ChoiceFilter(
        choices=STATE_CHOICES, method="filter_state", help_text="One state, or all (the default)."
    )
    action = django_filters.CharFilter(
        method="filter_action", help_text="An action (stripe.create-refund), or a prefix ending in * (stripe.*)."
    )
    connector = django_filters.CharFilter()
    session = django_filters.UUIDFilter(field_name="session_uuid", help_text="A session token's id.")
    requester = django_filters.UUIDFilter(field_name="requester_id", help_text="A user's id.")
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="Asked at or after (ISO 8601).")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="Asked before (ISO 8601).")

    class Meta:
        model = Approval
        fields: ClassVar[list[str]] = []

    def filter_state(self, queryset: QuerySet[Approval], name: str, value: str) -> QuerySet[Approval]:
        return queryset if value == "all" else queryset.filter(state=value)

    def filter_action(self, queryset: QuerySet[Approval], name: str, value: str) -> QuerySet[Approval]:
        if value.endswith("*"):
            return queryset.filter(action__startswith=value[:-1])
        return queryset.filter(action=value)


class ApprovalViewSet(OrgScopedViewSet):
    serializer_class = s.ApprovalSerializer
    # Everyone sees their own requests; approval.decide (and audit.read) see the organization's. Deciding is
    # checked by the service, after the approval is found, so a request one may not see stays a 404.
    permission_map = {
        "list": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "grant": Perm.ORG_VIEW,
        "reject": Perm.ORG_VIEW,
        "cancel": Perm.ORG_VIEW,
    }
    filterset_class = ApprovalFilter
    ordering_fields: ClassVar[list[str]] = ["created_at", "expires_at", "decided_at"]
    ordering: ClassVar[list[str]] = ["-created_at", "-id"]

    def get_queryset(self) -> QuerySet[Approval]:
        if self.fake:
            return Approval.objects.none()
        return selectors.approval_list(membership=self.membership)

    def _get(self, approval_id: uuid.UUID) -> Approval:
        return selectors.approval_get(membership=self.membership, approval_id=approval_id)

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.ApprovalSerializer(page, many=True).data)

    def retrieve(self, request: Request, org_id: uuid.UUID, approval_id: uuid.UUID) -> Response:
        return Response(s.ApprovalSerializer(self._get(approval_id)).data)

    @extend_schema(request=s.DecideSerializer, responses=s.ApprovalSerializer)
    def grant(self, request: Request, org_id: uuid.UUID, approval_id: uuid.UUID) -> Response:
        approval = self._get(approval_id)
        data = s.DecideSerializer(data=json_object_body(request, DECIDE_FIELDS))
        data.is_valid(raise_exception=True)
        approval = services.approval_decide(
            approval=approval,
            membership=self.membership,
            decision="grant",
            reason=data.validated_data["reason"],
        )
        return Response(s.ApprovalSerializer(self._get(approval.pk)).data)

    @extend_schema(request=s.RejectSerializer, responses=s.ApprovalSerializer)
    def reject(self, request: Request, org_id: uuid.UUID, approval_id: uuid.UUID) -> Response:
        approval = self._get(approval_id)
        data = s.RejectSerializer(data=json_object_body(request, DECIDE_FIELDS))
        data.is_valid(raise_exception=True)
        approval = services.approval_decide(
            approval=approval,
            membership=self.membership,
            decision="reject",
            reason=data.validated_data["reason"],
        )
        return Response(s.ApprovalSerializer(self._get(approval.pk)).data)

    @extend_schema(request=None, responses=s.ApprovalSerializer)
    def cancel(self, request: Request, org_id: uuid.UUID, approval_id: uuid.UUID) -> Response:
        approval = self._get(approval_id)
        json_object_body(request, frozenset())
        approval = services.approval_cancel(approval=approval, membership=self.membership)
        return Response(s.ApprovalSerializer(self._get(approval.pk)).data)


class ApprovalRuleViewSet(OrgScopedViewSet):
    serializer_class = s.ApprovalRuleSerializer
    permission_map = {
        "list": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "create": Perm.POLICY_MANAGE,
        "partial_update": Perm.POLICY_MANAGE,
        "destroy": Perm.POLICY_MANAGE,
    }
    ordering_fields: ClassVar[list[str]] = ["created_at", "action"]
    ordering: ClassVar[list[str]] = ["action"]

    def get_queryset(self) -> QuerySet[ApprovalRule]:
        if self.fake:
            return ApprovalRule.objects.none()
        return selectors.approval_rule_list(membership=self.membership)

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.ApprovalRuleSerializer(page, many=True).data)

    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.ApprovalRuleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rule = services.approval_rule_create(acting=self.membership, **data.validated_data)
        return Response(s.ApprovalRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, rule_id: uuid.UUID) -> Response:
        return Response(
            s.ApprovalRuleSerializer(selectors.approval_rule_get(membership=self.membership, rule_id=rule_id)).data
        )

    @extend_schema(request=s.ApprovalRuleUpdateSerializer, responses=s.ApprovalRuleSerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID, rule_id: uuid.UUID) -> Response:
        rule = selectors.approval_rule_get(membership=self.membership, rule_id=rule_id)
        data = s.ApprovalRuleUpdateSerializer(data=json_object_body(request, RULE_FIELDS))
        data.is_valid(raise_exception=True)
        services.approval_rule_update(acting=self.membership, rule=rule, **data.validated_data)
        return Response(s.ApprovalRuleSerializer(rule).data)

    def destroy(self, request: Request, org_id: uuid.UUID, rule_id: uuid.UUID) -> Response:
        services.approval_rule_delete(
            acting=self.membership, rule=selectors.approval_rule_get(membership=self.membership, rule_id=rule_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


CHANNEL_FIELDS = frozenset({"name", "target", "events", "enabled"})


class NotificationChannelViewSet(OrgScopedViewSet):
    """Where the organization's approvals are sent. Only notify.manage sees or changes channels: their targets
    are called by the worker, and a Slack webhook's URL is itself a secret."""

    serializer_class = s.NotificationChannelSerializer
    permission_map = {
        "list": Perm.NOTIFY_MANAGE,
        "retrieve": Perm.NOTIFY_MANAGE,
        "create": Perm.NOTIFY_MANAGE,
        "partial_update": Perm.NOTIFY_MANAGE,
        "destroy": Perm.NOTIFY_MANAGE,
        "test": Perm.NOTIFY_MANAGE,
    }
    ordering_fields: ClassVar[list[str]] = ["name", "created_at"]
    ordering: ClassVar[list[str]] = ["name"]

    def get_queryset(self) -> QuerySet[NotificationChannel]:
        if self.fake:
            return NotificationChannel.objects.none()
        return selectors.notification_channel_list(membership=self.membership)

    def _get(self, channel_id: uuid.UUID) -> NotificationChannel:
        return selectors.notification_channel_get(membership=self.membership, channel_id=channel_id)

    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(s.NotificationChannelSerializer(page, many=True).data)

    @extend_schema(
        request=s.NotificationChannelCreateSerializer, responses={201: s.NotificationChannelCreatedSerializer}
    )
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.NotificationChannelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = notifications.notification_channel_create(acting=self.membership, **data.validated_data)
        body = s.NotificationChannelSerializer(created.channel).data
        return Response({**body, "secret": created.secret}, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, channel_id: uuid.UUID) -> Response:
        return Response(s.NotificationChannelSerializer(self._get(channel_id)).data)

    @extend_schema(request=s.NotificationChannelUpdateSerializer, responses=s.NotificationChannelSerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID, channel_id: uuid.UUID) -> Response:
        channel = self._get(channel_id)
        data = s.NotificationChannelUpdateSerializer(data=json_object_body(request, CHANNEL_FIELDS))
        data.is_valid(raise_exception=True)
        notifications.notification_channel_update(acting=self.membership, channel=channel, **data.validated_data)
        return Response(s.NotificationChannelSerializer(channel).data)

    def destroy(self, request: Request, org_id: uuid.UUID, channel_id: uuid.UUID) -> Response:
        notifications.notification_channel_delete(acting=self.membership, channel=self._get(channel_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.NotificationTestSerializer)
    def test(self, request: Request, org_id: uuid.UUID, channel_id: uuid.UUID) -> Response:
        """Send a test message now, once: `delivered`, and the receiver's answer in `error` if it did not arrive."""
        channel = self._get(channel_id)
        json_object_body(request, frozenset())
        outcome = notifications.notification_channel_test(channel=channel)
        body = s.NotificationChannelSerializer(channel).data
        return Response({**body, "delivered": outcome.status == "ok", "error": outcome.error})


def _link_view(view: links.LinkView) -> dict[str, Any]:
    return dict(
        s.LinkViewSerializer(
            {
                "approval": view.approval,
                "decider": view.link.user.email,
                "decider_id": view.link.user_id,
                "organization": {"id": view.link.organization_id, "name": view.link.organization.name},
                "may_decide": view.may_decide,
                "used_at": view.link.used_at,
                "expires_at": view.link.expires_at,
            }
        ).data
    )


class ApprovalLinkOpenView(APIView):
    """What a one-time approval link shows: its approval, who decides through it, and whether it still can.

    The link's secret is the credential (in the body, never the URL); it is not a bearer token."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [Throttle]
    throttle_scope = "approval-link"

    @extend_schema(request=s.LinkOpenSerializer, responses=s.LinkViewSerializer)
    def post(self, request: Request) -> Response:
        data = s.LinkOpenSerializer(data=json_object_body(request, frozenset({"token"})))
        data.is_valid(raise_exception=True)
        return Response(_link_view(links.approval_link_open(raw=data.validated_data["token"])))


class ApprovalLinkDecideView(APIView):
    """Grant or reject the link's approval, once, as the person the link was sent to."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [Throttle]
    throttle_scope = "approval-link"

    @extend_schema(request=s.LinkDecideSerializer, responses=s.LinkViewSerializer)
    def post(self, request: Request) -> Response:
        data = s.LinkDecideSerializer(
            data=json_object_body(request, frozenset({"token", "approval_id", "decision", "reason"}))
        )
        data.is_valid(raise_exception=True)
        raw = data.validated_data["token"]
        links.approval_link_decide(
            raw=raw,
            approval_id=data.validated_data["approval_id"],
            decision=data.validated_data["decision"],
            reason=data.validated_data["reason"],
        )
        return Response(_link_view(links.approval_link_open(raw=raw)))
