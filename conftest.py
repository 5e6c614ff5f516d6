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

pytest_plugins = ["tests.service"]


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


@pytest.fixture(autouse=True)
def fresh_throttle_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test counts throttled requests from zero (aileron_site.throttles), in memory of its own."""
    import uuid

    from django.core.cache.backends.locmem import LocMemCache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "cache", LocMemCache(f"throttle-{uuid.uuid4()}", {}))


def client_for(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def api() -> Any:
    return client_for


# --- vault helpers: what a user's CLI does on their side, done here with the real crypto ------------------

TEST_PASSPHRASE = "correct horse battery staple"


def give_keys(person: Person) -> bytes:
    """Create and register the person's key pair; return the raw private key (the CLI would keep it)."""
    from vaults import crypto, services

    material = crypto.user_keys_create(TEST_PASSPHRASE, user_id=str(person.user.pk))
    services.user_keys_set(
        user=person.user,
        public_key=material.public_key,
        sealed_private_key=material.sealed_private_key,
        kdf=material.kdf.to_dict(),
    )
    return bytes(crypto.user_keys_unlock(material, TEST_PASSPHRASE, user_id=str(person.user.pk)))


@dataclass
class TestVault:
    id: str
    key: bytearray
    credential_id: str


def make_vault(person: Person, *, type: str = "shared", secret: bytes = b"ghp_test_value") -> TestVault:
    """A vault owned by PERSON (who must have keys) holding one credential."""
    import uuid

    from django_scopes import scope

    from vaults import crypto, services
    from vaults.models import UserKeys

    vault_id = uuid.uuid4()
    key = crypto.vault_key_new()
    public = bytes(UserKeys.objects.get(user=person.user).public_key)
    wrapping = crypto.vault_key_wrap(key, public, vault_id=str(vault_id), member_id=str(person.user.pk), key_version=1)
    with scope(organization=person.org):
        view = services.vault_create(
            acting=person.membership, vault_id=vault_id, name=f"{type} vault", type=type, owner_wrapping=wrapping
        )
        credential_id = uuid.uuid4()
        blob = crypto.credential_encrypt(
            secret,
            key,
            organization_id=str(person.org.pk),
            vault_id=str(vault_id),
            credential_id=str(credential_id),
            key_version=1,
        )
        services.credential_add(
            view=view,
            acting_user_id=person.user.pk,
            credential_id=credential_id,
            name="github-token",
            connector="github",
            ciphertext=blob,
            action_bindings=[],
        )
    return TestVault(id=str(vault_id), key=key, credential_id=str(credential_id))
