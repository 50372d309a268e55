"""Management API: grants that share a model with another tenant."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from openmaas.api import _fields
from openmaas.api._routes import ModelIdPath, ModelRoute
from openmaas.api.deps import CurrentPrincipal, ServicesDep
from openmaas.registry import GrantInfo, ModelRef

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["Sharing"], route_class=ModelRoute)


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(
        description="The tenant that may call the model.", json_schema_extra=_fields.NAME
    )
    quota_per_day: int | None = Field(
        default=None, ge=1, le=_fields.MAX_SAFE_INTEGER, description="Requests a UTC day."
    )
    weight: float | None = Field(
        default=None,
        strict=True,
        allow_inf_nan=False,
        description="The tenant's fair-share weight on this model; null: its tenant weight.",
        json_schema_extra=_fields.WEIGHT,
    )


@router.post(
    "/models/{model_id:path}/grants", status_code=201, summary="Share a model with a tenant"
)
def share(
    model_id: ModelIdPath, body: GrantCreate, principal: CurrentPrincipal, services: ServicesDep
) -> GrantInfo:
    return services.sharing.share(
        principal, ModelRef.parse(model_id), body.tenant, body.quota_per_day, body.weight
    )


@router.get("/models/{model_id:path}/grants", summary="Tenants a model is shared with")
def grants(
    model_id: ModelIdPath, principal: CurrentPrincipal, services: ServicesDep
) -> list[GrantInfo]:
    return services.sharing.grants(principal, ModelRef.parse(model_id))


@router.delete(
    "/models/{model_id:path}/grants/{tenant}", status_code=204, summary="Stop sharing a model"
)
def unshare(
    model_id: ModelIdPath, tenant: str, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    services.sharing.unshare(principal, ModelRef.parse(model_id), tenant)
    return Response(status_code=204)
