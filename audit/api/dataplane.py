"""The data plane ships its audit spool here: service token only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.problems import InvalidInput, Problem
from audit import services
from audit.api.serializers import AuditBatchResultSerializer, AuditBatchSerializer
from audit.records import MAX_RECORDS_PER_BATCH
from tenants.api.permissions import IsServiceToken


class TooManyRecords(Problem):
    status = 413
    slug = "too-many-records"
    title = "Too many records"


class AuditIngestView(APIView):
    """Store a batch of attempt and outcome records. Idempotent: re-send a batch after any failure."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=AuditBatchSerializer, responses=AuditBatchResultSerializer)
    def post(self, request: Request) -> Response:
        body: Any = request.data
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise InvalidInput('Send {"records": [...]}.')
        if len(records) > MAX_RECORDS_PER_BATCH:
            raise TooManyRecords(
                f"A batch holds at most {MAX_RECORDS_PER_BATCH} records; this one has {len(records)}.",
                max_records=MAX_RECORDS_PER_BATCH,
            )
        result = services.audit_ingest(records=records)
        return Response(AuditBatchResultSerializer({"accepted": result.accepted, "rejected": result.rejected}).data)
