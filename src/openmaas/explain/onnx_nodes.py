"""What the ONNX-on-torch interpreter's kernels share: a node, its error, value conversions.

Torch is imported lazily (inside functions): this module imports without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    from torch import Tensor

__all__ = [
    "Kernel",
    "NodeSpec",
    "UnsupportedGraphError",
    "axis_of",
    "int_list",
    "required",
    "tensor_from_numpy",
    "tensor_from_proto",
]


class UnsupportedGraphError(Exception):
    """The graph cannot be run by the interpreter; ``ops`` names the operators at fault."""

    def __init__(self, ops: Sequence[str], reason: str) -> None:
        super().__init__(reason)
        self.ops: tuple[str, ...] = tuple(ops)


@dataclass(frozen=True)
class NodeSpec:
    """One ONNX node as the kernels see it (outputs nobody needs are blanked to "")."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def unsupported(self, why: str) -> UnsupportedGraphError:
        """An error saying that this node cannot be run, and why."""
        return UnsupportedGraphError([self.op], f"{self.op} node {self.name!r}: {why}")


# A kernel takes its inputs (None where an optional input is absent) and returns its outputs.
Kernel = Callable[[list["Tensor | None"], NodeSpec], "Tensor | tuple[Tensor, ...]"]


def required(inputs: list[Tensor | None], index: int, node: NodeSpec) -> Tensor:
    """Input ``index`` of ``node``, which must be present."""
    value = inputs[index] if index < len(inputs) else None
    if value is None:
        raise ValueError(f"{node.op} node {node.name!r} lacks its input {index}")
    return value


def int_list(value: Tensor | None) -> list[int] | None:
    """An integer tensor (shape, axes, pads...) as Python ints; None stays None."""
    if value is None:
        return None
    return [int(item) for item in value.reshape(-1).tolist()]


def axis_of(axis: int, rank: int) -> int:
    """``axis`` (possibly negative) as an index into ``rank`` dimensions."""
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def tensor_from_numpy(array: np.ndarray) -> Tensor:
    """A torch tensor of ``array``: floats become float64, integers int64, bools stay bool."""
    import torch

    if array.dtype == np.bool_:
        return torch.from_numpy(np.array(array, dtype=np.bool_))
    if np.issubdtype(array.dtype, np.floating):
        return torch.from_numpy(np.array(array, dtype=np.float64))
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(np.array(array, dtype=np.int64))
    raise TypeError(f"tensors of {array.dtype} cannot be used")


def tensor_from_proto(proto: onnx.TensorProto) -> Tensor:
    """A torch tensor of an ONNX tensor (an initializer or a constant)."""
    from onnx import numpy_helper

    return tensor_from_numpy(numpy_helper.to_array(proto))
