"""Shapes of the audit API: the records members read, and the batches the data plane ships."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audit.models import AdminEvent, AuditRecord
from audit.records import DECISIONS, KINDS, MAX_RECORDS_PER_BATCH, PHASES, SEVERITIES
from tenants.api.serializers import UserBriefSerializer


class UsageSerializer(serializers.Serializer[Any]):
    provider = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    input_tokens = serializers.IntegerField(required=False, min_value=0)
    output_tokens = serializers.IntegerField(required=False, min_value=0)
    cache_read_tokens = serializers.IntegerField(required=False, min_value=0)
    cache_write_tokens = serializers.IntegerField(required=False, min_value=0)
    cost_usd = serializers.FloatField(required=False, min_value=0)


class AuditRecordSerializer(serializers.ModelSerializer[AuditRecord]):
    session_id = serializers.UUIDField(source="session_uuid", read_only=True)
    user = UserBriefSerializer(read_only=True, allow_null=True)
    usage = UsageSerializer(read_only=True, allow_null=True)
    args = serializers.DictField(read_only=True, help_text="Arguments, redacted by the data plane.")

    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "at",
            "session_id",
            "session_verified",
            "client_address",
            "user",
            "agent",
            "team",
            "project",
            "kind",
            "connector",
            "action",
            "method",
            "host",
            "path",
            "args",
            "decision",
            "reason",
            "problem_type",
            "credential_id",
            "credential_version",
            "approval_id",
            "approvers",
            "severity",
            "upstream_status",
            "latency_ms",
            "request_bytes",
            "response_bytes",
            "usage",
            "outcome",
            "completed_at",
            "error",
            "ingested_at",
        ]
        read_only_fields = fields


class AdminEventSerializer(serializers.ModelSerializer[AdminEvent]):
    organization = serializers.UUIDField(source="organization_uuid", read_only=True, allow_null=True)
    actor_id = serializers.UUIDField(read_only=True, allow_null=True, help_text="Empty for the system.")
    before = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The target's fields before (null on create)."
    )
    after = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The target's fields after (null on delete)."
    )

    class Meta:
        model = AdminEvent
        fields = [
            "id",
            "created_at",
            "organization",
            "actor_id",
            "actor_email",
            "actor_role",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "before",
            "after",
        ]
        read_only_fields = fields


# --- the data plane's side (documentation only: the view parses records with audit.records) ----------


class ShippedRecordSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(help_text="The data plane's request id; the attempt and the outcome share it.")
    phase = serializers.ChoiceField(choices=PHASES)
    session_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Absent only for a refusal (kind refused, decision deny) tied to no known session.",
    )
    token_lookup = serializers.CharField(
        required=False, allow_blank=True, help_text="Such a refusal's token lookup part, if it carried a token."
    )
    client_address = serializers.CharField(required=False, allow_blank=True, help_text="Attempt only.")
    run = serializers.UUIDField(required=False, help_text="The spool run that wrote an attempt.")
    previous_run = serializers.UUIDField(required=False, help_text="Restart only: the run it closes.")
    at = serializers.DateTimeField(help_text="When the request was attempted (ISO 8601 with an offset).")
    kind = serializers.ChoiceField(choices=KINDS, required=False, help_text="Attempt only.")
    connector = serializers.CharField(required=False, allow_blank=True)
    action = serializers.CharField(required=False, allow_blank=True)
    method = serializers.CharField(required=False, allow_blank=True)
    host = serializers.CharField(required=False, allow_blank=True)
    path = serializers.CharField(required=False, allow_blank=True)
    args = serializers.DictField(required=False)
    decision = serializers.ChoiceField(choices=DECISIONS, required=False, help_text="Attempt only.")
    reason = serializers.CharField(required=False, allow_blank=True)
    problem_type = serializers.CharField(required=False, allow_blank=True)
    credential_id = serializers.UUIDField(required=False, allow_null=True)
    approval_id = serializers.UUIDField(required=False, allow_null=True, help_text="Attempt only.")
    approvers = serializers.ListField(child=serializers.CharField(), required=False, help_text="Attempt only.")
    severity = serializers.ChoiceField(choices=SEVERITIES, required=False, allow_blank=True, help_text="Attempt only.")
    upstream_status = serializers.IntegerField(required=False, allow_null=True, min_value=100, max_value=599)
    latency_ms = serializers.FloatField(required=False, allow_null=True, min_value=0)
    request_bytes = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    response_bytes = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    usage = UsageSerializer(required=False, allow_null=True)
    completed_at = serializers.DateTimeField(required=False, allow_null=True)
    error = serializers.CharField(required=False, allow_blank=True, allow_null=True, help_text="Outcome only.")


class AuditBatchSerializer(serializers.Serializer[Any]):
    records = serializers.ListField(child=ShippedRecordSerializer(), max_length=MAX_RECORDS_PER_BATCH)


class RejectedRecordSerializer(serializers.Serializer[Any]):
    index = serializers.IntegerField(help_text="Position of the record in the batch.")
    id = serializers.CharField(allow_null=True)
    reason = serializers.CharField()


class AuditBatchResultSerializer(serializers.Serializer[Any]):
    accepted = serializers.IntegerField(help_text="Records stored, or already stored (a re-send is a no-op).")
    rejected = RejectedRecordSerializer(many=True, help_text="Records that can never be stored; do not retry them.")


class ChainBreakSerializer(serializers.Serializer[Any]):
    seq = serializers.IntegerField(help_text="Where in the chain (-1: a record no link covers).")
    record_id = serializers.CharField(help_text="The audit record concerned (empty for a checkpoint).")
    why = serializers.ChoiceField(choices=["edited", "deleted", "reordered", "inserted"])
    detail = serializers.CharField()


class CheckpointSerializer(serializers.Serializer[Any]):
    organization = serializers.UUIDField()
    seq = serializers.IntegerField(min_value=0, help_text="The last link the checkpoint covers.")
    head = serializers.CharField(help_text="That link's hash (SHA-256, hex).")
    at = serializers.CharField(help_text="When it was signed (ISO 8601, UTC).")
    purpose = serializers.ChoiceField(
        choices=["head", "prune-start"], help_text="head: the chain's head; prune-start: where a pruning cut it."
    )
    key_id = serializers.CharField(help_text="Which audit signing key signed it.")
    signature = serializers.CharField(help_text="Ed25519 over the canonical JSON of organization, seq, head, at.")


class VerificationSerializer(serializers.Serializer[Any]):
    organization = serializers.UUIDField()
    intact = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="Links walked.")
    first_seq = serializers.IntegerField(help_text="Where the walk started.")
    head_seq = serializers.IntegerField(allow_null=True, help_text="The chain's last link (null: no link yet).")
    broken = ChainBreakSerializer(allow_null=True, help_text="The first break, if any.")
    checkpoints = serializers.IntegerField(help_text="Stored checkpoints that were checked.")
    against = CheckpointSerializer(allow_null=True, help_text="The exported checkpoint checked against, if given.")
    note = serializers.CharField(allow_blank=True, help_text="What could not be checked, and why (empty: nothing).")
    against_checked = serializers.BooleanField(
        help_text="Whether the exported checkpoint given could be checked (false: it precedes where the chain now "
        "starts, or --since; see note)."
    )
    key_id = serializers.CharField(help_text="This control plane's audit signing key.")
    public_key = serializers.CharField(help_text="Its Ed25519 public key (base64, raw), to check exports offline.")


class VerifyRequestSerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField(required=False, help_text="Start from the first link made at or after this.")
    checkpoint = serializers.DictField(
        required=False, help_text="A checkpoint exported earlier (GET .../audit/checkpoint/), to check against."
    )


class RetentionSerializer(serializers.Serializer[Any]):
    days = serializers.IntegerField(
        min_value=1,
        max_value=36500,
        allow_null=True,
        help_text="Keep audit records this many days after they were ingested; null: for ever (the default).",
    )
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)
    updated_by = serializers.CharField(read_only=True, help_text="Who set it, by email (empty: never set).")


class UsageFiguresSerializer(serializers.Serializer[Any]):
    requests = serializers.IntegerField()
    refusals = serializers.IntegerField(help_text="Refused by the proxy or denied by policy.")
    failed = serializers.IntegerField(help_text="Decision error, a transport error, or an upstream 5xx.")
    error_rate = serializers.FloatField(help_text="failed / requests.")
    latency_ms_p50 = serializers.FloatField(allow_null=True)
    latency_ms_p95 = serializers.FloatField(allow_null=True)
    input_tokens = serializers.IntegerField(help_text="Billed at the full input price (cache reads and writes apart).")
    output_tokens = serializers.IntegerField(help_text="Reasoning tokens included.")
    cache_read_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cost_usd = serializers.CharField(help_text="A decimal string, to the micro-dollar.")
    unpriced_calls = serializers.IntegerField(help_text="LLM calls whose model no price source knew.")
    approvals_held = serializers.IntegerField()
    decision_seconds_p50 = serializers.FloatField(allow_null=True, help_text="From held to decided.")
    decision_seconds_p95 = serializers.FloatField(allow_null=True)


class UsagePointSerializer(UsageFiguresSerializer):
    start = serializers.DateTimeField(help_text="The interval's start.")


class UsageGroupSerializer(UsageFiguresSerializer):
    key = serializers.CharField(allow_null=True, help_text="The team, project or user id, or the name (null: none).")
    name = serializers.CharField(allow_null=True, help_text="A team's or project's name, a user's email.")
    series = UsagePointSerializer(many=True, help_text="Per interval, when one was asked for.")


class UsageReportSerializer(serializers.Serializer[Any]):
    group_by = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    interval = serializers.CharField(allow_null=True)
    groups = UsageGroupSerializer(many=True, help_text="Most spend first.")


class UsageQuerySerializer(serializers.Serializer[Any]):
    group_by = serializers.ChoiceField(
        choices=["team", "project", "agent", "user", "connector", "action", "model"], default="team"
    )
    since = serializers.DateTimeField(required=False, help_text="Inclusive; default: 7 days ago.")
    until = serializers.DateTimeField(required=False, help_text="Exclusive; default: now.")
    interval = serializers.ChoiceField(choices=["hour", "day", "week"], required=False)
