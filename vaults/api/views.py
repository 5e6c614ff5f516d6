"""Thin views over vaults.services. Ciphertext and wrappings go only to vault members."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.problems import NotFound
from tenants import selectors as tenant_selectors
from tenants.api.views import OrgScopedViewSet, request_user
from tenants.permissions import Perm
from vaults import services
from vaults.api import serializers as s
from vaults.backend import vault_store
from vaults.models import Vault


def _vault_body(view: services.VaultView) -> dict[str, Any]:
    meta = view.meta
    return dict(
        s.VaultSerializer(
            {
                "id": meta.id,
                "name": meta.name,
                "type": meta.type,
                "owner_id": meta.owner_id,
                "created_at": meta.created_at,
                "key_version": meta.key_version,
                "rotation_pending": asdict(meta.rotation) if meta.rotation else None,
                "members": [asdict(m) for m in view.members],
                "my_role": view.my_role,
                "team": view.vault.team.slug if view.vault.team is not None else None,
                "project": view.vault.project.slug if view.vault.project is not None else None,
                "auto_confirm": view.vault.auto_confirm,
                "waiting": [
                    {"user_id": p.user_id, "email": p.user.email, "role": p.role, "since": p.requested_at}
                    for p in view.waiting
                ],
                "i_wait": view.i_wait,
            }
        ).data
    )


class KeysView(APIView):
    """The caller's own key material: public key and the sealed private key only their passphrase opens."""

    @extend_schema(responses=s.KeysSerializer)
    def get(self, request: Request) -> Response:
        keys = services.user_keys_get(user=request_user(request))
        return Response(s.KeysSerializer(keys).data)

    @extend_schema(request=s.KeysSerializer, responses={201: s.KeysSerializer})
    def put(self, request: Request) -> Response:
        data = s.KeysSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        keys = services.user_keys_set(user=request_user(request), **data.validated_data)
        return Response(s.KeysSerializer(keys).data, status=status.HTTP_201_CREATED)


