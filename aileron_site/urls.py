"""Root URLs: the versioned REST API, its schema and docs, health, and the approvals web page."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from approvals import web as approvals_web

urlpatterns = [
    path("api/v1/", include("tenants.api.urls")),
    path("api/v1/", include("vaults.api.urls")),
    path("api/v1/", include("connectors.api.urls")),
    path("api/v1/", include("policies.api.urls")),
    path("api/v1/", include("runtime.api.urls")),
    path("api/v1/", include("audit.api.urls")),
    path("api/v1/", include("approvals.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("approvals/", approvals_web.approvals_page, name="approvals-page"),
    path("approvals/<uuid:org_id>/", approvals_web.approvals_page, name="approvals-page-org"),
]

handler400 = "aileron_site.problems.handler400"
handler403 = "aileron_site.problems.handler403"
handler404 = "aileron_site.problems.handler404"
handler500 = "aileron_site.problems.handler500"
