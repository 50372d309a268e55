"""The model registry: publish versions, move aliases, list, show, and resolve references."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from openmaas._ttl_cache import TTLCache
from openmaas.errors import ModelNotFoundError, RequestValidationError, VersionNotFoundError
from openmaas.names import check_alias_name, check_model_name
from openmaas.runtimes import Signature, prepare_artifact
from openmaas.security.policy import Action, Principal, require
from openmaas.store.blobs import BlobStore
from openmaas.store.db import Database
from openmaas.store.tables import Alias, Model, ModelVersion, Tenant

__all__ = [
    "VISIBILITIES",
    "ModelDetail",
    "ModelRef",
    "ModelSummary",
    "Registry",
    "ResolvedVersion",
    "VersionInfo",
]

VISIBILITIES = ("private", "public")
LATEST = "latest"
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class ModelRef:
    """A model reference as a caller wrote it: ``tenant/name`` or a bare name."""

    tenant: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``tenant/name`` or ``name``."""
        tenant, _, name = text.rpartition("/")
        if not name or "/" in tenant:
            raise RequestValidationError(
                f"model id {text!r} is not valid; write 'tenant/name' or 'name'", field="model"
            )
        return cls(tenant or None, name)


@dataclass(frozen=True)
class VersionInfo:
    """One published version."""

    model: str
    version: int
    format: str
    sha256: str
    size_bytes: int
    signature: dict[str, Any]
    card: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ModelSummary:
    """A model in a listing."""

    id: str
    tenant: str
    name: str
    visibility: str
    description: str
    latest_version: int | None
    created_at: datetime


@dataclass(frozen=True)
class ModelDetail:
    """A model with its versions and aliases."""

    summary: ModelSummary
    aliases: dict[str, int]
    versions: list[VersionInfo]


@dataclass(frozen=True)
class ResolvedVersion:
    """What serving needs to run one version of a model."""

    model_id: str
    version: int
    format: str
    sha256: str
    signature: Signature


def _check_visibility(visibility: str) -> str:
    if visibility not in VISIBILITIES:
        raise RequestValidationError(
            f"visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}",
            field="visibility",
        )
    return visibility


