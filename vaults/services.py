"""Vault operations of the control plane. It stores and serves ciphertext; it can decrypt nothing.

Who may do what: the organization role decides whether one may create vaults or see every vault's
metadata (tenants.permissions); the vault role (owner, contributor, reader) decides what one may do inside
a vault. Every vault is reached through `vault_get_for`, which answers 404 for missing and forbidden alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_scopes import scope, scopes_disabled

from aileron_site.problems import Conflict, Forbidden, InvalidInput, NotFound
from audit import snapshots
from audit.services import admin_event_record
from connectors.services import catalog_action_validate, catalog_connector_validate
from tenants.models import Membership, Organization, Project, Team, TeamMembership, User
from tenants.permissions import Perm, role_has
from tenants.selectors import may_work_in
from vaults import crypto
from vaults.backend import vault_store
from vaults.models import CredentialDueNotice, PendingMember, UserKeys, Vault
from vaults.store import (
    Bundle,
    CredentialMeta,
    LastOwner,
    Member,
    RotationConflict,
    RotationPending,
    StaleKeyVersion,
    StoreError,
    VaultFull,
    VaultMeta,
    VaultMissing,
    now_iso,
)

WRITE_ROLES = ("owner", "contributor")


@dataclass(frozen=True, slots=True)
class VaultView:
    """A vault as the caller may see it."""

    vault: Vault
    meta: VaultMeta
    members: list[Member]
    my_role: str | None
    waiting: tuple[PendingMember, ...] = ()  # who waits for the key to be wrapped to them (team vaults)
    caller: uuid.UUID | None = None

    @property
    def i_wait(self) -> bool:
        """The caller waits to be confirmed in this (team) vault."""
        return self.my_role is None and any(p.user_id == self.caller for p in self.waiting)

    @property
    def id(self) -> str:
        return str(self.vault.pk)


def _envelope(data: bytes, what: str) -> bytes:
    try:
        crypto.envelope_key_version(data)
    except crypto.CryptoError:
        raise InvalidInput(f"{what} is not an Aileron envelope.") from None
    return data


# --- user keys ---------------------------------------------------------------------------------------


def user_keys_get(*, user: User) -> UserKeys:
    keys = UserKeys.objects.filter(user=user).first()
    if keys is None:
        raise NotFound("You have no key pair yet: `aileron init` or `aileron join` creates one.")
    return keys


@transaction.atomic
def user_keys_set(*, user: User, public_key: bytes, sealed_private_key: bytes, kdf: dict[str, object]) -> UserKeys:
    """Store a new user's key material once. (Changing the passphrase reseals; that is a later feature.)"""
    try:
        crypto.UserKeyMaterial.from_dict(
            {"public_key": crypto.b64(public_key), "sealed_private_key": crypto.b64(sealed_private_key), "kdf": kdf}
        )
    except crypto.CryptoError as exc:
        raise InvalidInput(f"Key material refused: {exc}") from None
    if len(public_key) != crypto.KEY_BYTES:
        raise InvalidInput("public_key must be a 32-byte X25519 key.")
    if UserKeys.objects.filter(user=user).exists():
        raise Conflict("You already have a key pair.")
    return UserKeys.objects.create(user=user, public_key=public_key, sealed_private_key=sealed_private_key, kdf=kdf)


def _public_key_of(user_id: uuid.UUID) -> bytes:
    keys = UserKeys.objects.filter(user_id=user_id).first()
    if keys is None:
        raise InvalidInput("That person has no key pair yet; they must run `aileron init` or `aileron join`.")
    return bytes(keys.public_key)


# --- vaults ------------------------------------------------------------------------------------------


def _view(vault: Vault, user_id: uuid.UUID) -> VaultView:
    store = vault_store()
    meta = store.meta(str(vault.pk))
    members = store.members(str(vault.pk))
    role = next((m.role for m in members if m.user_id == str(user_id)), None)
    waiting: tuple[PendingMember, ...] = ()
    if vault.team_id is not None:
        with scope(organization=vault.organization_id):
            waiting = tuple(PendingMember.objects.filter(vault=vault).select_related("user").order_by("requested_at"))
    return VaultView(vault=vault, meta=meta, members=members, my_role=role, waiting=waiting, caller=user_id)


def vault_list_for(*, membership: Membership) -> list[VaultView]:
    """The caller's vaults, the team vaults they wait to be confirmed in, and for admins every vault."""
    see_all = role_has(membership.role, Perm.VAULT_VIEW_ALL)
    views = []
    for vault in Vault.objects.filter(organization=membership.organization).select_related("team", "project"):
        try:
            views.append(_view(vault, membership.user_id))
        except VaultMissing:
            continue  # being deleted by a concurrent request: its index row goes in the same moment
    return [v for v in views if see_all or v.my_role is not None or v.i_wait]


def vault_get_for(*, membership: Membership, vault_id: uuid.UUID, member_only: bool = True) -> VaultView:
    """The vault if the caller is a member (or, for metadata, may see all vaults); else NotFound."""
    vault = Vault.objects.filter(organization=membership.organization, pk=vault_id).first()
    if vault is None:
        raise NotFound("No such vault.")
    try:
        view = _view(vault, membership.user_id)
    except VaultMissing:
        # Its store was dropped by a concurrent delete after the index row was read (seen under schemathesis).
        raise NotFound("No such vault.") from None
    if view.my_role is None and (member_only or not (view.i_wait or role_has(membership.role, Perm.VAULT_VIEW_ALL))):
        raise NotFound("No such vault.")
    return view


