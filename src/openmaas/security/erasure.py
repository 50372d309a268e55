"""Verifiable erasure: crypto-shredding of tenants, models, versions, members and keys.

Erasing destroys the wrapped keys first (so every copy of the ciphertext, backups included,
becomes unreadable), then deletes the blobs and rows, evicts loaded models and clears caches,
checkpoints SQLite's WAL so no deleted bytes remain in it (``secure_delete`` zeroes them in
the database file), and appends a signed receipt to the audit log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from openmaas.errors import ApiKeyNotFoundError, NotFoundError, PermissionDeniedError
from openmaas.registry.lookup import find_own_model, find_version
from openmaas.registry.refs import ModelRef
from openmaas.security.audit import AuditLog
from openmaas.security.keyring import Keyring
from openmaas.security.policy import Action, Principal, require
from openmaas.security.signing import Signer, verify_signature
from openmaas.store.blobs import BlobStore
from openmaas.store.db import Database
from openmaas.store.tables import (
    Alias,
    ApiKey,
    AuditRecord,
    Member,
    Model,
    ModelVersion,
    Tenant,
    TenantKey,
    utcnow,
)

__all__ = ["Erasure", "ErasureReceipt", "ReceiptCheck"]

_SAMPLE = 8  # ciphertexts named in a receipt, to test later that they no longer decrypt


@dataclass(frozen=True)
class ErasureReceipt:
    """What was erased, signed by the server; kept in the audit log."""

    receipt_id: str
    kind: str
    target: str
    tenant_id: int
    erased_at: str
    counts: dict[str, int]
    destroyed_keys: list[str]
    blobs: list[str]
    signature: str = ""
    audit_seq: int = 0

    def signed_part(self) -> bytes:
        """The canonical bytes the signature covers."""
        body = asdict(self)
        body.pop("signature")
        body.pop("audit_seq")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ReceiptCheck:
    """The outcome of ``openmaas erasure verify``: each check with what it found."""

    receipt: ErasureReceipt | None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(passed for _, passed, _ in self.checks)


def _fingerprint(wrapped: bytes | None) -> str:
    return "" if wrapped is None else hashlib.sha256(wrapped).hexdigest()[:16]


class Erasure:
    """Erase objects for good and prove it."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        keyring: Keyring,
        audit: AuditLog,
        signer: Signer,
        on_erased: Callable[[list[str]], None],
        before_erase: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._keyring = keyring
        self._audit = audit
        self._signer = signer
        self._on_erased = on_erased
        # Writes still queued about what is erased (e.g. a key's login record) land first,
        # so none of them outlives the erasure under a reused tenant id.
        self._before_erase = before_erase

    # -- what can be erased -----------------------------------------------------------------

    def erase_tenant(self, principal: Principal, name: str) -> ErasureReceipt:
        """Destroy a tenant's key, then every model, version, key and grant it has."""
        require(principal, Action.ADMIN)
        self._before_erase()
        with self._db.session() as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == name))
            if tenant is None:
                raise NotFoundError(f"no tenant named {name!r}", field="tenant")
            if tenant.is_platform:
                raise PermissionDeniedError("the platform tenant cannot be erased")
            versions = session.scalars(
                select(ModelVersion)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.tenant_id == tenant.id)
            ).all()
            destroyed = [self._keyring.destroy_tenant_key(session, tenant.id) or ""]
            session.flush()  # the key goes first: from here on nothing of it decrypts
            counts = {
                "models": _count(session, Model, Model.tenant_id == tenant.id),
                "versions": len(versions),
                "keys": _count(session, ApiKey, ApiKey.tenant_id == tenant.id),
                "members": _count(session, Member, Member.tenant_id == tenant.id),
            }
            blobs = _blobs_of(versions)
            tenant_id = tenant.id
            session.delete(tenant)
            session.commit()
        return self._finish(
            principal, tenant_id, "tenant", f"tenant {name}", counts, destroyed, blobs
        )

    def erase_model(self, principal: Principal, ref: ModelRef) -> ErasureReceipt:
        """Destroy every version's data key, blob and row, then the model."""
        self._before_erase()
        with self._db.session() as session:
            model, tenant = find_own_model(session, principal, ref)
            require(principal, Action.MODELS_WRITE)
            versions = session.scalars(
                select(ModelVersion).where(ModelVersion.model_id == model.id)
            ).all()
            destroyed = [_fingerprint(v.wrapped_key) for v in versions]
            blobs = _blobs_of(versions)
            target = f"model {tenant.name}/{model.name}"
            session.delete(model)
            session.commit()
        counts = {"versions": len(versions)}
        return self._finish(principal, tenant.id, "model", target, counts, destroyed, blobs)

    def erase_version(self, principal: Principal, ref: ModelRef, version: int) -> ErasureReceipt:
        """Destroy one version; ``latest`` moves to the newest version left."""
        self._before_erase()
        with self._db.session() as session:
            model, tenant = find_own_model(session, principal, ref)
            require(principal, Action.MODELS_WRITE)
            row = find_version(session, model, str(version))
            destroyed = [_fingerprint(row.wrapped_key)]
            blobs = _blobs_of([row])
            session.delete(row)
            session.flush()
            newest = session.scalar(
                select(ModelVersion)
                .where(ModelVersion.model_id == model.id)
                .order_by(ModelVersion.version.desc())
            )
            if newest is not None and session.get(Alias, (model.id, "latest")) is None:
                session.add(Alias(model_id=model.id, name="latest", version_id=newest.id))
            target = f"model {tenant.name}/{model.name} version {version}"
            session.commit()
        counts = {"versions": 1}
        return self._finish(principal, tenant.id, "version", target, counts, destroyed, blobs)

    def erase_key(self, principal: Principal, key_id: str) -> ErasureReceipt:
        """Delete an API key of the caller's tenant (not just revoke it)."""
        self._before_erase()
        with self._db.session() as session:
            row = session.scalar(
                select(ApiKey).where(
                    ApiKey.key_id == key_id, ApiKey.tenant_id == principal.tenant_id
                )
            )
            if row is None:
                raise ApiKeyNotFoundError(f"no API key {key_id!r} in this tenant")
            require(principal, Action.KEYS)
            destroyed = [row.secret_hash[:16]]
            session.delete(row)
            session.commit()
        target = f"api key {key_id}"
        counts = {"keys": 1}
        return self._finish(principal, principal.tenant_id, "api_key", target, counts, destroyed)

    def erase_member(self, principal: Principal, name: str) -> ErasureReceipt:
        """Delete a member of the caller's tenant and every key that acts for them."""
        self._before_erase()
        with self._db.session() as session:
            member = session.scalar(
                select(Member).where(Member.name == name, Member.tenant_id == principal.tenant_id)
            )
            if member is None:
                raise NotFoundError(f"no member {name!r} in this tenant", field="member")
            require(principal, Action.KEYS)
            keys = session.scalars(select(ApiKey).where(ApiKey.member_id == member.id)).all()
            destroyed = [k.secret_hash[:16] for k in keys]
            session.delete(member)
            session.commit()
        counts = {"members": 1, "keys": len(keys)}
        target = f"member {member.id} of {principal.tenant_name}"
        return self._finish(principal, principal.tenant_id, "member", target, counts, destroyed)

    # -- receipts ---------------------------------------------------------------------------

    def _finish(
        self,
        principal: Principal,
        tenant_id: int,
        kind: str,
        target: str,
        counts: dict[str, int],
        destroyed: list[str],
        blobs: list[str] | None = None,
    ) -> ErasureReceipt:
        blobs = blobs or []
        for blob in blobs:
            self._blobs.delete(blob)
        self._on_erased(blobs)
        self._keyring.forget()
        self._checkpoint_wal()
        receipt = ErasureReceipt(
            receipt_id=uuid.uuid4().hex,
            kind=kind,
            target=target,
            tenant_id=tenant_id,
            erased_at=utcnow().isoformat(),
            counts=counts,
            destroyed_keys=[d for d in destroyed if d][:_SAMPLE],
            blobs=blobs[:_SAMPLE],
        )
        signature = self._signer.sign(receipt.signed_part())
        entry = self._audit.append(
            actor_tenant=principal.tenant_name,
            actor_key_id=principal.key_id,
            action="erase",
            target=target,
            details={**asdict(receipt), "signature": signature, "audit_seq": None},
        )
        return dataclasses.replace(receipt, signature=signature, audit_seq=entry.seq)

    def _checkpoint_wal(self) -> None:
        """Fold the WAL into the database and truncate it: no deleted page stays in it."""
        if self._db.engine.dialect.name != "sqlite":
            return
        with self._db.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    def find_receipt(self, receipt_id: str) -> ErasureReceipt | None:
        """The receipt with this id, from the audit log's erase records."""
        with self._db.session() as session:
            rows = session.execute(
                select(AuditRecord.seq, AuditRecord.details).where(AuditRecord.action == "erase")
            ).all()
        for seq, details in rows:
            if details.get("receipt_id") == receipt_id:
                return ErasureReceipt(**{**details, "audit_seq": seq})
        return None

    def verify_for(self, principal: Principal, receipt_id: str) -> ReceiptCheck:
        """Verify a receipt the caller may see: its own tenant's (since its creation), or any
        for platform admins; another tenant's receipt is 'not found', like a missing one."""
        receipt = self.find_receipt(receipt_id)
        own = (
            receipt is not None
            and receipt.tenant_id == principal.tenant_id
            and (
                principal.tenant_since is None
                or principal.tenant_since.isoformat() < receipt.erased_at
            )
        )
        if receipt is None or not (own or principal.can(Action.ADMIN)):
            raise NotFoundError(f"no erasure receipt {receipt_id!r} for this API key")
        require(principal, Action.KEYS)
        return self.verify(receipt_id)

    def verify(self, receipt_id: str) -> ReceiptCheck:
        """Prove an erasure: signed, in an intact chain, keys gone, ciphertexts unreadable."""
        receipt = self.find_receipt(receipt_id)
        if receipt is None:
            return ReceiptCheck(None, [("receipt in the audit log", False, "not found")])
        checks: list[tuple[str, bool, str]] = []
        signed = verify_signature(
            self._signer.public_key_hex, receipt.signed_part(), receipt.signature
        )
        checks.append(("receipt signature", signed, "Ed25519 over the receipt"))
        report = self._audit.verify()
        checks.append(
            ("audit chain intact", report.ok, "; ".join(report.problems) or "all hashes link")
        )
        with self._db.session() as session:
            wrapped = [
                _fingerprint(k) for k in session.scalars(select(TenantKey.wrapped_key)).all()
            ] + [
                _fingerprint(k)
                for k in session.scalars(select(ModelVersion.wrapped_key)).all()
                if k is not None
            ]
            hashes = [h[:16] for h in session.scalars(select(ApiKey.secret_hash)).all()]
        alive = set(wrapped) | set(hashes)
        still = [d for d in receipt.destroyed_keys if d in alive]
        checks.append(("keys destroyed", not still, f"still present: {still}" if still else ""))
        for blob in receipt.blobs:
            checks.append(self._check_blob(receipt, blob))
        return ReceiptCheck(receipt, checks)

    def _check_blob(self, receipt: ErasureReceipt, blob: str) -> tuple[str, bool, str]:
        """A named ciphertext is gone, or every key that could open a copy of it is gone."""
        present = self._blobs.exists(blob)
        with self._db.session() as session:
            referenced = session.scalar(
                select(func.count()).where(ModelVersion.blob_sha256 == blob)
            )
            tenant_key = session.get(TenantKey, receipt.tenant_id)
        if referenced:
            return (f"blob {blob[:12]}", False, "a stored version still holds its data key")
        if receipt.kind == "tenant" and tenant_key is not None:
            return (f"blob {blob[:12]}", False, "the tenant key still exists")
        if not present:
            return (f"blob {blob[:12]}", True, "deleted; its data key is destroyed")
        return (f"blob {blob[:12]}", True, "a copy exists, but its data key is destroyed")


def _count(session: Session, table: Any, condition: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(table).where(condition)) or 0)


def _blobs_of(versions: Sequence[ModelVersion]) -> list[str]:
    """Every blob the versions stored: artifacts, then background rows."""
    artifacts = [v.blob_sha256 for v in versions if v.blob_sha256]
    return artifacts + [v.background_blob_sha256 for v in versions if v.background_blob_sha256]
