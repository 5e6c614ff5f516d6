"""Root URLs: the versioned REST API, its schema and docs, and health."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

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
]

handler400 = "aileron_site.problems.handler400"
handler403 = "aileron_site.problems.handler403"
handler404 = "aileron_site.problems.handler404"
handler500 = "aileron_site.problems.handler500"
