"""Request and response shapes of the policies API. Validation only; writes go through policies.services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from policies.models import (
    CEDAR_MAX_CHARS,
    EGRESS_MAX_PATTERNS,
    EgressMode,
    EgressPolicy,
    Policy,
    ProjectEgress,
    ShellMode,
    ShellPolicy,
)
from policies.shell_rules import MAX_PATTERNS as SHELL_MAX_PATTERNS


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


def _host_patterns(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=255, trim_whitespace=False),
        max_length=EGRESS_MAX_PATTERNS,
        allow_empty=True,
        required=False,
        default=list,
        help_text=help_text,
    )


def _tcp_rules(help_text: str, *, required: bool = False) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=300, trim_whitespace=False),
        max_length=EGRESS_MAX_PATTERNS,
        allow_empty=True,
        help_text=help_text,
        **({"required": True} if required else {"required": False, "default": list}),
    )


class EgressSerializer(serializers.ModelSerializer[EgressPolicy]):
    mode = serializers.ChoiceField(
        choices=EgressMode.choices,
        help_text="open: uncredentialed HTTPS to other hosts is forwarded and logged; allowlist: only `allow`.",
    )
    allow = _host_patterns('Host patterns: "example.com" exactly, "*.example.com" any subdomain (not the apex).')
    plain_http = _host_patterns(
        "Host patterns (as in `allow`) reachable over plain HTTP, uncredentialed and audited: package mirrors such "
        'as "deb.debian.org". None by default; a connector\'s host never.'
    )

    tcp = _tcp_rules(
        'Raw TCP destinations as "host:port" ("github.com:22", "*.db.example.com:5432"): carried by the sandbox '
        "relay through the proxy, audited, uncredentialed. None by default; never ports 80 or 443, never a "
        "connector's host."
    )

    class Meta:
        model = EgressPolicy
        fields = ["mode", "allow", "plain_http", "tcp", "updated_at"]
        read_only_fields = ["updated_at"]


class ProjectEgressSerializer(serializers.ModelSerializer[ProjectEgress]):
    tcp = _tcp_rules(
        "The project's own raw TCP destinations as \"host:port\", checked as the organization's are: sessions started "
        "for the project may use them besides the organization's. Required: `[]` removes them all.",
        required=True,
    )

    class Meta:
        model = ProjectEgress
        fields = ["tcp", "updated_at"]
        read_only_fields = ["updated_at"]


def _shell_patterns(help_text: str) -> serializers.ListField:
    # Blank and odd patterns get through here so that policies.shell_rules names the field and the reason.
    return serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        max_length=SHELL_MAX_PATTERNS,
        allow_empty=True,
        required=False,
        default=list,
        help_text=help_text,
    )


class ShellPolicySerializer(serializers.ModelSerializer[ShellPolicy]):
    mode = serializers.ChoiceField(
        choices=ShellMode.choices,
        help_text="enforce: matching commands are blocked; audit: they run, and what would be blocked is recorded.",
    )
    deny = _shell_patterns(
        'Bash glob patterns matched against the command line as bash prints it ($BASH_COMMAND), e.g. "rm -rf *".'
    )
    allow = _shell_patterns("When not empty, a command must match one of these (shell syntax and a few builtins pass).")
    record_allowed = serializers.BooleanField(
        required=False, default=False, help_text="Record every command that runs, not only the refused ones."
    )

    class Meta:
        model = ShellPolicy
        fields = ["mode", "deny", "allow", "record_allowed", "updated_at"]
        read_only_fields = ["updated_at"]


class ChosenCredentialSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    vault = serializers.CharField()
    binding = serializers.CharField(help_text="pinned, project, team, shared or personal")
    credential_id = serializers.UUIDField()


class CredentialChoiceSerializer(serializers.Serializer[Any]):
    connector = serializers.CharField()
    enabled = serializers.BooleanField(help_text="Enabled for one of your teams (else no request reaches it).")
    default = ChosenCredentialSerializer(allow_null=True, help_text="What its actions get, unless listed below.")
    actions = serializers.DictField(child=ChosenCredentialSerializer(), help_text="Action -> its bound credential.")
    waiting_for = serializers.CharField(allow_null=True, help_text="A team vault waiting to confirm you.")
