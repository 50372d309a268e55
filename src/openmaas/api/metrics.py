"""``GET /metrics``: the engine's Prometheus metrics, for platform admins only."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from openmaas.api.deps import CurrentPrincipal
from openmaas.security.policy import Action, require
from openmaas.serving.metrics import EngineMetrics

__all__ = ["router"]

router = APIRouter(tags=["Operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (platform admins: they name every tenant)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
def metrics(request: Request, principal: CurrentPrincipal) -> Response:
    require(principal, Action.ADMIN)
    engine_metrics: EngineMetrics = request.app.state.metrics
    body, content_type = engine_metrics.render()
    return Response(content=body, media_type=content_type)
