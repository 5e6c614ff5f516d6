"""Shared REST plumbing: the JSON parser, pagination and filtering for every list."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from django_filters.filters import IsoDateTimeFilter
from django_filters.rest_framework import DjangoFilterBackend
from django_scopes import scopes_disabled
from rest_framework.exceptions import ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser as RestJSONParser
from rest_framework.request import Request

from aileron_site.problems import InvalidInput


class JSONParser(RestJSONParser):
    """DRF's JSON parser, with input nested deeper than Python's decoder goes a 400 instead of a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class ScopedFilterBackend(DjangoFilterBackend):  # type: ignore[misc]
    """django-filter builds FilterSet classes by introspecting `_default_manager.all().query`, which a
    scoped manager refuses outside a scope (e.g. when the schema is generated). Building the class reads no
    rows, so it is done with scopes disabled; filtering itself still runs inside the request's scope."""

    def get_filterset_class(self, view: Any, queryset: Any = None) -> Any:
        with scopes_disabled():
            return super().get_filterset_class(view, queryset)


class UtcDateTimeField(IsoDateTimeField):  # type: ignore[misc]
    """An ISO 8601 timestamp, normalised to UTC: databases refuse some offsets Python accepts (e.g. -20:38)."""

    def clean(self, value: Any) -> datetime.datetime | None:
        parsed = super().clean(value)
        if not isinstance(parsed, datetime.datetime):
            return None
        try:
            return parsed.astimezone(datetime.UTC)
        except OverflowError:
            raise ValidationError("The timestamp is out of range.", code="invalid") from None


class UtcDateTimeFilter(IsoDateTimeFilter):  # type: ignore[misc]
    field_class = UtcDateTimeField


def json_object_body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """A small body: a JSON object with only the known fields (a typo must not pass silently); none is {}."""
    data: Any = request.data if request.body else {}
    if not isinstance(data, dict):
        raise InvalidInput("Send a JSON object.")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(unknown)[:200]}.", fields=unknown[:20])
    return data
