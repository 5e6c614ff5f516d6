"""Tenant-owned rows are unreachable without a scope: a forgotten filter raises instead of leaking."""

from __future__ import annotations

import pytest
from django_scopes import ScopeError, scope

from conftest import Cast
from tenants.models import Invitation, Membership, Project, Team, TeamMembership

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", [Membership, Team, TeamMembership, Project, Invitation])
def test_an_unscoped_query_raises(cast: Cast, model: type) -> None:
    with pytest.raises(ScopeError):
        list(model.objects.all())  # type: ignore[attr-defined]


def test_a_scoped_query_sees_only_its_organization(cast: Cast) -> None:
    with scope(organization=cast.alice.org):
        emails = {m.user.email for m in Membership.objects.all()}
    assert emails == {"alice@example.com", "bob@example.com"}
