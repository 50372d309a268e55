"""WorkerProcess: real child processes; crashes and hangs fail what waits within 2 s."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from openmaas.errors import (
    InvalidArtifactError,
    InvalidInputError,
    WorkerUnavailableError,
    WrongModelTaskError,
)
from openmaas.serving.backends import WorkerProcess
from tests.helpers.models import ONNX_TYPES, identity_model


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> bytes:
    graph = helper.make_graph(nodes, "test", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _add_model() -> bytes:
    """``c = a + b`` with a, b, c all FP32 [N, 3]."""
    return _model(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, 3])],
    )


def _slow_model() -> bytes:
    """``n`` (INT64 [1]) -> ones [n, n] multiplied 4 times, summed (n^6): O(n^3) work."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Concat", ["n", "n"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["m0"], value=one),
        *(helper.make_node("MatMul", [f"m{i}", "m0"], [f"m{i + 1}"]) for i in range(4)),
        helper.make_node("ReduceSum", ["m4"], ["total"], keepdims=0),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )


def _is_our_child(pid: int) -> bool:
    """Whether ``pid`` is a process (zombies included) whose parent is this one."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except FileNotFoundError:
        return False


def _run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(body(), timeout=20))


def _children() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _is_our_child(int(p))}


def _environ(pid: int) -> dict[bytes, bytes]:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if item)


class Exits:
    """An ``on_exit`` that records when it was called."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.called = asyncio.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.called.set()


@pytest.fixture
def exits() -> Exits:
    return Exits()


A = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_runs_requests_and_pipelines_concurrent_ones() -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1")
        assert (worker.pid, worker.alive, worker.memory_bytes) == (None, False, 0)
        await worker.start()
        try:
            pid = worker.pid
            assert pid is not None
            assert _is_our_child(pid)
            assert worker.alive
            assert worker.memory_bytes > 0
            out = await worker.run({"a": A, "b": A}, ["c"])
            assert list(out) == ["c"]
            np.testing.assert_array_equal(out["c"], A * 2)
            results = await asyncio.gather(
                *(worker.run({"a": A, "b": np.full_like(A, i)}, []) for i in range(64))
            )
            for i, result in enumerate(results):
                np.testing.assert_array_equal(result["c"], A + i)
        finally:
            await worker.close()
        assert not worker.alive
        assert worker.pid is None
        assert not _is_our_child(pid)

    _run(body)


def test_every_datatype_crosses_the_process_boundary() -> None:
    arrays = {
        f"in_{dt}": np.array([[b"x", b"", "é".encode()]] * 2, dtype=object)
        if dt == "BYTES"
        else np.arange(6).reshape(2, 3).astype(helper.tensor_dtype_to_np_dtype(ONNX_TYPES[dt]))
        for dt in ONNX_TYPES
    }

    async def body() -> None:
        worker = WorkerProcess("onnx", identity_model(), name="t/identity:1")
        await worker.start()
        try:
            out = await worker.run(arrays, [])
        finally:
            await worker.close()
        for dt in ONNX_TYPES:
            sent, got = arrays[f"in_{dt}"], out[f"out_{dt}"]
            assert got.dtype == sent.dtype
            assert got.tolist() == sent.tolist()

    _run(body)


def test_large_tensors_stream_through_the_pipes_while_the_loop_runs() -> None:
    big = np.random.default_rng(0).random((4_000_000, 3), dtype=np.float32)  # 48 MB

    async def body() -> None:
        worker = WorkerProcess("onnx", identity_model(["FP32"]), name="t/identity:1")
        await worker.start()
        try:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.001)
                    ticks += 1

            counting = asyncio.ensure_future(ticker())
            small, large = await asyncio.gather(
                worker.run({"in_FP32": big[:2]}, []), worker.run({"in_FP32": big}, [])
            )
            counting.cancel()
        finally:
            await worker.close()
        np.testing.assert_array_equal(small["out_FP32"], big[:2])
        np.testing.assert_array_equal(large["out_FP32"], big)
        assert large["out_FP32"].flags.writeable
        assert ticks > 0  # the write did not hold the event loop

    _run(body)


def test_model_errors_map_to_openmaas_errors_and_the_worker_lives_on() -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1")
        await worker.start()
        try:
            with pytest.raises(InvalidInputError, match="rejected the input") as caught:
                await worker.run({"a": A, "b": np.zeros((3, 3), np.float32)}, [])
            assert "/" not in caught.value.detail.split("INVALID_ARGUMENT")[0]
            with pytest.raises(InvalidInputError):
                await worker.run({"a": A, "b": A}, ["nope"])
            assert worker.alive
            out = await worker.run({"a": A, "b": A}, [])
            np.testing.assert_array_equal(out["c"], A * 2)
            with pytest.raises(WrongModelTaskError):  # only language models generate
                await worker.generate("chat", {"messages": []})
            assert worker.alive
        finally:
            await worker.close()

    _run(body)