def _vault_event(
    *,
    acting: Membership | None,
    action: str,
    vault: Vault,
    name: str,
    before: snapshots.Snapshot | None,
    after: snapshots.Snapshot | None,
) -> None:
    """A vault's admin event. ACTING None: the system (a rotation or confirmation the worker drove through an
    owner's credential service)."""
    admin_event_record(
        acting=acting,
        organization=vault.organization,
        action=action,
        target_type="vault",
        target_id=vault.pk,
        target_label=name,
        before=before,
        after=after,
    )


def _require_vault_role(view: VaultView, roles: tuple[str, ...], action: str) -> None:
    if view.my_role not in roles:
        raise Forbidden(f"Your vault role ({view.my_role or 'none'}) may not {action}.")


@transaction.atomic
def vault_create(
    *,
    acting: Membership,
    vault_id: uuid.UUID,
    name: str,
    type: str,
    owner_wrapping: bytes,
    team: Team | None = None,
    project: Project | None = None,
    auto_confirm: bool = True,
) -> VaultView:
    """Create a vault whose key the caller generated and wrapped to themself (key version 1). A team vault's
    other team members wait (PendingMember) until an owner wraps the key to them."""
    membership = acting
    organization: Organization = membership.organization
    personal = type == "personal"
    if not personal and not role_has(membership.role, Perm.VAULT_CREATE):
        raise Forbidden(f"Your role ({membership.role}) lacks {Perm.VAULT_CREATE.value}.")
    if team is not None:
        if personal:
            raise InvalidInput("A personal vault cannot be a team vault.")
        if team.organization_id != organization.pk:
            raise InvalidInput("That team is not in this organization.")
        with scope(organization=organization):
            in_team = TeamMembership.objects.filter(team=team, user_id=membership.user_id).exists()
        if not in_team and not role_has(membership.role, Perm.TEAM_MANAGE):
            raise Forbidden(f"Only members of {team.slug} (or who manage teams) may create its vault.")
    if project is not None:
        if personal:
            raise InvalidInput("A personal vault cannot be a project vault.")
        if project.organization_id != organization.pk:
            raise InvalidInput("That project is not in this organization.")
        if not may_work_in(membership=membership, project=project):
            raise Forbidden(f"Only members of the {project.slug} project's team may create its vault.")
    _public_key_of(membership.user_id)
    with scopes_disabled():
        taken = Vault.objects.filter(pk=vault_id).exists()
    if taken:
        raise Conflict("A vault with that id exists; choose another id.")
    try:
        with transaction.atomic():
            vault = Vault.objects.create(
                id=vault_id,
                organization=organization,
                personal_owner=membership.user if personal else None,
                team=team,
                project=project,
                auto_confirm=auto_confirm,
            )
    except IntegrityError:
        raise Conflict("You already have a personal vault in this organization.") from None
    meta = VaultMeta(
        id=str(vault_id),
        organization_id=str(organization.pk),
        name=name,
        type=type,
        owner_id=str(membership.user_id),
        created_at=now_iso(),
    )
    try:
        vault_store().create(meta, _envelope(owner_wrapping, "The wrapping"))
    except StoreError as exc:
        raise InvalidInput(str(exc)) from None
    if team is not None:
        with scope(organization=organization):
            others = TeamMembership.objects.filter(team=team).exclude(user_id=membership.user_id)
            for user_id in others.values_list("user_id", flat=True):
                PendingMember.objects.create(organization=organization, vault=vault, user_id=user_id)
    _vault_event(
        acting=acting,
        action="vault.create",
        vault=vault,
        name=name,
        before=None,
        after=snapshots.vault_snapshot(vault, meta),
    )
    return _view(vault, membership.user_id)


@transaction.atomic
def vault_rename(*, acting: Membership, view: VaultView, name: str) -> VaultView:
    _require_vault_role(view, ("owner",), "rename the vault")
    vault_store().rename(view.id, name)
    renamed = _view(view.vault, acting.user_id)
    _vault_event(
        acting=acting,
        action="vault.rename",
        vault=view.vault,
        name=renamed.meta.name,
        before=snapshots.vault_snapshot(view.vault, view.meta),
        after=snapshots.vault_snapshot(view.vault, renamed.meta),
    )
    return renamed


@transaction.atomic
def vault_delete(*, acting: Membership, view: VaultView) -> None:
    _require_vault_role(view, ("owner",), "delete the vault")
    _vault_event(
        acting=acting,
        action="vault.delete",
        vault=view.vault,
        name=view.meta.name,
        before=snapshots.vault_snapshot(view.vault, view.meta),
        after=None,
    )
    vault_store().delete(view.id)
    view.vault.delete()


