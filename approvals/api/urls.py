"""URLs of the approvals API and the data plane's approval endpoints, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from approvals.api import dataplane
from approvals.api import views as v

urlpatterns = [
    path("dataplane/approvals/", dataplane.ApprovalClaimView.as_view(), name="dataplane-approval-claim"),
    path("dataplane/approvals/events/", dataplane.ApprovalEventRelayView.as_view(), name="dataplane-approval-events"),
    path(
        "dataplane/approvals/<uuid:approval_id>/wait/",
        dataplane.ApprovalWaitView.as_view(),
        name="dataplane-approval-wait",
    ),
    path(
        "dataplane/approvals/<uuid:approval_id>/release/",
        dataplane.ApprovalReleaseView.as_view(),
        name="dataplane-approval-release",
    ),
    path("orgs/<uuid:org_id>/approvals/", v.ApprovalViewSet.as_view({"get": "list"}), name="approval-list"),
    path(
        "orgs/<uuid:org_id>/approvals/<uuid:approval_id>/",
        v.ApprovalViewSet.as_view({"get": "retrieve"}),
        name="approval-detail",
    ),
    path(
        "orgs/<uuid:org_id>/approvals/<uuid:approval_id>/grant/",
        v.ApprovalViewSet.as_view({"post": "grant"}),
        name="approval-grant",
    ),
    path(
        "orgs/<uuid:org_id>/approvals/<uuid:approval_id>/reject/",
        v.ApprovalViewSet.as_view({"post": "reject"}),
        name="approval-reject",
    ),
    path(
        "orgs/<uuid:org_id>/approvals/<uuid:approval_id>/cancel/",
        v.ApprovalViewSet.as_view({"post": "cancel"}),
        name="approval-cancel",
    ),
    path(
        "orgs/<uuid:org_id>/approval-rules/",
        v.ApprovalRuleViewSet.as_view({"get": "list", "post": "create"}),
        name="approval-rule-list",
    ),
    path(
        "orgs/<uuid:org_id>/approval-rules/<uuid:rule_id>/",
        v.ApprovalRuleViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="approval-rule-detail",
    ),
    path(
        "orgs/<uuid:org_id>/notification-channels/",
        v.NotificationChannelViewSet.as_view({"get": "list", "post": "create"}),
        name="notification-channel-list",
    ),
    path(
        "orgs/<uuid:org_id>/notification-channels/<uuid:channel_id>/",
        v.NotificationChannelViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="notification-channel-detail",
    ),
    path(
        "orgs/<uuid:org_id>/notification-channels/<uuid:channel_id>/test/",
        v.NotificationChannelViewSet.as_view({"post": "test"}),
        name="notification-channel-test",
    ),
    path("approval-links/open/", v.ApprovalLinkOpenView.as_view(), name="approval-link-open"),
    path("approval-links/decide/", v.ApprovalLinkDecideView.as_view(), name="approval-link-decide"),
]
