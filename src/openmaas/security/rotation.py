"""Root key rotation: re-wrap every tenant key under a new root key, offline."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from openmaas.security.keyring import Keyring
from openmaas.security.keywrap import (
    key_id,
    load_or_create_root_key_file,
    new_key,
    parse_root_key,
)
from openmaas.settings import Settings
from openmaas.store.db import Database

__all__ = ["RootRotation", "rotate_root_key"]


@dataclass(frozen=True)
class RootRotation:
    """What a rotation did; ``new_key_text`` is set when the operator must store the key."""

    tenant_keys: int
    key_id: str
    new_key_text: str | None


def rotate_root_key(settings: Settings) -> RootRotation:
    """Re-wrap tenant keys under a fresh root key; replace the key file, or return the key.

    With OPENMAAS_ROOT_KEY set, the new key is returned for the operator to set. Otherwise
    it is first written beside the key file, then the database is re-wrapped, then the file
    is replaced: a crash leaves either the old state or ``root.key.new`` holding the key.
    """
    db = Database(settings.resolved_database_url)
    try:
        env_key = settings.root_key
        old = (
            parse_root_key(env_key.get_secret_value())
            if env_key is not None
            else load_or_create_root_key_file(settings.root_key_file)
        )
        keyring = Keyring(db, old)
        keyring.check_root()
        fresh = new_key()
        text = base64.urlsafe_b64encode(fresh).decode().rstrip("=")
        if env_key is not None:
            count = keyring.rotate_root(fresh)
            return RootRotation(count, key_id(fresh), text)
        staged = settings.root_key_file.with_name("root.key.new")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        count = keyring.rotate_root(fresh)
        os.replace(staged, settings.root_key_file)
        return RootRotation(count, key_id(fresh), None)
    finally:
        db.close()
