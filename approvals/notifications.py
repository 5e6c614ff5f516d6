"""Notification channels: setting them up (notify.manage), and delivering approval events to them.

On every approval event people act on (created, decided, expired, cancelled) `notifications_enqueue` runs after the
change commits and queues one Celery task per subscribed channel (approvals.tasks.notification_deliver), so a slow
or dead receiver never holds up, or undoes, the approval. A credential that is due for replacement is sent the same
way (`notifications_credential_due`, from vaults' hourly warning). The task calls `notification_deliver` once per
attempt: a webhook or Slack POST (5 s timeout, redirects never followed) or one email per address through Django's
email backend. Network errors, 5xx and 429 are retried with exponential backoff up to MAX_ATTEMPTS; other answers
are final. Every outcome is recorded on the channel (`last_status`, `last_error`), which `aileron notify list`
shows.

The targets are called from the worker (and, for `test`, the API): in production they must resolve to public
addresses unless AILERON_NOTIFY_ALLOW_PRIVATE is on. The check resolves the name before connecting; a name that
resolves differently a moment later (DNS rebinding) is not caught, so keep production workers off networks
where a private address is a privilege.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_scopes import scopes_disabled

from aileron_site import __version__
from aileron_site.problems import Conflict, InvalidInput
from approvals import links, messages, signing
from approvals.models import (
    NOTIFY_EVENTS,
    Approval,
    ApprovalLink,
    ChannelKind,
    DeliveryStatus,
    NotificationChannel,
)
from audit import snapshots
from audit.services import admin_event_record
from tenants.models import Membership, Organization, Project, User

log = logging.getLogger("aileron.notifications")

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
NAME_MAX = 60
URL_MAX = 2000
EMAILS_MAX = 20
TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 6  # the first try and five retries: 10 s, 20 s, 40 s, 80 s, 160 s later (about five minutes)
RETRY_BASE_SECONDS = 10.0
RETRY_CAP_SECONDS = 600.0
ERROR_MAX = 500
CREDENTIAL_DUE = "credential_due"  # not an approval's event: vaults.services.credentials_due_warn sends it


# --- validation --------------------------------------------------------------------------------------------------


def channel_name_validate(name: str) -> str:
    text = name.strip().lower()
    if not text or len(text) > NAME_MAX or not set(text) <= NAME_CHARS or text[0] in "-_.":
        raise InvalidInput(
            f"A channel name is 1 to {NAME_MAX} letters, digits, '-', '_' or '.', starting with a letter or digit.",
            errors=[{"pointer": "/name", "detail": "invalid name"}],
        )
    return text


def _private(address: str) -> bool:
    return not ipaddress.ip_address(address.split("%", 1)[0]).is_global


def channel_url_validate(url: str, *, pointer: str = "/target") -> str:
    """An http(s) URL with a host, no credentials and no fragment; no private address literal in production."""
    text = url.strip()

    def bad(detail: str) -> InvalidInput:
        return InvalidInput(detail, errors=[{"pointer": pointer, "detail": detail}])

    if not text or len(text) > URL_MAX or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise bad(f"The target must be a URL of at most {URL_MAX} characters, without spaces.")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise bad("The target must be an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise bad("The target URL may not carry credentials (user:password@): a webhook is signed instead.")
    if parts.fragment:
        raise bad("The target URL may not have a #fragment.")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise bad("The target URL's port is not a number from 1 to 65535.") from None
    if not host:
        raise bad("The target URL names no host.")
    if not settings.AILERON_NOTIFY_ALLOW_PRIVATE:
        try:
            literal = _private(host)
        except ValueError:
            literal = host == "localhost" or host.endswith(".localhost")
        if literal:
            raise bad("The target is a private address; this server calls public addresses only.")
    return text


def channel_emails_validate(raw: str) -> str:
    found: list[str] = []
    for part in raw.split(","):
        address = part.strip().lower()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            raise InvalidInput(
                f"{address[:100]!r} is not an email address.",
                errors=[{"pointer": "/target", "detail": "invalid email address"}],
            ) from None
        if address not in found:
            found.append(address)
    if not found or len(found) > EMAILS_MAX:
        raise InvalidInput(
            f"An email channel sends to 1 to {EMAILS_MAX} comma-separated addresses.",
            errors=[{"pointer": "/target", "detail": "no addresses"}],
        )
    return ",".join(found)


def channel_events_validate(events: Sequence[str]) -> list[str]:
    chosen = [e.strip() for e in events if e.strip()]
    unknown = sorted(set(chosen) - set(NOTIFY_EVENTS))
    if unknown or not chosen:
        raise InvalidInput(
            f"Events are one or more of {', '.join(NOTIFY_EVENTS)}"
            + (f"; unknown: {', '.join(unknown)[:200]}." if unknown else "."),
            errors=[{"pointer": "/events", "detail": "invalid events"}],
        )
    return [e for e in NOTIFY_EVENTS if e in chosen]


def _target_validate(kind: str, target: str) -> str:
    return channel_emails_validate(target) if kind == ChannelKind.EMAIL else channel_url_validate(target)


def target_shown(channel: NotificationChannel) -> str:
    """The target as the API shows it: a Slack webhook's path is its secret, so only its host is shown."""
    if channel.kind != ChannelKind.SLACK:
        return channel.target
    parts = urlsplit(channel.target)
    return f"{parts.scheme}://{parts.netloc}/…"


