"""URLs of the connectors API, mounted under /api/v1/."""

from django.urls import path

from connectors.api.views import ConnectorViewSet

urlpatterns = [
    path("orgs/<uuid:org_id>/connectors/", ConnectorViewSet.as_view({"get": "list"}), name="connector-list"),
    path(
        "orgs/<uuid:org_id>/connectors/<slug:name>/",
        ConnectorViewSet.as_view({"get": "retrieve"}),
        name="connector-detail",
    ),
    path(
        "orgs/<uuid:org_id>/connectors/<slug:name>/teams/<uuid:team_id>/",
        ConnectorViewSet.as_view({"put": "enable", "delete": "disable"}),
        name="connector-team",
    ),
]
