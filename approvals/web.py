"""The approvals web page: a static shell that signs in with a personal token held in the browser tab.

The server renders no data here (there are no cookies or sessions to know who asks): the page reads its token
from the URL fragment or a pasted form, keeps it in sessionStorage, and calls the REST API and the websocket
with it. So the shell needs no CSRF protection and may not be cached or framed.
"""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from tenants.permissions import ROLE_PERMISSIONS, Perm


def content_security_policy(request: HttpRequest) -> str:
    """Scripts and styles from this site only (none inline); fetches and the websocket to this host only."""
    socket = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {socket}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@require_safe
def approvals_page(request: HttpRequest, org_id: uuid.UUID | None = None) -> HttpResponse:
    deciders = sorted(role.value for role, perms in ROLE_PERMISSIONS.items() if Perm.APPROVAL_DECIDE in perms)
    response = render(
        request,
        "approvals/page.html",
        {"org_id": str(org_id) if org_id else "", "decide_roles": " ".join(deciders)},
    )
    response["Content-Security-Policy"] = content_security_policy(request)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
