"""Management API ``/api/v1``: tenants, API keys, models, versions, aliases, deployments."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from openmaas.api import _fields
from openmaas.api._routes import ModelIdPath, ModelRoute
from openmaas.api.deps import CurrentPrincipal, ServicesDep
from openmaas.api.multipart import is_multipart, parse_parts
from openmaas.errors import BadRequestError, PermissionDeniedError
from openmaas.registry import ModelDetail, ModelRef, ModelSummary, VersionInfo
from openmaas.registry.card_schema import CARD_SCHEMA
from openmaas.registry.cards import card_hash, render_markdown
from openmaas.security import ApiKeyInfo, TenantInfo
from openmaas.serving.deployment import Deployment

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["Management"], route_class=ModelRoute)
_PUBLISH_PARTS = ("artifact", "card", "background")


class _Body(BaseModel):
    # Unknown fields (tenant_id, owner, ...) are rejected: no mass assignment.
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Body):
    name: str = Field(
        description="Tenant name: lowercase letters, digits, '.', '_', '-'.",
        json_schema_extra=_fields.NAME,
    )


class TenantUpdate(_Body):
    weight: float = Field(
        strict=True,
        allow_inf_nan=False,
        description="Fair-share weight in every model queue (default 1; 2 gets twice the share).",
        json_schema_extra=_fields.WEIGHT,
    )


class KeyCreate(_Body):
    name: str = Field(default="", max_length=100, description="A label for the key.")
    role: str = Field(
        default="consumer",
        description="owner, admin, publisher, consumer, viewer.",
        json_schema_extra=_fields.ROLE,
    )
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working; in the future."
    )
    scopes: list[str] | None = Field(
        default=None, description="Subset of the role's scopes.", json_schema_extra=_fields.SCOPES
    )
    member: str | None = Field(default=None, description="The member the key acts for.")


class ModelUpdate(_Body):
    visibility: str | None = Field(
        default=None, description="private or public.", json_schema_extra=_fields.VISIBILITY
    )
    description: str | None = Field(default=None, max_length=2000)


class AliasSet(_Body):
    version: int = Field(ge=1, description="The version the alias points at.")


def _setting(name: str, description: str) -> Any:
    """An optional DeploymentSet field; the schema states Deployment's rule for it."""
    return Field(default=None, description=description, json_schema_extra=_fields.DEPLOYMENT[name])


def _json_integer(value: object) -> object:
    """What JSON Schema calls an integer: 3 or 3.0, never true or "3"."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


_Count = Annotated[int, Field(le=_fields.MAX_SAFE_INTEGER), BeforeValidator(_json_integer)]
_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # true is not 1.0


class DeploymentSet(_Body):
    """How a model is served; a field left out (or null) takes the server's default."""

    min_replicas: _Count | None = _setting(
        "min_replicas", "Replicas always loaded; 1 or more pins the model (loaded at start)."
    )
    max_replicas: _Count | None = _setting("max_replicas", "Most replicas under load (1).")
    max_batch_size: _Count | None = _setting("max_batch_size", "Most rows in one batch.")
    max_queue: _Count | None = _setting("max_queue", "Most requests waiting.")
    cpu: _Number | None = _setting("cpu", "Cores reserved per replica (1).")
    memory_bytes: _Count | None = _setting(
        "memory_bytes", "Memory per replica; measured after load if unset."
    )
    gpu: _Count | None = _setting("gpu", "GPUs per replica (0).")
    idle_seconds: _Number | None = _setting(
        "idle_seconds", "Idle time after which replicas stop, down to min_replicas."
    )
    isolation: str | None = _setting(
        "isolation", "auto, inline (in the server process) or process (in a worker)."
    )

    def deployment(self) -> Deployment:
        """The Deployment; its own checks answer 422 on invalid values."""
        return Deployment(**self.model_dump(exclude_none=True))


class CreatedTenant(BaseModel):
    tenant: TenantInfo
    api_key: str = Field(description="The owner key of the new tenant; shown only once.")


