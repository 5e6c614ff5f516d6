"""Enabling connectors per team. Connectors themselves are data installed on the server (connectors.registry)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from aileron_site.problems import Conflict, InvalidInput, NotFound
from audit import snapshots
from audit.services import admin_event_record
from connectors.models import ConnectorEnablement
from connectors.names import UnknownName, action_id_check, action_pattern_check, connector_name_check
from connectors.package import Connector, ConnectorError
from connectors.registry import installed
from tenants.models import Membership, Team


def connectors_installed() -> list[Connector]:
    try:
        return installed(settings.AILERON_HOME)
    except ConnectorError as exc:
        raise Conflict(f"An installed connector package is invalid: {exc}") from None


def connector_get(*, name: str) -> Connector:
    found = next((c for c in connectors_installed() if c.name == name), None)
    if found is None:
        raise NotFound("No such connector installed on this server.")
    return found


def _unknown(exc: UnknownName, pointer: str) -> InvalidInput:
    return InvalidInput(str(exc), errors=[{"pointer": pointer, "detail": str(exc)}], suggestions=exc.suggestions)


def catalog_connector_validate(*, name: str, pointer: str) -> None:
    """InvalidInput (400) naming the closest installed connectors unless NAME is installed."""
    try:
        connector_name_check(name, connectors_installed())
    except UnknownName as exc:
        raise _unknown(exc, pointer) from None


def catalog_action_validate(*, action_id: str, pointer: str, connector: str | None = None) -> None:
    """InvalidInput (400) naming the closest installed actions unless ACTION_ID is one (of CONNECTOR if given)."""
    try:
        action_id_check(action_id, connectors_installed(), connector=connector)
    except UnknownName as exc:
        raise _unknown(exc, pointer) from None


def catalog_pattern_validate(*, pattern: str, pointer: str) -> None:
    """InvalidInput (400) unless PATTERN (an action id, `prefix*` or `*`) matches an installed action."""
    try:
        action_pattern_check(pattern, connectors_installed())
    except UnknownName as exc:
        raise _unknown(exc, pointer) from None


def enablements_for(*, team: Team) -> list[str]:
    return sorted(
        ConnectorEnablement.objects.filter(organization_id=team.organization_id, team=team).values_list(
            "connector", flat=True
        )
    )


@transaction.atomic
def connector_enable(*, acting: Membership, team: Team, name: str) -> ConnectorEnablement:
    connector_get(name=name)
    existing = ConnectorEnablement.objects.filter(
        organization_id=team.organization_id, team=team, connector=name
    ).first()
    if existing is not None:
        return existing  # already enabled: nothing changed, so nothing to record
    enablement = ConnectorEnablement.objects.create(
        organization_id=team.organization_id, team=team, connector=name, enabled_by=acting.user
    )
    _enablement_event(acting=acting, action="connector.enable", enablement=enablement)
    return enablement


@transaction.atomic
def connector_disable(*, acting: Membership, team: Team, name: str) -> None:
    enablement = ConnectorEnablement.objects.filter(
        organization_id=team.organization_id, team=team, connector=name
    ).first()
    if enablement is None:
        raise NotFound("That connector is not enabled for this team.")
    _enablement_event(acting=acting, action="connector.disable", enablement=enablement)
    enablement.delete()


def _enablement_event(*, acting: Membership, action: str, enablement: ConnectorEnablement) -> None:
    snapshot = snapshots.connector_enablement_snapshot(enablement)
    disabled = action == "connector.disable"
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="connector",
        target_id=enablement.connector,
        target_label=f"{enablement.connector} for {snapshot['team']}",
        before=snapshot if disabled else None,
        after=None if disabled else snapshot,
    )
