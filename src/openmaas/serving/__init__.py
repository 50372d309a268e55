"""Serving: the data plane, request validation and the backends that run models."""

from __future__ import annotations

from openmaas.serving.dataplane import DataPlane
from openmaas.serving.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

__all__ = ["DataPlane", "InferenceRequest", "InferenceResponse", "RequestedOutput", "Tensor"]
