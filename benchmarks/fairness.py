"""Noisy neighbour: how much a flooding tenant changes a quiet tenant's latency.

Starts ``openmaas serve`` (pinned to CPU 0 when ``taskset`` exists) with one public model
that costs about a millisecond a row, and two tenants. The quiet tenant sends requests at a
steady rate (open loop) and stays within its share. Two phases are measured:

1. the quiet tenant alone;
2. the same, while the noisy tenant keeps ``--flood`` requests in flight with
   ``wrk``, far over its share.

It prints the quiet tenant's p50/p99 in both phases and their ratio. The target is a p99
ratio of at most 1.2. It also prints how the noisy tenant's requests were answered: it
should get the 429s itself.

    .venv/bin/python benchmarks/fairness.py [--rate 40] [--seconds 8] [--flood 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from onnx import TensorProto, helper

from openmaas.client import Client


def _model(width: int = 512, layers: int = 4) -> bytes:
    """``y = sum(x)`` after ``layers`` MatMuls of ``width``² whose result is multiplied
    by 0, so the answer stays checkable and each row costs real compute."""
    rng = np.random.default_rng(0)
    square = (rng.standard_normal((width, width)) / width).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "widen"], ["h0"])]
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", "w"], [f"h{layer + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"h{layers}", "axes"], ["z"], keepdims=1),
        helper.make_node("Mul", ["z", "zero"], ["zz"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["s", "zz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fairness",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            helper.make_tensor("widen", TensorProto.FLOAT, [4, width], np.ones(4 * width)),
            helper.make_tensor("w", TensorProto.FLOAT, [width, width], square.ravel()),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAS_")}
    env.update(OPENMAAS_DEMO_MODELS="false", OPENMAAS_LOG_LEVEL="warning")
    command = [sys.executable, "-m", "openmaas", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    values = np.array(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


async def _quiet(url: str, key: str, rate: float, seconds: float) -> list[float]:
    """Open loop: one request every 1/rate s, whatever the answers take."""
    latencies: list[float] = []
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
    headers = {"Authorization": f"Bearer {key}"}

    async def one(http: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        answer = await http.post(url, json=body, headers=headers)
        answer.raise_for_status()
        latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=30) as http:
        tasks = []
        begin = time.perf_counter()
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + index / rate - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(http)))
        await asyncio.gather(*tasks)
    return latencies


_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
wrk.body = '{"inputs":[{"name":"x","shape":[8,4],"datatype":"FP32","data":[%s]}]}'
"""


def _flood(url: str, key: str, concurrency: int, seconds: float) -> subprocess.Popen[str]:
    """``wrk`` (C, so the flood costs the client little) keeping ``concurrency`` requests in
    flight for ``seconds``, pinned to CPU 1 when ``taskset`` exists."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(_LUA.replace("KEY", key) % ",".join(["1.0"] * 32))
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:.0f}s", "-s", str(script), url]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _flood_report(flood: subprocess.Popen[str]) -> str:
    out, _ = flood.communicate(timeout=120)
    total = re.search(r"(\d+) requests in", out)
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{total.group(1) if total else '?'} requests, "
        f"{refused.group(1) if refused else 0} of them refused (non-2xx)"
    )


async def _measure(url: str, quiet: str, noisy: str, args: argparse.Namespace) -> None:
    await _quiet(url, quiet, args.rate, 1.0)  # warm up: load the model, fill caches
    alone = await _quiet(url, quiet, args.rate, args.seconds)
    flood = _flood(url, noisy, args.flood, args.seconds + 2)
    await asyncio.sleep(1.0)
    shared = await _quiet(url, quiet, args.rate, args.seconds)
    report = _flood_report(flood)
    (a50, a99), (s50, s99) = _percentiles(alone), _percentiles(shared)
    print(f"quiet tenant alone:        p50 {a50:7.2f} ms   p99 {a99:7.2f} ms")
    print(f"quiet tenant with a flood: p50 {s50:7.2f} ms   p99 {s99:7.2f} ms")
    print(f"p99 ratio (target <= 1.2): {s99 / a99:.2f}")
    print(f"noisy tenant: {report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="quiet requests per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--flood", type=int, default=64, help="noisy requests in flight")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})  # the clients on CPU 1, the server on CPU 0
    data_dir = Path(tempfile.mkdtemp(prefix="openmaas-fairness-"))
    port = _free_port()
    server = _start_server(data_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not (data_dir / "admin.key").exists() or not Client(url, "-").is_ready():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        with Client(url, (data_dir / "admin.key").read_text().strip()) as admin:
            admin.publish(_model(), "shared", visibility="public")
            quiet = admin.create_tenant("quiet")["api_key"]
            noisy = admin.create_tenant("noisy")["api_key"]
        asyncio.run(_measure(f"{url}/v2/models/admin/shared/infer", quiet, noisy, args))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
