"""ONNX convolutions, poolings and normalizations as torch kernels (1-D to 3-D).

ONNX lists pads as ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` and may pad unevenly;
uneven pads are applied with an explicit ``pad`` first. Torch is imported inside each kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from openmaas.explain.onnx_nodes import Kernel, NodeSpec, axis_of, required

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["LAYER_CHECKS", "LAYER_KERNELS"]

Inputs = list["Tensor | None"]
_AUTO_PADS = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"}


def _window(node: NodeSpec, data: Tensor, kernel: Sequence[int]) -> tuple[list[int], ...]:
    """``(strides, dilations, pads)`` of a sliding window over ``data``'s spatial axes."""
    dims = data.ndim - 2
    strides = [int(item) for item in node.attrs.get("strides", [1] * dims)]
    dilations = [int(item) for item in node.attrs.get("dilations", [1] * dims)]
    auto_pad = str(node.attrs.get("auto_pad", "NOTSET"))
    if auto_pad == "NOTSET":
        pads = [int(item) for item in node.attrs.get("pads", [0] * (2 * dims))]
    elif auto_pad == "VALID":
        pads = [0] * (2 * dims)
    else:
        begins, ends = [], []
        for size, k, stride, dilation in zip(
            data.shape[2:], kernel, strides, dilations, strict=True
        ):
            out = -(-size // stride)
            total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begins + ends
    return strides, dilations, pads


def _even(pads: Sequence[int]) -> bool:
    half = len(pads) // 2
    return list(pads[:half]) == list(pads[half:])


def _padded(data: Tensor, pads: Sequence[int], value: float) -> Tensor:
    """``data`` padded with ``value`` on its spatial axes (ONNX pad order)."""
    from torch.nn import functional

    if not any(pads):
        return data
    half = len(pads) // 2
    widths: list[int] = []
    for axis in reversed(range(half)):  # functional.pad lists the LAST axis first
        widths += [pads[axis], pads[axis + half]]
    return functional.pad(data, widths, mode="constant", value=value)


def _function(prefix: str, dims: int) -> Callable[..., Tensor]:
    from torch.nn import functional

    function: Callable[..., Tensor] = getattr(functional, f"{prefix}{dims}d")
    return function


def _conv(inputs: Inputs, node: NodeSpec) -> Tensor:
    data, weight = required(inputs, 0, node), required(inputs, 1, node)
    bias = inputs[2] if len(inputs) > 2 else None
    strides, dilations, pads = _window(node, data, weight.shape[2:])
    padding: Sequence[int] = [0] * (data.ndim - 2)
    if _even(pads):
        padding = pads[: data.ndim - 2]
    else:
        data = _padded(data, pads, 0.0)
    return _function("conv", data.ndim - 2)(
        data, weight, bias, strides, padding, dilations, int(node.attrs.get("group", 1))
    )


def _max_pool(inputs: Inputs, node: NodeSpec) -> Tensor:
    data = required(inputs, 0, node)
    kernel = [int(item) for item in node.attrs["kernel_shape"]]
    strides, dilations, pads = _window(node, data, kernel)
    half = data.ndim - 2
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    padding: Sequence[int] = [0] * half
    if _even(pads) and all(2 * p <= r for p, r in zip(pads[:half], reach, strict=True)):
        padding = pads[:half]
    else:
        data = _padded(data, pads, float("-inf"))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    return _function("max_pool", half)(data, kernel, strides, padding, dilations, ceil)


def _average_pool(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data = required(inputs, 0, node)
    kernel = [int(item) for item in node.attrs["kernel_shape"]]
    strides, _, pads = _window(node, data, kernel)
    pool = _function("avg_pool", data.ndim - 2)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if not any(pads):
        return pool(data, kernel, strides, 0, ceil, True)
    if node.attrs.get("count_include_pad", 0):
        return pool(_padded(data, pads, 0.0), kernel, strides, 0, ceil, True)
    # Divide the window sums by how many real (unpadded) values each window holds.
    ones = torch.ones((1, 1, *data.shape[2:]), dtype=data.dtype)
    total = pool(_padded(data, pads, 0.0), kernel, strides, 0, ceil, True)
    count = pool(_padded(ones, pads, 0.0), kernel, strides, 0, ceil, True)
    return total / count


def _global_pool(mean: bool) -> Kernel:
    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        data = required(inputs, 0, node)
        dims = tuple(range(2, data.ndim))
        return data.mean(dim=dims, keepdim=True) if mean else data.amax(dim=dims, keepdim=True)

    return kernel


def _batch_norm(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data = required(inputs, 0, node)
    scale, bias, mean, var = (required(inputs, i, node) for i in range(1, 5))
    shape = [1, -1] + [1] * (data.ndim - 2)
    epsilon = float(node.attrs.get("epsilon", 1e-5))
    factor = (scale / torch.sqrt(var + epsilon)).reshape(shape)
    return (data - mean.reshape(shape)) * factor + bias.reshape(shape)


def _layer_norm(inputs: Inputs, node: NodeSpec) -> tuple[Tensor, Tensor, Tensor]:
    import torch

    data, scale = required(inputs, 0, node), required(inputs, 1, node)
    bias = inputs[2] if len(inputs) > 2 else None
    axis = axis_of(int(node.attrs.get("axis", -1)), data.ndim)
    dims = tuple(range(axis, data.ndim))
    mean = data.mean(dim=dims, keepdim=True)
    centred = data - mean
    inverse = 1.0 / torch.sqrt(
        (centred * centred).mean(dim=dims, keepdim=True) + float(node.attrs.get("epsilon", 1e-5))
    )
    result = centred * inverse * scale
    return (result if bias is None else result + bias), mean, inverse


def _check_window(node: NodeSpec) -> str | None:
    auto_pad = str(node.attrs.get("auto_pad", "NOTSET"))
    if auto_pad not in _AUTO_PADS:
        return f"auto_pad {auto_pad!r} is not supported"
    if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        return "its Indices output is not supported"
    if node.op == "AveragePool" and any(int(d) != 1 for d in node.attrs.get("dilations", [])):
        return "dilated average pooling is not supported"
    return None


def _check_batch_norm(node: NodeSpec) -> str | None:
    if node.attrs.get("training_mode", 0) or any(node.outputs[1:]):
        return "only inference-mode batch normalization is supported"
    return None


LAYER_KERNELS: dict[str, Kernel] = {
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm,
    "Conv": _conv,
    "GlobalAveragePool": _global_pool(mean=True),
    "GlobalMaxPool": _global_pool(mean=False),
    "LayerNormalization": _layer_norm,
    "MaxPool": _max_pool,
}

LAYER_CHECKS: dict[str, Callable[[NodeSpec], str | None]] = {
    "AveragePool": _check_window,
    "BatchNormalization": _check_batch_norm,
    "Conv": _check_window,
    "MaxPool": _check_window,
}
