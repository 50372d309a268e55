"""Build the services from settings, and initialise a data directory on first start."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from openmaas.registry import Registry
from openmaas.security import Accounts
from openmaas.serving import DataPlane
from openmaas.serving.backends import Backend, ThreadBackend
from openmaas.settings import Settings
from openmaas.store import Database, LocalBlobStore

__all__ = ["InitResult", "Services", "build_services", "initialize"]

log = logging.getLogger("openmaas")


@dataclass
class Services:
    """Every long-lived collaborator, composed once."""

    settings: Settings
    db: Database
    accounts: Accounts
    registry: Registry
    backend: Backend
    dataplane: DataPlane


@dataclass
class InitResult:
    """What ``initialize`` did: the new admin key (shown once) and the demo models."""

    admin_key: str | None
    admin_key_file: Path
    demo_models: list[str] = field(default_factory=list)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _server_secret(settings: Settings) -> bytes:
    path = settings.secret_file
    if not path.exists():
        _write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def build_services(settings: Settings) -> Services:
    """Open (and migrate) the data directory and compose the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    db.migrate()
    cache_seconds = settings.metadata_cache_seconds
    accounts = Accounts(db, _server_secret(settings), cache_seconds)
    registry = Registry(db, LocalBlobStore(settings.blob_dir), cache_seconds)
    backend = ThreadBackend(settings.inference_threads, settings.model_cache_size)
    dataplane = DataPlane(registry, backend, settings.max_tensor_elements)
    return Services(settings, db, accounts, registry, backend, dataplane)


def initialize(services: Services) -> InitResult:
    """First start: the platform tenant ``admin``, its key file, and the demo models."""
    settings = services.settings
    token = services.accounts.ensure_platform_tenant("admin")
    result = InitResult(admin_key=token, admin_key_file=settings.admin_key_file)
    if token is None:
        return result
    settings.admin_key_file.unlink(missing_ok=True)
    _write_private(settings.admin_key_file, (token + "\n").encode())
    if settings.demo_models:
        from openmaas.registry.demo import build_demo_models

        principal = services.accounts.authenticate(token)
        for demo in build_demo_models():
            info = services.registry.publish(
                principal,
                demo.name,
                demo.onnx_bytes,
                visibility="public",
                description=demo.description,
            )
            result.demo_models.append(info.model)
            log.info("published demo model %s", info.model)
    return result
