"""ONNX shape, indexing, constant and type operators as torch kernels.

Shape-only computations (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``) are evaluated
eagerly on integer tensors; they carry no gradient. Torch is imported inside each kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from openmaas.explain.onnx_nodes import (
    Kernel,
    NodeSpec,
    axis_of,
    int_list,
    required,
    tensor_from_proto,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["SHAPE_CHECKS", "SHAPE_KERNELS"]

Inputs = list["Tensor | None"]

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16: all run as float64
_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}  # (U)INT8..64: all run as int64
_BOOL = 9


def _identity(inputs: Inputs, node: NodeSpec) -> Tensor:
    return required(inputs, 0, node)


def _dropout(inputs: Inputs, node: NodeSpec) -> tuple[Tensor, Tensor]:
    import torch

    data = required(inputs, 0, node)
    return data, torch.ones_like(data, dtype=torch.bool)  # inference: no dropout, all kept


def _shape(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    dims = list(required(inputs, 0, node).shape)
    start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
    return torch.tensor(dims[start : None if end is None else int(end)], dtype=torch.int64)


def _gather(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data, indices = required(inputs, 0, node), required(inputs, 1, node).to(torch.int64)
    axis = axis_of(int(node.attrs.get("axis", 0)), data.ndim)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    picked = data.index_select(axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])


def _slice_bounds(start: int, end: int, step: int, size: int) -> range:
    """The indices ONNX Slice picks along one axis of ``size`` (clamped as the spec says)."""
    if step == 0:
        raise ValueError("Slice steps cannot be 0")
    start, end = start + size if start < 0 else start, end + size if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), size), min(max(end, 0), size), step)
    return range(min(max(start, 0), size - 1), min(max(end, -1), size - 1), step)


def _slice(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data = required(inputs, 0, node)
    if node.opset >= 10:
        starts = int_list(required(inputs, 1, node)) or []
        ends = int_list(required(inputs, 2, node)) or []
        axes = int_list(inputs[3] if len(inputs) > 3 else None)
        steps = int_list(inputs[4] if len(inputs) > 4 else None)
    else:
        starts = [int(item) for item in node.attrs["starts"]]
        ends = [int(item) for item in node.attrs["ends"]]
        axes = [int(item) for item in node.attrs["axes"]] if "axes" in node.attrs else None
        steps = None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        dim = axis_of(axis, data.ndim)
        picked = _slice_bounds(start, end, step, data.shape[dim])
        if step > 0:
            index = [slice(None)] * dim + [slice(picked.start, picked.stop, step)]
            data = data[tuple(index)]
        else:
            data = data.index_select(dim, torch.tensor(list(picked), dtype=torch.int64))
    return data


def _concat(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    present = [value for value in inputs if value is not None]
    return torch.cat(present, dim=axis_of(int(node.attrs["axis"]), present[0].ndim))


def _axes(inputs: Inputs, node: NodeSpec) -> list[int] | None:
    """Squeeze/Unsqueeze axes: an input from opset 13, an attribute before."""
    if node.opset >= 13:
        return int_list(inputs[1] if len(inputs) > 1 else None)
    return [int(axis) for axis in node.attrs["axes"]] if "axes" in node.attrs else None


def _squeeze(inputs: Inputs, node: NodeSpec) -> Tensor:
    data, axes = required(inputs, 0, node), _axes(inputs, node)
    if axes is None:
        return data.reshape([size for size in data.shape if size != 1])
    for axis in sorted((axis_of(axis, data.ndim) for axis in axes), reverse=True):
        data = data.squeeze(axis)
    return data


def _unsqueeze(inputs: Inputs, node: NodeSpec) -> Tensor:
    data, axes = required(inputs, 0, node), _axes(inputs, node) or []
    rank = data.ndim + len(axes)
    for axis in sorted(axis_of(axis, rank) for axis in axes):
        data = data.unsqueeze(axis)
    return data


def _flatten(inputs: Inputs, node: NodeSpec) -> Tensor:
    data = required(inputs, 0, node)
    axis = int(node.attrs.get("axis", 1))
    axis = axis + data.ndim if axis < 0 else axis
    return data.reshape(math.prod(data.shape[:axis]), math.prod(data.shape[axis:]))


def _reshape(inputs: Inputs, node: NodeSpec) -> Tensor:
    data, shape = required(inputs, 0, node), int_list(required(inputs, 1, node)) or []
    if not node.attrs.get("allowzero", 0):  # 0 copies the input's size on that axis
        shape = [data.shape[i] if size == 0 else size for i, size in enumerate(shape)]
    return data.reshape(shape)


def _transpose(inputs: Inputs, node: NodeSpec) -> Tensor:
    data = required(inputs, 0, node)
    perm = [int(axis) for axis in node.attrs.get("perm", reversed(range(data.ndim)))]
    return data.permute(perm)


def _constant(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    attrs = node.attrs
    if "value" in attrs:
        return tensor_from_proto(attrs["value"])
    if "value_float" in attrs:
        return torch.tensor(float(attrs["value_float"]), dtype=torch.float64)
    if "value_floats" in attrs:
        return torch.tensor([float(item) for item in attrs["value_floats"]], dtype=torch.float64)
    if "value_int" in attrs:
        return torch.tensor(int(attrs["value_int"]), dtype=torch.int64)
    return torch.tensor([int(item) for item in attrs["value_ints"]], dtype=torch.int64)


def _constant_of_shape(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    shape = int_list(required(inputs, 0, node)) or []
    value = node.attrs.get("value")
    fill = tensor_from_proto(value) if value is not None else torch.zeros(1, dtype=torch.float64)
    return fill.reshape(-1)[0].expand(shape).clone()


def _expand(inputs: Inputs, node: NodeSpec) -> Tensor:
    data, shape = required(inputs, 0, node), int_list(required(inputs, 1, node)) or []
    return data.expand(np.broadcast_shapes(tuple(data.shape), tuple(shape)))


def _range(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    start, limit, delta = (required(inputs, i, node) for i in range(3))
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _cast(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data, to = required(inputs, 0, node), int(node.attrs["to"])
    if to in _FLOAT_TYPES:
        return data.to(torch.float64)
    if to in _INT_TYPES:
        return data.to(torch.int64)
    return data.to(torch.bool)


def _pad(inputs: Inputs, node: NodeSpec) -> Tensor:
    from torch.nn import functional

    data = required(inputs, 0, node)
    pads = int_list(required(inputs, 1, node)) or []
    fill = inputs[2] if len(inputs) > 2 else None
    axes = int_list(inputs[3] if len(inputs) > 3 else None) or list(range(data.ndim))
    count = len(axes)
    widths = [0, 0] * data.ndim
    for i, axis in enumerate(axes):  # functional.pad lists the LAST axis first
        where = 2 * (data.ndim - 1 - axis_of(axis, data.ndim))
        widths[where], widths[where + 1] = pads[i], pads[i + count]
    value = 0.0 if fill is None else float(fill.item())
    return functional.pad(data, widths, mode="constant", value=value)


def _check_constant(node: NodeSpec) -> str | None:
    known = {"value", "value_float", "value_floats", "value_int", "value_ints"}
    return None if known & set(node.attrs) else "only numeric constants are supported"


def _check_cast(node: NodeSpec) -> str | None:
    to = int(node.attrs.get("to", 0))
    return None if to in _FLOAT_TYPES | _INT_TYPES | {_BOOL} else f"cannot cast to type {to}"


def _check_pad(node: NodeSpec) -> str | None:
    if node.opset < 11:
        return "Pad before opset 11 is not supported"
    mode = str(node.attrs.get("mode", "constant"))
    return None if mode == "constant" else f"Pad mode {mode!r} is not supported"


SHAPE_KERNELS: dict[str, Kernel] = {
    "Cast": _cast,
    "Concat": _concat,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Dropout": _dropout,
    "Expand": _expand,
    "Flatten": _flatten,
    "Gather": _gather,
    "Identity": _identity,
    "Pad": _pad,
    "Range": _range,
    "Reshape": _reshape,
    "Shape": _shape,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
}

SHAPE_CHECKS: dict[str, Callable[[NodeSpec], str | None]] = {
    "Cast": _check_cast,
    "Constant": _check_constant,
    "Pad": _check_pad,
}
