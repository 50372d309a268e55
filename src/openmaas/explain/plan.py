"""Choose the explainer for a model and a request, check its options, and state its cost.

This runs before the work is queued: a request that asks for too much, or for a method that
cannot explain the model, is refused at once (422) with what to change. The cost it states
is what the fair scheduler charges the tenant for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import numpy as np

from openmaas.errors import (
    ExplainCostError,
    ExplanationUnavailableError,
    RequestValidationError,
)
from openmaas.explain.job import METHODS, ExplainJob
from openmaas.explain.types import Background, CostCapError
from openmaas.runtimes import TensorSpec

__all__ = ["Caps", "plan_job"]

_FLOATS = ("FP16", "FP32", "FP64")
_LARGEST = {  # the largest finite value of each float input type
    "FP16": float(np.finfo(np.float16).max),
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}
_SHAP = ("exact", "permutation", "kernel", "tree")
_MAX_ROWS = 64
_EXACT_MAX_FEATURES = 12  # auto's choice
_EXACT_LIMIT = 16  # asked for by name (2^16 coalitions)
_KERNEL_FEATURES = 512  # its least squares are features x features
_SAMPLED_FEATURES = 16_384
_MAX_ATTRIBUTIONS = 2_000_000  # numbers in one answer (16 MB as float64)
_IG_POINTS = 4_097  # gradient points integrated gradients may take (doubling from 16)
_MAX_GRADIENT_ELEMENTS = 50_000_000  # points x input elements held at once (400 MB)


@dataclass(frozen=True)
class Caps:
    """The server's limits on explain calls."""

    default_evals: int
    limit_evals: int


