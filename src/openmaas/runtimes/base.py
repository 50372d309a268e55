"""The ``Runtime`` protocol, model signatures, and the format registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from openmaas.errors import InvalidArtifactError

__all__ = [
    "PreparedArtifact",
    "Runtime",
    "Signature",
    "TensorSpec",
    "load_runtime",
    "prepare_artifact",
]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature; ``-1`` in ``shape`` is a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs a model takes and returns."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )


@dataclass(frozen=True)
class PreparedArtifact:
    """An uploaded artifact after validation: the bytes to store, signature and facts."""

    format: str
    data: bytes
    signature: Signature
    facts: dict[str, Any] = field(default_factory=dict)


class Runtime(Protocol):
    """A loaded model: named arrays in, named arrays out."""

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run the model; return the requested outputs (all when ``outputs`` is empty)."""
        ...

    def unload(self) -> None:
        """Release the model's memory."""
        ...


def prepare_artifact(data: bytes, format: str | None = None) -> PreparedArtifact:
    """Validate an uploaded artifact and extract its signature (format sniffed when None)."""
    from openmaas.runtimes import onnx_runtime

    if format not in (None, "onnx"):
        raise InvalidArtifactError(
            f"unsupported model format {format!r}; this server accepts: onnx", field="format"
        )
    return onnx_runtime.prepare(data)


def load_runtime(format: str, data: bytes) -> Runtime:
    """Load a prepared artifact into a runtime of its format."""
    from openmaas.runtimes import onnx_runtime

    if format != "onnx":
        raise InvalidArtifactError(f"no runtime for format {format!r}")
    return onnx_runtime.OnnxRuntime(data)
