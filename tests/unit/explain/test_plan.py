"""Planning an explain call: refusals that protect memory and time, before anything runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from openmaas.errors import (
    ExplainCostError,
    ExplanationUnavailableError,
    OpenMaaSError,
    RequestValidationError,
)
from openmaas.explain.plan import Caps, plan_job
from openmaas.explain.types import Background
from openmaas.runtimes import TensorSpec

CAPS = Caps(default_evals=2048, limit_evals=65_536)


def _plan(
    rows: np.ndarray,
    params: dict[str, Any],
    *,
    batch: int = -1,
    classes: int = 3,
    background: bool = True,
) -> tuple[Any, int]:
    shape = (batch, *rows.shape[1:])
    bg = Background(np.zeros((2, *rows.shape[1:])), np.full(2, 0.5), "sample")
    return plan_job(
        format="onnx",
        facts={},
        inputs=[TensorSpec("x", "FP32", shape)],
        outputs=[TensorSpec("p", "FP32", (-1, classes))],
        rows=rows,
        params=params,
        background=bg if background else None,
        caps=CAPS,
    )


@pytest.mark.parametrize(
    ("rows", "params", "error", "field"),
    [
        # 64 images of 1x400x400 with 3 classes: 30 million numbers to answer.
        (np.zeros((64, 1, 400, 400)), {"explainer": "occlusion"}, RequestValidationError, "inputs"),
        (np.zeros((1, 20)), {"explainer": "exact"}, ExplainCostError, "explainer"),
        (np.zeros((1, 600)), {"explainer": "kernel"}, ExplanationUnavailableError, "explainer"),
        (
            np.zeros((2, 1, 8, 8)),
            {"explainer": "integrated_gradients"},
            RequestValidationError,
            "target",
        ),
        (
            np.zeros((1, 3, 224, 224)),
            {"explainer": "integrated_gradients", "max_evals": 60_000},
            ExplainCostError,
            "max_evals",
        ),
        (np.zeros((1, 4)), {"baseline": 1e39}, RequestValidationError, "baseline"),
    ],
)
def test_refusals(
    rows: np.ndarray, params: dict[str, Any], error: type[OpenMaaSError], field: str
) -> None:
    with pytest.raises(error) as refused:
        _plan(rows, params)
    assert refused.value.field == field
    assert refused.value.detail


def test_shap_needs_a_dynamic_batch() -> None:
    with pytest.raises(ExplanationUnavailableError, match="fixed batch size"):
        _plan(np.zeros((1, 4)), {}, batch=1)
    job, _ = _plan(np.zeros((1, 1, 8, 8)), {"explainer": "occlusion"}, batch=1)
    assert job.method == "occlusion"


def test_auto_samples_when_exact_would_pass_the_cap() -> None:
    exact, cost = _plan(np.zeros((1, 8)), {})
    assert (exact.method, cost) == ("exact", 1 + 2 * 255)
    sampled, cost = _plan(np.zeros((1, 12)), {"max_evals": 4000})
    assert sampled.method == "permutation"
    assert cost == 4000
    gradients, _ = _plan(np.zeros((2, 1, 8, 8)), {"explainer": "integrated_gradients", "target": 1})
    assert gradients.options["max_points"] == 2048