@transaction.atomic
def vault_grant(*, acting: Membership, view: VaultView, user_id: uuid.UUID, role: str, wrapping: bytes) -> VaultView:
    """Add a member with the vault key the granting owner wrapped to the member's public key."""
    _require_vault_role(view, ("owner",), "grant access")
    if view.meta.type == "personal":
        raise InvalidInput("A personal vault has exactly one member; share through a shared vault.")
    if not Membership.objects.filter(organization_id=view.vault.organization_id, user_id=user_id).exists():
        raise InvalidInput("That user is not a member of this organization.")
    _public_key_of(user_id)
    try:
        vault_store().member_grant(view.id, Member(user_id=str(user_id), role=role), _envelope(wrapping, "wrapping"))
    except StaleKeyVersion as exc:
        raise Conflict(f"{exc}; fetch the current wrapping and wrap again.") from None
    except LastOwner as exc:
        raise Conflict(f"{exc}; make someone else owner first.") from None
    except StoreError as exc:
        raise InvalidInput(str(exc)) from None
    with scope(organization=view.vault.organization_id):
        PendingMember.objects.filter(vault=view.vault, user_id=user_id).delete()  # confirmed
    had = next((m.role for m in view.members if m.user_id == str(user_id)), None)
    _vault_event(
        acting=acting,
        action="vault.grant",
        vault=view.vault,
        name=view.meta.name,
        before=snapshots.vault_member_snapshot(user_id, had) if had is not None else None,
        after=snapshots.vault_member_snapshot(user_id, role),
    )
    return view


@transaction.atomic
def vault_revoke(*, acting: Membership, view: VaultView, user_id: uuid.UUID) -> VaultMeta:
    """Remove a member now; the vault key must then rotate (the control plane cannot do it: no plaintext)."""
    if user_id != acting.user_id:
        _require_vault_role(view, ("owner",), "revoke access")
    if not any(m.user_id == str(user_id) for m in view.members):
        raise NotFound("That user is not a member of this vault.")
    return _revoke(view.vault, user_id=user_id, acting=acting)


def _lock_index(vault: Vault) -> None:
    """Serialize revokes and rotations of one vault (the store's own lock ends before the index is written)."""
    with scope(organization=vault.organization_id):
        Vault.objects.select_for_update().filter(pk=vault.pk).first()


def _revoke(vault: Vault, *, user_id: uuid.UUID, acting: Membership) -> VaultMeta:
    _lock_index(vault)
    role = next((m.role for m in vault_store().members(str(vault.pk)) if m.user_id == str(user_id)), "")
    try:
        meta = vault_store().member_revoke(str(vault.pk), str(user_id), requested_by=str(acting.user_id))
    except LastOwner as exc:
        raise Conflict(f"{exc}; make someone else owner first.") from None
    except StoreError as exc:
        raise NotFound(str(exc)) from None
    with scope(organization=vault.organization_id):
        Vault.objects.filter(pk=vault.pk).update(rotation_requested_at=timezone.now())
    _vault_event(
        acting=acting,
        action="vault.revoke",
        vault=vault,
        name=meta.name,
        before=snapshots.vault_member_snapshot(user_id, role),
        after=None,
    )
    transaction.on_commit(lambda: _queue_rotation(str(vault.pk)))
    return meta


def _queue_rotation(vault_id: str) -> None:
    """Ask the worker to rotate now; if the broker is down, beat's minute-by-minute run will still do it."""
    import logging

    from vaults.tasks import rotations_drive_task

    try:
        rotations_drive_task.delay(vault_id=vault_id)
    except Exception:  # noqa: BLE001  (the revoke has committed; the periodic task is the fallback)
        logging.getLogger(__name__).warning("could not queue the rotation of vault %s; beat will retry", vault_id)


@transaction.atomic
def vaults_member_leave(*, acting: Membership, organization: Organization, user_id: uuid.UUID) -> None:
    """Someone leaves the organization: their personal vault goes, and they are revoked from every shared
    vault (each then awaits rotation). Refused, before anything changes, while they are the only owner of a
    shared vault."""
    with scope(organization=organization):
        vaults = list(Vault.objects.filter(organization=organization))
        PendingMember.objects.filter(organization=organization, user_id=user_id).delete()
    store = vault_store()
    shared: list[Vault] = []
    for vault in vaults:
        if vault.personal_owner_id == user_id:
            continue
        members = store.members(str(vault.pk))
        if not any(m.user_id == str(user_id) for m in members):
            continue
        owners = [m.user_id for m in members if m.role == "owner"]
        if owners == [str(user_id)]:
            name = store.meta(str(vault.pk)).name
            raise Conflict(f"They are the only owner of the vault {name!r}; make someone else owner first.")
        shared.append(vault)
    for vault in shared:
        _revoke(vault, user_id=user_id, acting=acting)
    for vault in vaults:
        if vault.personal_owner_id == user_id:
            store.delete(str(vault.pk))
            with scope(organization=organization):
                vault.delete()


def team_vaults_member_joined(*, team: Team, user_id: uuid.UUID) -> int:
    """Someone joined TEAM: they wait to be confirmed in each of its vaults (an owner wraps the key to them).
    How many vaults they now wait for."""
    with scope(organization=team.organization_id):
        vaults = list(Vault.objects.filter(team=team))
        queued = 0
        for vault in vaults:
            if any(m.user_id == str(user_id) for m in vault_store().members(str(vault.pk))):
                continue
            _, made = PendingMember.objects.get_or_create(
                organization_id=team.organization_id, vault=vault, user_id=user_id
            )
            queued += made
            if made:
                transaction.on_commit(partial(_queue_confirmations, str(vault.pk)))
    return queued


