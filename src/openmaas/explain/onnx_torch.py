"""ONNX graphs executed with torch operators, so that gradients flow through them.

onnxruntime computes no gradients; ``to_torch`` reads an ONNX model and returns a
``TorchGraph`` that runs the part of the graph one output needs, node by node, with torch
operators in float64 (integers as int64). Parts that only depend on weights are computed
once, when the graph is built. Torch is imported lazily: this module imports without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from openmaas.explain.onnx_nodes import Kernel, NodeSpec, UnsupportedGraphError, tensor_from_proto
from openmaas.explain.torch_layers import LAYER_CHECKS, LAYER_KERNELS
from openmaas.explain.torch_math import MATH_KERNELS
from openmaas.explain.torch_shapes import SHAPE_CHECKS, SHAPE_KERNELS

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["SUPPORTED_OPS", "TorchGraph", "UnsupportedGraphError", "to_torch"]

_KERNELS: dict[str, Kernel] = {**MATH_KERNELS, **SHAPE_KERNELS, **LAYER_KERNELS}
_CHECKS: dict[str, Callable[[NodeSpec], str | None]] = {**SHAPE_CHECKS, **LAYER_CHECKS}
_FLOATS = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
SUPPORTED_OPS: frozenset[str] = frozenset(_KERNELS)


@dataclass(frozen=True)
class _Step:
    kernel: Kernel
    node: NodeSpec


class TorchGraph:
    """The subgraph computing one ONNX output, callable on a batch of the graph's one input.

    ``graph(x)`` takes a float tensor ``[n, ...]`` and returns the output as float64, ``[n]``
    or ``[n, k]`` (outputs of more axes are flattened to ``[n, k]``), differentiable in ``x``.
    """

    def __init__(
        self,
        input_name: str,
        output_name: str,
        input_shape: tuple[int | None, ...],
        steps: list[_Step],
        constants: Mapping[str, Tensor],
    ) -> None:
        self.input_name = input_name
        self.output_name = output_name
        self.input_shape = input_shape  # as declared; None where the size is free
        self._steps = steps
        self._constants = dict(constants)

    @property
    def ops(self) -> tuple[str, ...]:
        """The operators run per call (sorted, each once)."""
        return tuple(sorted({step.node.op for step in self._steps}))

    def __call__(self, x: Tensor) -> Tensor:
        """The output for the rows ``x`` (any float dtype; computed in float64)."""
        import torch

        values: dict[str, Tensor] = dict(self._constants)
        values[self.input_name] = x.to(torch.float64)
        for step in self._steps:
            node = step.node
            arguments = [values[name] if name else None for name in node.inputs]
            try:
                results = step.kernel(arguments, node)
            except (RuntimeError, ValueError, IndexError) as error:
                raise ValueError(f"{node.op} node {node.name!r} failed: {error}") from error
            produced = results if isinstance(results, tuple) else (results,)
            for name, value in zip(node.outputs, produced, strict=False):
                if name:
                    values[name] = value
        return _shaped(values[self.output_name], x.shape[0])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """The output for ``rows`` as a float64 array, without gradients."""
        import torch

        with torch.no_grad():
            return self(torch.from_numpy(np.asarray(rows, dtype=np.float64))).numpy()


def _shaped(result: Tensor, rows: int) -> Tensor:
    import torch

    if result.ndim == 0 or result.shape[0] != rows:
        raise ValueError(f"the output has shape {list(result.shape)}, not one row per input")
    if not result.is_floating_point():
        result = result.to(torch.float64)
    return result.reshape(rows, -1) if result.ndim > 2 else result


def to_torch(model: bytes | onnx.ModelProto, output: str) -> TorchGraph:
    """The part of ``model`` that computes ``output``, as a ``TorchGraph``.

    Raises ``UnsupportedGraphError`` naming the operators it cannot run (or saying why the
    graph cannot be explained: several inputs, a non-float input or output), and
    ``ValueError`` when ``output`` is not in the graph.
    """
    proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else model
    graph = proto.graph
    opset = max(
        (entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
        default=1,
    )
    nodes = _needed_nodes(graph, output)
    produced = {name for node in nodes for name in node.output if name}
    initializers = {init.name: init for init in graph.initializer}
    used = {name for node in nodes for name in node.input if name} | {output}
    _check_ops(nodes, opset, used)
    inputs = sorted(used - produced - set(initializers))
    input_name = _only_input(graph, inputs)
    _check_output_type(graph, output, nodes)
    try:
        import torch
    except ImportError as error:
        raise ImportError("running ONNX graphs for gradients needs the torch extra") from error

    constants = {name: tensor_from_proto(initializers[name]) for name in used & set(initializers)}
    steps: list[_Step] = []
    for node in nodes:
        spec = _spec(node, opset, produced_needed=used)
        step = _Step(_KERNELS[node.op_type], spec)
        if all(not name or name in constants for name in spec.inputs):
            with torch.no_grad():  # depends on weights only: computed once, here
                results = step.kernel([constants[n] if n else None for n in spec.inputs], spec)
            produced_now = results if isinstance(results, tuple) else (results,)
            constants.update(
                (name, value)
                for name, value in zip(spec.outputs, produced_now, strict=False)
                if name
            )
        else:
            steps.append(step)
    shape = _declared_shape(graph, input_name)
    return TorchGraph(input_name, output, shape, steps, constants)


def _needed_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """The nodes ``output`` depends on, in graph order."""
    wanted = {output}
    picked: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if wanted & set(node.output):
            picked.append(node)
            wanted.update(name for name in node.input if name)
    known = {node_output for node in graph.node for node_output in node.output}
    known |= {value.name for value in graph.input}
    if output not in known:
        names = ", ".join(repr(value.name) for value in graph.output)
        raise ValueError(f"the graph has no value {output!r}; its outputs are {names}")
    return picked[::-1]


def _check_ops(nodes: list[onnx.NodeProto], opset: int, needed: set[str]) -> None:
    """Raise ``UnsupportedGraphError`` listing every node the interpreter cannot run."""
    faults: dict[str, list[str]] = {}
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            faults.setdefault(f"{node.domain}.{node.op_type}", [])
            continue
        if node.op_type not in _KERNELS:
            faults.setdefault(node.op_type, [])
            continue
        check = _CHECKS.get(node.op_type)
        why = check(_spec(node, opset, needed)) if check else None
        if why:
            faults.setdefault(node.op_type, []).append(f"node {node.name!r}: {why}")
    if faults:
        parts = [f"{op} ({'; '.join(why)})" if why else op for op, why in sorted(faults.items())]
        raise UnsupportedGraphError(
            sorted(faults), "the graph uses operators that cannot be run: " + ", ".join(parts)
        )


def _only_input(graph: onnx.GraphProto, names: list[str]) -> str:
    """The one float graph input among ``names`` (what the output depends on)."""
    declared = {value.name: value for value in graph.input}
    if any(name not in declared for name in names):
        missing = [name for name in names if name not in declared]
        raise ValueError(f"the graph uses values nothing produces: {missing}")
    if len(names) != 1:
        reason = "depends on no input" if not names else f"depends on the inputs {names}"
        raise UnsupportedGraphError([], f"the output {reason}; it must depend on exactly one")
    elem = declared[names[0]].type.tensor_type.elem_type
    if elem not in _FLOATS:
        kind = onnx.TensorProto.DataType.Name(elem)
        raise UnsupportedGraphError([], f"the input {names[0]!r} is {kind}, not a float tensor")
    return names[0]


def _check_output_type(graph: onnx.GraphProto, output: str, nodes: list[onnx.NodeProto]) -> None:
    """Refuse an output declared with a non-float type (an ArgMax label, say)."""
    infos = [*graph.output, *graph.value_info]
    elem = next((info.type.tensor_type.elem_type for info in infos if info.name == output), 0)
    if elem and elem not in _FLOATS:
        kind = onnx.TensorProto.DataType.Name(elem)
        op = next((node.op_type for node in nodes if output in node.output), "")
        raise UnsupportedGraphError(
            [op] if op else [], f"the output {output!r} is {kind}: it has no gradient"
        )


def _declared_shape(graph: onnx.GraphProto, name: str) -> tuple[int | None, ...]:
    value = next(value for value in graph.input if value.name == name)
    dims = value.type.tensor_type.shape.dim
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims)


def _spec(node: onnx.NodeProto, opset: int, produced_needed: set[str]) -> NodeSpec:
    """``node`` as the kernels see it; outputs nothing needs are blanked."""
    attrs: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
    outputs = tuple(name if name in produced_needed else "" for name in node.output)
    return NodeSpec(node.op_type, node.name, tuple(node.input), outputs, opset, attrs)
