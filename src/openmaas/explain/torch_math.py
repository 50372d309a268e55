"""ONNX arithmetic, activations, reductions and matrix products as torch kernels.

Every kernel follows ``onnx_nodes.Kernel``; torch is imported inside each one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from openmaas.explain.onnx_nodes import Kernel, NodeSpec, axis_of, int_list, required

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["MATH_KERNELS"]

Inputs = list["Tensor | None"]


def _unary(name: str) -> Kernel:
    """A kernel applying ``torch.<name>`` to the node's one input."""

    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        import torch

        function: Callable[[Tensor], Tensor] = getattr(torch, name)
        return function(required(inputs, 0, node))

    return kernel


def _binary(name: str) -> Kernel:
    """A kernel applying ``torch.<name>`` (broadcasting) to the node's two inputs."""

    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        import torch

        function: Callable[[Tensor, Tensor], Tensor] = getattr(torch, name)
        return function(required(inputs, 0, node), required(inputs, 1, node))

    return kernel


def _div(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    left, right = required(inputs, 0, node), required(inputs, 1, node)
    if left.is_floating_point() or right.is_floating_point():
        return left / right
    return torch.div(left, right, rounding_mode="trunc")  # ONNX integer division truncates


def _pow(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    base = required(inputs, 0, node)
    return torch.pow(base, required(inputs, 1, node)).to(base.dtype)


def _variadic(name: str) -> Kernel:
    """Min, Max or Sum over any number of inputs (broadcasting)."""

    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        import torch

        function: Callable[[Tensor, Tensor], Tensor] = getattr(torch, name)
        present = [value for value in inputs if value is not None]
        result = present[0]
        for value in present[1:]:
            result = function(result, value)
        return result

    return kernel


def _leaky_relu(inputs: Inputs, node: NodeSpec) -> Tensor:
    from torch.nn import functional

    alpha = float(node.attrs.get("alpha", 0.01))
    return functional.leaky_relu(required(inputs, 0, node), alpha)


def _elu(inputs: Inputs, node: NodeSpec) -> Tensor:
    from torch.nn import functional

    return functional.elu(required(inputs, 0, node), float(node.attrs.get("alpha", 1.0)))


def _softplus(inputs: Inputs, node: NodeSpec) -> Tensor:
    from torch.nn import functional

    return functional.softplus(required(inputs, 0, node))


def _gelu(inputs: Inputs, node: NodeSpec) -> Tensor:
    from torch.nn import functional

    approximate = str(node.attrs.get("approximate", "none"))
    return functional.gelu(required(inputs, 0, node), approximate=approximate)


def _hard_sigmoid(inputs: Inputs, node: NodeSpec) -> Tensor:
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    return (required(inputs, 0, node) * alpha + beta).clamp(0.0, 1.0)


def _softmax_kernel(log: bool) -> Kernel:
    """Softmax or LogSoftmax: along ``axis`` (opset 13+), or over axes ``axis:`` before."""

    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        import torch

        data = required(inputs, 0, node)
        function = torch.log_softmax if log else torch.softmax
        if node.opset >= 13:
            return function(data, dim=axis_of(int(node.attrs.get("axis", -1)), data.ndim))
        axis = axis_of(int(node.attrs.get("axis", 1)), data.ndim)
        flat = data.reshape(math.prod(data.shape[:axis]), -1)
        return function(flat, dim=1).reshape(data.shape)

    return kernel


def _gemm(inputs: Inputs, node: NodeSpec) -> Tensor:
    left, right = required(inputs, 0, node), required(inputs, 1, node)
    if node.attrs.get("transA", 0):
        left = left.transpose(0, 1)
    if node.attrs.get("transB", 0):
        right = right.transpose(0, 1)
    result = (left @ right) * float(node.attrs.get("alpha", 1.0))
    bias = inputs[2] if len(inputs) > 2 else None
    if bias is not None:
        result = result + bias * float(node.attrs.get("beta", 1.0))
    return result


def _clip(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    data = required(inputs, 0, node)
    if node.opset >= 11:
        low = inputs[1] if len(inputs) > 1 else None
        high = inputs[2] if len(inputs) > 2 else None
    else:
        low = torch.tensor(float(node.attrs.get("min", float("-inf"))), dtype=data.dtype)
        high = torch.tensor(float(node.attrs.get("max", float("inf"))), dtype=data.dtype)
    if low is None and high is None:
        return data
    return torch.clamp(data, min=low, max=high)


def _reduce(name: str, axes_input_since: int) -> Kernel:
    """ReduceSum/Mean/Max/Min: axes as an attribute before ``axes_input_since``, then an input."""

    def kernel(inputs: Inputs, node: NodeSpec) -> Tensor:
        import torch

        data = required(inputs, 0, node)
        if node.opset >= axes_input_since:
            axes = int_list(inputs[1] if len(inputs) > 1 else None)
        else:
            axes = [int(axis) for axis in node.attrs.get("axes", [])] or None
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return data
            axes = list(range(data.ndim))
        dims = tuple(axis_of(axis, data.ndim) for axis in axes)
        function: Callable[..., Tensor] = getattr(torch, name)
        return function(data, dim=dims, keepdim=keep)

    return kernel


def _argmax(inputs: Inputs, node: NodeSpec) -> Tensor:
    data = required(inputs, 0, node)
    axis = axis_of(int(node.attrs.get("axis", 0)), data.ndim)
    keep = bool(node.attrs.get("keepdims", 1))
    if node.attrs.get("select_last_index", 0):
        flipped = data.flip(axis).argmax(dim=axis, keepdim=keep)
        return data.shape[axis] - 1 - flipped
    return data.argmax(dim=axis, keepdim=keep)


def _where(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    condition = required(inputs, 0, node).to(torch.bool)
    return torch.where(condition, required(inputs, 1, node), required(inputs, 2, node))


def _not(inputs: Inputs, node: NodeSpec) -> Tensor:
    import torch

    return torch.logical_not(required(inputs, 0, node))


MATH_KERNELS: dict[str, Kernel] = {
    "Abs": _unary("abs"),
    "Add": _binary("add"),
    "ArgMax": _argmax,
    "Clip": _clip,
    "Div": _div,
    "Elu": _elu,
    "Equal": _binary("eq"),
    "Erf": _unary("erf"),
    "Exp": _unary("exp"),
    "Gelu": _gelu,
    "Gemm": _gemm,
    "Greater": _binary("gt"),
    "HardSigmoid": _hard_sigmoid,
    "LeakyRelu": _leaky_relu,
    "Less": _binary("lt"),
    "Log": _unary("log"),
    "LogSoftmax": _softmax_kernel(log=True),
    "MatMul": _binary("matmul"),
    "Max": _variadic("maximum"),
    "Min": _variadic("minimum"),
    "Mul": _binary("mul"),
    "Neg": _unary("neg"),
    "Not": _not,
    "Pow": _pow,
    "Reciprocal": _unary("reciprocal"),
    "ReduceMax": _reduce("amax", 18),
    "ReduceMean": _reduce("mean", 18),
    "ReduceMin": _reduce("amin", 18),
    "ReduceSum": _reduce("sum", 13),
    "Relu": _unary("relu"),
    "Sigmoid": _unary("sigmoid"),
    "Softmax": _softmax_kernel(log=False),
    "Softplus": _softplus,
    "Sqrt": _unary("sqrt"),
    "Sub": _binary("sub"),
    "Sum": _variadic("add"),
    "Tanh": _unary("tanh"),
    "Where": _where,
}
