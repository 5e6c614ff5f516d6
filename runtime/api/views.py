"""Health: public, cheap, and honest about the worker."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runtime.services import health_get

HealthSerializer = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "degraded"]),
        "version": serializers.CharField(),
        "mode": serializers.CharField(),
        "database": serializers.CharField(),
        "channel_layer": serializers.CharField(),
        "broker": serializers.CharField(),
        "worker_seen_at": serializers.DateTimeField(allow_null=True),
        "worker_age_seconds": serializers.FloatField(allow_null=True),
        "proxy": serializers.CharField(
            allow_null=True, help_text="HOST:PORT of the data plane's proxy for agents (what `aileron launch` uses)."
        ),
    },
)


class HealthView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(responses=HealthSerializer)
    def get(self, request: Request) -> Response:
        return Response(asdict(health_get()))
