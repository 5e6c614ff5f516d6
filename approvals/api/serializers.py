"""Shapes of the approvals API (and of the events pushed to approvers: the same ApprovalSerializer)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from approvals.events import KINDS
from approvals.models import (
    NOTIFY_EVENTS,
    WINDOW_MAX_SECONDS,
    Approval,
    ApprovalDecision,
    ApprovalRule,
    ApprovalState,
    ChannelKind,
    DecisionKind,
    NotificationChannel,
)
from approvals.notifications import target_shown


class DecisionSerializer(serializers.ModelSerializer[ApprovalDecision]):
    approver = serializers.EmailField(source="user_email", read_only=True)
    approver_id = serializers.UUIDField(source="user_id", read_only=True, allow_null=True)

    class Meta:
        model = ApprovalDecision
        fields = ["approver", "approver_id", "decision", "reason", "at"]
        read_only_fields = fields


class ApprovalSerializer(serializers.ModelSerializer[Approval]):
    organization_id = serializers.UUIDField(read_only=True)
    session_id = serializers.UUIDField(source="session_uuid", read_only=True)
    requester_id = serializers.UUIDField(read_only=True, allow_null=True)
    project_id = serializers.UUIDField(read_only=True, allow_null=True)
    args = serializers.DictField(read_only=True, help_text="Parsed arguments (sensitive ones redacted).")
    decisions = DecisionSerializer(many=True, read_only=True)
    grants = serializers.SerializerMethodField(help_text="How many approvers granted so far.")
    completed = serializers.SerializerMethodField(help_text="A grant was used and the request went upstream.")
    age_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = [
            "id",
            "organization_id",
            "state",
            "connector",
            "action",
            "args",
            "method",
            "host",
            "path",
            "query",
            "body_sha256",
            "body_bytes",
            "credential_id",
            "request_hash",
            "held_reason",
            "requester_id",
            "requester_email",
            "agent",
            "session_id",
            "project_id",
            "four_eyes",
            "approvers_required",
            "grants",
            "window_seconds",
            "created_at",
            "age_seconds",
            "expires_at",
            "decided_at",
            "decision_reason",
            "decisions",
            "consumed_at",
            "outcome_status",
            "completed",
        ]
        read_only_fields = fields

    def get_grants(self, approval: Approval) -> int:
        return sum(1 for d in approval.decisions.all() if d.decision == "grant")

    def get_completed(self, approval: Approval) -> bool:
        return approval.consumed_at is not None

    def get_age_seconds(self, approval: Approval) -> float:
        return round((timezone.now() - approval.created_at).total_seconds(), 1)


class DecideSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")


class RejectSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=1000, help_text="Shown to the agent and the requester.")


class ApprovalRuleSerializer(serializers.ModelSerializer[ApprovalRule]):
    approvers_required = serializers.IntegerField(min_value=1, max_value=2, default=1)
    window_seconds = serializers.IntegerField(min_value=1, max_value=WINDOW_MAX_SECONDS, default=120)

    class Meta:
        model = ApprovalRule
        fields = ["id", "action", "four_eyes", "approvers_required", "window_seconds", "created_at"]
        read_only_fields = ["id", "created_at"]


class ApprovalRuleUpdateSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(required=False, max_length=200)
    four_eyes = serializers.BooleanField(required=False)
    approvers_required = serializers.IntegerField(required=False, min_value=1, max_value=2)
    window_seconds = serializers.IntegerField(required=False, min_value=1, max_value=WINDOW_MAX_SECONDS)


# --- notification channels and one-time links ---------------------------------------------------------------


class NotificationChannelSerializer(serializers.ModelSerializer[NotificationChannel]):
    target = serializers.SerializerMethodField(help_text="URL or addresses (a Slack webhook's secret path hidden).")
    events = serializers.ListField(child=serializers.ChoiceField(choices=list(NOTIFY_EVENTS)))
    created_by = serializers.EmailField(source="created_by.email", read_only=True, allow_null=True, default=None)

    class Meta:
        model = NotificationChannel
        fields = [
            "id",
            "name",
            "kind",
            "target",
            "events",
            "enabled",
            "created_by",
            "created_at",
            "last_delivery_at",
            "last_status",
            "last_error",
        ]
        read_only_fields = fields

    def get_target(self, channel: NotificationChannel) -> str:
        return target_shown(channel)


class NotificationChannelCreatedSerializer(NotificationChannelSerializer):
    secret = serializers.CharField(
        allow_null=True, help_text="A webhook's signing secret: shown this once (null for Slack and email)."
    )

    class Meta(NotificationChannelSerializer.Meta):
        fields = [*NotificationChannelSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class NotificationTestSerializer(NotificationChannelSerializer):
    delivered = serializers.BooleanField(help_text="The receiver accepted the test message.")
    error = serializers.CharField(allow_blank=True, help_text="Why not: the receiver's answer or the network error.")

    class Meta(NotificationChannelSerializer.Meta):
        fields = [*NotificationChannelSerializer.Meta.fields, "delivered", "error"]
        read_only_fields = fields


class NotificationChannelCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=60)
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    target = serializers.CharField(
        max_length=2000, help_text="http(s) URL (webhook, slack) or comma-separated addresses (email)."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(NOTIFY_EVENTS)),
        required=False,
        allow_empty=False,
        help_text=f"Default: all of {', '.join(NOTIFY_EVENTS)}.",
    )
    enabled = serializers.BooleanField(required=False, default=True)


class NotificationChannelUpdateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(required=False, max_length=60)
    target = serializers.CharField(required=False, max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(NOTIFY_EVENTS)), required=False, allow_empty=False
    )
    enabled = serializers.BooleanField(required=False)


class LinkOpenSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=100, help_text="The one-time link's secret (ail_apl_…).")


class LinkDecideSerializer(LinkOpenSerializer):
    approval_id = serializers.UUIDField(help_text="The link's own approval (any other is refused).")
    decision = serializers.ChoiceField(choices=DecisionKind.choices)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")


class LinkOrganizationSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()


class LinkViewSerializer(serializers.Serializer[Any]):
    approval = ApprovalSerializer()
    decider = serializers.EmailField(help_text="Who decides through this link.")
    decider_id = serializers.UUIDField()
    organization = LinkOrganizationSerializer()
    may_decide = serializers.BooleanField(help_text="The link is unused and its approval still pending.")
    used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField()


# --- the data plane's side -----------------------------------------------------------------------------------


class HeldRequestSerializer(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()
    request_id = serializers.UUIDField()
    connector = serializers.CharField(max_length=100)
    action = serializers.CharField(max_length=200)
    args = serializers.DictField(required=False, default=dict)
    method = serializers.CharField(max_length=16)
    host = serializers.CharField(max_length=253)
    path = serializers.CharField(max_length=2048)
    query = serializers.CharField(required=False, allow_blank=True, default="", max_length=8192)
    body_sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$")
    body_bytes = serializers.IntegerField(min_value=0, default=0)
    credential_id = serializers.UUIDField()
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=4000)


class ClaimSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=[*ApprovalState.values, "used"])
    used_now = serializers.BooleanField(help_text="This call used the grant: forward the request once.")
    window_seconds = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    approvers = serializers.ListField(child=serializers.EmailField())
    decision_reason = serializers.CharField(allow_blank=True)
    action = serializers.CharField()


class WaitSerializer(serializers.Serializer[Any]):
    request_id = serializers.UUIDField(
        required=False, help_text="Use the grant for this request when it comes (else only report the state)."
    )
    timeout = serializers.FloatField(min_value=0, max_value=WINDOW_MAX_SECONDS)


class ReleaseSerializer(serializers.Serializer[Any]):
    request_id = serializers.UUIDField()


class RelaySerializer(serializers.Serializer[Any]):
    approvals = serializers.ListField(child=serializers.UUIDField(), max_length=1000)
    event = serializers.ChoiceField(choices=list(KINDS))
