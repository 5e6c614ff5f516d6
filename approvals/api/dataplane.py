"""The data plane's side of approvals (service token only): ask, wait for a decision, relay events."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.asyncviews import problem_response, released
from aileron_site.problems import NotFound
from approvals import events, services
from approvals.api import serializers as s
from approvals.models import ApprovalState
from tenants.api.permissions import IsServiceToken
from tenants.authentication import token_from_header

SETTLED_EVENTS = frozenset({"decided", "expired", "cancelled", "used"})  # not "voted": one of two


def claim_data(claim: services.Claim) -> dict[str, Any]:
    approval = claim.approval
    return {
        "id": str(approval.pk),
        "state": claim.state,
        "used_now": claim.used_now,
        "window_seconds": approval.window_seconds,
        "expires_at": approval.expires_at.isoformat(),
        "approvers": claim.approvers,
        "decision_reason": approval.decision_reason,
        "action": approval.action,
    }


class ApprovalClaimView(APIView):
    """Ask for (or use) the approval of one exact request. A grant in the answer has been used by this call."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=s.HeldRequestSerializer, responses=s.ClaimSerializer)
    def post(self, request: Request) -> Response:
        data = s.HeldRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        claim = services.approval_claim(held=services.HeldRequest(**data.validated_data))
        return Response(claim_data(claim))


class ApprovalReleaseView(APIView):
    """Give a used grant back: the agent went away before its request was sent (its retry may use it)."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=s.ReleaseSerializer, responses={204: None})
    def post(self, request: Request, approval_id: uuid.UUID) -> Response:
        data = s.ReleaseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not services.approval_release(approval_id=approval_id, request_id=data.validated_data["request_id"]):
            raise NotFound("No grant used by that request.")
        return Response(status=204)


class ApprovalEventRelayView(APIView):
    """Push events for approvals another process changed (the embedded default's worker has no shared layer)."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=s.RelaySerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        data = s.RelaySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        for approval_id in data.validated_data["approvals"]:
            events.publish_now(approval_id, data.validated_data["event"])
        return Response(status=204)


def _token_kind(header: str) -> str | None:
    token = token_from_header(header)
    return token.kind if token is not None else None


@method_decorator(csrf_exempt, name="dispatch")
class ApprovalWaitView(View):
    """Hold until the approval is decided (or `timeout` seconds pass), then say its state (using nothing).

    Async: a waiting data plane costs the API no thread. It listens on the approval's group, which the deciding
    process pushes to after commit (channels-redis across processes, in-memory within the API)."""

    http_method_names = ["post"]

    async def post(self, request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
        return await _wait(request, approval_id)

    async def http_method_not_allowed(  # type: ignore[override]  # async view: Django awaits it
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        return problem_response(405, "method-not-allowed", "Method not allowed", "POST {timeout}.")


async def _wait(request: HttpRequest, approval_id: uuid.UUID) -> HttpResponse:
    kind = await sync_to_async(released(_token_kind))(request.headers.get("authorization", ""))
    if kind is None:
        return problem_response(401, "not-authenticated", "Not authenticated", "This endpoint needs the service token.")
    if kind != "svc":
        return problem_response(403, "forbidden", "Forbidden", "This endpoint is for the data plane's service token.")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes
        return problem_response(400, "bad-request", "Bad request", "The body is not JSON.")
    form = s.WaitSerializer(data=body if isinstance(body, dict) else {})
    if not form.is_valid():
        return problem_response(400, "validation-error", "Invalid input", "Send {timeout: seconds}.")
    timeout = float(form.validated_data["timeout"])
    request_id = form.validated_data.get("request_id")
    peek = sync_to_async(released(services.approval_peek))
    use = sync_to_async(released(functools.partial(services.approval_use, announce=False)))
    layer = get_channel_layer()
    group = events.approval_group(approval_id)
    channel = await layer.new_channel() if layer is not None else ""
    if layer is not None:
        await layer.group_add(group, channel)
    try:
        try:
            claim = await peek(approval_id=approval_id)
        except NotFound:
            return problem_response(404, "not-found", "Not found", "No such approval.")
        if claim.state == ApprovalState.PENDING and layer is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), remaining)
                except TimeoutError:
                    break
                if message.get("event") in SETTLED_EVENTS:
                    break
            # One round trip less for the held request: the wait itself uses the grant when asked to.
            claim = await (
                use(approval_id=approval_id, request_id=request_id) if request_id else peek(approval_id=approval_id)
            )
        elif claim.state == ApprovalState.GRANTED and request_id:
            claim = await use(approval_id=approval_id, request_id=request_id)
    finally:
        if layer is not None:
            await layer.group_discard(group, channel)
    if claim.used_now:
        # The held request goes upstream as soon as this answer arrives; people's screens learn of it after.
        task = asyncio.get_running_loop().create_task(_announce_used(claim.approval.pk))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
    return JsonResponse(claim_data(claim))


_BACKGROUND: set[asyncio.Task[None]] = set()


async def _announce_used(approval_id: uuid.UUID) -> None:
    await asyncio.sleep(0)  # let the answer go out first
    await sync_to_async(released(events.publish_now))(approval_id, "used")
