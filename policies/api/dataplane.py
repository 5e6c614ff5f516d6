"""The data plane's session context: who an agent session acts for and what applies to it. Service token only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from policies import selectors
from policies.models import EgressMode, ShellMode
from policies.selectors import BINDINGS
from tenants.api.permissions import IsServiceToken


class SessionContextRequest(serializers.Serializer[Any]):
    session_token = serializers.CharField(max_length=200)


class SessionCredentialSerializer(serializers.Serializer[Any]):
    connector = serializers.CharField()
    vault_id = serializers.UUIDField()
    credential_id = serializers.UUIDField()
    name = serializers.CharField()
    binding = serializers.ChoiceField(choices=BINDINGS, help_text="How specific: pinned, project, team, ...")
    actions = serializers.ListField(
        child=serializers.CharField(), help_text="Its action_bindings: used only for these actions (unless pinned)."
    )
    vault_name = serializers.CharField()


class SessionPolicySerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    cedar = serializers.CharField()


class SessionEgressSerializer(serializers.Serializer[Any]):
    mode = serializers.ChoiceField(choices=EgressMode.choices)
    allow = serializers.ListField(child=serializers.CharField())
    plain_http = serializers.ListField(child=serializers.CharField())
    tcp = serializers.ListField(child=serializers.CharField())
    project_tcp = serializers.ListField(
        child=serializers.CharField(), help_text="The session's project's own TCP rules, besides `tcp`."
    )


class SessionShellPolicySerializer(serializers.Serializer[Any]):
    mode = serializers.ChoiceField(choices=ShellMode.choices)
    deny = serializers.ListField(child=serializers.CharField())
    allow = serializers.ListField(child=serializers.CharField())
    record_allowed = serializers.BooleanField()


class SessionContextSerializer(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()
    user_id = serializers.UUIDField()
    user_email = serializers.EmailField()
    organization_id = serializers.UUIDField()
    agent = serializers.CharField(help_text="The session token's name.")
    project_id = serializers.UUIDField(allow_null=True)
    team_ids = serializers.ListField(child=serializers.UUIDField(), help_text="The user's teams in the organization.")
    expires_at = serializers.DateTimeField()
    connectors = serializers.ListField(child=serializers.CharField(), help_text="Enabled for one of the user's teams.")
    credentials = SessionCredentialSerializer(
        many=True, help_text="Every credential the session may use, most specific first (policies.selectors)."
    )
    policies = SessionPolicySerializer(many=True, help_text="Enabled: the organization's and the user's teams'.")
    egress = SessionEgressSerializer()
    shell_policy = SessionShellPolicySerializer(help_text="What the sandbox's mediated shell enforces.")
    waiting = serializers.DictField(
        child=serializers.CharField(),
        help_text="Connector -> the team vault holding a credential for it that waits for an owner to confirm "
        "the user (for the proxy's no-credential message).",
    )


class SessionContextView(APIView):
    permission_classes = [IsServiceToken]

    @extend_schema(request=SessionContextRequest, responses=SessionContextSerializer)
    def post(self, request: Request) -> Response:
        data = SessionContextRequest(data=request.data)
        data.is_valid(raise_exception=True)
        found = selectors.session_context(session_token=data.validated_data["session_token"])
        body = {
            "session_id": found.session_id,
            "user_id": found.user_id,
            "user_email": found.user_email,
            "organization_id": found.organization_id,
            "agent": found.agent,
            "project_id": found.project_id,
            "team_ids": found.team_ids,
            "expires_at": found.expires_at,
            "connectors": found.connectors,
            "credentials": found.credentials,
            "policies": found.policies,
            "egress": {
                "mode": found.egress_mode,
                "allow": found.egress_allow,
                "plain_http": found.egress_plain_http,
                "tcp": found.egress_tcp,
                "project_tcp": found.project_tcp,
            },
            "shell_policy": found.shell_policy,
            "waiting": found.waiting,
        }
        return Response(SessionContextSerializer(body).data)
