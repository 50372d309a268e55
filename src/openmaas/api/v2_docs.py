"""OpenAPI text for the OIP inference route, whose body the handler decodes by hand.

``v2_codec`` decodes the body (JSON, or a JSON header followed by binary tensor data), so
FastAPI sees no body parameter; this states what the handler accepts instead.
"""

from __future__ import annotations

from typing import Any

from openmaas.runtimes import DATATYPES

__all__ = ["INFER_OPENAPI", "INFER_PATH_PATTERN"]

# POST /v2/models/{model_path} is inference when the path ends in /infer, an explanation when
# it ends in /explain; elsewhere 405.
INFER_PATH_PATTERN = r"^.+/(infer|explain)$"

_PARAMETERS: dict[str, Any] = {"type": "object", "additionalProperties": True}
_INPUT: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 32},
        "data": {
            "description": "The elements, flat or nested, row-major; their count is the "
            "product of `shape`. BYTES elements are strings.",
        },
        "parameters": _PARAMETERS,
    },
}
_OUTPUT: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
}
INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "minItems": 1, "items": _INPUT},
        "outputs": {"type": "array", "items": _OUTPUT},
    },
    "example": {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    },
}
# The binary tensor extension (a JSON header of Inference-Header-Content-Length bytes, then
# raw tensor data) is described in the operation's text: JSON Schema cannot state its framing.
INFER_OPENAPI: dict[str, Any] = {
    "description": "An Open Inference Protocol v2 inference request (for `/explain`, "
    "`parameters` also choose the explainer: see docs/explainability.md). With the "
    "`binary_tensor_data` extension the body is a JSON header of "
    "`Inference-Header-Content-Length` bytes followed by the raw tensor data.",
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": INFER_REQUEST}},
    },
}
