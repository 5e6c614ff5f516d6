"""URLs of the runtime API, mounted under /api/v1/."""

from django.urls import path

from runtime.api.views import HealthView

urlpatterns = [path("health/", HealthView.as_view(), name="health")]
