"""URLs of the vaults API, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from vaults.api import dataplane, keyrelay
from vaults.api import views as v

VAULT = "orgs/<uuid:org_id>/vaults/<uuid:vault_id>/"

urlpatterns = [
    path("keys/", v.KeysView.as_view(), name="keys"),
    path("orgs/<uuid:org_id>/credentials/due/", v.DueCredentialsView.as_view({"get": "list"}), name="credentials-due"),
    path("dataplane/sessions/resolve/", dataplane.SessionResolveView.as_view(), name="dataplane-session-resolve"),
    path("dataplane/bundles/", dataplane.BundleView.as_view(), name="dataplane-bundle"),
    path("dataplane/sessions/alive/", dataplane.SessionAliveView.as_view(), name="dataplane-session-alive"),
    path("dataplane/rotations/export/", dataplane.RotationExportView.as_view(), name="dataplane-rotation-export"),
    path("dataplane/rotations/commit/", dataplane.RotationCommitView.as_view(), name="dataplane-rotation-commit"),
    path("dataplane/confirmations/export/", dataplane.ConfirmExportView.as_view(), name="dataplane-confirm-export"),
    path("dataplane/confirmations/commit/", dataplane.ConfirmCommitView.as_view(), name="dataplane-confirm-commit"),
    path("orgs/<uuid:org_id>/key-channel/", keyrelay.KeyChannelRelayView.as_view(), name="key-channel-relay"),
    path("dataplane/key-channel/pull/", keyrelay.KeyChannelPullView.as_view(), name="dataplane-key-channel-pull"),
    path(
        "dataplane/key-channel/<uuid:message_id>/answer/",
        keyrelay.KeyChannelAnswerView.as_view(),
        name="dataplane-key-channel-answer",
    ),
    path("orgs/<uuid:org_id>/vaults/", v.VaultViewSet.as_view({"get": "list", "post": "create"}), name="vault-list"),
    path(
        VAULT,
        v.VaultViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="vault-detail",
    ),
    path(VAULT + "wrapping/", v.VaultKeyViewSet.as_view({"get": "wrapping"}), name="vault-wrapping"),
    path(VAULT + "members/", v.VaultKeyViewSet.as_view({"post": "grant"}), name="vault-grant"),
    path(VAULT + "members/<uuid:user_id>/", v.VaultKeyViewSet.as_view({"delete": "revoke"}), name="vault-revoke"),
    path(VAULT + "export/", v.VaultKeyViewSet.as_view({"get": "export"}), name="vault-export"),
    path(VAULT + "rotations/", v.VaultKeyViewSet.as_view({"post": "rotate"}), name="vault-rotate"),
    path(
        VAULT + "credentials/", v.CredentialViewSet.as_view({"get": "list", "post": "create"}), name="credential-list"
    ),
    path(
        VAULT + "credentials/<uuid:credential_id>/",
        v.CredentialViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="credential-detail",
    ),
    path(
        VAULT + "credentials/<uuid:credential_id>/ciphertext/",
        v.CredentialViewSet.as_view({"get": "ciphertext"}),
        name="credential-ciphertext",
    ),
]
