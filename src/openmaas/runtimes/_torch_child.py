"""The child side of converting a PyTorch upload to ONNX; the server never imports this.

``torch_convert`` runs it in a fresh ``python -I`` whose working directory is a private
temporary folder: it confines itself (``_confine``), reads ``model``, writes ``model.onnx``
and exits 0; or writes what to fix in ``error.txt`` and exits ``FAILED``. Loading a
TorchScript or ``torch.export`` archive unpickles and compiles what the file says, so this
process is the only one that ever does it.

TorchScript goes through torch's TorchScript-based exporter (``dynamo=False``, the only one
that takes a ``ScriptModule``), with dimension 0 of every input and output dynamic, then is
checked against torch at another batch size. A ``torch.export`` program goes through the
``torch.export``-based exporter (which needs onnxscript); its dynamic dimensions are the
program's own.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.runtimes._confine import confine

if TYPE_CHECKING:
    import torch

__all__ = ["FAILED", "main"]

FAILED = 3
OPSET = 17
MODEL, ONNX, ERROR = "model", "model.onnx", "error.txt"

_RTOL, _ATOL = 1e-3, 1e-4
# What torch, the loader and libc say when the address-space limit stops an allocation.
_OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "failed to map segment")
_PATH = re.compile(r"(?:/[\w.+@-]+)+/")


class ConversionError(Exception):
    """A reason the upload cannot be converted, said so that the publisher can fix it."""


def main(argv: Sequence[str]) -> int:
    """``KIND HINTS MEMORY CPU_SECONDS FILE_BYTES``: convert ``./model`` to ``./model.onnx``."""
    kind, hints_json, memory, cpu_seconds, file_bytes = argv
    confined = confine(
        ".", memory=int(memory), cpu_seconds=int(cpu_seconds), file_bytes=int(file_bytes)
    )
    print(f"confined: {json.dumps(confined)}", file=sys.stderr, flush=True)
    hints: dict[str, list[int]] = json.loads(hints_json)
    try:
        with warnings.catch_warnings():
            # Deprecation notices of TorchScript and the like: for the log, not the publisher.
            warnings.simplefilter("ignore")
            data = _convert(kind, hints)
    except ConversionError as exc:
        Path(ERROR).write_text(str(exc))
        return FAILED
    except MemoryError:
        Path(ERROR).write_text(_out_of_memory(int(memory)))
        return FAILED
    except Exception as exc:  # torch raises every kind of error on a bad file
        Path(ERROR).write_text(_describe(exc, int(memory)))
        return FAILED
    Path(ONNX).write_bytes(data)
    return 0


def _out_of_memory(memory: int) -> str:
    return (
        f"converting the model needed more than this server's {memory >> 20} MiB: publish "
        "ONNX (torch.onnx.export), or give smaller input_shapes"
    )


def _describe(exc: Exception, memory: int) -> str:
    text = str(exc).strip()
    if any(sign in text for sign in _OUT_OF_MEMORY):
        return _out_of_memory(memory)
    first = _PATH.sub("", text.splitlines()[0] if text else "")[:400]
    return (
        f"the model could not be converted to ONNX ({type(exc).__name__}: {first}); "
        "export it yourself with torch.onnx.export and publish the .onnx file"
    )


def _convert(kind: str, hints: dict[str, list[int]]) -> bytes:
    if find_spec("torch") is None:
        raise ConversionError(
            "torch is not installed on this server: publish ONNX (torch.onnx.export) or "
            "install openmaas[torch]"
        )
    import torch

    torch.set_num_threads(1)
    if kind == "torchscript":
        return _from_torchscript(hints)
    return _from_exported_program()


def _example_inputs(
    module: torch.jit.ScriptModule, hints: dict[str, list[int]]
) -> tuple[list[str], list[torch.Tensor]]:
    """The names of ``forward``'s inputs and a tensor for each: hinted, or as traced."""
    import torch

    forward: Any = module.forward  # a ScriptMethod, whose schema torch's hints omit
    arguments = forward.schema.arguments[1:]
    names = [str(argument.name) for argument in arguments]
    unknown = sorted(set(hints) - set(names))
    if unknown:
        raise ConversionError(
            f"input_shapes names {unknown}, which the model does not take; its inputs are {names}"
        )
    graph_inputs = list(module.graph.inputs())[1:]
    examples: list[torch.Tensor] = []
    for name, argument, value in zip(names, arguments, graph_inputs, strict=True):
        if argument.type.kind() != "TensorType":
            raise ConversionError(
                f"input {name!r} is a {argument.type}, not a tensor; OpenMaaS serves models "
                "whose inputs are all tensors"
            )
        traced = value.type()
        if name in hints:
            examples.append(torch.rand(*hints[name], generator=torch.Generator().manual_seed(0)))
        elif isinstance(traced, torch.TensorType) and traced.sizes() is not None:
            examples.append(_example(list(traced.sizes() or []), traced.dtype()))
        else:
            raise ConversionError(
                "TorchScript models need an example input shape: this file does not record "
                f"one for {name!r} (torch.jit.script keeps none, torch.jit.trace does). Give "
                "input_shapes with a shape for each input, batch first, e.g. "
                + json.dumps({n: [1, 3, 224, 224] for n in names})
            )
    return names, examples