def team_vaults_member_left(*, acting: Membership, team: Team, user_id: uuid.UUID) -> None:
    """Someone left TEAM: they stop waiting for its vaults, and are revoked from those they were in (each then
    rotates), as when leaving the organization; the only owner of a vault stays its owner."""
    with scope(organization=team.organization_id):
        vaults = list(Vault.objects.filter(team=team))
        PendingMember.objects.filter(vault__in=vaults, user_id=user_id).delete()
    for vault in vaults:
        members = vault_store().members(str(vault.pk))
        mine = next((m for m in members if m.user_id == str(user_id)), None)
        if mine is None:
            continue
        if mine.role == "owner" and not any(m.role == "owner" and m.user_id != mine.user_id for m in members):
            continue  # nobody else could grant, revoke or rotate: make someone else owner, then revoke
        _revoke(vault, user_id=user_id, acting=acting)


def vaults_drop_for_organization(*, organization: Organization) -> None:
    """The store's side of deleting an organization: every vault's ciphertext and metadata."""
    with scope(organization=organization):
        ids = [str(v) for v in Vault.objects.filter(organization=organization).values_list("pk", flat=True)]
    for vault_id in ids:
        try:
            vault_store().delete(vault_id)
        except VaultMissing:
            pass


def member_public_keys(members: list[Member]) -> dict[str, bytes]:
    """Each member's public key, for wrapping a new vault key; a member without one blocks the rotation."""
    keys = {
        str(k.user_id): bytes(k.public_key)
        for k in UserKeys.objects.filter(user_id__in=[uuid.UUID(m.user_id) for m in members])
    }
    missing = [m.user_id for m in members if m.user_id not in keys]
    if missing:
        raise Conflict(f"Members without a key pair: {', '.join(missing)}; revoke them, then rotate.")
    return keys


def vault_export(*, view: VaultView) -> tuple[VaultMeta, list[Member], dict[str, bytes]]:
    _require_vault_role(view, ("owner",), "rotate the key")
    return vault_store().export(view.id)


@transaction.atomic
def vault_rotate(
    *, acting: Membership, view: VaultView, from_version: int, blobs: dict[str, bytes], wrappings: dict[str, bytes]
) -> VaultMeta:
    _require_vault_role(view, ("owner",), "rotate the key")
    return _rotate(view.vault, acting=acting, from_version=from_version, blobs=blobs, wrappings=wrappings)


def _rotate(
    vault: Vault,
    *,
    acting: Membership | None,
    from_version: int,
    blobs: dict[str, bytes],
    wrappings: dict[str, bytes],
) -> VaultMeta:
    _lock_index(vault)
    try:
        meta = vault_store().rotate(str(vault.pk), from_version=from_version, blobs=blobs, wrappings=wrappings)
        # The store is the truth; this index only helps the worker find pending rotations (and it rechecks).
        with scope(organization=vault.organization_id):
            Vault.objects.filter(pk=vault.pk).update(rotation_requested_at=None)
        _vault_event(
            acting=acting,
            action="vault.rotate",
            vault=vault,
            name=meta.name,
            before={"key_version": from_version},
            after={"key_version": meta.key_version},
        )
        return meta
    except (RotationConflict, StaleKeyVersion) as exc:
        raise Conflict(f"{exc}; export the vault and prepare the rotation again.") from None
    except StoreError as exc:
        raise InvalidInput(str(exc)) from None


# --- credentials ----------------------------------------------------------------------------------------


def credentials_readable(*, membership: Membership, pins: list[str]) -> set[str]:
    """Which of PINS ("vault_id:credential_id") name a credential of a vault MEMBERSHIP is a member of."""
    wanted = set(pins)
    found: set[str] = set()
    with scope(organization=membership.organization):
        views = vault_list_for(membership=membership)
    for view in views:
        if view.my_role is not None:
            found |= {f"{view.id}:{c.id}" for c in vault_store().credentials(view.id)} & wanted
    return found


def pins_for_other_projects(*, organization: Organization, pins: list[str], project: Project | None) -> list[str]:
    """Which of PINS are in a vault of another project than PROJECT: such a vault serves no session outside its
    project, so the pin could never apply."""
    vault_ids = {p.split(":", 1)[0] for p in pins}
    with scope(organization=organization):
        elsewhere = {
            str(v)
            for v in Vault.objects.filter(organization=organization, pk__in=vault_ids, project__isnull=False)
            .exclude(project=project)
            .values_list("pk", flat=True)
        }
    return [p for p in pins if p.split(":", 1)[0] in elsewhere]


def _credential_id_taken(organization_id: uuid.UUID, credential_id: str) -> str | None:
    """The name of the organization's vault holding a credential with this id, if any: ids are unique across
    the organization, so a pin, an approval and an audit record each name one credential."""
    with scope(organization=organization_id):
        vaults = list(Vault.objects.filter(organization_id=organization_id))
    for vault in vaults:
        try:
            if any(c.id == credential_id for c in vault_store().credentials(str(vault.pk))):
                return vault_store().meta(str(vault.pk)).name
        except VaultMissing:
            continue
    return None


