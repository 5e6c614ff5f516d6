"""URLs of the policies API and the data plane's session context, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from policies.api import dataplane
from policies.api import views as v

urlpatterns = [
    path("dataplane/sessions/context/", dataplane.SessionContextView.as_view(), name="dataplane-session-context"),
    path(
        "orgs/<uuid:org_id>/policies/", v.PolicyViewSet.as_view({"get": "list", "post": "create"}), name="policy-list"
    ),
    path(
        "orgs/<uuid:org_id>/policies/<uuid:policy_id>/",
        v.PolicyViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="policy-detail",
    ),
    path("orgs/<uuid:org_id>/egress/", v.EgressViewSet.as_view({"get": "retrieve", "put": "update"}), name="egress"),
    path(
        "orgs/<uuid:org_id>/projects/<uuid:project_id>/egress/",
        v.ProjectEgressViewSet.as_view({"get": "retrieve", "put": "update"}),
        name="project-egress",
    ),
    path(
        "orgs/<uuid:org_id>/credential-choice/",
        v.CredentialChoiceView.as_view({"get": "retrieve"}),
        name="credential-choice",
    ),
    path(
        "orgs/<uuid:org_id>/shell-policy/",
        v.ShellPolicyViewSet.as_view({"get": "retrieve", "put": "update"}),
        name="shell-policy",
    ),
]
