"""URLs of the audit API, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from audit.api import dataplane
from audit.api.views import (
    AdminEventViewSet,
    AuditCheckpointViewSet,
    AuditRecordViewSet,
    AuditRetentionViewSet,
    AuditVerifyViewSet,
    UsageViewSet,
)

urlpatterns = [
    path("dataplane/audit/", dataplane.AuditIngestView.as_view(), name="dataplane-audit"),
    path("orgs/<uuid:org_id>/audit/admin/", AdminEventViewSet.as_view({"get": "list"}), name="admin-event-list"),
    path(
        "orgs/<uuid:org_id>/audit/admin/<uuid:event_id>/",
        AdminEventViewSet.as_view({"get": "retrieve"}),
        name="admin-event-detail",
    ),
    path("orgs/<uuid:org_id>/audit/", AuditRecordViewSet.as_view({"get": "list"}), name="audit-list"),
    path("orgs/<uuid:org_id>/usage/", UsageViewSet.as_view({"get": "retrieve"}), name="usage"),
    path(
        "orgs/<uuid:org_id>/audit/verify/",
        AuditVerifyViewSet.as_view({"get": "retrieve", "post": "create"}),
        name="audit-verify",
    ),
    path(
        "orgs/<uuid:org_id>/audit/retention/",
        AuditRetentionViewSet.as_view({"get": "retrieve", "put": "update"}),
        name="audit-retention",
    ),
    path(
        "orgs/<uuid:org_id>/audit/checkpoint/",
        AuditCheckpointViewSet.as_view({"get": "retrieve", "post": "create"}),
        name="audit-checkpoint",
    ),
    path(
        "orgs/<uuid:org_id>/audit/<uuid:record_id>/",
        AuditRecordViewSet.as_view({"get": "retrieve"}),
        name="audit-detail",
    ),
]
