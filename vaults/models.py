"""Control-plane rows for vaults: the tenancy index, users' public key material, and the database backend.

Nothing here can be decrypted by the control plane: private keys are sealed under the user's passphrase,
vault keys are wrapped to members' public keys, credentials are encrypted under vault keys.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_scopes import ScopedManager

from tenants.models import Organization, Project, Team


class Vault(models.Model):
    """The tenancy index of a vault: which organization owns it. Its contents live in the store."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="vaults")
    # Set for a personal vault only, so each person has at most one per organization.
    personal_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Mirrors the store's pending rotation so the worker can find vaults awaiting one without reading them all.
    rotation_requested_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # A team vault: the team's members are its readers, now and later (each waits as a PendingMember until an
    # owner wraps the key to them). The vault stays, as a plain shared vault, if the team is deleted.
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="vaults")
    # Let whoever joins the team in without asking (the owner's CLI or session wraps the key as soon as it
    # can). False: only `aileron vault confirm`, typed by an owner, does: whoever manages teams cannot read the
    # vault by joining its team.
    auto_confirm = models.BooleanField(default=True)
    # A project vault: its credentials are for that project's sessions only, and win over team and personal ones
    # there (policies.selectors.credential_candidates). Members are granted as for any shared vault.
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="vaults")

    objects: models.Manager[Vault] = ScopedManager(organization="organization")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "personal_owner"], name="vault_one_personal_per_member")
        ]

    def __str__(self) -> str:
        return str(self.id)


class PendingMember(models.Model):
    """Someone who should be a member of a team vault and waits for its key to be wrapped to them. Only a holder
    of the key can wrap it (zero knowledge): an owner, through `aileron vault confirm`, their CLI when it next
    unlocks their keys, or the data plane for an owner with a live session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=16, default="reader")
    requested_at = models.DateTimeField(default=timezone.now)

    objects: models.Manager[PendingMember] = ScopedManager(organization="organization")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vault", "user"], name="pending_member_once")]

    def __str__(self) -> str:
        return f"{self.user_id} waits for {self.vault_id}"


class UserKeys(models.Model):
    """A user's X25519 public key and the private key sealed under their passphrase (opaque here)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="keys"
    )
    public_key = models.BinaryField(max_length=32)
    sealed_private_key = models.BinaryField(max_length=256)
    kdf = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"keys of {self.user_id}"


class StoredVault(models.Model):
    """Database backend: one row per vault to lock on."""

    vault_id = models.UUIDField(primary_key=True)

    def __str__(self) -> str:
        return str(self.vault_id)


class StoredFile(models.Model):
    """Database backend: one row per file of the seed's layout (same paths as the file backend)."""

    vault = models.ForeignKey(StoredVault, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=200)
    content = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vault", "path"], name="stored_file_unique_path")]

    def __str__(self) -> str:
        return f"{self.vault_id}/{self.path}"


class KeyChannelMessage(models.Model):
    """One key-channel request from a CLI to the data plane, relayed through the control plane, and its answer.

    For a CLI on another machine than the data plane (vaults.keyrelay). The control plane cannot open what it
    carries: a master key travels HPKE-sealed to the key the data plane's attestation report names. A row
    lives for seconds: its request is cleared when the data plane claims it, and the row is deleted when the
    CLI has its answer (or gave up waiting).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    op = models.CharField(max_length=16)
    body = models.JSONField(default=dict)
    answer = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.op} {self.id}"


class CredentialDueNotice(models.Model):
    """That the organization's notification channels were told, on DAY, that a credential (at VERSION) is due:
    the hourly warning reaches them once a day per credential, not every hour."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    credential_id = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["credential_id", "version", "day"], name="credential_due_notice_once")
        ]

    def __str__(self) -> str:
        return f"{self.credential_id} v{self.version} on {self.day}"
