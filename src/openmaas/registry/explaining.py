"""What publishing adds for explanations: background rows, model facts, measured quality.

The publisher's background sample is parsed, checked against the model's input and kept as
at most ``max_rows`` rows (a k-means summary of a larger sample). When the model can be
explained on that data, a few of its rows are explained at publish time, and how well
(additivity, evaluations, convergence) goes into the model card's quantitative analyses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.errors import OpenMaaSError, RequestValidationError
from openmaas.explain.background import parse_background, summarize
from openmaas.explain.execute import execute
from openmaas.explain.plan import Caps, plan_job
from openmaas.explain.types import Background
from openmaas.runtimes import PreparedArtifact

__all__ = ["BackgroundData", "explanation_facts", "measure_quality", "prepare_background"]

_QUALITY_ROWS = 8


@dataclass(frozen=True)
class BackgroundData:
    """A parsed upload: the summary to store, the sample's first rows, the column names."""

    summary: Background
    sample: np.ndarray
    feature_names: list[str] | None


def prepare_background(data: bytes, prepared: PreparedArtifact, max_rows: int) -> BackgroundData:
    """Check an uploaded background sample against the model's one row-of-features input."""
    inputs = prepared.signature.inputs
    if prepared.format != "onnx" or len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise RequestValidationError(
            "background data is for models with one input of rows of features "
            "([batch, features]); this model's inputs are "
            f"{[list(t.shape) for t in inputs]}",
            field="background",
        )
    features = inputs[0].shape[1]
    if features < 1:
        raise RequestValidationError(
            "the model's input has no fixed number of features, so background rows cannot be "
            "checked against it",
            field="background",
        )
    upload = parse_background(data, features)
    return BackgroundData(
        summarize(upload.rows, max_rows, seed=0),
        upload.rows[:_QUALITY_ROWS],
        upload.feature_names,
    )


def explanation_facts(prepared: PreparedArtifact) -> dict[str, Any]:
    """Facts that choose the explainer: whether the graph is one tree ensemble."""
    if prepared.format != "onnx":
        return {}
    from openmaas.explain.treeshap import load_tree_ensemble

    return {"tree_ensemble": True} if load_tree_ensemble(prepared.data) is not None else {}


def measure_quality(
    prepared: PreparedArtifact,
    background: BackgroundData,
    facts: dict[str, Any],
    caps: Caps,
) -> dict[str, Any]:
    """Explain up to 8 rows of the background sample with ``auto``; how well it went."""
    from openmaas.runtimes import load_runtime

    runtime = load_runtime(prepared.format, prepared.data)
    spec = prepared.signature.inputs[0]
    cache: dict[str, Any] = {}
    errors: list[float] = []
    evals: list[int] = []
    converged = 0
    method = ""
    started = time.perf_counter()
    try:
        for row in background.sample:
            job, _ = plan_job(
                format=prepared.format,
                facts=facts,
                inputs=prepared.signature.inputs,
                outputs=prepared.signature.outputs,
                rows=row[None].astype(np.float32 if spec.datatype == "FP32" else np.float64),
                params={},
                background=background.summary,
                caps=caps,
            )
            result = execute(job, runtime, prepared.data, cache)
            method = result.method
            evals.append(result.quality.n_evals)
            converged += int(result.quality.converged)
            if result.quality.additivity_error is not None:
                errors.append(result.quality.additivity_error)
    except OpenMaaSError as error:
        return {"measured": False, "reason": error.detail}
    except Exception as error:  # the model itself failed on its own background rows
        return {"measured": False, "reason": f"the model failed: {str(error)[:300]}"}
    finally:
        runtime.unload()
    rows = len(evals)
    return {
        "measured": True,
        "data": "the first rows of the publisher's background sample",
        "method": method,
        "rows": rows,
        "max_additivity_error": max(errors) if errors else None,
        "mean_n_evals": sum(evals) / rows if rows else 0,
        "converged_fraction": converged / rows if rows else 0,
        "seconds_per_row": round((time.perf_counter() - started) / max(1, rows), 6),
        "background": background.summary.summary(),
    }