def _int(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestValidationError(
            f"parameters.{name} must be an integer from {low} to {high}", field=name
        )
    return value


def _explained_output(outputs: Sequence[TensorSpec], wanted: object) -> TensorSpec:
    """The output to attribute: the named one, else the first float one (the scores)."""
    if wanted is not None:
        for spec in outputs:
            if spec.name == wanted:
                if spec.datatype not in _FLOATS:
                    break
                return spec
        names = [s.name for s in outputs if s.datatype in _FLOATS]
        raise RequestValidationError(
            f"parameters.output must name a float output of the model: one of {names}",
            field="output",
        )
    for spec in outputs:
        if spec.datatype in _FLOATS and spec.name != "embedding":
            return spec
    raise ExplanationUnavailableError(
        "this model has no score or probability output to explain (explanations attribute a "
        "float output such as class probabilities)",
        field="output",
    )


def _baseline(params: Mapping[str, Any], row_shape: tuple[int, ...]) -> Background | None:
    """``parameters.baseline``: one row (or one number for every element), if given."""
    value = params.get("baseline")
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.asarray([np.nan])
    if array.ndim == 0:
        array = np.full(row_shape, float(array))
    if array.shape != row_shape or not np.isfinite(array).all():
        raise RequestValidationError(
            f"parameters.baseline must be one number or one row of shape {list(row_shape)} "
            "with finite numbers",
            field="baseline",
        )
    return Background(array[None], np.ones(1), "baseline")


def _check_size(
    method: str,
    spec: TensorSpec,
    output: TensorSpec,
    rows: np.ndarray,
    max_evals: int,
    params: Mapping[str, Any],
) -> None:
    """Refuse what would need unbounded memory or time however few evaluations it takes."""
    elements = math.prod(rows.shape[1:])
    classes = output.shape[-1] if len(output.shape) > 1 and output.shape[-1] > 0 else 1
    if method != "tokens" and len(rows) * elements * classes > _MAX_ATTRIBUTIONS:
        raise RequestValidationError(
            f"the attributions would hold {len(rows) * elements * classes:,} numbers (rows x "
            f"input elements x classes); the most one call answers is {_MAX_ATTRIBUTIONS:,}: "
            "explain fewer rows per call",
            field="inputs",
        )
    if method in _SHAP and spec.shape[:1] != (-1,):
        raise ExplanationUnavailableError(
            f"SHAP evaluates batches of rows, and this model's input has a fixed batch size "
            f"{spec.shape[:1]}; export it with a dynamic first dimension",
            field="explainer",
        )
    features = elements if len(rows.shape) == 2 else 0
    if method == "exact" and features > _EXACT_LIMIT:
        raise ExplainCostError(
            f"exact Shapley takes at most {_EXACT_LIMIT} features (2^M coalitions); this "
            f"input has {features}: use 'permutation' or 'kernel'",
            field="explainer",
        )
    limit = _KERNEL_FEATURES if method == "kernel" else _SAMPLED_FEATURES
    if method in ("kernel", "permutation") and features > limit:
        raise ExplanationUnavailableError(
            f"{method} SHAP takes at most {limit:,} features; this input has {features:,}",
            field="explainer",
        )
    if method == "integrated_gradients":
        if len(rows) > 1 and "target" not in params:
            raise RequestValidationError(
                "integrated gradients explain one class: send one row, or name the class "
                "with parameters.target",
                field="target",
            )
        if elements * min(max_evals, _IG_POINTS) > _MAX_GRADIENT_ELEMENTS:
            raise ExplainCostError(
                f"integrated gradients on {elements:,} input elements with up to "
                f"{min(max_evals, _IG_POINTS):,} gradient points would hold too much at once; "
                "lower parameters.max_evals or use 'occlusion'",
                field="max_evals",
            )


def _check_range(values: np.ndarray, datatype: str, name: str) -> None:
    """Values the model's input type can hold (an FP32 input overflows above 3.4e38)."""
    if datatype not in _FLOATS:
        return
    largest = _LARGEST[datatype]
    if values.size and float(np.abs(values).max()) > largest:
        raise RequestValidationError(
            f"parameters.{name} must fit the input's {datatype} (at most {largest:.3g} in size)",
            field=name,
        )


def _auto(
    format: str, facts: Mapping[str, Any], row_shape: tuple[int, ...], background: Background | None
) -> str:
    if format == "text-onnx":
        return "tokens"
    if len(row_shape) == 1:  # tabular: one row of features
        if background is None:
            raise ExplanationUnavailableError(
                "SHAP needs background data to compare with: publish the version with a "
                "background sample, or send parameters.baseline (one row)",
                field="baseline",
            )
        if facts.get("tree_ensemble") and background.source != "baseline":
            return "tree"
        return "exact" if row_shape[0] <= _EXACT_MAX_FEATURES else "permutation"
    return "integrated_gradients" if find_spec("torch") is not None else "occlusion"


def _occlusion_cost(row_shape: tuple[int, ...], options: Mapping[str, Any]) -> int:
    from openmaas.explain.occlusion import default_spatial_axes

    axes = default_spatial_axes(row_shape)
    if axes is None:
        return 2
    window, stride = int(options.get("window", 2)), int(options.get("stride", 1))
    patches = 1
    for axis in axes:
        size = row_shape[axis]
        patches *= max(1, math.ceil((size - window) / stride) + 1) if size > window else 1
    return patches + 2


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "target" in params:
        options["target"] = _int(params, "target", 0, 0, 1_000_000)
    if "window" in params:
        options["window"] = _int(params, "window", 2, 1, 1024)
    if "stride" in params:
        options["stride"] = _int(params, "stride", 1, 1, 1024)
    for name in ("fill", "tolerance"):
        if name in params:
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestValidationError(f"parameters.{name} must be a number", field=name)
            if not math.isfinite(value) or (name == "tolerance" and not 0 < value < 1):
                raise RequestValidationError(f"parameters.{name} is out of range", field=name)
            options[name] = float(value)
    if "mask" in params:
        mask = params["mask"]
        if not isinstance(mask, str) or not 0 < len(mask) <= 32:
            raise RequestValidationError("parameters.mask must be a short string", field="mask")
        options["mask"] = mask
    return options


def plan_job(
    *,
    format: str,
    facts: Mapping[str, Any],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    rows: np.ndarray,
    params: Mapping[str, Any],
    background: Background | None,
    caps: Caps,
) -> tuple[ExplainJob, int]:
    """The job for one explain request, and the model evaluations it may take at most."""
    if len(inputs) != 1:
        raise ExplanationUnavailableError(
            f"explanations attribute one input tensor; this model takes {len(inputs)}",
            field="inputs",
        )
    spec = inputs[0]
    if format == "gguf":
        raise ExplanationUnavailableError("language models are explained elsewhere")
    method = params.get("explainer", "auto")
    if method not in METHODS:
        raise RequestValidationError(
            f"parameters.explainer must be one of {', '.join(METHODS)}", field="explainer"
        )
    max_evals = _int(params, "max_evals", caps.default_evals, 1, caps.limit_evals)
    seed = _int(params, "seed", 0, 0, 2**32 - 1)
    if not 1 <= len(rows) <= _MAX_ROWS:
        raise RequestValidationError(
            f"explain 1 to {_MAX_ROWS} rows per call (the first dimension)", field="inputs"
        )
    row_shape = tuple(rows.shape[1:])
    output = _explained_output(outputs, params.get("output"))
    options = _options(params)
    baseline = _baseline(params, row_shape) if format != "text-onnx" else None
    if baseline is not None:
        _check_range(baseline.rows, spec.datatype, "baseline")
    if "fill" in options:
        _check_range(np.array([options["fill"]]), spec.datatype, "fill")
    chosen = _auto(format, facts, row_shape, baseline or background) if method == "auto" else method
    if format == "text-onnx":
        if chosen not in ("tokens", "occlusion"):
            raise ExplanationUnavailableError(
                "text models are explained by token occlusion: use explainer 'auto' or 'occlusion'",
                field="explainer",
            )
        chosen = "tokens"
    elif chosen in _SHAP and len(row_shape) != 1:
        raise ExplanationUnavailableError(
            f"explainer {chosen!r} explains rows of features ([batch, features]); this input's "
            f"rows are {list(row_shape)}: use 'integrated_gradients' or 'occlusion'",
            field="explainer",
        )
    elif chosen == "tree" and not facts.get("tree_ensemble"):
        raise ExplanationUnavailableError(
            "explainer 'tree' needs a model made of one ONNX TreeEnsemble operator; use "
            "'exact', 'permutation' or 'kernel'",
            field="explainer",
        )
    _check_size(chosen, spec, output, rows, max_evals, params)
    used = baseline or background
    if chosen in _SHAP and used is None:
        raise ExplanationUnavailableError(
            f"explainer {chosen!r} needs background data to compare with: publish the version "
            "with a background sample, or send parameters.baseline (one row)",
            field="baseline",
        )
    if method == "auto" and chosen == "exact" and used is not None:
        from openmaas.explain.shapley import exact_cost

        if exact_cost(row_shape[0], len(used.rows)) * len(rows) > max_evals:
            chosen = "permutation"  # exact would not fit the cap: sample instead
    if chosen == "integrated_gradients":
        options["max_points"] = min(max_evals, _IG_POINTS)
    if chosen == "integrated_gradients" and baseline is not None:
        options["baseline"] = baseline.rows[0].tolist()
    if method == "auto":
        options["auto"] = True
    cost = _cost(chosen, row_shape, used, options, max_evals, len(rows))
    job = ExplainJob(
        method=chosen,
        input_name=spec.name,
        input_datatype=spec.datatype,
        output_name=output.name,
        rows=rows,
        max_evals=max_evals,
        seed=seed,
        background=used if chosen in _SHAP else None,
        options=options,
    )
    return job, cost


def _cost(
    method: str,
    row_shape: tuple[int, ...],
    background: Background | None,
    options: Mapping[str, Any],
    max_evals: int,
    rows: int,
) -> int:
    """The most evaluations the job takes; raises CostCapError when it cannot fit."""
    from openmaas.explain.execute import cost_error
    from openmaas.explain.shapley import exact_cost

    per_row = max_evals // rows
    if method == "exact":
        assert background is not None  # noqa: S101 - checked by the caller
        needed = exact_cost(row_shape[0], len(background.rows))
        if needed > per_row:
            raise cost_error(CostCapError("exact", needed, per_row), rows)
        return needed * rows
    if method == "tree":
        assert background is not None  # noqa: S101
        return (1 + len(background.rows)) * rows
    if method == "occlusion":
        needed = _occlusion_cost(row_shape, options)
        if needed > per_row:
            raise cost_error(CostCapError("occlusion", needed, per_row), rows)
        return needed * rows
    return max_evals