class CreatedKey(BaseModel):
    key: ApiKeyInfo
    api_key: str = Field(description="The new key; shown only once.")


@router.get("/whoami", summary="The caller's tenant, role and scopes")
def whoami(principal: CurrentPrincipal) -> dict[str, Any]:
    return {
        "tenant": principal.tenant_name,
        "key_id": principal.key_id,
        "role": principal.role,
        "scopes": sorted(principal.scopes),
        "platform_admin": principal.is_platform,
    }


@router.post("/tenants", status_code=201, summary="Create a tenant and its owner key")
def create_tenant(
    body: TenantCreate, principal: CurrentPrincipal, services: ServicesDep
) -> CreatedTenant:
    tenant, token = services.accounts.create_tenant(principal, body.name)
    return CreatedTenant(tenant=tenant, api_key=token)


@router.get("/tenants", summary="List tenants")
def list_tenants(principal: CurrentPrincipal, services: ServicesDep) -> list[TenantInfo]:
    return services.accounts.list_tenants(principal)


@router.patch("/tenants/{name}", summary="Set a tenant's fair-share weight (platform admins)")
def update_tenant(
    name: str, body: TenantUpdate, principal: CurrentPrincipal, services: ServicesDep
) -> TenantInfo:
    return services.accounts.set_tenant_weight(principal, name, body.weight)


@router.post("/keys", status_code=201, summary="Create an API key in the caller's tenant")
def create_key(body: KeyCreate, principal: CurrentPrincipal, services: ServicesDep) -> CreatedKey:
    key, token = services.accounts.create_key(
        principal,
        name=body.name,
        role=body.role,
        expires_at=body.expires_at,
        scopes=body.scopes,
        member=body.member,
    )
    return CreatedKey(key=key, api_key=token)


@router.get("/keys", summary="List the API keys of the caller's tenant")
def list_keys(principal: CurrentPrincipal, services: ServicesDep) -> list[ApiKeyInfo]:
    return services.accounts.list_keys(principal)


@router.delete("/keys/{key_id}", summary="Revoke an API key")
def revoke_key(key_id: str, principal: CurrentPrincipal, services: ServicesDep) -> ApiKeyInfo:
    return services.accounts.revoke_key(principal, key_id)


@router.get("/models", summary="List own and public models")
def list_models(principal: CurrentPrincipal, services: ServicesDep) -> list[ModelSummary]:
    return services.registry.list(principal)


@router.post(
    "/models/{model_id:path}/versions",
    status_code=201,
    summary="Publish a new version (the body is the artifact, e.g. an .onnx file, or a form "
    "with the artifact, its model card and background data)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["artifact"],
                        "properties": {
                            "artifact": {"type": "string", "format": "binary"},
                            "card": {
                                "type": "string",
                                "format": "binary",
                                "description": "The model card: JSON, or Markdown with YAML "
                                "front matter (see GET /api/v1/model-card-schema).",
                            },
                            "background": {
                                "type": "string",
                                "format": "binary",
                                "description": "Input rows for explanations: CSV (optional "
                                "header of feature names), JSON or .npy.",
                            },
                        },
                    }
                },
            },
        }
    },
)
async def publish_version(
    model_id: ModelIdPath,
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
    alias: str | None = Query(
        default=None,
        description="Also point this alias at it.",
        json_schema_extra=_fields.query(_fields.ALIAS),
    ),
    visibility: str | None = Query(
        default=None,
        description="private or public.",
        json_schema_extra=_fields.query(_fields.VISIBILITY),
    ),
    description: str | None = Query(
        default=None, max_length=2000, json_schema_extra=_fields.query({})
    ),
    format: str | None = Query(
        default=None,
        description="Artifact format; sniffed if absent.",
        json_schema_extra=_fields.query(_fields.FORMAT),
    ),
) -> VersionInfo:
    ref = ModelRef.parse(model_id)
    if ref.tenant not in (None, principal.tenant_name):
        # A foreign private model answers 404 like a missing one; a public one, 403.
        services.registry.get(principal, ref)
        raise PermissionDeniedError(
            f"only tenant {ref.tenant!r} can publish versions of {model_id!r}"
        )
    data = await request.body()
    card = background = None
    if is_multipart(request.headers.get("content-type", "")):
        parts = parse_parts(data, request.headers["content-type"], _PUBLISH_PARTS)
        if "artifact" not in parts:
            raise BadRequestError("the form has no 'artifact' part", field="artifact")
        data, card, background = parts["artifact"], parts.get("card"), parts.get("background")
    # Validating and loading an artifact takes seconds for a big model: not on the event loop.
    return await run_in_threadpool(
        functools.partial(
            services.registry.publish,
            principal,
            ref.name,
            data,
            alias=alias,
            visibility=visibility,
            description=description,
            format=format,
            card=card,
            background=background,
        )
    )


