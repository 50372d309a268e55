"""The PyTorch demo models: they train, export to ONNX, predict well, and build the same."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from openmaas.registry import demo_torch
from openmaas.registry.demo import DemoModel
from openmaas.registry.demo_torch import TRENDS, build_torch_demo_models, trend_sequences

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def demos() -> dict[str, DemoModel]:
    return {demo.name: demo for demo in build_torch_demo_models()}


def _session(demo: DemoModel) -> ort.InferenceSession:
    return ort.InferenceSession(demo.artifact, providers=["CPUExecutionProvider"])


def _signature(session: ort.InferenceSession) -> list[tuple[str, str, list[object]]]:
    values = [*session.get_inputs(), *session.get_outputs()]
    return [(value.name, value.type, value.shape) for value in values]


def test_the_cnn_reads_held_out_digits(demos: dict[str, DemoModel]) -> None:
    session = _session(demos["digits-cnn"])
    assert _signature(session) == [
        ("pixels", "tensor(float)", ["batch", 1, 8, 8]),
        ("digit", "tensor(int64)", ["batch"]),
        ("probabilities", "tensor(float)", ["batch", 10]),
    ]
    digits = load_digits()
    pixels = digits.images[::5, None].astype(np.float32)  # every fifth image: held out
    digit, probabilities = session.run(None, {"pixels": pixels})
    assert (digit == digits.target[::5]).mean() > 0.9
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    (one,) = session.run(["digit"], {"pixels": pixels[:1]})  # a batch of one works too
    assert one.tolist() == digit[:1].tolist()


def test_the_lstm_tells_trends_of_any_length(demos: dict[str, DemoModel]) -> None:
    session = _session(demos["sequence-lstm"])
    assert _signature(session) == [
        ("values", "tensor(float)", ["batch", "steps", 1]),
        ("trend", "tensor(int64)", ["batch"]),
        ("probabilities", "tensor(float)", ["batch", len(TRENDS)]),
    ]
    for steps, count in ((12, 500), (20, 3)):  # fresh sequences, seeds unseen in training
        values, trends = trend_sequences(count, steps, seed=10_000 + steps)
        trend, probabilities = session.run(None, {"values": values})
        assert (trend == trends).mean() > 0.9
        assert probabilities.shape == (count, len(TRENDS))


def test_descriptions_name_inputs_and_outputs(demos: dict[str, DemoModel]) -> None:
    assert list(demos) == ["digits-cnn", "sequence-lstm"]
    cnn, lstm = demos["digits-cnn"].description, demos["sequence-lstm"].description
    assert "'pixels' FP32 [batch, 1, 8, 8]" in cnn
    assert "'probabilities' FP32 [batch, 10]" in cnn
    assert "'values' FP32 [batch, steps, 1]" in lstm
    assert "'trend' INT64 [batch] (0 falling, 1 flat, 2 rising)" in lstm


def test_building_again_gives_the_same_bytes_and_leaves_torch_as_it_was(
    demos: dict[str, DemoModel],
) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    again = build_torch_demo_models()
    assert [demo.artifact for demo in again] == [demo.artifact for demo in demos.values()]
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)  # the global random state is untouched


def test_without_torch_there_are_no_torch_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_torch, "find_spec", lambda name: None)
    assert build_torch_demo_models() == []