class Registry:
    """Versions, aliases and signatures of models, and the blobs behind them."""

    def __init__(self, db: Database, blobs: BlobStore, cache_seconds: float = 0.0) -> None:
        self._db = db
        self._blobs = blobs
        self._resolved: TTLCache[ResolvedVersion] = TTLCache(cache_seconds)

    # -- lookups --------------------------------------------------------------------------

    def _find_model(
        self, session: Session, principal: Principal, ref: ModelRef
    ) -> tuple[Model, Tenant]:
        """The model if the caller may see it; a foreign private model is 'not found'."""
        tenant_name = ref.tenant or principal.tenant_name
        row = session.execute(
            select(Model, Tenant)
            .join(Tenant, Tenant.id == Model.tenant_id)
            .where(Tenant.name == tenant_name, Model.name == ref.name)
        ).first()
        if row is None or (
            row.Tenant.id != principal.tenant_id and row.Model.visibility != "public"
        ):
            raise ModelNotFoundError(
                f"model '{tenant_name}/{ref.name}' does not exist or is not visible to this "
                "API key; 'openmaas models list' shows the models you can use"
            )
        return row.Model, row.Tenant

    def _find_own_model(
        self, session: Session, principal: Principal, ref: ModelRef
    ) -> tuple[Model, Tenant]:
        model, tenant = self._find_model(session, principal, ref)
        if tenant.id != principal.tenant_id:
            raise ModelNotFoundError(
                f"model '{tenant.name}/{model.name}' belongs to another tenant; "
                "only its own tenant can change it"
            )
        return model, tenant

    def _find_version(self, session: Session, model: Model, spec: str | None) -> ModelVersion:
        spec = spec or LATEST
        if spec.isascii() and spec.isdigit():
            if int(spec) > MAX_VERSION:
                raise VersionNotFoundError(
                    f"model {model.name!r} has no version {spec}", field="version"
                )
            query = select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == int(spec)
            )
        else:
            query = (
                select(ModelVersion)
                .join(Alias, Alias.version_id == ModelVersion.id)
                .where(Alias.model_id == model.id, Alias.name == spec)
            )
        version = session.scalar(query)
        if version is None:
            raise VersionNotFoundError(
                f"model {model.name!r} has no version or alias {spec!r}; "
                f"'openmaas models show' lists its versions and aliases",
                field="version",
            )
        return version

    def resolve(
        self, principal: Principal, ref: ModelRef, version: str | None = None
    ) -> ResolvedVersion:
        """The version a caller means by ``ref`` and ``version`` (number, alias or latest)."""
        require(principal, Action.MODELS_READ)
        cache_key = (principal.tenant_id, ref, version)
        cached = self._resolved.get(cache_key)
        if cached is not None:
            return cached
        with self._db.session() as session:
            model, tenant = self._find_model(session, principal, ref)
            row = self._find_version(session, model, version)
            resolved = ResolvedVersion(
                model_id=f"{tenant.name}/{model.name}",
                version=row.version,
                format=row.format,
                sha256=row.sha256,
                signature=Signature.from_dict(row.signature),
            )
        self._resolved.put(cache_key, resolved)
        return resolved

    def load_artifact(self, sha256: str) -> bytes:
        """The verified bytes of an artifact."""
        return self._blobs.get(sha256)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        principal: Principal,
        name: str,
        data: bytes,
        *,
        alias: str | None = None,
        visibility: str | None = None,
        description: str | None = None,
        format: str | None = None,
    ) -> VersionInfo:
        """Validate and store a new version; ``latest`` follows it, ``alias`` moves to it."""
        require(principal, Action.MODELS_WRITE)
        check_model_name(name)
        if alias is not None:
            check_alias_name(alias)
        if visibility is not None:
            _check_visibility(visibility)
        prepared = prepare_artifact(data, format)
        sha256 = self._blobs.put(prepared.data)
        card = {"description": description or "", **prepared.facts}
        with self._db.session() as session:
            model = session.scalar(
                select(Model).where(Model.tenant_id == principal.tenant_id, Model.name == name)
            )
            if model is None:
                model = Model(
                    tenant_id=principal.tenant_id,
                    name=name,
                    visibility=visibility or "private",
                    description=description or "",
                )
                session.add(model)
                session.flush()
            else:
                if visibility is not None:
                    model.visibility = visibility
                if description is not None:
                    model.description = description
            number = (
                session.scalar(
                    select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
                )
                or 0
            ) + 1
            row = ModelVersion(
                model_id=model.id,
                version=number,
                format=prepared.format,
                sha256=sha256,
                size_bytes=len(prepared.data),
                signature=prepared.signature.to_dict(),
                card=card,
            )
            session.add(row)
            session.flush()
            for alias_name in {LATEST, alias or LATEST}:
                session.merge(Alias(model_id=model.id, name=alias_name, version_id=row.id))
            session.commit()
            self._resolved.clear()
            return self._version_info(principal.tenant_name, model, row)

    def set_alias(
        self, principal: Principal, ref: ModelRef, alias: str, version: int
    ) -> ModelDetail:
        """Point ``alias`` at an existing version of one of the caller's models."""
        require(principal, Action.MODELS_WRITE)
        check_alias_name(alias)
        with self._db.session() as session:
            model, _ = self._find_own_model(session, principal, ref)
            row = self._find_version(session, model, str(version))
            session.merge(Alias(model_id=model.id, name=alias, version_id=row.id))
            session.commit()
        self._resolved.clear()
        return self.get(principal, ref)

    def update(
        self,
        principal: Principal,
        ref: ModelRef,
        *,
        visibility: str | None = None,
        description: str | None = None,
    ) -> ModelDetail:
        """Change a model's visibility or description."""
        require(principal, Action.MODELS_WRITE)
        with self._db.session() as session:
            model, _ = self._find_own_model(session, principal, ref)
            if visibility is not None:
                model.visibility = _check_visibility(visibility)
            if description is not None:
                model.description = description
            session.commit()
        self._resolved.clear()
        return self.get(principal, ref)

    # -- listing --------------------------------------------------------------------------

    def list(self, principal: Principal) -> list[ModelSummary]:
        """The caller's own models and every public model."""
        require(principal, Action.MODELS_READ)
        with self._db.session() as session:
            latest = (
                select(ModelVersion.model_id, func.max(ModelVersion.version).label("latest"))
                .group_by(ModelVersion.model_id)
                .subquery()
            )
            rows = session.execute(
                select(Model, Tenant, latest.c.latest)
                .join(Tenant, Tenant.id == Model.tenant_id)
                .outerjoin(latest, latest.c.model_id == Model.id)
                .where(or_(Model.tenant_id == principal.tenant_id, Model.visibility == "public"))
                .order_by(Tenant.name, Model.name)
            ).all()
        return [_summary(r.Model, r.Tenant.name, r.latest) for r in rows]

    def get(self, principal: Principal, ref: ModelRef) -> ModelDetail:
        """A model with all its versions and aliases."""
        require(principal, Action.MODELS_READ)
        with self._db.session() as session:
            model, tenant = self._find_model(session, principal, ref)
            versions = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.model_id == model.id)
                .order_by(ModelVersion.version)
            ).all()
            by_id = {v.id: v.version for v in versions}
            aliases = session.scalars(select(Alias).where(Alias.model_id == model.id)).all()
            latest = versions[-1].version if versions else None
            return ModelDetail(
                summary=_summary(model, tenant.name, latest),
                aliases={a.name: by_id[a.version_id] for a in aliases},
                versions=[self._version_info(tenant.name, model, v) for v in versions],
            )

    @staticmethod
    def _version_info(tenant: str, model: Model, row: ModelVersion) -> VersionInfo:
        return VersionInfo(
            model=f"{tenant}/{model.name}",
            version=row.version,
            format=row.format,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            signature=row.signature,
            card=row.card,
            created_at=row.created_at,
        )


def _summary(model: Model, tenant: str, latest: int | None) -> ModelSummary:
    return ModelSummary(
        id=f"{tenant}/{model.name}",
        tenant=tenant,
        name=model.name,
        visibility=model.visibility,
        description=model.description,
        latest_version=latest,
        created_at=model.created_at,
    )
