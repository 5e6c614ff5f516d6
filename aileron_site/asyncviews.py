"""What the async (long-poll) views share: problem answers outside DRF, and database calls that give their
connection back. They are plain Django views (DRF has no async handlers), so a wait costs the API no thread."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpResponse, JsonResponse

from aileron_site.problems import CONTENT_TYPE, problem_body


def problem_response(status: int, slug: str, title: str, detail: str) -> HttpResponse:
    """An RFC 9457 answer from a view DRF's exception handler does not see."""
    body = problem_body(status=status, slug=slug, title=title, detail=detail)
    return JsonResponse(body, status=status, content_type=CONTENT_TYPE)


def released[T](function: Callable[..., T]) -> Callable[..., T]:
    """Run `function`, then give the database connection back: a wait may last minutes, and 50 waiting requests
    must not hold 50 of the pool's connections while nothing happens."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        finally:
            if not connection.in_atomic_block:  # (a test's transaction keeps its connection)
                connection.close()

    return call
