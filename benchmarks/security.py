"""What security costs: model load with decryption, and how long erasure takes.

1. Load overhead: loading an ONNX model from its encrypted blob (fetch, unwrap key, decrypt,
   onnxruntime session) against loading the same plaintext bytes straight into onnxruntime,
   for a small and a large model, in the same run.
2. Erase latency: erasing a tenant with N published versions, split into the logical part
   (keys destroyed and rows deleted: the next request is refused) and the physical part
   (blobs deleted, WAL checkpointed), measured on a real SQLite data directory.

Usage: python benchmarks/security.py [--large-mib 64] [--versions 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from openmaas.bootstrap import build_services, initialize
from openmaas.errors import OpenMaaSError
from openmaas.registry import ModelRef
from openmaas.runtimes import load_runtime
from openmaas.settings import Settings


def _matmul_model(mib: int) -> bytes:
    """``y = x @ W`` with a float32 W of about ``mib`` MiB (a stand-in for a real network)."""
    cols = 256
    rows = max(1, mib * 1024 * 1024 // (4 * cols))
    weights = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, cols])],
        initializer=[onnx.numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _median_ms(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", demo_models=False)
        services = build_services(settings)
        admin = services.accounts.authenticate(str(initialize(services).admin_key))
        for label, mib in (("small_1mib", 1), (f"large_{args.large_mib}mib", args.large_mib)):
            data = _matmul_model(mib)
            name = f"load-{label}".replace("_", "-")
            services.registry.publish(admin, name, data)
            resolved = services.registry.resolve(admin, ModelRef(None, name))
            repeats = 5 if mib > 8 else 20
            plain = _median_ms(lambda data=data: load_runtime("onnx", data), repeats)
            encrypted = _median_ms(
                lambda r=resolved: load_runtime("onnx", services.registry.load_artifact(r)),
                repeats,
            )
            results[f"load_{label}"] = {
                "plaintext_ms": plain,
                "encrypted_ms": encrypted,
                "overhead_ratio": round(encrypted / plain, 3),
            }

        _, token = services.accounts.create_tenant(admin, "doomed")
        doomed = services.accounts.authenticate(token)
        small = _matmul_model(1)
        for index in range(args.versions):
            services.registry.publish(doomed, f"m{index % 4}", small)
        start = time.perf_counter()
        receipt = services.erasure.erase_tenant(admin, "doomed")
        total_ms = (time.perf_counter() - start) * 1000
        try:
            services.accounts.authenticate(token)
            refused = False
        except OpenMaaSError:
            refused = True
        start = time.perf_counter()
        services.erasure._checkpoint_wal()
        checkpoint_ms = (time.perf_counter() - start) * 1000
        results["erase_tenant"] = {
            "versions": args.versions,
            "total_ms": round(total_ms, 1),
            "refused_right_after": refused,
            "wal_checkpoint_ms": round(checkpoint_ms, 1),
            "receipt_counts": receipt.counts,
        }
        services.db.close()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
