"""Request and response shapes of the policies API. Validation only; writes go through policies.services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from policies.models import CEDAR_MAX_CHARS, EGRESS_MAX_PATTERNS, EgressMode, EgressPolicy, Policy


class PolicySerializer(serializers.ModelSerializer[Policy]):
    team = serializers.UUIDField(
        source="team_id",
        allow_null=True,
        required=False,
        help_text="The team the policy applies to; null (the default) for the whole organization. Set at creation.",
    )
    cedar = serializers.CharField(
        max_length=CEDAR_MAX_CHARS,
        trim_whitespace=False,
        help_text='Cedar: forbid (optionally @outcome("approval_required")) or @waive("approval") permit.',
    )
    name = serializers.CharField(max_length=100, trim_whitespace=True, allow_blank=False)
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = Policy
        fields = ["id", "name", "description", "team", "cedar", "enabled", "created_by", "created_at", "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]


class PolicyUpdateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100, trim_whitespace=True, allow_blank=False, required=False)
    description = serializers.CharField(max_length=2000, allow_blank=True, required=False)
    cedar = serializers.CharField(max_length=CEDAR_MAX_CHARS, trim_whitespace=False, required=False)
    enabled = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "team" in data:
            raise serializers.ValidationError({"team": ["A policy's team is set when it is created."]})
        return super().to_internal_value(data)


class EgressSerializer(serializers.ModelSerializer[EgressPolicy]):
    mode = serializers.ChoiceField(
        choices=EgressMode.choices,
        help_text="open: uncredentialed HTTPS to other hosts is forwarded and logged; allowlist: only `allow`.",
    )
    allow = serializers.ListField(
        child=serializers.CharField(max_length=255, trim_whitespace=False),
        max_length=EGRESS_MAX_PATTERNS,
        allow_empty=True,
        required=False,
        default=list,
        help_text='Host patterns: "example.com" exactly, "*.example.com" any subdomain (not the apex).',
    )

    class Meta:
        model = EgressPolicy
        fields = ["mode", "allow", "updated_at"]
        read_only_fields = ["updated_at"]
