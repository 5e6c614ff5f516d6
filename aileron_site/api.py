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
