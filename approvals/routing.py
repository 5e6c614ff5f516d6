"""Websocket routes of the approvals app (mounted by aileron_site.asgi behind approvals.middleware)."""

from __future__ import annotations

from django.urls import URLPattern, path

from approvals.consumers import ApprovalsConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/orgs/<uuid:org_id>/approvals/", ApprovalsConsumer.as_asgi(), name="ws-approvals"),
]