@pytest.mark.parametrize(
    ("format", "artifact", "message"),
    [("onnx", b"garbage, not a model", "protobuf"), ("pmml", b"<PMML/>", "no runtime")],
)
def test_a_failed_load_raises_and_leaves_no_process(
    format: str, artifact: bytes, message: str, exits: Exits
) -> None:
    async def body() -> None:
        worker = WorkerProcess(format, artifact, name="t/bad:1", on_exit=exits)
        with pytest.raises(InvalidArtifactError, match=message):
            await worker.start()
        assert not worker.alive
        assert worker.pid is None
        await worker.close()

    before = _children()
    _run(body)
    assert _children() <= before
    assert exits.times == []


def test_a_killed_idle_worker_is_found_within_2s(exits: Exits) -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1", on_exit=exits)
        await worker.start()
        try:
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.wait_for(exits.called.wait(), timeout=2)
            assert not worker.alive
            assert len(exits.times) == 1
            assert exits.times[0] - killed < 2
            with pytest.raises(WorkerUnavailableError, match="t/add:1") as caught:
                await worker.run({"a": A, "b": A}, [])
            assert caught.value.retry_after == 1.0
            assert caught.value.status == 503
        finally:
            await worker.close()
        assert len(exits.times) == 1

    _run(body)


def test_a_worker_killed_mid_request_fails_every_pending_run_within_2s(exits: Exits) -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _slow_model(), name="t/slow:1", on_exit=exits)
        await worker.start()
        try:
            pending = [
                asyncio.ensure_future(worker.run({"n": np.array([3000])}, [])) for _ in range(3)
            ]
            await asyncio.sleep(0.3)  # the child is deep in its first MatMul
            assert not any(task.done() for task in pending)
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*pending, return_exceptions=True), timeout=2
            )
            assert time.monotonic() - killed < 2
            assert all(isinstance(r, WorkerUnavailableError) for r in results)
            assert not worker.alive
            assert len(exits.times) == 1
        finally:
            await worker.close()

    _run(body)


def test_a_stopped_worker_is_found_hung_and_killed(exits: Exits) -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1", on_exit=exits)
        await worker.start()
        pid = worker.pid
        assert pid is not None
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            with pytest.raises(WorkerUnavailableError, match="hung"):
                await asyncio.wait_for(worker.run({"a": A, "b": A}, []), timeout=2.5)
            assert time.monotonic() - stopped < 2.5
            assert not worker.alive
            assert len(exits.times) == 1
            with pytest.raises(WorkerUnavailableError):
                await worker.run({"a": A, "b": A}, [])
        finally:
            if _is_our_child(pid):
                os.kill(pid, signal.SIGCONT)
            await worker.close()
        assert not _is_our_child(pid)

    _run(body)


def test_a_busy_worker_is_not_mistaken_for_a_hung_one(exits: Exits) -> None:
    async def body() -> None:
        worker = WorkerProcess(
            "onnx", _slow_model(), name="t/slow:1", hang_timeout=0.2, on_exit=exits
        )
        await worker.start()
        try:
            started = time.monotonic()
            out = await worker.run({"n": np.array([2000])}, [])  # onnxruntime frees the GIL
            assert time.monotonic() - started > 0.2
            assert out["total"].shape == ()
            assert worker.alive
        finally:
            await worker.close()
        assert exits.times == []

    _run(body)


def test_close_is_idempotent_finishes_what_was_sent_and_skips_on_exit(exits: Exits) -> None:
    async def body() -> None:
        idle = WorkerProcess("onnx", _add_model(), name="t/add:1")
        await idle.close()  # never started
        await idle.close()
        with pytest.raises(RuntimeError):
            await idle.start()

        worker = WorkerProcess("onnx", _slow_model(), name="t/slow:1", on_exit=exits)
        await worker.start()
        pid = worker.pid
        assert pid is not None
        request = asyncio.ensure_future(worker.run({"n": np.array([300])}, []))
        await asyncio.sleep(0)  # the request is written before close
        await asyncio.gather(worker.close(), worker.close())
        assert (await request)["total"] == pytest.approx(300.0**6, rel=1e-3)
        await worker.close()
        assert not worker.alive
        assert not _is_our_child(pid)
        with pytest.raises(WorkerUnavailableError, match="closed"):
            await worker.run({"n": np.array([1])}, [])
        assert exits.times == []

    _run(body)


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_close_during_start_fails_the_start_and_leaves_no_process(delay: float) -> None:
    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1")
        starting = asyncio.ensure_future(worker.start())
        await asyncio.sleep(delay)
        await worker.close()
        with pytest.raises(WorkerUnavailableError, match="closed"):
            await starting
        assert worker.pid is None
        assert not worker.alive

    before = _children()
    _run(body)
    assert _children() <= before


def test_the_child_gets_no_secrets_and_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMAAS_MASTER_KEY", "secret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")

    async def body() -> None:
        worker = WorkerProcess("onnx", _add_model(), name="t/add:1", threads=3)
        await worker.start()
        try:
            assert worker.pid is not None
            variables = _environ(worker.pid)
        finally:
            await worker.close()
        assert b"secret-value" not in b"".join(variables.values())
        assert variables[b"OMP_NUM_THREADS"] == b"3"

    _run(body)
