"""Picks the vault store backend from settings (AILERON_VAULT_STORE: file or database)."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from vaults.store import FileKV, VaultStore


@cache
def _store(kind: str, root: str) -> VaultStore:
    if kind == "database":
        from vaults.store_db import DbKV

        return VaultStore(DbKV())
    return VaultStore(FileKV(settings.AILERON_VAULT_ROOT.__class__(root)))


def vault_store() -> VaultStore:
    return _store(settings.AILERON_VAULT_STORE, str(settings.AILERON_VAULT_ROOT))