DUE_WITHIN = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class DueCredential:
    """A credential whose value should be replaced soon (`aileron secret update`), and why."""

    vault: VaultView
    credential: CredentialMeta
    why: str  # "expires" or "rotation due"
    due_at: datetime

    @property
    def owners(self) -> list[str]:
        return [m.user_id for m in self.vault.members if m.role == "owner"]


def _due(credential: CredentialMeta, horizon: datetime) -> tuple[str, datetime] | None:
    try:
        if credential.expires_at:
            expires = datetime.fromisoformat(credential.expires_at)
            if expires <= horizon:
                return "expires", expires
        if credential.rotate_every_days > 0:
            since = datetime.fromisoformat(credential.updated_at or credential.created_at)
            rotate = since + timedelta(days=credential.rotate_every_days)
            if rotate <= horizon:
                return "rotation due", rotate
    except ValueError:
        return None
    return None


def credentials_due(*, membership: Membership, within: timedelta = DUE_WITHIN) -> list[DueCredential]:
    """The credentials of vaults MEMBERSHIP owns (every vault, for who may see all) that expire or are due for
    replacement within WITHIN, soonest first: what `aileron status` and the API warn owners about."""
    horizon = timezone.now() + within
    see_all = role_has(membership.role, Perm.VAULT_VIEW_ALL)
    found = []
    for view in vault_list_for(membership=membership):
        if view.my_role != "owner" and not see_all:
            continue
        for credential in vault_store().credentials(view.id):
            due = _due(credential, horizon)
            if due is not None:
                found.append(DueCredential(vault=view, credential=credential, why=due[0], due_at=due[1]))
    return sorted(found, key=lambda d: d.due_at)


def credentials_due_warn(*, within: timedelta = DUE_WITHIN) -> int:
    """Celery beat: warn about every credential due within WITHIN, naming its vault's owners (in the service
    log; `aileron status` and the API show the same to the owners). How many are due."""
    import logging

    log = logging.getLogger(__name__)
    horizon = timezone.now() + within
    due = 0
    with scopes_disabled():
        vaults = list(Vault.objects.select_related("organization"))
    for vault in vaults:
        try:
            members = vault_store().members(str(vault.pk))
            credentials = vault_store().credentials(str(vault.pk))
            vault_name = vault_store().meta(str(vault.pk)).name
        except VaultMissing:
            continue
        owners = [m.user_id for m in members if m.role == "owner"]
        for credential in credentials:
            found = _due(credential, horizon)
            if found is None:
                continue
            due += 1
            with scopes_disabled():
                emails = sorted(
                    Membership.objects.filter(organization=vault.organization, user_id__in=owners).values_list(
                        "user__email", flat=True
                    )
                )
            log.warning(
                "credential %s in vault %s (%s) %s at %s: owners %s, run `aileron secret update %s`",
                credential.name,
                vault.pk,
                vault.organization.slug,
                found[0],
                found[1].isoformat(),
                ", ".join(emails) or "none",
                credential.name,
            )
            _notify_due(vault, vault_name, credential, why=found[0], due_at=found[1], owners=emails)
    return due


def _notify_due(
    vault: Vault, vault_name: str, credential: CredentialMeta, *, why: str, due_at: datetime, owners: list[str]
) -> None:
    """Tell the organization's notification channels, once a day per credential version (the task runs hourly)."""
    from approvals.notifications import notifications_credential_due

    _, first = CredentialDueNotice.objects.get_or_create(
        organization_id=vault.organization_id,
        credential_id=credential.id,
        version=credential.version,
        day=timezone.now().date(),
    )
    if first:
        notifications_credential_due(
            organization_id=vault.organization_id,
            credential={
                "id": credential.id,
                "name": credential.name,
                "vault": vault_name,
                "vault_id": str(vault.pk),
                "connector": credential.connector,
                "version": credential.version,
                "why": why,
                "due_at": due_at.isoformat(),
                "owners": owners,
            },
        )


def credential_list(*, view: VaultView) -> list[CredentialMeta]:
    return vault_store().credentials(view.id)


def credential_get(*, view: VaultView, credential_id: uuid.UUID) -> tuple[CredentialMeta, bytes]:
    try:
        return vault_store().credential(view.id, str(credential_id))
    except StoreError:
        raise NotFound("No such credential.") from None


@transaction.atomic
def credential_add(
    *,
    view: VaultView,
    acting_user_id: uuid.UUID,
    credential_id: uuid.UUID,
    name: str,
    connector: str,
    ciphertext: bytes,
    action_bindings: list[str],
) -> CredentialMeta:
    """Store a credential the caller's CLI encrypted under the vault's current key.

    CONNECTOR and ACTION_BINDINGS must be installed (a credential for `githb` would never be used)."""
    _require_vault_role(view, WRITE_ROLES, "add credentials")
    catalog_connector_validate(name=connector, pointer="/connector")
    for n, action_id in enumerate(action_bindings):
        catalog_action_validate(action_id=action_id, connector=connector, pointer=f"/action_bindings/{n}")
    store = vault_store()
    existing = store.credentials(view.id)
    if any(c.name == name for c in existing):
        raise Conflict(
            f"This vault already has a credential named {name!r}; replace its value with `aileron secret update`."
        )
    if any(c.id == str(credential_id) for c in existing) or _credential_id_taken(
        view.vault.organization_id, str(credential_id)
    ):
        raise Conflict("A credential with that id exists; choose another id.")
    meta = CredentialMeta(
        id=str(credential_id),
        name=name,
        connector=connector,
        action_bindings=action_bindings,
        created_at=timezone.now().isoformat(),
        created_by=str(acting_user_id),
    )
    try:
        stored = store.credential_put(view.id, meta, _envelope(ciphertext, "The ciphertext"))
    except StaleKeyVersion as exc:
        raise Conflict(f"{exc}; fetch your wrapping and encrypt again.") from None
    except RotationPending as exc:
        raise Conflict(f"{exc}: run `aileron vault rotate {view.meta.name}`.", rotation_pending=True) from None
    except VaultFull as exc:
        raise Conflict(str(exc)) from None
    except StoreError as exc:
        raise InvalidInput(str(exc)) from None
    _credential_event(view, acting_user_id, "credential.create", None, stored)
    return stored


