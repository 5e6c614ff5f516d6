"""Endpoints for the data plane's credential service: service token only, ciphertext only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.permissions import IsServiceToken
from vaults import services
from vaults.api.serializers import Base64Field


class SessionResolveRequest(serializers.Serializer[Any]):
    session_token = serializers.CharField(max_length=200, required=False)
    session_id = serializers.UUIDField(required=False, help_text="Instead of the token (a relayed key channel).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("session_token" in attrs) == ("session_id" in attrs):
            raise serializers.ValidationError("Send session_token or session_id.")
        return attrs


class SessionKeysSerializer(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()
    user_id = serializers.UUIDField()
    organization_id = serializers.UUIDField()
    expires_at = serializers.DateTimeField()
    public_key = Base64Field()
    sealed_private_key = Base64Field()
    kdf = serializers.DictField()
    lookup = serializers.CharField(help_text="The session token's non-secret lookup part.")


class BundleRequest(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()
    vault_id = serializers.UUIDField()
    credential_id = serializers.UUIDField()


class BundleSerializer(serializers.Serializer[Any]):
    organization_id = serializers.UUIDField()
    vault_id = serializers.UUIDField()
    credential_id = serializers.UUIDField()
    key_version = serializers.IntegerField()
    wrapping = Base64Field()
    ciphertext = Base64Field()
    connector = serializers.CharField()
    credential_version = serializers.IntegerField(help_text="The value's version, for the audit.")


class SessionResolveView(APIView):
    permission_classes = [IsServiceToken]

    @extend_schema(request=SessionResolveRequest, responses=SessionKeysSerializer)
    def post(self, request: Request) -> Response:
        data = SessionResolveRequest(data=request.data)
        data.is_valid(raise_exception=True)
        found = services.session_keys_resolve(
            session_token=data.validated_data.get("session_token"), session_id=data.validated_data.get("session_id")
        )
        return Response(
            SessionKeysSerializer(
                {
                    "session_id": found.session_id,
                    "user_id": found.user_id,
                    "organization_id": found.organization_id,
                    "expires_at": found.expires_at,
                    "public_key": bytes(found.keys.public_key),
                    "sealed_private_key": bytes(found.keys.sealed_private_key),
                    "kdf": found.keys.kdf,
                    "lookup": found.lookup,
                }
            ).data
        )


class BundleView(APIView):
    permission_classes = [IsServiceToken]

    @extend_schema(request=BundleRequest, responses=BundleSerializer)
    def post(self, request: Request) -> Response:
        data = BundleRequest(data=request.data)
        data.is_valid(raise_exception=True)
        bundle = services.bundle_for_session(**data.validated_data)
        return Response(
            BundleSerializer(
                {
                    "organization_id": bundle.meta.organization_id,
                    "vault_id": bundle.meta.id,
                    "credential_id": bundle.credential.id,
                    "key_version": bundle.meta.key_version,
                    "wrapping": bundle.wrapping,
                    "ciphertext": bundle.ciphertext,
                    "connector": bundle.credential.connector,
                    "credential_version": bundle.credential.version,
                }
            ).data
        )


class RotationExportRequest(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()
    vault_id = serializers.UUIDField()


class RotationMemberSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    public_key = Base64Field()


class RotationExportSerializer(serializers.Serializer[Any]):
    organization_id = serializers.UUIDField()
    key_version = serializers.IntegerField()
    wrapping = Base64Field(help_text="The session user's wrapping of the current key.")
    members = RotationMemberSerializer(many=True)
    credentials = serializers.DictField(child=Base64Field())


class RotationCommitRequest(RotationExportRequest):
    from_version = serializers.IntegerField(min_value=1)
    credentials = serializers.DictField(child=Base64Field())
    wrappings = serializers.DictField(child=Base64Field())


class RotationResultSerializer(serializers.Serializer[Any]):
    key_version = serializers.IntegerField()


class RotationExportView(APIView):
    """For a vault owner's unlocked session in the credential service: what a rotation re-encrypts."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=RotationExportRequest, responses=RotationExportSerializer)
    def post(self, request: Request) -> Response:
        data = RotationExportRequest(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(RotationExportSerializer(services.rotation_export_for_session(**data.validated_data)).data)


class RotationCommitView(APIView):
    permission_classes = [IsServiceToken]

    @extend_schema(request=RotationCommitRequest, responses=RotationResultSerializer)
    def post(self, request: Request) -> Response:
        data = RotationCommitRequest(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        meta = services.rotation_commit_for_session(
            session_id=v["session_id"],
            vault_id=v["vault_id"],
            from_version=v["from_version"],
            blobs=v["credentials"],
            wrappings=v["wrappings"],
        )
        return Response({"key_version": meta.key_version})


class WaitingMemberSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    role = serializers.CharField()
    public_key = Base64Field()


class ConfirmExportSerializer(serializers.Serializer[Any]):
    organization_id = serializers.UUIDField()
    key_version = serializers.IntegerField()
    wrapping = Base64Field(help_text="The session user's (an owner's) wrapping of the current key.")
    waiting = WaitingMemberSerializer(many=True)


class ConfirmCommitRequest(RotationExportRequest):
    key_version = serializers.IntegerField(min_value=1)
    wrappings = serializers.DictField(child=Base64Field(), help_text="Waiting user id -> the key wrapped to them.")


class ConfirmResultSerializer(serializers.Serializer[Any]):
    confirmed = serializers.IntegerField()


class ConfirmExportView(APIView):
    """For a team-vault owner's unlocked session in the credential service: who waits for the key."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=RotationExportRequest, responses=ConfirmExportSerializer)
    def post(self, request: Request) -> Response:
        data = RotationExportRequest(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(ConfirmExportSerializer(services.confirm_export_for_session(**data.validated_data)).data)


class ConfirmCommitView(APIView):
    permission_classes = [IsServiceToken]

    @extend_schema(request=ConfirmCommitRequest, responses=ConfirmResultSerializer)
    def post(self, request: Request) -> Response:
        data = ConfirmCommitRequest(data=request.data)
        data.is_valid(raise_exception=True)
        done = services.confirm_commit_for_session(**data.validated_data)
        return Response({"confirmed": done})


class SessionAliveRequest(serializers.Serializer[Any]):
    session_id = serializers.UUIDField()


class SessionAliveView(APIView):
    """200 while the session is live (token, user, membership), 404 otherwise: lets the data plane wipe keys."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=SessionAliveRequest, responses=SessionAliveRequest)
    def post(self, request: Request) -> Response:
        data = SessionAliveRequest(data=request.data)
        data.is_valid(raise_exception=True)
        services.session_alive_check(session_id=data.validated_data["session_id"])
        return Response({"session_id": str(data.validated_data["session_id"])})
