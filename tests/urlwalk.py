"""Walks the URL conf: every API route and the HTTP methods its view answers."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def api_routes() -> list[tuple[str, URLPattern]]:
    """Every URL pattern under /api/v1/, as (route, pattern)."""
    found: list[tuple[str, URLPattern]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if route.startswith("api/v1/"):
                    found.append((route, p))

    walk(get_resolver().url_patterns, "")
    return found


def methods_of(pattern: URLPattern) -> list[str]:
    callback: Any = pattern.callback
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(m for m in actions if m in HTTP_METHODS)
    view_class = callback.view_class
    return [m for m in HTTP_METHODS if hasattr(view_class, m)]
