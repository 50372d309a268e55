"""Find models and versions the way a caller may see them (shared by the registry services)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaas.errors import ModelNotFoundError, PermissionDeniedError, VersionNotFoundError
from openmaas.registry.refs import ModelRef
from openmaas.security.policy import Principal
from openmaas.store.tables import Alias, Grant, Model, ModelVersion, Tenant

__all__ = ["LATEST", "MAX_VERSION", "find_model", "find_own_model", "find_version", "grant_for"]

LATEST = "latest"
MAX_VERSION = 2**31 - 1


def grant_for(session: Session, model_id: int, tenant_id: int) -> Grant | None:
    """The grant that lets ``tenant_id`` call the model, if any."""
    return session.scalar(
        select(Grant).where(Grant.model_id == model_id, Grant.grantee_tenant_id == tenant_id)
    )


def find_model(session: Session, principal: Principal, ref: ModelRef) -> tuple[Model, Tenant]:
    """The model if the caller may see it (own, public or granted); else 'not found'."""
    tenant_name = ref.tenant or principal.tenant_name
    name = ref.name
    row = session.execute(
        select(Model, Tenant)
        .join(Tenant, Tenant.id == Model.tenant_id)
        .where(Tenant.name == tenant_name, Model.name == name)
    ).first()
    visible = row is not None and (
        row.Tenant.id == principal.tenant_id
        or row.Model.visibility == "public"
        or grant_for(session, row.Model.id, principal.tenant_id) is not None
    )
    if row is None or not visible:
        raise ModelNotFoundError(
            f"model '{tenant_name}/{name}' does not exist or is not visible to this "
            "API key; 'openmaas models list' shows the models you can use"
        )
    return row.Model, row.Tenant


def find_own_model(session: Session, principal: Principal, ref: ModelRef) -> tuple[Model, Tenant]:
    """The model if it belongs to the caller's tenant; a visible foreign one is 403."""
    model, tenant = find_model(session, principal, ref)
    if tenant.id != principal.tenant_id:
        raise PermissionDeniedError(
            f"model '{tenant.name}/{model.name}' belongs to another tenant; "
            "only its own tenant can change it"
        )
    return model, tenant


def find_version(session: Session, model: Model, spec: str | None) -> ModelVersion:
    """A version by number or alias (``latest`` when None)."""
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