def _credential_event(
    view: VaultView, acting_user_id: uuid.UUID, action: str, before: CredentialMeta | None, after: CredentialMeta | None
) -> None:
    """A credential's admin event, in its vault's organization; never its value."""
    acting = Membership.objects.filter(organization_id=view.vault.organization_id, user_id=acting_user_id).first()
    target = after or before
    assert target is not None  # noqa: S101 - one of the two always
    admin_event_record(
        acting=acting,
        organization=view.vault.organization,
        action=action,
        target_type="credential",
        target_id=target.id,
        target_label=f"{view.meta.name}/{target.name}",
        before=snapshots.credential_snapshot(before) if before is not None else None,
        after=snapshots.credential_snapshot(after) if after is not None else None,
    )


@transaction.atomic
def credential_update(
    *,
    view: VaultView,
    acting_user_id: uuid.UUID,
    credential_id: uuid.UUID,
    ciphertext: bytes,
    expires_at: str | None = None,
    rotate_every_days: int | None = None,
) -> CredentialMeta:
    """Replace a credential's value (encrypted by the caller's CLI under the current vault key) as its next
    version. Sessions get the new version within the data plane's cache time; no request mixes the two."""
    _require_vault_role(view, WRITE_ROLES, "update credentials")
    previous = next((c for c in vault_store().credentials(view.id) if c.id == str(credential_id)), None)
    try:
        replaced = vault_store().credential_replace(
            view.id,
            str(credential_id),
            _envelope(ciphertext, "The ciphertext"),
            updated_by=str(acting_user_id),
            expires_at=expires_at,
            rotate_every_days=rotate_every_days,
        )
    except StaleKeyVersion as exc:
        raise Conflict(f"{exc}; fetch your wrapping and encrypt again.") from None
    except RotationPending as exc:
        raise Conflict(f"{exc}: run `aileron vault rotate {view.meta.name}`.", rotation_pending=True) from None
    except StoreError as exc:
        raise NotFound(str(exc)) from None
    _credential_event(view, acting_user_id, "credential.update", previous, replaced)
    return replaced


@transaction.atomic
def credential_remove(*, view: VaultView, credential_id: uuid.UUID, acting_user_id: uuid.UUID) -> None:
    _require_vault_role(view, WRITE_ROLES, "remove credentials")
    previous = next((c for c in vault_store().credentials(view.id) if c.id == str(credential_id)), None)
    try:
        vault_store().credential_delete(view.id, str(credential_id))
    except StoreError:
        raise NotFound("No such credential.") from None
    if previous is not None:
        _credential_event(view, acting_user_id, "credential.delete", previous, None)


# --- what the data plane's credential service may fetch (service token only) ------------------------------


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session_id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID
    expires_at: object
    keys: UserKeys
    lookup: str = ""  # the token's non-secret part: what a sealed master key is bound to


def session_keys_resolve(*, session_token: str | None = None, session_id: uuid.UUID | None = None) -> SessionKeys:
    """The live agent session a token (or, for a key channel relayed through here, an id) stands for, with its
    user's sealed key material (opaque here). By id only the session's own token lookup comes back, never the
    token: a relayed `open` never carries the token, and the master key it carries is sealed to that lookup."""
    from tenants.models import ApiToken
    from tenants.selectors import token_authenticate

    if session_id is not None:
        found = ApiToken.objects.filter(pk=session_id, kind="ses").select_related("user").first()
        token = found if found is not None and _session_live(found) else None
    else:
        token = token_authenticate(raw=session_token or "")
    if token is None or token.kind != "ses" or token.user is None or token.organization_id is None:
        raise NotFound("No live session for that token.")
    keys = UserKeys.objects.filter(user=token.user).first()
    if keys is None:
        raise NotFound("The session's user has no key pair.")
    return SessionKeys(
        session_id=token.pk,
        user_id=token.user.pk,
        organization_id=token.organization_id,
        expires_at=token.expires_at,
        keys=keys,
        lookup=token.lookup,
    )


def _session_live(session: Any) -> bool:
    """The same rules as bearer authentication: not revoked, not expired, its user active and still a member."""
    from django_scopes import scopes_disabled

    if not session.is_active or session.organization_id is None or session.user is None or not session.user.is_active:
        return False
    with scopes_disabled():
        return Membership.objects.filter(organization_id=session.organization_id, user_id=session.user_id).exists()


