"""Reading the audit log: members see their own agents' records; audit.read holders see the organization's, and its
admin events."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from aileron_site.problems import NotFound
from audit.models import AdminEvent, AuditRecord
from tenants.models import Organization, User


def audit_record_list(*, organization: Organization, user: User, see_all: bool) -> QuerySet[AuditRecord]:
    # Both the key and the kept id: a row whose two disagree was moved behind the chain's back (verify names it).
    qs = AuditRecord.objects.filter(organization=organization, organization_uuid=organization.pk).select_related("user")
    return qs if see_all else qs.filter(user=user)


def audit_record_get(*, organization: Organization, user: User, see_all: bool, record_id: uuid.UUID) -> AuditRecord:
    record = audit_record_list(organization=organization, user=user, see_all=see_all).filter(pk=record_id).first()
    if record is None:
        raise NotFound("No such audit record.")
    return record


def admin_event_list(*, organization: Organization) -> QuerySet[AdminEvent]:
    """The organization's admin events, by the id kept on each row (the key is nulled if the organization goes)."""
    return AdminEvent.objects.filter(organization_uuid=organization.pk)


def admin_event_get(*, organization: Organization, event_id: uuid.UUID) -> AdminEvent:
    event = admin_event_list(organization=organization).filter(pk=event_id).first()
    if event is None:
        raise NotFound("No such admin event.")
    return event
