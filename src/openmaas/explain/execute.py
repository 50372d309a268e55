"""Run an ``ExplainJob`` where the model is loaded: in the replica's thread or worker process.

The model is evaluated through its runtime's ``predict`` (batches of perturbed rows); tree
ensembles and differentiable graphs are also read from the artifact (tree structure, or the
graph run by torch for gradients), parsed once per replica and kept in ``cache``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from openmaas.errors import (
    ExplainCostError,
    ExplanationUnavailableError,
    InvalidInputError,
    OpenMaaSError,
    RequestValidationError,
)
from openmaas.explain.job import ExplainJob, ExplainResult, merge_quality
from openmaas.explain.types import CostCapError, Explanation, Predict
from openmaas.runtimes import Runtime
from openmaas.runtimes.datatypes import numpy_dtype

__all__ = ["Artifact", "cost_error", "execute"]

_INPUT_FAULTS = frozenset({"InvalidArgument", "Fail"})

# The ONNX model's bytes, or a function that fetches them (None: not an ONNX model).
Artifact = bytes | Callable[[], bytes] | None


class _TextRuntime(Protocol):
    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def cost_error(error: CostCapError, rows: int = 1) -> ExplainCostError:
    """The client's error for a method that does not fit the evaluation cap."""
    per_row = "" if rows == 1 else f" for each of the {rows} rows"
    return ExplainCostError(
        f"{error.method} needs {error.needed} model evaluations{per_row} and the cap is "
        f"{error.cap}; raise parameters.max_evals (up to the server's limit), explain fewer "
        "rows per call, or choose a cheaper explainer (e.g. 'permutation')",
        field="max_evals",
    )


def _predictor(job: ExplainJob, runtime: Runtime) -> Predict:
    dtype = numpy_dtype(job.input_datatype)

    def predict(rows: np.ndarray) -> np.ndarray:
        inputs = {job.input_name: np.ascontiguousarray(rows, dtype=dtype)}
        try:
            out = runtime.predict(inputs, [job.output_name])[job.output_name]
        except OpenMaaSError:
            raise
        except Exception as exc:
            # onnxruntime's INVALID_ARGUMENT / FAIL: the model refuses the perturbed batch
            # (e.g. a batch size it was not exported for); anything else is ours (500).
            if type(exc).__name__ not in _INPUT_FAULTS:
                raise
            raise InvalidInputError(
                f"the model rejected the rows the explainer built: {str(exc)[:300]}"
            ) from exc
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)

    return predict


def _cached(cache: dict[str, Any], key: str, build: Callable[[], Any]) -> Any:
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _bytes(artifact: Artifact) -> bytes | None:
    return artifact() if callable(artifact) else artifact


def _tree(job: ExplainJob, artifact: Artifact, cache: dict[str, Any]) -> Any:
    from openmaas.explain.treeshap import load_tree_ensemble

    def build() -> Any:
        data = _bytes(artifact)
        return load_tree_ensemble(data) if data else None

    ensemble = _cached(cache, "trees", build)
    if ensemble is None:
        raise ExplanationUnavailableError(
            "explainer 'tree' needs a model made of one ONNX TreeEnsemble operator; use "
            "'exact', 'permutation' or 'kernel'",
            field="explainer",
        )
    return ensemble


def _graph(job: ExplainJob, artifact: Artifact, cache: dict[str, Any]) -> Any:
    try:
        from openmaas.explain.onnx_torch import UnsupportedGraphError, to_torch
    except ImportError as exc:  # pragma: no cover - the module itself has no hard imports
        raise ExplanationUnavailableError(str(exc), field="explainer") from exc

    def build() -> Any:
        data = _bytes(artifact)
        if data is None:
            raise ExplanationUnavailableError(
                "integrated gradients need an ONNX graph; use 'occlusion'", field="explainer"
            )
        try:
            return to_torch(data, job.output_name)
        except ImportError as exc:
            raise ExplanationUnavailableError(
                "integrated gradients need PyTorch on the server (the 'torch' extra); use "
                "'occlusion'",
                field="explainer",
            ) from exc
        except UnsupportedGraphError as exc:
            raise ExplanationUnavailableError(
                f"integrated gradients cannot run this graph ({exc}); use 'occlusion'",
                field="explainer",
            ) from exc
        except (ValueError, TypeError, RuntimeError) as exc:  # a graph the runner misreads
            raise ExplanationUnavailableError(
                f"integrated gradients cannot run this graph ({str(exc)[:200]}); use 'occlusion'",
                field="explainer",
            ) from exc

    def build_once() -> Any:
        try:
            return build()
        except ExplanationUnavailableError as refusal:
            return refusal  # remembered: the artifact is not fetched and parsed again

    built = _cached(cache, f"torch:{job.output_name}", build_once)
    if isinstance(built, ExplanationUnavailableError):
        raise built
    return built


