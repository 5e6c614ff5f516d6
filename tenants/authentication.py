"""Bearer-token authentication for the REST API (personal, session and service tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from tenants.models import ApiToken, TokenKind, User
from tenants.selectors import token_authenticate
from tenants.services import token_touch


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """Who a service token speaks for: the data plane, not a person."""

    name: str
    is_authenticated: bool = True
    is_active: bool = True
    pk: None = None


class BearerTokenAuthentication(BaseAuthentication):
    www_authenticate = 'Bearer realm="aileron"'

    def authenticate(self, request: Request) -> tuple[User | ServicePrincipal, ApiToken] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != b"bearer":
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed token.") from None
        token = token_authenticate(raw=raw)
        if token is None:
            raise exceptions.AuthenticationFailed("The token is invalid, expired or revoked.")
        token_touch(token=token)
        if token.kind == TokenKind.SERVICE:
            return ServicePrincipal(name=token.name), token
        assert token.user is not None  # noqa: S101  (the check constraint guarantees it)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.www_authenticate


def token_from_header(header: str) -> ApiToken | None:
    """The live token an `Authorization: Bearer …` value carries, or None (for views outside DRF)."""
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    return token_authenticate(raw=raw.strip())


def token_of(request: Request) -> ApiToken | None:
    auth: Any = request.auth
    return auth if isinstance(auth, ApiToken) else None


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Describes the bearer tokens in the OpenAPI schema."""

    target_class = "tenants.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An Aileron token: ail_pat_… (people), ail_ses_… (agents), ail_svc_… (data plane).",
        }
