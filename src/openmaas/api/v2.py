"""Open Inference Protocol v2 REST routes (KServe, Triton and MLServer clients work unchanged).

Model ids are ``tenant/name`` and keep their slash in the URL, so the model routes share one
path pattern that ``parse_model_path`` splits into model, version and action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from openmaas._version import __version__
from openmaas.api.deps import CurrentPrincipal, ServicesDep
from openmaas.api.v2_codec import decode_request, encode_response
from openmaas.api.v2_docs import INFER_OPENAPI, INFER_PATH_PATTERN
from openmaas.errors import BadRequestError, MethodNotAllowedError, NotFoundError
from openmaas.registry import ModelRef

__all__ = ["ModelPath", "parse_model_path", "router"]

router = APIRouter(tags=["Open Inference Protocol v2"])

EXTENSIONS = ["binary_tensor_data", "explain"]
HEADER_LENGTH = "inference-header-content-length"
_ACTIONS = ("ready", "infer", "explain")


@dataclass(frozen=True)
class ModelPath:
    """What a ``/v2/models/...`` path names."""

    model: ModelRef
    version: str | None
    action: str  # "metadata", "ready", "infer" or "explain"


def parse_model_path(path: str) -> ModelPath:
    """Split ``tenant/name[/versions/v][/ready|/infer|/explain]`` (the tenant is optional)."""
    parts = [p for p in path.split("/") if p]
    action = "metadata"
    if parts and parts[-1] in _ACTIONS:
        action = parts.pop()
    version = None
    if len(parts) >= 3 and parts[-2] == "versions":
        version = parts.pop()
        parts.pop()
    if len(parts) not in (1, 2):
        raise NotFoundError(
            f"no OIP route /v2/models/{path}; use /v2/models/<tenant>/<name>"
            "[/versions/<version>][/ready|/infer|/explain]"
        )
    tenant = parts[0] if len(parts) == 2 else None
    return ModelPath(ModelRef(tenant, parts[-1]), version, action)


@router.get("/v2/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Server readiness")
async def ready(request: Request) -> JSONResponse:
    is_ready = bool(getattr(request.app.state, "ready", False))
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2", summary="Server metadata")
async def server_metadata(principal: CurrentPrincipal) -> dict[str, Any]:
    return {"name": "openmaas", "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/models/{model_path:path}", summary="Model metadata or readiness")
async def model_get(
    model_path: str, principal: CurrentPrincipal, services: ServicesDep
) -> dict[str, Any]:
    target = parse_model_path(model_path)
    if target.action in ("infer", "explain"):
        raise MethodNotAllowedError(
            f"{target.action} takes POST with an OIP request body", allow="POST"
        )
    dataplane = services.dataplane
    if target.action == "ready":
        is_ready = dataplane.ready(principal, target.model, target.version)
        return {"name": model_path.removesuffix("/ready"), "ready": is_ready}
    return dataplane.metadata(principal, target.model, target.version)


@router.post(
    "/v2/models/{model_path:path}",
    summary="Inference (.../infer) or explanation (.../explain)",
    openapi_extra=INFER_OPENAPI,
    responses={
        200: {"content": {"application/octet-stream": {}, "image/png": {}}}
    },  # binary outputs, explanation heatmaps
)
async def model_infer(
    model_path: Annotated[str, Path(json_schema_extra={"pattern": INFER_PATH_PATTERN})],
    request: Request,
    principal: CurrentPrincipal,
    services: ServicesDep,
) -> Response:
    target = parse_model_path(model_path)
    if target.action not in ("infer", "explain"):
        raise MethodNotAllowedError(
            f"POST is for /v2/models/{model_path}/infer (or /explain); metadata and readiness "
            "take GET",
            allow="GET",
        )
    header_value = request.headers.get(HEADER_LENGTH)
    header_length: int | None = None
    if header_value is not None:
        if not header_value.isdigit():
            raise BadRequestError(
                "Inference-Header-Content-Length must be a byte count",
                field="Inference-Header-Content-Length",
            )
        header_length = int(header_value)
    if target.action == "explain":
        from openmaas.api.explain import explain_response

        return await explain_response(target, request, principal, services, header_length)
    settings = services.settings
    infer_request = decode_request(
        await request.body(),
        header_length,
        max_elements=settings.max_tensor_elements,
        max_depth=settings.max_json_depth,
    )
    response = await services.dataplane.infer(
        principal, target.model, infer_request, target.version
    )
    body, json_length = encode_response(response, infer_request)
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )
