"""Shapes of the vaults API. Binary envelopes travel as standard base64."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from rest_framework import serializers

from vaults.store import VAULT_ROLES, VAULT_TYPES

MAX_ENVELOPE_BYTES = 16 * 1024 + 64  # vaults.store.MAX_CREDENTIAL_BYTES plus the envelope header


class Base64Field(serializers.CharField):
    """Base64 text in JSON, bytes in Python."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_ENVELOPE_BYTES * 2)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> bytes:  # type: ignore[override]
        text = super().to_internal_value(data)
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise serializers.ValidationError("Must be standard base64.") from None

    def to_representation(self, value: Any) -> str:
        return base64.b64encode(bytes(value)).decode("ascii")


class KeysSerializer(serializers.Serializer[Any]):
    public_key = Base64Field(help_text="X25519 public key (32 bytes).")
    sealed_private_key = Base64Field(help_text="The private key sealed under the passphrase; opaque here.")
    kdf = serializers.DictField(help_text="Argon2id parameters and salt.")


class MemberSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=VAULT_ROLES)


class RotationSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField()
    requested_at = serializers.CharField()
    requested_by = serializers.CharField()
    from_version = serializers.IntegerField()


class WaitingSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=VAULT_ROLES)
    since = serializers.DateTimeField()


class VaultSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=VAULT_TYPES)
    owner_id = serializers.UUIDField()
    created_at = serializers.CharField()
    key_version = serializers.IntegerField()
    rotation_pending = RotationSerializer(allow_null=True, help_text="Set while the key awaits rotation.")
    members = MemberSerializer(many=True)
    my_role = serializers.ChoiceField(choices=VAULT_ROLES, allow_null=True)
    team = serializers.CharField(allow_null=True, help_text="A team vault: its team's slug; its members are readers.")
    project = serializers.CharField(allow_null=True, help_text="A project vault: the project's slug.")
    auto_confirm = serializers.BooleanField(help_text="Team vaults: joiners are let in without an owner's command.")
    waiting = WaitingSerializer(
        many=True, help_text="Team members waiting for an owner to wrap the key to them (`aileron vault confirm`)."
    )
    i_wait = serializers.BooleanField(help_text="You wait to be confirmed in this team vault.")


class VaultCreateSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(help_text="Chosen by the client: the wrapping binds it.")
    name = serializers.CharField(max_length=100, allow_blank=False)
    type = serializers.ChoiceField(choices=VAULT_TYPES, default="shared")
    wrapping = Base64Field(help_text="The new vault key (version 1) wrapped to your own public key.")
    team = serializers.UUIDField(
        required=False, allow_null=True, help_text="A team vault: the team whose members (now and later) read it."
    )
    project = serializers.UUIDField(
        required=False, allow_null=True, help_text="A project vault: its credentials serve that project's sessions."
    )
    auto_confirm = serializers.BooleanField(
        default=True,
        help_text="Team vaults: let whoever joins the team in without an owner's command (false: `vault confirm`).",
    )


class VaultRenameSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100, allow_blank=False)


class WrappingSerializer(serializers.Serializer[Any]):
    key_version = serializers.IntegerField()
    wrapping = Base64Field()


class GrantSerializer(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=VAULT_ROLES, default="reader")
    wrapping = Base64Field(help_text="The current vault key wrapped to that member's public key.")


class ExportMemberSerializer(MemberSerializer):
    public_key = Base64Field()


class ExportSerializer(serializers.Serializer[Any]):
    key_version = serializers.IntegerField()
    members = ExportMemberSerializer(many=True)
    credentials = serializers.DictField(child=Base64Field(), help_text="credential id -> ciphertext")


class RotateSerializer(serializers.Serializer[Any]):
    from_version = serializers.IntegerField(min_value=1)
    credentials = serializers.DictField(child=Base64Field(), help_text="credential id -> new ciphertext")
    wrappings = serializers.DictField(child=Base64Field(), help_text="user id -> new wrapping")


class CredentialSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    connector = serializers.CharField()
    type = serializers.CharField()
    action_bindings = serializers.ListField(child=serializers.CharField())
    created_at = serializers.CharField()
    created_by = serializers.CharField()
    key_version = serializers.IntegerField()
    version = serializers.IntegerField(help_text="The value's version: each `secret update` adds one.")
    updated_at = serializers.CharField()
    updated_by = serializers.CharField()
    expires_at = serializers.CharField(help_text='When the value expires (ISO 8601), "" for never.')
    rotate_every_days = serializers.IntegerField(help_text="How often it should be replaced; 0 for no schedule.")


class DueCredentialSerializer(serializers.Serializer[Any]):
    vault_id = serializers.UUIDField()
    vault = serializers.CharField()
    credential_id = serializers.UUIDField()
    name = serializers.CharField()
    connector = serializers.CharField()
    version = serializers.IntegerField()
    why = serializers.ChoiceField(choices=["expires", "rotation due"])
    due_at = serializers.DateTimeField()


class CredentialUpdateSerializer(serializers.Serializer[Any]):
    ciphertext = Base64Field(help_text="The new value, encrypted under the vault's current key for this id.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="null clears it.")
    rotate_every_days = serializers.IntegerField(required=False, min_value=0, max_value=3650)


class CredentialCreateSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(help_text="Chosen by the client: the ciphertext binds it.")
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", help_text="Letters, digits, . _ -")
    connector = serializers.RegexField(r"^[a-z0-9][a-z0-9-]{0,49}$")
    ciphertext = Base64Field()
    action_bindings = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list, max_length=100
    )


class CiphertextSerializer(serializers.Serializer[Any]):
    key_version = serializers.IntegerField()
    ciphertext = Base64Field()
