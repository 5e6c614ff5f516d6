"""The ASGI entry point: Django for HTTP; the approvals websocket behind its origin check and token auth."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aileron_site.settings")

django_asgi_app = get_asgi_application()

# Django must be set up before these import models.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from approvals.middleware import websocket_stack  # noqa: E402
from approvals.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
    }
)
