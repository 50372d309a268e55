"""Grants: a model's tenant lets another tenant call it, within a daily quota, at a weight."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from openmaas.errors import NotFoundError, RequestValidationError
from openmaas.registry.lookup import find_own_model, grant_for
from openmaas.registry.refs import ModelRef
from openmaas.security.audit import AuditLog
from openmaas.security.policy import Action, Principal, require
from openmaas.security.trail import record_event
from openmaas.store.db import Database
from openmaas.store.tables import Grant, Tenant
from openmaas.weights import check_weight

__all__ = ["GrantInfo", "Sharing"]


@dataclass(frozen=True)
class GrantInfo:
    """One grant as the API shows it."""

    model: str
    tenant: str
    quota_per_day: int | None
    created_at: datetime
    weight: float | None = None  # the grantee's weight on this model; None: its tenant's


class Sharing:
    """Share and unshare models; every change invalidates cached resolutions at once."""

    def __init__(
        self, db: Database, on_change: Callable[[], None], audit: AuditLog | None = None
    ) -> None:
        self._db = db
        self._audit = audit
        self._on_change = on_change

    def share(
        self,
        principal: Principal,
        ref: ModelRef,
        grantee: str,
        quota_per_day: int | None = None,
        weight: float | None = None,
    ) -> GrantInfo:
        """Let tenant ``grantee`` call the model (again: updates the quota and weight).

        ``weight`` is the grantee's fair-share weight in this model's queue; None leaves it
        at the grantee tenant's own weight.
        """
        if quota_per_day is not None and quota_per_day < 1:
            raise RequestValidationError(
                "the quota must be at least 1 request a day", field="quota"
            )
        if weight is not None:
            weight = check_weight(weight)
        with self._db.session() as session:
            model, tenant = find_own_model(session, principal, ref)
            require(principal, Action.MODELS_WRITE)
            target = session.scalar(select(Tenant).where(Tenant.name == grantee))
            if target is None:
                raise NotFoundError(f"no tenant named {grantee!r}", field="tenant")
            if target.id == tenant.id:
                raise RequestValidationError(
                    "a tenant always may call its own models", field="tenant"
                )
            grant = grant_for(session, model.id, target.id)
            if grant is None:
                grant = Grant(model_id=model.id, grantee_tenant_id=target.id)
                session.add(grant)
            grant.quota_per_day = quota_per_day
            grant.weight = weight
            session.commit()
            info = GrantInfo(
                f"{tenant.name}/{model.name}", grantee, quota_per_day, grant.created_at, weight
            )
        self._on_change()
        record_event(
            self._audit,
            principal,
            "model.share",
            info.model,
            tenant=grantee,
            quota=quota_per_day,
            weight=weight,
        )
        return info

    def unshare(self, principal: Principal, ref: ModelRef, grantee: str) -> None:
        """Withdraw a grant; the grantee's next request is refused."""
        with self._db.session() as session:
            model, tenant = find_own_model(session, principal, ref)
            require(principal, Action.MODELS_WRITE)
            target = session.scalar(select(Tenant).where(Tenant.name == grantee))
            grant = None if target is None else grant_for(session, model.id, target.id)
            if grant is None:
                raise NotFoundError(
                    f"model '{tenant.name}/{model.name}' is not shared with {grantee!r}",
                    field="tenant",
                )
            session.delete(grant)
            session.commit()
        self._on_change()
        record_event(self._audit, principal, "model.unshare", str(ref), tenant=grantee)

    def grants(self, principal: Principal, ref: ModelRef) -> list[GrantInfo]:
        """Who may call one of the caller's models."""
        with self._db.session() as session:
            model, tenant = find_own_model(session, principal, ref)
            require(principal, Action.MODELS_READ)
            rows = session.execute(
                select(Grant, Tenant.name)
                .join(Tenant, Tenant.id == Grant.grantee_tenant_id)
                .where(Grant.model_id == model.id)
                .order_by(Tenant.name)
            ).all()
        return [
            GrantInfo(f"{tenant.name}/{model.name}", name, g.quota_per_day, g.created_at, g.weight)
            for g, name in rows
        ]
