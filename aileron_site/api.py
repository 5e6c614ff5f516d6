"""Shared REST plumbing: pagination and filtering for every list."""

from __future__ import annotations

from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from django_scopes import scopes_disabled
from rest_framework.pagination import LimitOffsetPagination


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
