"""ThreadBackend: loads each model once, keeps an LRU cache, and maps runtime failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from openmaas.errors import InferenceError, InvalidInputError
from openmaas.serving.backends import ModelHandle, ThreadBackend
from tests.helpers.models import identity_model, scale_model


def _add_model() -> bytes:
    """``c = a + b`` with a, b, c all FP32 [N, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 3]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class Fetches:
    """Real artifact bytes behind handles, counting how often each is fetched."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def handle(self, key: str, data: bytes) -> ModelHandle:
        def fetch() -> bytes:
            self.count[key] = self.count.get(key, 0) + 1
            return data

        return ModelHandle(key=key, format="onnx", fetch=fetch)


@pytest.fixture
def backend() -> Iterator[ThreadBackend]:
    built = ThreadBackend(threads=2, cache_size=2)
    yield built
    asyncio.run(built.close())


def _run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(make())


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_predict_runs_the_model(backend: ThreadBackend) -> None:
    model = Fetches().handle("double", scale_model(2.0))
    out = _run(lambda: backend.predict(model, {"x": X}, ["y"]))
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], X * 2)


def test_model_is_loaded_once_and_cached(backend: ThreadBackend) -> None:
    fetches = Fetches()
    model = fetches.handle("double", scale_model(2.0))
    assert not backend.is_loaded("double")

    async def many() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(backend.predict(model, {"x": X}, []) for _ in range(8)))

    results = _run(many)
    assert all(np.array_equal(r["y"], X * 2) for r in results)
    _run(lambda: backend.predict(model, {"x": X}, []))
    assert fetches.count == {"double": 1}
    assert backend.is_loaded("double")


def test_least_recently_used_model_is_evicted(backend: ThreadBackend) -> None:
    fetches = Fetches()
    models = {f: fetches.handle(f"x{f}", scale_model(float(f))) for f in (1, 2, 3)}

    async def use(*factors: int) -> None:
        for factor in factors:
            out = await backend.predict(models[factor], {"x": X}, ["y"])
            np.testing.assert_array_equal(out["y"], X * factor)

    _run(lambda: use(1, 2))
    assert backend.is_loaded("x1")
    assert backend.is_loaded("x2")
    _run(lambda: use(1, 3))  # 1 is now more recent than 2, so 2 goes
    assert backend.is_loaded("x1")
    assert not backend.is_loaded("x2")
    assert backend.is_loaded("x3")
    _run(lambda: use(2))  # reloaded; 1 is now the least recent
    assert not backend.is_loaded("x1")
    assert fetches.count == {"x1": 1, "x2": 2, "x3": 1}


def test_cache_of_one_keeps_only_the_last_model() -> None:
    backend = ThreadBackend(threads=1, cache_size=1)
    fetches = Fetches()
    first = fetches.handle("a", scale_model(2.0))
    second = fetches.handle("b", scale_model(3.0))

    async def scenario() -> None:
        await backend.predict(first, {"x": X}, [])
        await backend.predict(second, {"x": X}, [])
        assert not backend.is_loaded("a")
        assert backend.is_loaded("b")
        out = await backend.predict(first, {"x": X}, [])
        np.testing.assert_array_equal(out["y"], X * 2)
        await backend.close()

    _run(scenario)
    assert fetches.count == {"a": 2, "b": 1}
    assert not backend.is_loaded("a")


def test_close_unloads_every_model(backend: ThreadBackend) -> None:
    model = Fetches().handle("double", scale_model(2.0))
    _run(lambda: backend.predict(model, {"x": X}, []))
    _run(backend.close)
    assert not backend.is_loaded("double")


def test_onnxruntime_invalid_argument_is_invalid_input(backend: ThreadBackend) -> None:
    model = Fetches().handle("ids", identity_model(["FP32"]))
    wrong_type = {"in_FP32": np.zeros((2, 3), dtype=np.float64)}
    with pytest.raises(InvalidInputError, match="rejected the input") as caught:
        _run(lambda: backend.predict(model, wrong_type, []))
    assert caught.value.status == 400
    wrong_dim = {"in_FP32": np.zeros((2, 4), dtype=np.float32)}
    with pytest.raises(InvalidInputError):
        _run(lambda: backend.predict(model, wrong_dim, []))


def test_mismatched_batch_dimensions_are_invalid_input(backend: ThreadBackend) -> None:
    """a [2, 3] + b [3, 3] both fit the signature [N, 3]; the client sent inconsistent data."""
    model = Fetches().handle("add", _add_model())
    ok = _run(
        lambda: backend.predict(
            model, {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)}, []
        )
    )
    np.testing.assert_array_equal(ok["c"], np.full((2, 3), 2, np.float32))
    inputs = {"a": np.ones((2, 3), np.float32), "b": np.ones((3, 3), np.float32)}
    with pytest.raises(InvalidInputError) as caught:
        _run(lambda: backend.predict(model, inputs, []))
    assert caught.value.status == 400


def test_model_failure_is_an_inference_error(backend: ThreadBackend) -> None:
    model = Fetches().handle("double", scale_model(2.0))

    async def scenario() -> None:
        await backend.predict(model, {"x": X}, [])
        backend._loaded["double"].unload()  # a runtime that can no longer run
        await backend.predict(model, {"x": X}, [])

    with pytest.raises(InferenceError, match="failed while running") as caught:
        _run(scenario)
    assert caught.value.status == 500
