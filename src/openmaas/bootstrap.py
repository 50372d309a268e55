"""Build the services from settings, and initialise a data directory on first start."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from openmaas.explain.plan import Caps
from openmaas.llm.service import LlmService
from openmaas.quotas import Admission, RateLimiter, UsageMeter
from openmaas.quotas.tokens import TokenBudget
from openmaas.registry import Registry, Sharing
from openmaas.security import Accounts
from openmaas.security.audit import AuditLog
from openmaas.security.erasure import Erasure
from openmaas.security.keyring import Keyring
from openmaas.security.keywrap import load_or_create_root_key_file, parse_root_key
from openmaas.security.members import Members
from openmaas.security.signing import Signer
from openmaas.serving import DataPlane
from openmaas.serving.backends import LocalBackend
from openmaas.serving.engine import Engine, EngineDefaults
from openmaas.serving.metrics import EngineMetrics
from openmaas.settings import Settings
from openmaas.store import Database, LocalBlobStore

__all__ = ["InitResult", "Services", "build_services", "initialize"]

log = logging.getLogger("openmaas")


@dataclass
class Services:
    """Every long-lived collaborator, composed once."""

    settings: Settings
    db: Database
    keyring: Keyring
    signer: Signer
    audit: AuditLog
    accounts: Accounts
    registry: Registry
    sharing: Sharing
    meter: UsageMeter
    engine: Engine
    metrics: EngineMetrics
    dataplane: DataPlane
    erasure: Erasure
    members: Members
    llm: LlmService


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


def _root_key(settings: Settings) -> bytes:
    if settings.root_key is not None:
        return parse_root_key(settings.root_key.get_secret_value())
    return load_or_create_root_key_file(settings.root_key_file)


def build_services(settings: Settings) -> Services:
    """Open (and migrate) the data directory and compose the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    db.migrate()
    cache_seconds = settings.metadata_cache_seconds
    keyring = Keyring(db, _root_key(settings))
    keyring.check_root()
    signer = Signer.load_or_create(settings.signing_key_file)
    audit = AuditLog(db, signer, settings.data_dir / "audit.head")
    blobs = LocalBlobStore(settings.blob_dir)
    registry = Registry(
        db,
        blobs,
        keyring,
        cache_seconds,
        audit,
        background_rows=settings.explain_background_rows,
        explain_caps=Caps(settings.explain_max_evals, settings.explain_max_evals_limit),
    )
    accounts = Accounts(
        db, _server_secret(settings), cache_seconds, audit, on_tenant_change=registry.invalidate
    )
    for problem in registry.check_storage():
        log.warning("refusing to serve %s", problem)
    sharing = Sharing(db, on_change=registry.invalidate, audit=audit)
    meter = UsageMeter(db)
    metrics = EngineMetrics()
    burst = settings.rate_burst_seconds
    admission = Admission(
        keys=RateLimiter(settings.key_rate_per_second, burst),
        tenants=RateLimiter(settings.tenant_rate_per_second, burst),
        meter=meter,
        grants=RateLimiter(settings.grant_rate_per_second, burst),
        key_daily_quota=settings.key_daily_quota,
        tenant_daily_quota=settings.tenant_daily_quota,
    )
    backend = LocalBackend(
        cpu=settings.cpu_capacity,
        memory_bytes=settings.memory_budget_bytes,
        threads=settings.inference_threads,
        isolation=settings.isolation,
        llm_slots=settings.llm_slots,
        llm_context_tokens=settings.llm_context_tokens,
    )
    defaults = EngineDefaults(
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        idle_seconds=settings.replica_idle_seconds,
    )
    engine = Engine(backend, defaults, metrics)
    dataplane = DataPlane(
        registry,
        engine,
        admission,
        settings.request_timeout_seconds,
        metrics,
        explain_caps=Caps(settings.explain_max_evals, settings.explain_max_evals_limit),
    )

    def after_erasure(blob_keys: list[str]) -> None:
        engine.forget(blob_keys)
        dataplane.forget(blob_keys)
        registry.invalidate()
        accounts.invalidate()

    erasure = Erasure(
        db,
        blobs,
        keyring,
        audit,
        signer,
        on_erased=after_erasure,
        before_erase=accounts.flush_audit,
    )
    return Services(
        settings,
        db,
        keyring,
        signer,
        audit,
        accounts,
        registry,
        sharing,
        meter,
        engine,
        metrics,
        dataplane,
        erasure,
        Members(db, audit),
        LlmService(
            registry,
            engine,
            dataplane,
            admission,
            TokenBudget(meter, settings.key_tokens_per_minute, settings.key_tokens_per_day),
            settings.llm_slots,
            metrics,
            max_waiting=settings.max_queue,
        ),
    )


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
                demo.artifact,
                visibility="public",
                description=demo.description,
                card=demo.card,
                background=demo.background,
            )
            result.demo_models.append(info.model)
            log.info("published demo model %s", info.model)
    return result
