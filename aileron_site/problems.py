"""RFC 9457 problem details: the one error shape of the API (and, later, of the proxy).

Services raise `Problem` subclasses; DRF's and Django's own exceptions are translated here, so no view
builds an error body by hand and no error path can leak a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:aileron:problem:"


class Problem(Exception):
    """A failure the caller can act on; `slug` is the stable part of its `type`."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Conflict(Problem):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Forbidden(Problem):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(Problem):
    status = 404
    slug = "not-found"
    title = "Not found"


class InvalidInput(Problem):
    status = 400
    slug = "validation-error"
    title = "Invalid input"


def problem_body(
    *, status: int, slug: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def _flatten(errors: Any, pointer: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested error structure into RFC 9457-style entries with JSON pointers."""
    if isinstance(errors, dict):
        out: list[dict[str, str]] = []
        for key, value in errors.items():
            sub = pointer if key in ("non_field_errors", "detail") else f"{pointer}/{key}"
            out.extend(_flatten(value, sub))
        return out
    if isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            return [{"pointer": pointer or "/", "detail": str(item)} for item in errors]
        out = []
        for index, item in enumerate(errors):
            out.extend(_flatten(item, f"{pointer}/{index}"))
        return out
    return [{"pointer": pointer or "/", "detail": str(errors)}]


_DRF_MAP: list[tuple[type[drf.APIException], str, str]] = [
    (drf.NotAuthenticated, "not-authenticated", "Authentication required"),
    (drf.AuthenticationFailed, "authentication-failed", "Authentication failed"),
    (drf.PermissionDenied, "forbidden", "Forbidden"),
    (drf.NotFound, "not-found", "Not found"),
    (drf.MethodNotAllowed, "method-not-allowed", "Method not allowed"),
    (drf.NotAcceptable, "not-acceptable", "Not acceptable"),
    (drf.UnsupportedMediaType, "unsupported-media-type", "Unsupported media type"),
    (drf.ParseError, "malformed-request", "Malformed request"),
    (drf.Throttled, "rate-limited", "Too many requests"),
    (drf.ValidationError, "validation-error", "Invalid input"),
]


def _respond(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=body["status"], headers=headers)
    response.content_type = CONTENT_TYPE
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    request = context.get("request")
    instance = request.path if request is not None else None

    if isinstance(exc, Problem):
        return _respond(
            problem_body(
                status=exc.status,
                slug=exc.slug,
                title=exc.title,
                detail=exc.detail,
                instance=instance,
                **exc.extra,
            )
        )
    if isinstance(exc, IntegrityError):  # a concurrent request won a uniqueness race
        return _respond(
            problem_body(
                status=409,
                slug="conflict",
                title="Conflict",
                detail="The request conflicts with a concurrent change; retry it.",
                instance=instance,
            )
        )
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _respond(
            problem_body(
                status=413,
                slug="payload-too-large",
                title="Payload too large",
                detail=f"The request body is larger than the {limit} bytes accepted.",
                instance=instance,
                max_bytes=limit,
            )
        )
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if not isinstance(exc, drf.APIException):
        return None  # a bug: Django's handler500 answers with a problem body and the traceback goes to the log

    slug, title = "error", "Error"
    for klass, map_slug, map_title in _DRF_MAP:
        if isinstance(exc, klass):
            slug, title = map_slug, map_title
            break
    extra: dict[str, Any] = {}
    if isinstance(exc, drf.ValidationError):
        extra["errors"] = _flatten(exc.detail)
        detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in extra["errors"][:5]) or "invalid input"
    else:
        detail = str(exc.detail)
    headers: dict[str, str] = {}
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="aileron"'
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf.Throttled) and wait is not None:
        headers["Retry-After"] = str(int(wait))
        extra["retry_after"] = int(wait)
    return _respond(
        problem_body(status=exc.status_code, slug=slug, title=title, detail=detail, instance=instance, **extra),
        headers,
    )


def _django_problem(request: HttpRequest, status: int, slug: str, title: str, detail: str) -> HttpResponse:
    body = problem_body(status=status, slug=slug, title=title, detail=detail, instance=request.path)
    return JsonResponse(body, status=status, content_type=CONTENT_TYPE)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 400, "bad-request", "Bad request", "The request could not be understood.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 403, "forbidden", "Forbidden", "You may not do this.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 404, "not-found", "Not found", "No such resource.")


def handler500(request: HttpRequest) -> HttpResponse:
    return _django_problem(
        request,
        500,
        "internal-error",
        "Internal error",
        "The server failed; the error was logged. Retrying may help.",
    )