# --- setting channels up -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedChannel:
    channel: NotificationChannel
    secret: str | None  # a webhook's signing secret, shown this once


def _channel_event(
    *, acting: Membership, action: str, channel: NotificationChannel, before: snapshots.Snapshot | None
) -> None:
    admin_event_record(
        acting=acting,
        organization=acting.organization,
        action=action,
        target_type="notification_channel",
        target_id=channel.pk,
        target_label=channel.name,
        before=before,
        after=None if action == "notification_channel.delete" else snapshots.notification_channel_snapshot(channel),
    )


@transaction.atomic
def notification_channel_create(
    *,
    acting: Membership,
    name: str,
    kind: str,
    target: str,
    events: Sequence[str] | None = None,
    enabled: bool = True,
) -> CreatedChannel:
    if kind not in ChannelKind.values:
        raise InvalidInput(f"kind is one of {', '.join(ChannelKind.values)}.")
    channel = NotificationChannel(
        organization=acting.organization,
        name=channel_name_validate(name),
        kind=kind,
        target=_target_validate(kind, target),
        secret=signing.secret_new() if kind == ChannelKind.WEBHOOK else "",
        events=channel_events_validate(events) if events is not None else list(NOTIFY_EVENTS),
        enabled=enabled,
        created_by=acting.user,
    )
    try:
        with transaction.atomic():
            channel.save()
    except IntegrityError:
        raise Conflict(f"A channel named {channel.name} exists already.") from None
    _channel_event(acting=acting, action="notification_channel.create", channel=channel, before=None)
    return CreatedChannel(channel=channel, secret=channel.secret or None)


@transaction.atomic
def notification_channel_update(
    *, acting: Membership, channel: NotificationChannel, **changes: Any
) -> NotificationChannel:
    """Change a channel. Whoever points it somewhere new becomes the one its links act for (a webhook's or
    Slack's link decides as `created_by`): redirecting another admin's channel never lends you their vote, and
    the links already sent to the old target stop working."""
    before = snapshots.notification_channel_snapshot(channel)
    if "name" in changes:
        channel.name = channel_name_validate(changes["name"])
    if "target" in changes:
        target = _target_validate(channel.kind, changes["target"])
        if target != channel.target:
            channel.target = target
            channel.created_by = acting.user
            _expire_links(channel)
    if "events" in changes:
        channel.events = channel_events_validate(changes["events"])
    if "enabled" in changes:
        channel.enabled = bool(changes["enabled"])
    try:
        with transaction.atomic():
            channel.save()
    except IntegrityError:
        raise Conflict(f"A channel named {channel.name} exists already.") from None
    _channel_event(acting=acting, action="notification_channel.update", channel=channel, before=before)
    return channel


@transaction.atomic
def notification_channel_delete(*, acting: Membership, channel: NotificationChannel) -> None:
    """Remove a channel; the links it sent stop working."""
    _channel_event(
        acting=acting,
        action="notification_channel.delete",
        channel=channel,
        before=snapshots.notification_channel_snapshot(channel),
    )
    _expire_links(channel)
    channel.delete()


