"""Management API: erasure with receipts, the audit log, key rotation and members."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from openmaas.api import _fields
from openmaas.api.deps import CurrentPrincipal, ServicesDep
from openmaas.api.manage import CreatedKey
from openmaas.errors import RequestValidationError
from openmaas.registry import ModelRef
from openmaas.security.audit import AuditEntry, AuditReport
from openmaas.security.erasure import ErasureReceipt
from openmaas.security.members import MemberInfo
from openmaas.security.policy import Action, require

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["Security"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErasureRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra=_fields.one_of(
            "tenant", "model", "api_key", "member", only_with={"version": "model"}
        )
    )

    tenant: str | None = Field(default=None, description="Erase a whole tenant.")
    model: str | None = Field(
        default=None,
        description="Erase a model (tenant/name).",
        json_schema_extra=_fields.MODEL_REF,
    )
    version: int | None = Field(default=None, ge=1, description="With model: one version.")
    api_key: str | None = Field(default=None, description="Erase an API key by its id.")
    member: str | None = Field(default=None, description="Erase a member and their keys.")


class RotateRequest(_Body):
    overlap_seconds: int = Field(
        default=3600, ge=0, le=30 * 86400, description="How long the old key keeps working."
    )


class MemberCreate(_Body):
    name: str = Field(max_length=100, json_schema_extra=_fields.MEMBER_NAME)
    role: str = Field(default="consumer", json_schema_extra=_fields.ROLE)


@router.post("/erasures", status_code=201, summary="Erase an object for good; get a receipt")
def erase(body: ErasureRequest, principal: CurrentPrincipal, services: ServicesDep) -> Any:
    erasure = services.erasure
    chosen = [k for k in ("tenant", "model", "api_key", "member") if getattr(body, k)]
    if len(chosen) != 1 or (body.version is not None and chosen != ["model"]):
        raise RequestValidationError(
            "name exactly one of tenant, model (optionally with version), api_key or member",
            field="body",
        )
    if body.tenant:
        return erasure.erase_tenant(principal, body.tenant)
    if body.model and body.version is not None:
        return erasure.erase_version(principal, ModelRef.parse(body.model), body.version)
    if body.model:
        return erasure.erase_model(principal, ModelRef.parse(body.model))
    if body.api_key:
        return erasure.erase_key(principal, body.api_key)
    return erasure.erase_member(principal, str(body.member))


@router.get("/erasures/{receipt_id}", summary="Verify an erasure receipt")
def verify_erasure(
    receipt_id: str, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    report = services.erasure.verify_for(principal, receipt_id)
    receipt: ErasureReceipt | None = report.receipt
    return {
        "ok": report.ok,
        "receipt": receipt,
        "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in report.checks],
    }


@router.get("/audit", summary="Audit records (own tenant; every tenant for platform admins)")
def audit_records(
    principal: CurrentPrincipal,
    services: ServicesDep,
    after: int = Query(default=0, ge=0, le=_fields.MAX_SAFE_INTEGER),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[AuditEntry]:
    require(principal, Action.KEYS)
    if principal.can(Action.ADMIN):
        return services.audit.records(limit=limit, after_seq=after)
    return services.audit.records(
        limit=limit, after_seq=after, tenant=principal.tenant_name, since=principal.tenant_since
    )


@router.get("/audit/verify", summary="Verify the whole audit chain (platform admins)")
def audit_verify(principal: CurrentPrincipal, services: ServicesDep) -> AuditReport:
    require(principal, Action.ADMIN)
    return services.audit.verify()


@router.post("/keys/{key_id}/rotate", status_code=201, summary="Rotate an API key")
def rotate_key(
    key_id: str, body: RotateRequest, principal: CurrentPrincipal, services: ServicesDep
) -> CreatedKey:
    key, token = services.accounts.rotate_key(principal, key_id, body.overlap_seconds)
    return CreatedKey(key=key, api_key=token)


@router.post("/members", status_code=201, summary="Add a member to the caller's tenant")
def add_member(
    body: MemberCreate, principal: CurrentPrincipal, services: ServicesDep
) -> MemberInfo:
    return services.members.add(principal, body.name, body.role)


@router.get("/members", summary="Members of the caller's tenant")
def list_members(principal: CurrentPrincipal, services: ServicesDep) -> list[MemberInfo]:
    return services.members.list(principal)