def bundle_for_session(*, session_id: uuid.UUID, vault_id: uuid.UUID, credential_id: uuid.UUID) -> Bundle:
    """Ciphertext and the session user's wrapping, if the session is live and its user is a vault member."""
    from django_scopes import scopes_disabled

    from tenants.models import ApiToken

    session = ApiToken.objects.filter(pk=session_id, kind="ses").select_related("user").first()
    if session is None or session.organization_id is None or not _session_live(session):
        raise NotFound("No live session.")
    with scopes_disabled():
        vault = Vault.objects.filter(pk=vault_id, organization_id=session.organization_id).first()
    if vault is None:
        raise NotFound("No such vault in the session's organization.")
    try:
        return vault_store().bundle(str(vault.pk), str(session.user_id), str(credential_id))
    except StoreError:
        raise NotFound("No such credential for this session's user.") from None


# --- rotations driven through the data plane's credential service -------------------------------------


def _owner_session(*, session_id: uuid.UUID, vault_id: uuid.UUID) -> tuple[Any, Vault]:
    from django_scopes import scopes_disabled

    from tenants.models import ApiToken

    session = ApiToken.objects.filter(pk=session_id, kind="ses").select_related("user").first()
    if session is None or session.organization_id is None or not _session_live(session):
        raise NotFound("No live session.")
    with scopes_disabled():
        vault = Vault.objects.filter(pk=vault_id, organization_id=session.organization_id).first()
    if vault is None:
        raise NotFound("No such vault in the session's organization.")
    members = vault_store().members(str(vault.pk))
    if not any(m.user_id == str(session.user_id) and m.role == "owner" for m in members):
        raise NotFound("The session's user is not an owner of that vault.")
    return session, vault


def rotation_export_for_session(*, session_id: uuid.UUID, vault_id: uuid.UUID) -> dict[str, Any]:
    """What a vault owner's credential service needs to rotate: ciphertexts, members' keys, its wrapping."""
    session, vault = _owner_session(session_id=session_id, vault_id=vault_id)
    meta, members, blobs = vault_store().export(str(vault.pk))
    _, wrapping = vault_store().wrapping(str(vault.pk), str(session.user_id))
    keys = member_public_keys(members)
    return {
        "organization_id": meta.organization_id,
        "key_version": meta.key_version,
        "wrapping": wrapping or b"",
        "members": [{"user_id": m.user_id, "public_key": keys[m.user_id]} for m in members],
        "credentials": blobs,
    }


@transaction.atomic
def rotation_commit_for_session(
    *,
    session_id: uuid.UUID,
    vault_id: uuid.UUID,
    from_version: int,
    blobs: dict[str, bytes],
    wrappings: dict[str, bytes],
) -> VaultMeta:
    _, vault = _owner_session(session_id=session_id, vault_id=vault_id)
    # The worker drove it (after a revoke) through an owner's credential service: the system acted.
    return _rotate(vault, acting=None, from_version=from_version, blobs=blobs, wrappings=wrappings)


def _owner_sessions(vault: Vault) -> list[Any]:
    """The live agent sessions of the vault's owners, newest first: whose unlocked keys in the credential
    service can rotate the vault or let waiting team members in (VaultMissing if its store is gone)."""
    from tenants.models import ApiToken

    owners = [m.user_id for m in vault_store().members(str(vault.pk)) if m.role == "owner"]
    return list(
        ApiToken.objects.filter(
            kind="ses",
            organization_id=vault.organization_id,
            user_id__in=owners,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        ).order_by("-created_at")
    )


def rotations_drive(*, vault_id: str | None = None, key_socket: Any = None) -> int:
    """Ask the credential service to rotate each vault awaiting it, through a live session of one of its owners.

    The control plane cannot rotate (it has no plaintext); a vault owner's unlocked session in the data plane
    can. Vaults with no owner online stay pending and show in `aileron vault list` until an owner's CLI or a
    later run of this task completes them. Returns how many vaults were rotated.
    """
    import logging

    from django.conf import settings
    from django_scopes import scopes_disabled

    from aileron_shared.keychannel import request

    log = logging.getLogger(__name__)
    socket_path = key_socket or settings.AILERON_KEY_SOCKET
    with scopes_disabled():
        pending = Vault.objects.filter(rotation_requested_at__isnull=False)
        if vault_id is not None:
            pending = pending.filter(pk=vault_id)
        vaults = list(pending)
    rotated = 0
    for vault in vaults:
        try:
            pending_rotation = vault_store().meta(str(vault.pk)).rotation
        except VaultMissing:
            log.error("vault %s is indexed but missing from the store", vault.pk)
            continue
        if pending_rotation is None:  # done meanwhile (e.g. by an owner's CLI)
            with scope(organization=vault.organization_id):
                Vault.objects.filter(pk=vault.pk).update(rotation_requested_at=None)
            continue
        for session in _owner_sessions(vault):
            try:
                answer = request(
                    socket_path, {"op": "rotate", "session_id": str(session.pk), "vault_id": str(vault.pk)}
                )
            except (OSError, ValueError) as exc:
                log.warning("vault %s awaits rotation: no answer from the credential service (%s)", vault.pk, exc)
                return rotated
            if not answer.get("ok"):
                log.warning(
                    "vault %s: rotation through session %s failed: %s", vault.pk, session.pk, answer.get("error")
                )
            if answer.get("ok"):
                rotated += 1
                log.info(
                    "vault %s rotated to key version %s through session %s",
                    vault.pk,
                    answer.get("key_version"),
                    session.pk,
                )
                break
        else:
            log.info("vault %s awaits rotation: no owner has an unlocked session", vault.pk)
    return rotated