def _example(shape: list[int], dtype: torch.dtype | None) -> torch.Tensor:
    import torch

    if dtype is None or dtype.is_floating_point:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(*shape, generator=generator, dtype=dtype or torch.float32)
    return torch.zeros(*shape, dtype=dtype)


def _with_batch(example: torch.Tensor, size: int) -> torch.Tensor:
    """``example`` with ``size`` rows along dimension 0 (its rows repeated, then varied)."""
    import torch

    rows = torch.cat([example] * (size // max(1, example.shape[0]) + 1))[:size].clone()
    if rows.is_floating_point():
        rows[-1] = rows[-1] * 0.5 + 0.25
    return rows


def _outputs(value: object) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    raise ConversionError(
        f"the model returns a {type(value).__name__}; OpenMaaS serves models that return a "
        "tensor or a tuple of tensors"
    )


def _from_torchscript(hints: dict[str, list[int]]) -> bytes:
    import torch

    load: Callable[..., torch.jit.ScriptModule] = torch.jit.load  # untyped in torch
    module = load(MODEL, map_location="cpu", _restore_shapes=True)
    module.eval()
    names, examples = _example_inputs(module, hints)
    if any(example.dim() == 0 for example in examples):
        raise ConversionError("every input needs a batch dimension: give it at least one")
    with torch.no_grad():
        expected = _outputs(module(*examples))
    outputs = ["output"] if len(expected) == 1 else [f"output_{i}" for i in range(len(expected))]
    dynamic = {name: {0: "batch"} for name in names}
    for name, tensor in zip(outputs, expected, strict=True):
        if tensor.dim():
            dynamic[name] = {0: "batch"}
    torch.onnx.export(
        module,
        tuple(examples),
        ONNX,
        dynamo=False,
        opset_version=OPSET,
        input_names=names,
        output_names=outputs,
        dynamic_axes=dynamic,
    )
    data = Path(ONNX).read_bytes()
    batch = [_with_batch(example, example.shape[0] + 1) for example in examples]
    with torch.no_grad():
        wanted = _outputs(module(*batch))
    _check(data, dict(zip(names, batch, strict=True)), dict(zip(outputs, wanted, strict=True)))
    return data


def _from_exported_program() -> bytes:
    import torch

    if find_spec("onnxscript") is None:  # torch's exporter of ExportedPrograms needs it
        raise ConversionError(
            "converting a torch.export program (.pt2) needs the onnxscript package, which "
            "this server lacks: install openmaas[torch], or publish ONNX (torch.onnx.export)"
        )
    program = torch.export.load(MODEL)
    names = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    for name in names:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        shape = getattr(value, "shape", None)
        if shape is None:
            raise ConversionError(
                f"input {name!r} is not a tensor; OpenMaaS serves models whose inputs are all "
                "tensors"
            )
        if len(shape) == 0 or not isinstance(shape[0], torch.SymInt):
            fixed = shape[0] if len(shape) else "none"
            raise ConversionError(
                f"this torch.export program has a fixed batch size ({fixed}) for input "
                f"{name!r}: export it with a dynamic dimension 0, e.g. torch.export.export("
                f"model, args, dynamic_shapes={{{name!r}: {{0: torch.export.Dim('batch')}}}}),"
                " and publish it again"
            )
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET)
    if onnx_program is None:  # only when given a file to write to
        raise ConversionError("torch.onnx.export returned no program")
    model = onnx_program.model_proto
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = "batch"
    data = bytes(model.SerializeToString())
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        with torch.no_grad():
            wanted = _outputs(program.module()(*args, **kwargs))
        flat = [*args, *kwargs.values()]
        if len(flat) == len(names) and all(isinstance(v, torch.Tensor) for v in flat):
            outputs = [value.name for value in model.graph.output]
            expected = dict(zip(outputs, wanted, strict=True))
            _check(data, dict(zip(names, flat, strict=True)), expected)
    return data


def _check(data: bytes, inputs: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Run the ONNX model with onnxruntime and compare its outputs with torch's."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
    try:
        got = session.run(list(expected), feeds)
    except Exception as exc:  # onnxruntime's errors have no common base class
        raise ConversionError(
            f"the exported ONNX model fails with a batch of {_batch(inputs)} "
            f"({_PATH.sub('', str(exc).splitlines()[0])[:300]}); make dimension 0 of every "
            "input the batch, or export ONNX yourself with torch.onnx.export"
        ) from exc
    for (name, want), have in zip(expected.items(), got, strict=True):
        want_array = want.numpy()
        if want_array.shape != np.shape(have) or not np.allclose(
            have, want_array, rtol=_RTOL, atol=_ATOL
        ):
            raise ConversionError(
                f"the exported ONNX model's output {name!r} differs from torch's with a batch "
                f"of {_batch(inputs)}: make the model deterministic in eval mode and dimension "
                "0 of every input the batch, or export ONNX yourself with torch.onnx.export"
            )


def _batch(inputs: dict[str, Any]) -> int:
    return int(next(iter(inputs.values())).shape[0]) if inputs else 0
