"""Cold start and tabular inference latency of OpenMaaS, against baselines from the same run.

1. Cold start: from launching ``openmaas serve`` on a fresh data directory (which trains and
   publishes the demo models) to the first successful inference.
2. Latency: the median (and p99) of N sequential inferences of one breast-cancer row over
   HTTP with keep-alive, JSON and binary, next to two baselines: onnxruntime in process on
   the same model (the compute floor) and ``GET /v2/health/live`` (the HTTP floor).

Usage: python benchmarks/latency.py [--requests 1000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_breast_cancer

from openmaas import Client
from openmaas.registry.demo import build_demo_models

MODEL = "admin/breast-cancer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _timings(call: Callable[[], object], count: int) -> dict[str, float]:
    for _ in range(min(50, count)):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return {
        "median_us": statistics.median(samples),
        "p99_us": samples[int(len(samples) * 0.99) - 1],
        "count": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="Also write results here.")
    args = parser.parse_args()

    row = load_breast_cancer().data[:1].astype(np.float32)
    body = {
        "inputs": [
            {"name": "float_input", "datatype": "FP32", "shape": [1, 30], "data": row.tolist()}
        ]
    }
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "openmaas-data"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAS_")}
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openmaas",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            http = httpx.Client(base_url=url, timeout=10)
            while True:
                if process.poll() is not None:
                    raise SystemExit("the server exited during start-up")
                try:
                    key_file = data_dir / "admin.key"
                    if key_file.exists():
                        key = key_file.read_text().strip()
                        headers = {"Authorization": f"Bearer {key}"}
                        answer = http.post(f"/v2/models/{MODEL}/infer", json=body, headers=headers)
                        if answer.status_code == 200:
                            break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            results["cold_start_to_first_inference_s"] = round(time.perf_counter() - started, 3)
            http.headers.update(headers)

            onnx_bytes = next(m for m in build_demo_models() if m.name == "breast-cancer")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(
                onnx_bytes.onnx_bytes, options, providers=["CPUExecutionProvider"]
            )
            n = args.requests
            baseline_ort = _timings(lambda: session.run(None, {"float_input": row}), n)
            baseline_http = _timings(lambda: http.get("/v2/health/live"), n)
            json_infer = _timings(
                lambda: http.post(f"/v2/models/{MODEL}/infer", json=body).raise_for_status(), n
            )
            with Client(url, key) as client:
                binary_infer = _timings(lambda: client.infer(MODEL, {"float_input": row}), n)
            results["onnxruntime_in_process"] = baseline_ort
            results["http_live_probe"] = baseline_http
            results["infer_json_over_http"] = json_infer
            results["infer_binary_over_http"] = binary_infer
            results["ratio_json_infer_to_live_probe"] = round(
                json_infer["median_us"] / baseline_http["median_us"], 2
            )
            results["overhead_json_infer_minus_probe_minus_ort_us"] = round(
                json_infer["median_us"] - baseline_http["median_us"] - baseline_ort["median_us"], 1
            )
            http.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