# --- team-vault confirmations completed through the data plane's credential service ------------------------


def confirm_export_for_session(*, session_id: uuid.UUID, vault_id: uuid.UUID) -> dict[str, Any]:
    """What a vault owner's credential service needs to let the waiting team members in: its wrapping of the
    current key, and each waiting person's public key (those without a key pair yet are left waiting)."""
    session, vault = _owner_session(session_id=session_id, vault_id=vault_id)
    if not vault.auto_confirm:
        raise NotFound("That vault's owners confirm each person themselves (`aileron vault confirm`).")
    version, wrapping = vault_store().wrapping(str(vault.pk), str(session.user_id))
    with scope(organization=vault.organization_id):
        waiting = list(PendingMember.objects.filter(vault=vault).values_list("user_id", "role"))
    keys = {k.user_id: bytes(k.public_key) for k in UserKeys.objects.filter(user_id__in=[u for u, _ in waiting])}
    return {
        "organization_id": vault.organization_id,
        "key_version": version,
        "wrapping": wrapping or b"",
        "waiting": [{"user_id": u, "role": role, "public_key": keys[u]} for u, role in waiting if u in keys],
    }


@transaction.atomic
def confirm_commit_for_session(
    *, session_id: uuid.UUID, vault_id: uuid.UUID, key_version: int, wrappings: dict[str, bytes]
) -> int:
    """Add each waiting person the owner's session wrapped the key to; how many. Only people who wait."""
    _, vault = _owner_session(session_id=session_id, vault_id=vault_id)
    if not vault.auto_confirm:
        raise NotFound("That vault's owners confirm each person themselves (`aileron vault confirm`).")
    name = vault_store().meta(str(vault.pk)).name
    with scope(organization=vault.organization_id):
        waiting = {str(p.user_id): p for p in PendingMember.objects.select_for_update().filter(vault=vault)}
        done = 0
        for user_id, wrapping in wrappings.items():
            pending = waiting.get(user_id)
            if pending is None:
                raise InvalidInput(f"{user_id} does not wait for this vault.")
            if crypto.envelope_key_version(_envelope(wrapping, "A wrapping")) != key_version:
                raise Conflict("The vault's key changed; export again.")
            try:
                vault_store().member_grant(str(vault.pk), Member(user_id=user_id, role=pending.role), wrapping)
            except StaleKeyVersion as exc:
                raise Conflict(f"{exc}; export again.") from None
            except StoreError as exc:
                raise InvalidInput(str(exc)) from None
            pending.delete()
            done += 1
            _vault_event(
                acting=None,  # the worker let them in through an owner's credential service
                action="vault.confirm",
                vault=vault,
                name=name,
                before=None,
                after=snapshots.vault_member_snapshot(user_id, pending.role),
            )
    return done


def _queue_confirmations(vault_id: str) -> None:
    import logging

    from vaults.tasks import confirmations_drive_task

    try:
        confirmations_drive_task.delay(vault_id=vault_id)
    except Exception:  # noqa: BLE001  (beat's minute-by-minute run is the fallback)
        logging.getLogger(__name__).warning("could not queue confirmations for vault %s; beat will retry", vault_id)


def confirmations_drive(*, vault_id: str | None = None, key_socket: Any = None) -> int:
    """Ask the credential service to let waiting team members into each team vault, through a live session of
    one of its owners (the control plane cannot wrap a key it never sees). Vaults with no owner online keep
    their waiting members until an owner's CLI or a later run does it. How many people were let in."""
    import logging

    from django.conf import settings

    from aileron_shared.keychannel import request

    log = logging.getLogger(__name__)
    socket_path = key_socket or settings.AILERON_KEY_SOCKET
    with scopes_disabled():
        ids = PendingMember.objects.filter(user__keys__isnull=False)
        if vault_id is not None:
            ids = ids.filter(vault_id=vault_id)
        vaults = list(Vault.objects.filter(pk__in=ids.values("vault_id"), auto_confirm=True))
    confirmed = 0
    for vault in vaults:
        try:
            sessions = _owner_sessions(vault)
        except VaultMissing:
            continue
        for session in sessions:
            try:
                answer = request(
                    socket_path, {"op": "confirm", "session_id": str(session.pk), "vault_id": str(vault.pk)}
                )
            except (OSError, ValueError) as exc:
                log.warning("vault %s: no answer from the credential service (%s)", vault.pk, exc)
                return confirmed
            if answer.get("ok"):
                confirmed += int(answer.get("confirmed", 0))
                break
            log.info("vault %s: confirming through session %s failed: %s", vault.pk, session.pk, answer.get("error"))
        else:
            log.info("vault %s: people wait, and no owner has an unlocked session", vault.pk)
    return confirmed


def session_alive_check(*, session_id: uuid.UUID) -> None:
    from tenants.models import ApiToken

    session = ApiToken.objects.filter(pk=session_id, kind="ses").select_related("user").first()
    if session is None or not _session_live(session):
        raise NotFound("No live session.")