class VaultViewSet(OrgScopedViewSet):
    serializer_class = s.VaultSerializer
    queryset = Vault.objects.none()  # for the schema's path parameters only; rows come from vaults.services
    permission_map = {
        "list": Perm.ORG_VIEW,
        "create": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "partial_update": Perm.ORG_VIEW,
        "destroy": Perm.ORG_VIEW,
    }
    pagination_class = None

    def _get(self, vault_id: uuid.UUID, member_only: bool = True) -> services.VaultView:
        return services.vault_get_for(membership=self.membership, vault_id=vault_id, member_only=member_only)

    @extend_schema(responses=s.VaultSerializer(many=True))
    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response([_vault_body(v) for v in services.vault_list_for(membership=self.membership)])

    @extend_schema(request=s.VaultCreateSerializer, responses={201: s.VaultSerializer})
    def create(self, request: Request, org_id: uuid.UUID) -> Response:
        data = s.VaultCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        team = None
        if v.get("team") is not None:
            try:
                team = tenant_selectors.team_get(organization=self.organization, team_id=v["team"])
            except NotFound:
                raise exceptions.ValidationError({"team": ["No such team in this organization."]}) from None
        project = None
        if v.get("project") is not None:
            try:
                project = tenant_selectors.project_get(organization=self.organization, project_id=v["project"])
            except NotFound:
                raise exceptions.ValidationError({"project": ["No such project in this organization."]}) from None
        view = services.vault_create(
            acting=self.membership,
            vault_id=v["id"],
            name=v["name"],
            type=v["type"],
            owner_wrapping=v["wrapping"],
            team=team,
            project=project,
            auto_confirm=v["auto_confirm"],
        )
        return Response(_vault_body(view), status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        return Response(_vault_body(self._get(vault_id, member_only=False)))

    @extend_schema(request=s.VaultRenameSerializer)
    def partial_update(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        vault = self._get(vault_id)
        data = s.VaultRenameSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        view = services.vault_rename(acting=self.membership, view=vault, name=data.validated_data["name"])
        return Response(_vault_body(view))

    def destroy(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        services.vault_delete(acting=self.membership, view=self._get(vault_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class VaultKeyViewSet(OrgScopedViewSet):
    """Key handling of one vault: the caller's wrapping, grant, revoke, and rotation (owners)."""

    serializer_class = s.WrappingSerializer
    permission_map = {
        "wrapping": Perm.ORG_VIEW,
        "grant": Perm.ORG_VIEW,
        "revoke": Perm.ORG_VIEW,
        "export": Perm.ORG_VIEW,
        "rotate": Perm.ORG_VIEW,
    }

    def _get(self, vault_id: uuid.UUID) -> services.VaultView:
        return services.vault_get_for(membership=self.membership, vault_id=vault_id)

    @extend_schema(responses=s.WrappingSerializer)
    def wrapping(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        view = self._get(vault_id)
        version, wrapping = vault_store().wrapping(view.id, str(self.membership.user_id))
        if wrapping is None:
            raise NotFound("You hold no key for this vault.")
        return Response(s.WrappingSerializer({"key_version": version, "wrapping": wrapping}).data)

    @extend_schema(request=s.GrantSerializer, responses={201: s.VaultSerializer})
    def grant(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        view = self._get(vault_id)
        data = s.GrantSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.vault_grant(acting=self.membership, view=view, **data.validated_data)
        return Response(_vault_body(self._get(vault_id)), status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.VaultSerializer)
    def revoke(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        view = self._get(vault_id)
        services.vault_revoke(acting=self.membership, view=view, user_id=user_id)
        if user_id == self.membership.user_id:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_vault_body(self._get(vault_id)))

    @extend_schema(responses=s.ExportSerializer)
    def export(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        meta, members, blobs = services.vault_export(view=self._get(vault_id))
        keys = services.member_public_keys(members)
        body = {
            "key_version": meta.key_version,
            "members": [{"user_id": m.user_id, "role": m.role, "public_key": keys[m.user_id]} for m in members],
            "credentials": blobs,
        }
        return Response(s.ExportSerializer(body).data)

    @extend_schema(request=s.RotateSerializer, responses=s.VaultSerializer)
    def rotate(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        view = self._get(vault_id)
        data = s.RotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        services.vault_rotate(
            acting=self.membership,
            view=view,
            from_version=v["from_version"],
            blobs=v["credentials"],
            wrappings=v["wrappings"],
        )
        return Response(_vault_body(self._get(vault_id)))


class DueCredentialsView(OrgScopedViewSet):
    """Credentials of the vaults you own that expire or are due for replacement within a week, soonest first."""

    serializer_class = s.DueCredentialSerializer
    queryset = Vault.objects.none()  # for the schema's path parameters only
    permission_map = {"list": Perm.ORG_VIEW}
    pagination_class = None

    @extend_schema(responses=s.DueCredentialSerializer(many=True))
    def list(self, request: Request, org_id: uuid.UUID) -> Response:
        due = services.credentials_due(membership=self.membership)
        body = [
            {
                "vault_id": d.vault.id,
                "vault": d.vault.meta.name,
                "credential_id": d.credential.id,
                "name": d.credential.name,
                "connector": d.credential.connector,
                "version": d.credential.version,
                "why": d.why,
                "due_at": d.due_at,
            }
            for d in due
        ]
        return Response(s.DueCredentialSerializer(body, many=True).data)


class CredentialViewSet(OrgScopedViewSet):
    serializer_class = s.CredentialSerializer
    queryset = Vault.objects.none()  # for the schema's path parameters only
    permission_map = {
        "list": Perm.ORG_VIEW,
        "create": Perm.ORG_VIEW,
        "retrieve": Perm.ORG_VIEW,
        "destroy": Perm.ORG_VIEW,
        "update": Perm.ORG_VIEW,
        "ciphertext": Perm.ORG_VIEW,
    }
    pagination_class = None

    @extend_schema(responses=s.CredentialSerializer(many=True))
    def list(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id, member_only=False)
        metas = services.credential_list(view=view)
        return Response(s.CredentialSerializer([asdict(m) for m in metas], many=True).data)

    @extend_schema(request=s.CredentialCreateSerializer, responses={201: s.CredentialSerializer})
    def create(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id)
        data = s.CredentialCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        meta = services.credential_add(
            view=view,
            acting_user_id=self.membership.user_id,
            credential_id=v["id"],
            name=v["name"],
            connector=v["connector"],
            ciphertext=v["ciphertext"],
            action_bindings=v["action_bindings"],
        )
        return Response(s.CredentialSerializer(asdict(meta)).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID, credential_id: uuid.UUID) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id, member_only=False)
        meta, _ = services.credential_get(view=view, credential_id=credential_id)
        return Response(s.CredentialSerializer(asdict(meta)).data)

    @extend_schema(request=s.CredentialUpdateSerializer, responses=s.CredentialSerializer)
    def update(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID, credential_id: uuid.UUID) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id)
        data = s.CredentialUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        expires = v.get("expires_at", ...)
        meta = services.credential_update(
            view=view,
            acting_user_id=self.membership.user_id,
            credential_id=credential_id,
            ciphertext=v["ciphertext"],
            expires_at=None if expires is ... else (expires.isoformat() if expires else ""),
            rotate_every_days=v.get("rotate_every_days"),
        )
        return Response(s.CredentialSerializer(asdict(meta)).data)

    def destroy(self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID, credential_id: uuid.UUID) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id)
        services.credential_remove(view=view, credential_id=credential_id, acting_user_id=self.membership.user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=s.CiphertextSerializer)
    def ciphertext(
        self, request: Request, org_id: uuid.UUID, vault_id: uuid.UUID, credential_id: uuid.UUID
    ) -> Response:
        view = services.vault_get_for(membership=self.membership, vault_id=vault_id)
        meta, blob = services.credential_get(view=view, credential_id=credential_id)
        return Response(s.CiphertextSerializer({"key_version": meta.key_version, "ciphertext": blob}).data)
