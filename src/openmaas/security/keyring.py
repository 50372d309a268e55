"""The key hierarchy in the database: root key -> per-tenant key -> per-object data key.

Tenant keys are random (never derived from the root, or destroying one would destroy
nothing) and stored only wrapped by the root key. Object keys are random and stored only
wrapped by their tenant's key. Destroying a wrapped tenant key makes every object of that
tenant unreadable at once, backups of the blobs included (crypto-shredding).
"""

from __future__ import annotations

import hashlib
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.security.envelope import EnvelopeError
from openmaas.security.keywrap import key_id, new_key, unwrap_key, wrap_key
from openmaas.store.db import Database
from openmaas.store.tables import TenantKey

__all__ = ["KeyDestroyedError", "Keyring", "WrongRootKeyError"]


class KeyDestroyedError(Exception):
    """The tenant's key was destroyed: its data can never be read again."""


class WrongRootKeyError(Exception):
    """The root key does not open the stored tenant keys (wrong OPENMAAS_ROOT_KEY?)."""


def _tenant_context(tenant_id: int) -> bytes:
    return f"tenant-key:{tenant_id}".encode()


class Keyring:
    """Wraps, unwraps, creates, destroys and re-wraps keys; caches unwrapped tenant keys."""

    def __init__(self, db: Database, root_key: bytes) -> None:
        self._db = db
        self._root = root_key
        self._tenant_keys: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def root_key_id(self) -> str:
        """The public id of the root key in use."""
        return key_id(self._root)

    def check_root(self) -> None:
        """Raise WrongRootKeyError if stored tenant keys were wrapped by another root key."""
        with self._db.session() as session:
            ids = set(session.scalars(select(TenantKey.root_key_id)).all())
        if ids - {self.root_key_id}:
            raise WrongRootKeyError(
                f"the tenant keys were wrapped by root key {sorted(ids)} but this server has "
                f"root key {self.root_key_id}; set OPENMAAS_ROOT_KEY to the right key"
            )

    def ensure_tenant_key(self, tenant_id: int) -> None:
        """Give a tenant its random key, once."""
        with self._db.session() as session:
            if session.get(TenantKey, tenant_id) is not None:
                return
            session.add(
                TenantKey(
                    tenant_id=tenant_id,
                    wrapped_key=wrap_key(self._root, new_key(), _tenant_context(tenant_id)),
                    root_key_id=self.root_key_id,
                )
            )
            session.commit()

    def tenant_key(self, tenant_id: int) -> bytes:
        """The unwrapped key of a tenant; KeyDestroyedError if it was erased."""
        with self._lock:
            cached = self._tenant_keys.get(tenant_id)
        if cached is not None:
            return cached
        with self._db.session() as session:
            row = session.get(TenantKey, tenant_id)
            if row is None:
                raise KeyDestroyedError(f"tenant {tenant_id} has no key: it was erased")
            wrapped = row.wrapped_key
        try:
            key = unwrap_key(self._root, wrapped, _tenant_context(tenant_id))
        except EnvelopeError as exc:
            raise WrongRootKeyError(f"the root key does not open tenant {tenant_id}'s key") from exc
        with self._lock:
            self._tenant_keys[tenant_id] = key
        return key

    def new_object_key(self, tenant_id: int, context: bytes) -> tuple[bytes, bytes]:
        """A fresh data key and its wrapped form (bound to ``context``) to store."""
        key = new_key()
        return key, wrap_key(self.tenant_key(tenant_id), key, context)

    def object_key(self, tenant_id: int, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap an object's data key; EnvelopeError if it does not belong to ``context``."""
        return unwrap_key(self.tenant_key(tenant_id), wrapped, context)

    def destroy_tenant_key(self, session: Session, tenant_id: int) -> str | None:
        """Delete a tenant's wrapped key in the caller's transaction; return its fingerprint."""
        row = session.get(TenantKey, tenant_id)
        with self._lock:
            self._tenant_keys.pop(tenant_id, None)
        if row is None:
            return None
        destroyed = hashlib.sha256(row.wrapped_key).hexdigest()[:16]
        session.delete(row)
        return destroyed

    def forget(self) -> None:
        """Drop every cached unwrapped key (after erasure or root rotation)."""
        with self._lock:
            self._tenant_keys.clear()

    def rotate_root(self, new_root: bytes) -> int:
        """Re-wrap every tenant key under ``new_root`` in one transaction; blobs are untouched."""
        new_id = key_id(new_root)
        with self._db.session() as session:
            rows = session.scalars(select(TenantKey)).all()
            for row in rows:
                context = _tenant_context(row.tenant_id)
                try:
                    key = unwrap_key(self._root, row.wrapped_key, context)
                except EnvelopeError as exc:
                    raise WrongRootKeyError(
                        f"the current root key does not open tenant {row.tenant_id}'s key"
                    ) from exc
                row.wrapped_key = wrap_key(new_root, key, context)
                row.root_key_id = new_id
            session.commit()
        self._root = new_root
        self.forget()
        return len(rows)
