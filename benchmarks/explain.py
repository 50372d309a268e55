"""Explanations of the demo tabular models over HTTP: latency, additivity and cost per call.

Starts ``openmaas serve`` on a fresh data directory (the demo models, with their background
data, are published at first start), then for each (model, explainer) calls
``POST /v2/models/{model}/explain`` on one row at a time, ``--calls`` times after one warm-up
call, and reports the median and p90 latency, the largest additivity error, the model
evaluations per call and whether every call converged. The baseline, measured in the same
run, is a plain ``/infer`` of the same row on the same model: the ratio says what an
explanation costs over the prediction alone.

    .venv/bin/python benchmarks/explain.py [--calls 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import numpy as np
from served import LocalServer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

# (model, explainer, extra parameters): the demo tabular models and the methods that fit them.
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("admin/diabetes", "tree", {}),
    ("admin/diabetes", "exact", {"max_evals": 8192}),
    ("admin/diabetes", "kernel", {}),
    ("admin/diabetes", "permutation", {}),
    ("admin/breast-cancer", "tree", {}),
    ("admin/breast-cancer", "kernel", {}),
    ("admin/breast-cancer", "permutation", {}),
    ("admin/digits", "permutation", {}),
]


def _rows() -> dict[str, np.ndarray]:
    return {
        "admin/diabetes": load_diabetes().data.astype(np.float32),
        "admin/breast-cancer": load_breast_cancer().data.astype(np.float32),
        "admin/digits": load_digits().data.astype(np.float32),
    }


class Served:
    """``openmaas serve`` with the demo models, called with httpx."""

    def __init__(self) -> None:
        self.server = LocalServer("openmaas-explain-bench-", {})
        self.http = httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.server.key}"},
            timeout=120,
        )

    def close(self) -> None:
        self.http.close()
        self.server.close()


def _body(row: np.ndarray, parameters: dict[str, Any]) -> dict[str, Any]:
    tensor = {
        "name": "float_input",
        "datatype": "FP32",
        "shape": [1, len(row)],
        "data": row.tolist(),
    }
    return {"inputs": [tensor], "parameters": parameters}


def _timed(http: httpx.Client, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = http.post(path, json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return seconds, answer


def _measure(
    http: httpx.Client, model: str, explainer: str, extra: dict[str, Any], rows: np.ndarray
) -> dict[str, Any]:
    explain = f"/v2/models/{model}/explain"
    infer = f"/v2/models/{model}/infer"
    parameters = {"explainer": explainer, **extra}
    _timed(http, explain, _body(rows[0], parameters))  # warm-up: load, parse trees
    _timed(http, infer, _body(rows[0], {}))
    latencies, inferences, errors, evals, converged = [], [], [], [], []
    for index, row in enumerate(rows):
        seconds, answer = _timed(http, explain, _body(row, {**parameters, "seed": index}))
        latencies.append(seconds)
        quality = answer["explanation"]["quality"]
        errors.append(quality["additivity_error"])
        evals.append(quality["n_evals"])
        converged.append(quality["converged"])
        inferences.append(_timed(http, infer, _body(row, {}))[0])
    median = statistics.median(latencies)
    return {
        "model": model,
        "explainer": explainer,
        "median_ms": median * 1000,
        "p90_ms": float(np.percentile(latencies, 90)) * 1000,
        "infer_ms": statistics.median(inferences) * 1000,
        "ratio": median / statistics.median(inferences),
        "max_additivity_error": max(errors),
        "evals": statistics.median(evals),
        "converged": f"{sum(converged)}/{len(converged)}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="rows explained per case")
    args = parser.parse_args(argv)
    data = _rows()
    served = Served()
    try:
        results = [
            _measure(served.http, model, explainer, extra, data[model][: args.calls])
            for model, explainer, extra in CASES
        ]
    finally:
        served.close()
    print(
        "| model | explainer | median ms | p90 ms | infer ms | explain / infer | "
        "max additivity error | evaluations per call | converged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['explainer']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['infer_ms']:.2f} | {r['ratio']:.0f}x | {r['max_additivity_error']:.1e} | "
            f"{r['evals']:.0f} | {r['converged']} |"
        )


if __name__ == "__main__":
    main()
