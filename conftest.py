"""Shared fixtures: the cast (Alice owns org A, Bob is a member of A, Charlie owns org B and must see
nothing of A) and an API client per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django_scopes import scopes_disabled
from rest_framework.test import APIClient

from tenants import services
from tenants.models import Membership, Organization, User
from tenants.roles import Role


@dataclass
class Person:
    user: User
    token: str
    membership: Membership

    @property
    def org(self) -> Organization:
        return self.membership.organization


def make_person(email: str, org: Organization | None = None, role: str = Role.MEMBER, org_name: str = "Org") -> Person:
    with scopes_disabled():
        if org is None:
            onboarded = services.signup(organization_name=org_name, email=email)
            assert onboarded.issued is not None
            return Person(onboarded.user, onboarded.issued.plaintext, onboarded.membership)
        user = User.objects.create_user(email=email)
        membership = Membership.objects.create(organization=org, user=user, role=role)
        issued = services.personal_token_create(user=user, name="test")
        return Person(user, issued.plaintext, membership)


@dataclass
class Cast:
    alice: Person
    bob: Person
    charlie: Person


@pytest.fixture
def cast(db: Any) -> Cast:
    alice = make_person("alice@example.com", org_name="Org A")
    bob = make_person("bob@example.com", org=alice.org, role=Role.MEMBER)
    charlie = make_person("charlie@example.net", org_name="Org B")
    return Cast(alice, bob, charlie)


def client_for(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def api() -> Any:
    return client_for
