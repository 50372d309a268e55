"""PyTorch models through a real server: the CNN and LSTM demos, and a TorchScript upload.

A TorchScript file is converted to ONNX at publish time (in a confined child process) and
then served like any ONNX model; its answers match torch's own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from openmaas.client import Client
from openmaas.registry.demo_torch import trend_sequences
from tests.helpers.server import LiveServer

torch = pytest.importorskip("torch")


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.admin_key) as opened:
        yield opened


def test_the_cnn_and_lstm_demos_answer_over_http(client: Client) -> None:
    digits = load_digits()
    pixels = digits.images[1::7, None].astype(np.float32)
    cnn = client.infer("admin/digits-cnn", {"pixels": pixels})
    assert (cnn["digit"] == digits.target[1::7]).mean() > 0.9
    np.testing.assert_allclose(cnn["probabilities"].sum(axis=1), 1, rtol=1e-5)
    values, trends = trend_sequences(64, 15, seed=99)
    lstm = client.infer("admin/sequence-lstm", {"values": values})
    assert (lstm["trend"] == trends).mean() > 0.9


# Publishers still write TorchScript files, which torch 2.13 deprecates making (not loading).
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_a_torchscript_upload_is_served_as_onnx(client: Client) -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).eval()  # fmt: skip
    example = torch.rand(2, 1, 8, 8)
    traced = torch.jit.trace(network, example)
    saved = io.BytesIO()
    torch.jit.save(traced, saved)
    published = client.publish(saved.getvalue(), "traced-cnn")
    assert published["format"] == "onnx"  # what is stored and served
    batch = torch.rand(5, 1, 8, 8)  # another batch size than the example's
    expected = network(batch).detach().numpy()
    metadata = client.model_metadata("admin/traced-cnn")
    (name,) = [spec["name"] for spec in metadata["inputs"]]
    (output,) = [spec["name"] for spec in metadata["outputs"]]
    answer = client.infer("admin/traced-cnn", {name: batch.numpy()})
    np.testing.assert_allclose(answer[output], expected, atol=1e-5)