def _expire_links(channel: NotificationChannel) -> None:
    with scopes_disabled():
        ApprovalLink.objects.filter(channel=channel, used_at__isnull=True, expires_at__gt=timezone.now()).update(
            expires_at=timezone.now()
        )


# --- queueing ------------------------------------------------------------------------------------------------


def notifications_enqueue(*, approval_id: uuid.UUID, event: str) -> int:
    """Queue a delivery of EVENT to each enabled channel of the approval's organization that wants it.

    Runs after the approval's change committed; a failure to queue is logged and recorded on the channel, never
    raised (the approval itself stands)."""
    if event not in NOTIFY_EVENTS or event == CREDENTIAL_DUE:
        return 0
    with scopes_disabled():
        organization_id = Approval.objects.filter(pk=approval_id).values_list("organization_id", flat=True).first()
        if organization_id is None:
            return 0
        channels = list(NotificationChannel.objects.filter(organization_id=organization_id, enabled=True))
    queued = 0
    for channel in channels:
        if event not in channel.events:
            continue
        queued += _queue(channel=channel, event=event, approval_id=approval_id)
    return queued


def notifications_credential_due(*, organization_id: uuid.UUID, credential: dict[str, Any]) -> int:
    """Queue a warning that a credential is due (`messages.CREDENTIAL_FIELDS`: names and dates, never a value)
    to each enabled channel of the organization that wants it; how many were queued."""
    with scopes_disabled():
        channels = list(NotificationChannel.objects.filter(organization_id=organization_id, enabled=True))
    shown = {k: credential.get(k) for k in messages.CREDENTIAL_FIELDS}
    return sum(
        _queue(channel=c, event=CREDENTIAL_DUE, approval_id=None, about=shown)
        for c in channels
        if CREDENTIAL_DUE in c.events
    )


def _queue(
    *, channel: NotificationChannel, event: str, approval_id: uuid.UUID | None, about: dict[str, Any] | None = None
) -> int:
    from approvals.tasks import notification_deliver_task

    try:
        notification_deliver_task.apply_async(
            kwargs={
                "channel_id": str(channel.pk),
                "event": event,
                "approval_id": str(approval_id) if approval_id else None,
                "delivery_id": str(uuid.uuid4()),
                **({"about": about} if about is not None else {}),
            }
        )
    except Exception as exc:  # noqa: BLE001 - the broker is down: say so on the channel, never fail the approval
        log.warning("could not queue a %s notification to channel %s: %s", event, channel.pk, exc)
        _record(channel.pk, DeliveryStatus.FAILED, f"could not queue the delivery: {exc}")
        return 0
    return 1


# --- delivering -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one receiver: delivered, or why not and whether trying again may help."""

    ok: bool
    error: str = ""
    retryable: bool = False
    retry_after: float | None = None  # the receiver's Retry-After (429, 503), in seconds


@dataclass(slots=True)
class Delivery:
    """The outcome of one attempt at a channel: `retry_in` set means the task should try again then, for
    `remaining` recipients (email) or the whole message."""

    status: str
    error: str = ""
    retry_in: float | None = None
    remaining: list[str] = field(default_factory=list)


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number ATTEMPT + 1: 10, 20, 40, … capped, or the receiver's Retry-After if longer."""
    base = float(getattr(settings, "AILERON_NOTIFY_RETRY_BASE_SECONDS", RETRY_BASE_SECONDS))
    delay: float = min(RETRY_CAP_SECONDS, base * 2.0**attempt)
    if retry_after is not None:
        delay = max(delay, min(RETRY_CAP_SECONDS, retry_after))
    return delay


class Refused(Exception):
    """The target may not be called (a private address in production)."""


def _check_destination(url: str) -> None:
    if settings.AILERON_NOTIFY_ALLOW_PRIVATE:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpx.ConnectError(f"cannot resolve {parts.hostname}: {exc.strerror}") from None
    if not infos or any(_private(str(info[4][0])) for info in infos):
        raise Refused(f"{parts.hostname} resolves to a private address; this server calls public addresses only")


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "").strip()
    return float(raw) if raw.isdigit() else None


