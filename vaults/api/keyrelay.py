"""The key-channel relay's endpoints (vaults.keyrelay): a person's CLI asks, the data plane pulls and answers.

The two waits are async views, as the approvals' wait is: a CLI waiting for its answer and a data plane
waiting for work cost the API no thread. The database holds each request; the channel layer only wakes the
waiter early (a missed wake costs at most RECHECK_SECONDS).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aileron_site.asyncviews import problem_response, released
from aileron_site.problems import NotFound, Problem
from tenants.api.permissions import IsServiceToken
from tenants.authentication import token_from_header
from tenants.models import Membership, TokenKind
from tenants.selectors import organization_get_for_user
from vaults import keyrelay
from vaults.models import KeyChannelMessage

ANSWER_WAIT_SECONDS = 25.0  # an `open` makes the data plane call the control plane itself: give it room
MAX_PULL_SECONDS = 30.0
RECHECK_SECONDS = 5.0  # the channel layer wakes a waiter at once; this is the fallback, and database load
MAX_BODY = 16 * 1024
REQUESTS_GROUP = "keyrelay.requests"


def answer_group(message_id: uuid.UUID | str) -> str:
    return f"keyrelay.answer.{message_id}"


def _from(problem: Problem) -> HttpResponse:
    return problem_response(problem.status, problem.slug, problem.title, problem.detail)


def _json_body(request: HttpRequest) -> dict[str, Any] | None:
    if len(request.body) > MAX_BODY:
        return None
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _wake(group: str) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, {"type": "keyrelay.wake"})


async def _wait_for[T](group: str, check: Callable[[], Any], timeout: float) -> T | None:
    """Until `check()` (run in a thread, connection released) gives something not None, or `timeout` passes."""
    layer = get_channel_layer()
    channel = await layer.new_channel() if layer is not None else ""
    if layer is not None:
        await layer.group_add(group, channel)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = sync_to_async(released(check))
        while True:
            found = await checked()
            remaining = deadline - loop.time()
            if found is not None or remaining <= 0:
                return found  # type: ignore[no-any-return]
            try:
                if layer is None:
                    raise TimeoutError
                await asyncio.wait_for(layer.receive(channel), min(remaining, RECHECK_SECONDS))
            except TimeoutError:
                await asyncio.sleep(0.05 if layer is None else 0)
    finally:
        if layer is not None:
            await layer.group_discard(group, channel)


def _post_for(header: str, org_id: uuid.UUID, body: dict[str, Any]) -> KeyChannelMessage | HttpResponse:
    token = token_from_header(header)
    if token is None:
        return problem_response(
            401, "not-authenticated", "Not authenticated", "Send your personal token (aileron login)."
        )
    if token.kind != TokenKind.PERSONAL or token.user is None:
        return problem_response(403, "forbidden", "Forbidden", "Only a person's own token relays to the key channel.")
    try:
        membership: Membership = organization_get_for_user(user=token.user, organization_id=org_id)
        with transaction.atomic():
            message = keyrelay.keyrelay_post(membership=membership, op=str(body.get("op", "")), body=body)
            transaction.on_commit(lambda: _wake(REQUESTS_GROUP))
    except Problem as problem:
        return _from(problem)
    return message


@method_decorator(csrf_exempt, name="dispatch")
class KeyChannelRelayView(View):
    """POST one key-channel request ({op, …} as on the socket; attest, open, status or close) for the
    organization's data plane; the answer is the data plane's, as the socket would give it: {"answer": {…}}."""

    http_method_names = ["post"]

    async def post(self, request: HttpRequest, org_id: uuid.UUID) -> HttpResponse:
        body = _json_body(request)
        if body is None:
            return problem_response(400, "bad-request", "Bad request", "Send one JSON object: {op, …}.")
        posted = await sync_to_async(released(_post_for))(request.headers.get("authorization", ""), org_id, body)
        if isinstance(posted, HttpResponse):
            return posted
        message_id = posted.pk
        try:
            answer: dict[str, Any] | None = await _wait_for(
                answer_group(message_id),
                functools.partial(keyrelay.keyrelay_take, message_id=message_id),
                ANSWER_WAIT_SECONDS,
            )
        finally:
            await sync_to_async(released(keyrelay.keyrelay_forget))(message_id=message_id)
        if answer is None:
            return problem_response(
                504,
                "data-plane-timeout",
                "No answer from the data plane",
                f"No data plane answered within {ANSWER_WAIT_SECONDS:.0f} s: is the organization's data plane "
                "running, and can it reach this server?",
            )
        return JsonResponse({"answer": answer})

    async def http_method_not_allowed(  # type: ignore[override]  # async view: Django awaits it
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        return problem_response(405, "method-not-allowed", "Method not allowed", "POST {op, …}.")


def _claimed() -> list[dict[str, Any]] | None:
    keyrelay.keyrelay_sweep()
    claimed = keyrelay.keyrelay_claim()
    return [{"id": str(m.pk), "op": m.op, "body": m.body, "requester": str(m.user_id)} for m in claimed] or None


@method_decorator(csrf_exempt, name="dispatch")
class KeyChannelPullView(View):
    """The data plane's long poll (service token): the waiting requests, as soon as there are any, or none after
    `timeout` seconds. Each request is handed out once."""

    http_method_names = ["post"]

    async def post(self, request: HttpRequest) -> HttpResponse:
        token = await sync_to_async(released(token_from_header))(request.headers.get("authorization", ""))
        if token is None:
            return problem_response(
                401, "not-authenticated", "Not authenticated", "This endpoint needs the service token."
            )
        if token.kind != TokenKind.SERVICE:
            return problem_response(
                403, "forbidden", "Forbidden", "This endpoint is for the data plane's service token."
            )
        body = _json_body(request)
        timeout = body.get("timeout") if body is not None else None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_PULL_SECONDS:
            return problem_response(
                400, "validation-error", "Invalid input", f"Send {{timeout: 0 to {MAX_PULL_SECONDS:.0f}}}."
            )
        claimed: list[dict[str, Any]] | None = await _wait_for(REQUESTS_GROUP, _claimed, float(timeout))
        return JsonResponse({"requests": claimed or []})

    async def http_method_not_allowed(  # type: ignore[override]
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        return problem_response(405, "method-not-allowed", "Method not allowed", "POST {timeout}.")


class AnswerRequest(serializers.Serializer[Any]):
    answer = serializers.DictField()


class KeyChannelAnswerView(APIView):
    """The data plane's answer to a request it pulled; 404 when nobody waits for it any more."""

    permission_classes = [IsServiceToken]

    @extend_schema(request=AnswerRequest, responses={204: None})
    def post(self, request: Request, message_id: uuid.UUID) -> Response:
        data = AnswerRequest(data=request.data)
        data.is_valid(raise_exception=True)
        if not keyrelay.keyrelay_answer(message_id=message_id, answer=dict(data.validated_data["answer"])):
            raise NotFound("Nobody waits for that request.")
        transaction.on_commit(lambda: _wake(answer_group(message_id)))
        return Response(status=204)
