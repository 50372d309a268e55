"""Check an inference request against the model's signature before any model code runs."""

from __future__ import annotations

from openmaas.errors import (
    DatatypeMismatchError,
    MissingInputError,
    ShapeMismatchError,
    UnknownInputError,
    UnknownOutputError,
)
from openmaas.runtimes import Signature
from openmaas.serving.types import InferenceRequest

__all__ = ["validate_request"]


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in shape) + "]"


def validate_request(signature: Signature, request: InferenceRequest) -> None:
    """Raise a precise 4xx error when names, datatypes or shapes do not fit the signature."""
    specs = {spec.name: spec for spec in signature.inputs}
    seen: set[str] = set()
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise UnknownInputError(
                f"the model has no input {tensor.name!r}; its inputs are "
                + ", ".join(
                    f"{s.name!r} ({s.datatype} {_shape_text(s.shape)})" for s in specs.values()
                ),
                field=f"inputs.{tensor.name}",
            )
        if tensor.name in seen:
            raise UnknownInputError(
                f"input {tensor.name!r} is given twice", field=f"inputs.{tensor.name}"
            )
        seen.add(tensor.name)
        if tensor.datatype != spec.datatype:
            raise DatatypeMismatchError(
                f"input {tensor.name!r} must have datatype {spec.datatype}, not {tensor.datatype}",
                field=f"inputs.{tensor.name}.datatype",
            )
        fits = len(tensor.shape) == len(spec.shape) and all(
            want < 0 or want == got for want, got in zip(spec.shape, tensor.shape, strict=True)
        )
        if not fits:
            raise ShapeMismatchError(
                f"input {tensor.name!r} must have shape {_shape_text(spec.shape)} "
                f"(N = any size), not {list(tensor.shape)}",
                field=f"inputs.{tensor.name}.shape",
            )
    missing = [name for name in specs if name not in seen]
    if missing:
        raise MissingInputError(
            f"missing model inputs: {', '.join(repr(m) for m in missing)}",
            field=f"inputs.{missing[0]}",
        )
    outputs = {spec.name for spec in signature.outputs}
    for requested in request.outputs:
        if requested.name not in outputs:
            raise UnknownOutputError(
                f"the model has no output {requested.name!r}; its outputs are "
                + ", ".join(repr(o) for o in sorted(outputs)),
                field=f"outputs.{requested.name}",
            )