@router.get("/model-card-schema", summary="The JSON schema every model card follows")
def model_card_schema(principal: CurrentPrincipal) -> dict[str, Any]:
    return CARD_SCHEMA


@router.get(
    "/models/{model_id:path}/versions/{version}/card",
    summary="A version's model card, as JSON or (Accept: text/markdown) Markdown",
    responses={200: {"content": {"text/markdown": {}}}},
)
def get_card(
    model_id: ModelIdPath,
    version: Annotated[
        str,
        Path(
            description="A version number, or an alias such as `latest`.",
            json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        ),
    ],
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> Response:
    card = services.registry.card(principal, ModelRef.parse(model_id), version)
    headers = {"ETag": f'"{card_hash(card)}"'}
    if "text/markdown" in request.headers.get("accept", ""):
        return Response(render_markdown(card), media_type="text/markdown", headers=headers)
    return JSONResponse(card, headers=headers)


@router.put("/models/{model_id:path}/aliases/{alias}", summary="Point an alias at a version")
def set_alias(
    model_id: ModelIdPath,
    alias: Annotated[str, Path(json_schema_extra=_fields.ALIAS)],
    body: AliasSet,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> ModelDetail:
    return services.registry.set_alias(principal, ModelRef.parse(model_id), alias, body.version)


@router.get("/models/{model_id:path}/deployment", summary="How a model is served")
def get_deployment(
    model_id: ModelIdPath, principal: CurrentPrincipal, services: ServicesDep
) -> Deployment:
    return services.registry.get_deployment(principal, ModelRef.parse(model_id))


@router.put(
    "/models/{model_id:path}/deployment",
    summary="Set how a model is served: replicas, batching, queue, resources, isolation",
)
async def set_deployment(
    model_id: ModelIdPath, body: DeploymentSet, principal: CurrentPrincipal, services: ServicesDep
) -> Deployment:
    ref = ModelRef.parse(model_id)
    registry = services.registry
    deployment = await run_in_threadpool(registry.set_deployment, principal, ref, body.deployment())
    if deployment.min_replicas:  # pinned: load it now, not on its first request
        resolved = await run_in_threadpool(registry.resolve, principal, ref)
        services.engine.deploy(services.dataplane.handle(resolved), resolved.deployment)
    return deployment


@router.get("/models/{model_id:path}", summary="A model with its versions, aliases and card")
def get_model(
    model_id: ModelIdPath, principal: CurrentPrincipal, services: ServicesDep
) -> ModelDetail:
    return services.registry.get(principal, ModelRef.parse(model_id))


@router.patch("/models/{model_id:path}", summary="Change a model's visibility or description")
def update_model(
    model_id: ModelIdPath, body: ModelUpdate, principal: CurrentPrincipal, services: ServicesDep
) -> ModelDetail:
    return services.registry.update(
        principal,
        ModelRef.parse(model_id),
        visibility=body.visibility,
        description=body.description,
    )
