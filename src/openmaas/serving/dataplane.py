"""The transport-agnostic data plane: metadata, readiness and inference of models.

The OIP router, the CLI and any future protocol are thin adapters over these functions.
"""

from __future__ import annotations

from typing import Any

from openmaas.quotas import Admission
from openmaas.registry import ModelRef, Registry, ResolvedVersion
from openmaas.runtimes.datatypes import datatype_of
from openmaas.security.policy import Action, Principal, require
from openmaas.serving.backends import Backend, ModelHandle
from openmaas.serving.types import InferenceRequest, InferenceResponse, Tensor
from openmaas.serving.validation import validate_request

__all__ = ["DataPlane"]


class DataPlane:
    """Resolve a model reference, check the request, run it on the backend."""

    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        admission: Admission | None = None,
    ) -> None:
        # Element counts are checked by the wire codecs on the declared shape, before any
        # data is allocated (api/v2_codec.py).
        self._registry = registry
        self._backend = backend
        self._admission = admission

    def _handle(self, resolved: ResolvedVersion) -> ModelHandle:
        return ModelHandle(
            key=resolved.blob_sha256 or f"{resolved.model_id}:{resolved.version}",
            format=resolved.format,
            fetch=lambda: self._registry.load_artifact(resolved),
        )

    def metadata(
        self, principal: Principal, ref: ModelRef, version: str | None = None
    ) -> dict[str, Any]:
        """OIP model metadata: name, versions, platform, inputs and outputs."""
        resolved = self._registry.resolve(principal, ref, version)
        require(principal, Action.MODELS_READ)
        signature = resolved.signature.to_dict()
        return {
            "name": resolved.model_id,
            "versions": [str(resolved.version)],
            "platform": f"{resolved.format}",
            "inputs": signature["inputs"],
            "outputs": signature["outputs"],
        }

    def ready(self, principal: Principal, ref: ModelRef, version: str | None = None) -> bool:
        """Whether the model can serve (models load on first use, so any stored one can)."""
        self._registry.resolve(principal, ref, version)
        require(principal, Action.MODELS_READ)
        return True

    async def infer(
        self,
        principal: Principal,
        ref: ModelRef,
        request: InferenceRequest,
        version: str | None = None,
    ) -> InferenceResponse:
        """Run one inference request and return every requested output."""
        resolved = self._registry.resolve(principal, ref, version)  # 404 before 403
        require(principal, Action.INFER)
        if self._admission is not None:
            self._admission.admit(
                principal, resolved.grant_id, resolved.grant_quota_per_day, resolved.model_id
            )
        validate_request(resolved.signature, request)
        specs = {spec.name: spec for spec in resolved.signature.outputs}
        names = [o.name for o in request.outputs] or list(specs)
        arrays = await self._backend.predict(
            self._handle(resolved), {t.name: t.array for t in request.inputs}, names
        )
        outputs = [
            Tensor(
                name=name,
                datatype=datatype_of(arrays[name]),
                shape=tuple(int(d) for d in arrays[name].shape),
                array=arrays[name],
            )
            for name in names
        ]
        return InferenceResponse(
            model_name=resolved.model_id,
            model_version=str(resolved.version),
            outputs=outputs,
            id=request.id,
        )
