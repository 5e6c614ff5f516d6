"""URLs of the tenants API, mounted under /api/v1/."""

from __future__ import annotations

from typing import Any

from django.urls import path

from tenants.api import views as v

LIST: Any = {"get": "list", "post": "create"}
DETAIL: Any = {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
READ_DELETE: Any = {"get": "retrieve", "delete": "destroy"}

urlpatterns = [
    path("signup/", v.SignupView.as_view(), name="signup"),
    path("invitations/accept/", v.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("whoami/", v.WhoAmIView.as_view(), name="whoami"),
    path("tokens/", v.PersonalTokenViewSet.as_view(LIST), name="token-list"),
    path("tokens/<uuid:token_id>/", v.PersonalTokenViewSet.as_view(READ_DELETE), name="token-detail"),
    path("orgs/", v.OrganizationListView.as_view({"get": "list", "post": "create"}), name="org-list"),
    path("orgs/<uuid:org_id>/", v.OrganizationViewSet.as_view(DETAIL), name="org-detail"),
    path("orgs/<uuid:org_id>/members/", v.MemberViewSet.as_view({"get": "list"}), name="member-list"),
    path("orgs/<uuid:org_id>/members/<uuid:member_id>/", v.MemberViewSet.as_view(DETAIL), name="member-detail"),
    path("orgs/<uuid:org_id>/invitations/", v.InvitationViewSet.as_view(LIST), name="invitation-list"),
    path(
        "orgs/<uuid:org_id>/invitations/<uuid:invitation_id>/",
        v.InvitationViewSet.as_view(READ_DELETE),
        name="invitation-detail",
    ),
    path("orgs/<uuid:org_id>/teams/", v.TeamViewSet.as_view(LIST), name="team-list"),
    path("orgs/<uuid:org_id>/teams/<uuid:team_id>/", v.TeamViewSet.as_view(DETAIL), name="team-detail"),
    path(
        "orgs/<uuid:org_id>/teams/<uuid:team_id>/members/",
        v.TeamMemberViewSet.as_view(LIST),
        name="team-member-list",
    ),
    path(
        "orgs/<uuid:org_id>/teams/<uuid:team_id>/members/<uuid:user_id>/",
        v.TeamMemberViewSet.as_view({"delete": "destroy"}),
        name="team-member-detail",
    ),
    path("orgs/<uuid:org_id>/projects/", v.ProjectViewSet.as_view(LIST), name="project-list"),
    path(
        "orgs/<uuid:org_id>/projects/<uuid:project_id>/",
        v.ProjectViewSet.as_view(DETAIL),
        name="project-detail",
    ),
    path("orgs/<uuid:org_id>/session-tokens/", v.SessionTokenViewSet.as_view(LIST), name="session-token-list"),
    path(
        "orgs/<uuid:org_id>/session-tokens/<uuid:token_id>/",
        v.SessionTokenViewSet.as_view(READ_DELETE),
        name="session-token-detail",
    ),
]
