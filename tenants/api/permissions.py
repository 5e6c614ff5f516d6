"""Which kinds of token may call which endpoints. Role checks live in tenants.permissions."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.authentication import token_of
from tenants.models import TokenKind


class _TokenKindPermission(BasePermission):
    kinds: frozenset[str] = frozenset()
    refusal = ""

    def has_permission(self, request: Request, view: Any) -> bool:
        token = token_of(request)
        if token is None:
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <token>'.")
        if token.kind not in self.kinds:
            raise exceptions.PermissionDenied(self.refusal)
        return True


class IsUserToken(_TokenKindPermission):
    """Personal access tokens only: agents' session tokens and the data plane's service token are refused."""

    kinds = frozenset({TokenKind.PERSONAL})
    refusal = "This endpoint needs a personal access token; session and service tokens may not use it."


class IsAnyToken(_TokenKindPermission):
    kinds = frozenset({TokenKind.PERSONAL, TokenKind.SESSION, TokenKind.SERVICE})


class IsServiceToken(_TokenKindPermission):
    """The data plane's service token only."""

    kinds = frozenset({TokenKind.SERVICE})
    refusal = "This endpoint is for the data plane's service token."
