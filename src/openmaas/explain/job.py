"""An explain call as it travels to the replica that hosts the model, and its result.

Both are plain arrays plus JSON-able fields, so they cross a worker process's pipe in the
same frames as an inference (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openmaas.explain.types import Background, Quality

__all__ = ["METHODS", "ExplainJob", "ExplainResult", "merge_quality"]

# Every method a caller may name in ``parameters.explainer`` ("auto" picks one of the others).
METHODS = (
    "auto",
    "exact",
    "permutation",
    "kernel",
    "tree",
    "integrated_gradients",
    "occlusion",
)


@dataclass(frozen=True)
class ExplainJob:
    """What to explain, how, and within how many model evaluations (for all rows)."""

    method: str  # resolved: never "auto"
    input_name: str
    input_datatype: str  # the model input's OIP datatype (rows are cast to it)
    output_name: str
    rows: np.ndarray  # [N, *one input's shape]
    max_evals: int
    seed: int = 0
    background: Background | None = None
    options: dict[str, Any] = field(default_factory=dict)  # target, window, stride, fill, ...

    def to_message(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON fields for a worker frame."""
        arrays = {"rows": self.rows}
        fields: dict[str, Any] = {
            "method": self.method,
            "input_name": self.input_name,
            "input_datatype": self.input_datatype,
            "output_name": self.output_name,
            "max_evals": self.max_evals,
            "seed": self.seed,
            "options": json.dumps(self.options),
        }
        if self.background is not None:
            arrays["background_rows"] = self.background.rows
            arrays["background_weights"] = self.background.weights
            fields["background_source"] = self.background.source
        return arrays, fields

    @classmethod
    def from_message(cls, arrays: dict[str, np.ndarray], fields: dict[str, Any]) -> ExplainJob:
        background = None
        if "background_rows" in arrays:
            background = Background(
                arrays["background_rows"],
                arrays["background_weights"],
                str(fields["background_source"]),
            )
        return cls(
            method=str(fields["method"]),
            input_name=str(fields["input_name"]),
            input_datatype=str(fields["input_datatype"]),
            output_name=str(fields["output_name"]),
            rows=arrays["rows"],
            max_evals=int(fields["max_evals"]),
            seed=int(fields["seed"]),
            background=background,
            options=json.loads(fields["options"]),
        )


@dataclass(frozen=True)
class ExplainResult:
    """The explanation of every row: ``attributions`` ``[N, *input shape, k]``,
    ``base_values`` and ``prediction`` ``[N, k]``."""

    method: str
    attributions: np.ndarray
    base_values: np.ndarray
    prediction: np.ndarray
    quality: Quality
    parameters: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] | None = None  # text models: the tokens the attributions are for

    def to_message(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "attributions": self.attributions,
            "base_values": self.base_values,
            "prediction": self.prediction,
        }
        fields = {
            "method": self.method,
            "quality": self.quality.to_dict(),
            "parameters": json.dumps(self.parameters),
            "tokens": self.tokens,
        }
        return arrays, fields

    @classmethod
    def from_message(cls, arrays: dict[str, np.ndarray], fields: dict[str, Any]) -> ExplainResult:
        quality = dict(fields["quality"])
        tokens = fields.get("tokens")
        return cls(
            method=str(fields["method"]),
            attributions=arrays["attributions"],
            base_values=arrays["base_values"],
            prediction=arrays["prediction"],
            quality=Quality(**quality),
            parameters=json.loads(fields["parameters"]),
            tokens=None if tokens is None else [str(t) for t in tokens],
        )


def merge_quality(qualities: list[Quality]) -> Quality:
    """One quality for several rows: evaluations add up, errors take the worst row."""

    def worst(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    return Quality(
        n_evals=sum(q.n_evals for q in qualities),
        converged=all(q.converged for q in qualities),
        additivity_error=worst([q.additivity_error for q in qualities]),
        convergence_delta=worst([q.convergence_delta for q in qualities]),
        standard_error=worst([q.standard_error for q in qualities]),
    )
