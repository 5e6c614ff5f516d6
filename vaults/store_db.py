"""The database backend of the vault store: the seed's files as rows, each commit one transaction."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from django.db import transaction

from vaults.models import StoredFile, StoredVault


class DbKV:
    @contextlib.contextmanager
    def lock(self, vault_id: str) -> Iterator[None]:
        from vaults.store import VaultMissing

        with transaction.atomic():
            try:
                StoredVault.objects.get_or_create(vault_id=vault_id)
                StoredVault.objects.select_for_update().get(vault_id=vault_id)
            except StoredVault.DoesNotExist:
                # Dropped by a concurrent vault deletion between the two statements (seen under schemathesis).
                raise VaultMissing(f"vault {vault_id} is gone") from None
            yield

    def read(self, vault_id: str, path: str) -> bytes | None:
        row = (
            StoredFile.objects.filter(vault_id=uuid.UUID(vault_id), path=path).values_list("content", flat=True).first()
        )
        return bytes(row) if row is not None else None

    def listdir(self, vault_id: str, prefix: str) -> list[str]:
        start = prefix.rstrip("/") + "/"
        paths = StoredFile.objects.filter(vault_id=uuid.UUID(vault_id), path__startswith=start).values_list(
            "path", flat=True
        )
        return sorted(p for p in paths if "/" not in p[len(start) :])

    def commit(self, vault_id: str, writes: dict[str, bytes], deletes: list[str]) -> None:
        with transaction.atomic():
            vault, _ = StoredVault.objects.get_or_create(vault_id=vault_id)
            for path, content in writes.items():
                StoredFile.objects.update_or_create(vault=vault, path=path, defaults={"content": content})
            if deletes:
                StoredFile.objects.filter(vault=vault, path__in=deletes).delete()

    def exists(self, vault_id: str) -> bool:
        return StoredFile.objects.filter(vault_id=uuid.UUID(vault_id), path="meta.json").exists()

    def drop(self, vault_id: str) -> None:
        StoredVault.objects.filter(vault_id=vault_id).delete()