def _one_row(
    job: ExplainJob,
    x: np.ndarray,
    predict: Predict,
    budget: int,
    artifact: Artifact,
    cache: dict[str, Any],
) -> Explanation:
    from openmaas.explain import occlusion, sampling, shapley

    method, background = job.method, job.background
    if method in ("exact", "permutation", "kernel", "tree") and background is None:
        raise ExplanationUnavailableError(
            f"explainer {method!r} needs background data or a baseline: publish the version "
            "with a background sample, or send parameters.baseline (one row)",
            field="baseline",
        )
    if method == "exact":
        assert background is not None  # noqa: S101 - checked above
        return shapley.exact_shapley(x, predict, background, budget)
    if method == "permutation":
        assert background is not None  # noqa: S101
        return sampling.permutation_shap(x, predict, background, budget, job.seed)
    if method == "kernel":
        assert background is not None  # noqa: S101
        return sampling.kernel_shap(x, predict, background, budget, job.seed)
    if method == "tree":
        from openmaas.explain.treeshap import tree_shap

        assert background is not None  # noqa: S101
        return tree_shap(x, _tree(job, artifact, cache), background)
    if method == "occlusion":
        axes = job.options.get("spatial_axes") or occlusion.default_spatial_axes(x.shape)
        if axes is None:
            raise ExplanationUnavailableError(
                f"occlusion needs an image input ([H, W], [C, H, W] or [H, W, C]); this "
                f"input's rows are {list(x.shape)}",
                field="explainer",
            )
        return occlusion.occlude_image(
            x,
            predict,
            spatial_axes=(int(axes[0]), int(axes[1])),
            window=int(job.options.get("window", 2)),
            stride=int(job.options.get("stride", 1)),
            baseline=float(job.options.get("fill", 0.0)),
            max_evals=budget,
        )
    if method == "integrated_gradients":
        from openmaas.explain.gradients import integrated_gradients

        graph = _graph(job, artifact, cache)
        scores = predict(x[None])[0]  # the predicted class, and how many there are
        target = job.options.get("target")
        if target is None:
            target = int(np.argmax(scores))
        elif not 0 <= target < len(scores):
            raise RequestValidationError(
                f"parameters.target must be a class index from 0 to {len(scores) - 1}",
                field="target",
            )
        baseline = job.options.get("baseline")
        explained = integrated_gradients(
            x.astype(np.float64),
            graph,
            baseline=None if baseline is None else np.asarray(baseline, dtype=np.float64),
            target=int(target),
            max_evals=max(1, min(budget, int(job.options.get("max_points", budget))) - 1),
            tolerance=float(job.options.get("tolerance", 0.01)),
        )
        quality = replace(explained.quality, n_evals=explained.quality.n_evals + 1)
        return replace(explained, quality=quality)
    raise ExplanationUnavailableError(f"unknown explainer {method!r}", field="explainer")


def _explain_text(job: ExplainJob, runtime: Runtime) -> ExplainResult:
    """Token attributions of one text by occlusion (the runtime tokenizes)."""
    from openmaas.explain.occlusion import occlude_tokens

    texts = job.rows.reshape(-1)
    if len(texts) != 1:
        raise InvalidInputError("explain one text per call", field="text")
    raw = texts[0]
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    spans_of = getattr(runtime, "token_spans", None)
    if spans_of is None:
        raise ExplanationUnavailableError("this model has no tokenizer", field="explainer")
    spans: list[tuple[int, int]] = spans_of(text)
    if spans:  # what the tokenizer truncated away plays no part: do not copy it per word
        text = text[: spans[-1][1]]

    def predict_texts(batch: list[str]) -> np.ndarray:
        array = np.empty(len(batch), dtype=object)
        array[:] = [t.encode("utf-8") for t in batch]
        out = runtime.predict({job.input_name: array}, [job.output_name])[job.output_name]
        return np.asarray(out, dtype=np.float64).reshape(len(batch), -1)

    mask = str(job.options.get("mask", "[MASK]"))
    result = occlude_tokens(spans, text, predict_texts, mask, job.max_evals)
    return ExplainResult(
        method=result.method,
        attributions=result.attributions[None],
        base_values=result.base_values[None],
        prediction=result.prediction[None],
        quality=result.quality,
        parameters={**result.parameters, "mask": mask, "units": "tokens"},
        tokens=[text[start:end] for start, end in spans],
    )


def execute(
    job: ExplainJob, runtime: Runtime, artifact: Artifact, cache: dict[str, Any]
) -> ExplainResult:
    """Explain every row of ``job`` with ``runtime``.

    ``artifact`` is the ONNX model (or what fetches it, called only when a method reads the
    graph itself: trees, gradients); what is parsed from it is kept in ``cache``.
    """
    try:
        if job.method == "tokens":
            return _explain_text(job, runtime)
        predict = _predictor(job, runtime)
        if job.method == "integrated_gradients" and job.options.get("auto"):
            try:
                _graph(job, artifact, cache)
            except ExplanationUnavailableError:  # chosen by auto: occlusion explains any image
                job = replace(job, method="occlusion")
        rows = len(job.rows)
        budget = job.max_evals // max(1, rows)
        explanations = [
            _one_row(job, np.asarray(x, dtype=np.float64), predict, budget, artifact, cache)
            for x in job.rows
        ]
    except CostCapError as error:
        raise cost_error(error, len(job.rows)) from error
    first = explanations[0]
    return ExplainResult(
        method=first.method,
        attributions=np.stack([e.attributions for e in explanations]),
        base_values=np.stack([e.base_values for e in explanations]),
        prediction=np.stack([e.prediction for e in explanations]),
        quality=merge_quality([e.quality for e in explanations]),
        parameters={**first.parameters, "seed": job.seed, "max_evals": job.max_evals},
    )
