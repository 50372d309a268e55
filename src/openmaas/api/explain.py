"""The OIP explain extension: ``POST /v2/models/{model}[/versions/{v}]/explain``.

The body is an OIP inference request; ``parameters`` choose the explainer and its options.
The answer is the prediction, the attributions (each input's shape plus one axis for the
explained outputs), the baseline, the method with its parameters and seed, the version's
sha256 and a quality block. ``Accept: image/png`` answers an image input's attributions as a
heatmap over the input instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from openmaas.api.v2 import ModelPath
from openmaas.api.v2_codec import decode_request
from openmaas.bootstrap import Services
from openmaas.errors import ExplanationUnavailableError, RequestValidationError
from openmaas.explain.execute import cost_error
from openmaas.explain.types import CostCapError
from openmaas.registry import ResolvedVersion
from openmaas.security.policy import Principal
from openmaas.serving.dataplane import Explained
from openmaas.serving.types import InferenceRequest

__all__ = ["explain_response", "render_explanation"]


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP64",
        "shape": list(array.shape),
        "data": np.asarray(array, dtype=np.float64).reshape(-1),
    }


def _classes(explained: Explained) -> list[Any]:
    """What each entry of the explained-output axis is: class labels, or indices."""
    result, facts = explained.result, explained.resolved.facts
    k = result.prediction.shape[-1]
    labels = facts.get("class_labels") or facts.get("labels")
    target = result.parameters.get("target")
    if target is not None and k == 1:  # one target (integrated gradients)
        return [labels[target] if labels and 0 <= target < len(labels) else target]
    if labels and len(labels) == k:
        return list(labels)
    return list(range(k))


def _baseline(explained: Explained) -> dict[str, Any]:
    background = explained.job.background
    if background is not None:
        return background.summary()
    baseline = explained.result.parameters.get("baseline")
    if isinstance(baseline, str):
        return {"source": baseline}
    if explained.result.tokens is not None:
        return {"source": "masked tokens", "mask": explained.result.parameters.get("mask")}
    return {"source": "fill", "value": explained.result.parameters.get("baseline", 0.0)}


def render_explanation(explained: Explained, request_id: str | None) -> dict[str, Any]:
    """The JSON answer of an explain call."""
    resolved, job, result = explained.resolved, explained.job, explained.result
    explanation: dict[str, Any] = {
        "method": result.method,
        "parameters": result.parameters,
        "input": job.input_name,
        "output": job.output_name,
        "classes": _classes(explained),
        "feature_names": resolved.facts.get("feature_names"),
        "attributions": _tensor(job.input_name, result.attributions),
        "base_values": _tensor("base_values", result.base_values),
        "baseline": _baseline(explained),
        "quality": result.quality.to_dict(),
    }
    if result.tokens is not None:
        explanation["tokens"] = result.tokens
    answer: dict[str, Any] = {
        "model_name": resolved.model_id,
        "model_version": str(resolved.version),
        "sha256": resolved.sha256,
        "outputs": [_tensor(job.output_name, result.prediction)],
        "explanation": explanation,
    }
    if request_id is not None:
        answer["id"] = request_id
    return answer


def _heatmap(explained: Explained, row: int) -> bytes:
    from openmaas.explain.heatmap import heatmap_png, to_2d
    from openmaas.explain.occlusion import default_spatial_axes

    job, result = explained.job, explained.result
    shape = tuple(job.rows.shape[1:])
    axes = job.options.get("spatial_axes") or default_spatial_axes(shape)
    if axes is None or result.tokens is not None:
        raise ExplanationUnavailableError(
            f"PNG heatmaps are for image inputs; this input's rows are {list(shape)}: ask for "
            "JSON (Accept: application/json)",
            field="Accept",
        )
    if not 0 <= row < len(job.rows):
        raise RequestValidationError(f"row must be from 0 to {len(job.rows) - 1}", field="row")
    column = int(np.argmax(result.prediction[row]))  # the predicted class (or the target)
    attributions = to_2d(result.attributions[row, ..., column], (int(axes[0]), int(axes[1])))
    image = to_2d(np.asarray(job.rows[row], dtype=np.float64), (int(axes[0]), int(axes[1])))
    return heatmap_png(attributions, image)


async def _explain_prompt(
    services: Services,
    principal: Principal,
    resolved: ResolvedVersion,
    request: InferenceRequest,
) -> dict[str, Any]:
    """Language models: which words of the prompt the completion's first tokens owe to."""
    params = request.parameters
    texts = [t for t in request.inputs if t.name == "text_input"]
    if len(request.inputs) != 1 or not texts or texts[0].array.size != 1:
        raise RequestValidationError(
            "explain one prompt: one 'text_input' (BYTES [1])", field="inputs"
        )
    raw = texts[0].array.reshape(-1)[0]
    prompt = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    completion = params.get("completion")
    if completion is not None and not isinstance(completion, str):
        raise RequestValidationError("parameters.completion must be a string", field="completion")
    count = params.get("completion_tokens", 1)
    chat = params.get("chat", False)
    max_evals = params.get("max_evals", services.settings.explain_max_evals)
    limit = services.settings.explain_max_evals_limit
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or not 1 <= max_evals <= limit:
        raise RequestValidationError(
            f"parameters.max_evals must be an integer from 1 to {limit}", field="max_evals"
        )
    if isinstance(count, bool) or not isinstance(count, int):
        raise RequestValidationError(
            "parameters.completion_tokens must be an integer", field="completion_tokens"
        )
    if not isinstance(chat, bool):
        raise RequestValidationError("parameters.chat must be true or false", field="chat")
    job = services.llm.admit(principal, f"{resolved.model_id}:{resolved.version}")
    try:
        explanation = await services.llm.explain_prompt(
            job,
            prompt,
            completion=completion,
            completion_tokens=count,
            max_evals=max_evals,
            chat=chat,
        )
    except CostCapError as error:
        raise cost_error(error) from error
    answer: dict[str, Any] = {
        "model_name": resolved.model_id,
        "model_version": str(resolved.version),
        "sha256": resolved.sha256,
        "explanation": {**explanation, "input": "text_input"},
    }
    if request.id is not None:
        answer["id"] = request.id
    return answer


async def explain_response(
    target: ModelPath,
    request: Request,
    principal: Principal,
    services: Services,
    header_length: int | None,
) -> Response:
    """Decode, explain, and answer as JSON (or a PNG heatmap when asked for one)."""
    settings = services.settings
    explain_request = decode_request(
        await request.body(),
        header_length,
        max_elements=settings.max_tensor_elements,
        max_depth=settings.max_json_depth,
    )
    resolved = services.registry.resolve(principal, target.model, target.version)
    if resolved.format == "gguf":
        answer = await _explain_prompt(services, principal, resolved, explain_request)
        return Response(orjson.dumps(answer), media_type="application/json")
    explained = await services.dataplane.explain(
        principal, target.model, explain_request, target.version
    )
    if "image/png" in request.headers.get("accept", ""):
        row = request.query_params.get("row", "0")
        if not (row.isascii() and row.isdigit() and len(row) <= 6):
            raise RequestValidationError("row must be a row index", field="row")
        return Response(_heatmap(explained, int(row)), media_type="image/png")
    body = orjson.dumps(
        render_explanation(explained, explain_request.id),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return Response(body, media_type="application/json")