def post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """POST BODY to URL once: 2xx is delivered; network errors, 5xx and 429 may be retried; the rest is final."""
    try:
        _check_destination(url)
        response = httpx.post(
            url,
            content=body,
            headers={"User-Agent": f"Aileron-Notifications/{__version__}", **headers},
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except Refused as exc:
        return Attempt(ok=False, error=str(exc))
    except httpx.TimeoutException:
        return Attempt(ok=False, error=f"no answer within {TIMEOUT_SECONDS:.0f} s", retryable=True)
    except httpx.TransportError as exc:
        return Attempt(ok=False, error=f"could not connect: {exc}"[:ERROR_MAX], retryable=True)
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(ok=True)
    if 300 <= status < 400:
        return Attempt(ok=False, error=f"the receiver answered {status}: redirects are not followed")
    retryable = status == 429 or status >= 500
    snippet = " ".join(response.text[:200].split())
    return Attempt(
        ok=False,
        error=f"the receiver answered {status}" + (f": {snippet}" if snippet else ""),
        retryable=retryable,
        retry_after=_retry_after(response) if retryable else None,
    )


def _record(channel_id: uuid.UUID | str, status: str, error: str = "") -> None:
    with scopes_disabled():
        NotificationChannel.objects.filter(pk=channel_id).update(
            last_delivery_at=timezone.now(), last_status=status, last_error=error[:ERROR_MAX]
        )


def _page_url(organization_id: uuid.UUID) -> str | None:
    base = settings.AILERON_PUBLIC_URL
    return f"{base}/approvals/{organization_id}/" if base else None


def _link_url(token: str | None) -> str | None:
    base = settings.AILERON_PUBLIC_URL
    return f"{base}/approvals/#link={token}" if base and token else None


def _organization(organization: Organization) -> dict[str, str]:
    return {"id": str(organization.pk), "name": organization.name, "slug": organization.slug}


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a channel is told: an approval's event (with links for deciders), a credential due, or a test."""

    organization: Organization
    event: str
    approval: Approval | None
    shown: dict[str, Any] | None
    project: str | None

    def notice(self, channel: NotificationChannel, decider: User | None) -> messages.Notice:
        page = _page_url(self.organization.pk)
        if self.event == CREDENTIAL_DUE:
            return messages.credential_due_notice(
                organization=_organization(self.organization), credential=self.shown or {}
            )
        if self.approval is None or self.shown is None:
            return messages.channel_test_notice(
                organization=_organization(self.organization), channel=channel.name, page_url=page
            )
        token = None
        # A link only where there is something to decide, and only for someone who may decide it.
        if self.event == "created" and decider is not None and settings.AILERON_PUBLIC_URL:
            token = links.approval_link_issue(approval=self.approval, user=decider, channel=channel)
        return messages.approval_notice(
            event=self.event,
            organization=_organization(self.organization),
            approval=self.shown,
            project=self.project,
            link=_link_url(token),
            link_for=decider.email if token and decider else None,
            page_url=page,
        )


def _subject(
    channel: NotificationChannel, event: str, approval_id: str | None, about: dict[str, Any] | None = None
) -> _Subject | None:
    from approvals.api.serializers import ApprovalSerializer

    if event == CREDENTIAL_DUE:
        return _Subject(channel.organization, event, None, about or {}, None)
    if approval_id is None:
        return _Subject(channel.organization, "test", None, None, None)
    with scopes_disabled():
        approval = (
            Approval.objects.filter(pk=approval_id, organization_id=channel.organization_id)
            .prefetch_related("decisions")
            .first()
        )
        if approval is None:
            return None
        project = None
        if approval.project_id is not None:
            project = Project.objects.filter(pk=approval.project_id).values_list("slug", flat=True).first()
    return _Subject(channel.organization, event, approval, dict(ApprovalSerializer(approval).data), project)


def notification_deliver(
    *,
    channel_id: str,
    event: str,
    delivery_id: str,
    approval_id: str | None = None,
    recipients: list[str] | None = None,
    attempt: int = 0,
    may_retry: bool = True,
    about: dict[str, Any] | None = None,
) -> Delivery:
    """One attempt at delivering EVENT (of the approval, or a test without one) to the channel; recorded on it."""
    with scopes_disabled():
        channel = NotificationChannel.objects.select_related("organization", "created_by").filter(pk=channel_id).first()
    if channel is None or (not channel.enabled and event != "test"):
        return Delivery(status="dropped", error="the channel is gone or disabled")
    subject = _subject(channel, event, approval_id, about)
    if subject is None:
        return Delivery(status="dropped", error="the approval is gone")
    if channel.kind == ChannelKind.EMAIL:
        failures = _send_emails(channel, subject, recipients)
        attempts = list(failures.values())
    else:
        attempts = [_send_post(channel, subject, delivery_id)]
        failures = {channel.target: attempts[0]} if not attempts[0].ok else {}
    if not failures:
        _record(channel.pk, DeliveryStatus.OK)
        return Delivery(status=DeliveryStatus.OK)
    error = "; ".join(f"{a.error}" for a in attempts if not a.ok)[:ERROR_MAX]
    retryable = [r for r, a in failures.items() if a.retryable]
    if retryable and may_retry and attempt + 1 < MAX_ATTEMPTS:
        waits = [a.retry_after for a in failures.values() if a.retry_after is not None]
        delay = retry_delay(attempt, max(waits) if waits else None)
        _record(channel.pk, DeliveryStatus.RETRYING, f"attempt {attempt + 1} of {MAX_ATTEMPTS}: {error}")
        log.info("notification %s to channel %s failed (%s); retrying in %.0f s", delivery_id, channel.pk, error, delay)
        return Delivery(status=DeliveryStatus.RETRYING, error=error, retry_in=delay, remaining=retryable)
    tries = f"after {attempt + 1} attempt(s)" if retryable and may_retry else "not retried"
    _record(channel.pk, DeliveryStatus.FAILED, f"{error} ({tries})")
    log.warning("notification %s to channel %s failed for good: %s", delivery_id, channel.pk, error)
    return Delivery(status=DeliveryStatus.FAILED, error=error)


def _send_post(channel: NotificationChannel, subject: _Subject, delivery_id: str) -> Attempt:
    notice = subject.notice(channel, channel.created_by)
    if channel.kind == ChannelKind.SLACK:
        payload = json.dumps(messages.slack_payload(notice)).encode()
        return post(channel.target, payload, {"Content-Type": "application/json"})
    sent_at = int(time.time())
    body = messages.webhook_body(notice, delivery_id=delivery_id, sent_at=sent_at)
    headers = {
        "Content-Type": "application/json",
        "X-Aileron-Event": messages.event_type(notice.event),
        "X-Aileron-Delivery": delivery_id,
        "X-Aileron-Signature": signing.header(channel.secret, body, sent_at),
    }
    return post(channel.target, body, headers)


def _send_emails(channel: NotificationChannel, subject: _Subject, only: list[str] | None) -> dict[str, Attempt]:
    """One message per address (each may carry its reader's own link); the failures, by address."""
    addresses = [a for a in channel.target.split(",") if a and (only is None or a in only)]
    with scopes_disabled():
        users = {
            u.email.lower(): u
            for u in User.objects.filter(
                email__in=addresses, memberships__organization_id=channel.organization_id, is_active=True
            )
        }
    failures: dict[str, Attempt] = {}
    for address in addresses:
        notice = subject.notice(channel, users.get(address))
        title, text = messages.email_message(notice)
        try:
            send_mail(title, text, None, [address], fail_silently=False)
        except Exception as exc:  # noqa: BLE001 - smtplib's, the socket's and the backend's errors alike
            permanent = exc.__class__.__name__ in ("SMTPRecipientsRefused", "BadHeaderError")
            failures[address] = Attempt(ok=False, error=f"{address}: {exc}"[:ERROR_MAX], retryable=not permanent)
    return failures


def notification_channel_test(*, channel: NotificationChannel) -> Delivery:
    """Send a test message now, once (no retries); the outcome is recorded on the channel and returned.

    A receiver's failure is the answer to this request, not a failure of the API: never a 5xx."""
    outcome = notification_deliver(
        channel_id=str(channel.pk), event="test", delivery_id=str(uuid.uuid4()), may_retry=False
    )
    channel.refresh_from_db()
    return outcome
