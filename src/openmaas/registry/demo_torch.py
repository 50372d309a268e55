"""Demo models trained with PyTorch at first start, when the ``torch`` extra is installed.

A small CNN learns scikit-learn's 8x8 handwritten digits (every fifth image, ``[::5]``, is
held out) and a small LSTM learns to tell falling, flat and rising sequences apart
(``trend_sequences`` makes them). Both train here, in about three seconds of CPU: our own
code and data, nothing untrusted is loaded. Seeded, on one torch thread, with torch's
global random state and thread count restored afterwards. They are exported to ONNX
(opset 17) by torch's TorchScript-based exporter, which needs nothing beside torch, with a
dynamic batch (and, for the LSTM, sequence length).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from openmaas.registry.demo import DemoModel
from openmaas.registry.demo_cards import demo_card

if TYPE_CHECKING:
    import torch

__all__ = ["TRENDS", "build_torch_demo_models", "trend_sequences"]

TRENDS = ("falling", "flat", "rising")
_OPSET = 17
_SEED = 0
_BATCH = 64
_EPOCHS = 8
_LSTM_BATCHES = 300


def trend_sequences(count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy sequences ``FP32 [count, length, 1]`` and their trends (``TRENDS``).

    Each is a straight line from a start in [-1, 1] with a slope of 0.05 to 0.15 per step
    (negative, zero or positive) plus Gaussian noise of 0.03.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(TRENDS), count)
    slopes = (labels - 1) * rng.uniform(0.05, 0.15, count)
    steps = np.arange(length)
    values = rng.uniform(-1, 1, (count, 1)) + slopes[:, None] * steps[None, :]
    values += rng.normal(0, 0.03, (count, length))
    return values[:, :, None].astype(np.float32), labels


def build_torch_demo_models() -> list[DemoModel]:
    """The CNN and LSTM demo models; none when torch is not installed."""
    if find_spec("torch") is None:
        return []
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: more threads only wait on each other
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            return [_digits_cnn(), _sequence_lstm()]
    finally:
        torch.set_num_threads(threads)


def _export(
    model: torch.nn.Module,
    example: torch.Tensor,
    names: tuple[str, str, str],
    dynamic: dict[int, str],
) -> bytes:
    """``model`` (one input, two outputs, ``names`` in that order) as ONNX bytes."""
    import torch

    inputs, outputs = [names[0]], [names[1], names[2]]
    axes = {names[0]: dynamic, **{name: {0: "batch"} for name in outputs}}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # torch 2.9+ prefers its torch.export-based exporter (it needs onnxscript); the
        # TorchScript-based one that we call on purpose says it is deprecated.
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        # ... and so does the logging helper inside it, whatever the caller passes.
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        # Tracing nn.LSTM turns its shape checks into constants; sizes stay checked by ONNX.
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean")
        # Said of every LSTM with a dynamic batch; its zero initial state takes the batch
        # size from the input (tests run batches of other sizes).
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        path = Path(folder, "model.onnx")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=_OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
        )
        return path.read_bytes()


def _train(
    model: torch.nn.Module,
    batches: int,
    sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    learning_rate: float,
) -> None:
    """Adam on ``batches`` mini-batches, each ``(inputs, labels) = sample(step)``."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for step in range(batches):
        inputs, labels = sample(step)
        optimizer.zero_grad()
        loss_fn(model(inputs), labels).backward()
        optimizer.step()


def _classifier(network: torch.nn.Module, scale: float | None = None) -> torch.nn.Module:
    """``network``'s logits (of inputs times ``scale``) as the class and its probabilities."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.network(inputs if scale is None else inputs * scale)
            return logits.argmax(dim=1), logits.softmax(dim=1)

    return Classifier()


def _digits_cnn() -> DemoModel:
    """Two convolutions, a pooling and two dense layers on 8x8 digits: about 98% held out."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train = torch.arange(len(labels)) % 5 != 0
    held_images, held_labels = images[~train] / 16, labels[~train]
    images, labels = images[train] / 16, labels[train]
    network = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    shuffle = torch.Generator().manual_seed(_SEED)
    order = torch.cat([torch.randperm(len(labels), generator=shuffle) for _ in range(_EPOCHS)])

    def sample(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = order[step * _BATCH : (step + 1) * _BATCH]
        return images[rows], labels[rows]

    _train(network, len(order) // _BATCH, sample, learning_rate=1e-2)
    with torch.no_grad():
        accuracy = float((network(held_images).argmax(dim=1) == held_labels).float().mean())
    model = _classifier(network, 1 / 16)
    artifact = _export(
        model, torch.zeros(1, 1, 8, 8), ("pixels", "digit", "probabilities"), {0: "batch"}
    )
    return DemoModel(
        name="digits-cnn",
        description=(
            "A small PyTorch CNN on scikit-learn's 8x8 handwritten digits: pixel intensities "
            "(0-16) in 'pixels' FP32 [batch, 1, 8, 8]; outputs the digit in 'digit' INT64 "
            "[batch] and the probabilities of the 10 digits in 'probabilities' FP32 [batch, 10]."
        ),
        artifact=artifact,
        card=demo_card("digits-cnn", {"accuracy": accuracy}),
    )


def _sequence_lstm() -> DemoModel:
    """An LSTM of 32 units read at the last step, on sequences of 6 to 20 steps."""
    import torch
    from torch import nn

    class LastStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, 32, batch_first=True)
            self.head = nn.Linear(32, len(TRENDS))

        def forward(self, values: torch.Tensor) -> torch.Tensor:
            steps, _ = self.lstm(values)
            logits: torch.Tensor = self.head(steps[:, -1])
            return logits

    network = LastStep()
    lengths = np.random.default_rng(_SEED).integers(6, 21, _LSTM_BATCHES)

    def sample(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, trends = trend_sequences(_BATCH, int(lengths[step]), seed=_SEED + 1 + step)
        return torch.from_numpy(values), torch.from_numpy(trends)

    _train(network, _LSTM_BATCHES, sample, learning_rate=1e-2)
    with torch.no_grad():
        values, trends = trend_sequences(256, 15, seed=_SEED + 10_000)
        predicted = network(torch.from_numpy(values)).argmax(dim=1).numpy()
    accuracy = float((predicted == trends).mean())
    model = _classifier(network)
    artifact = _export(
        model,
        torch.zeros(1, 10, 1),
        ("values", "trend", "probabilities"),
        {0: "batch", 1: "steps"},
    )
    return DemoModel(
        name="sequence-lstm",
        description=(
            "A small PyTorch LSTM that tells whether a sequence of numbers is falling, flat or "
            "rising: the numbers in 'values' FP32 [batch, steps, 1] (any number of steps; "
            "trained on 6 to 20, slopes of 0.05 to 0.15 per step); outputs the trend in "
            "'trend' INT64 [batch] (0 falling, 1 flat, 2 rising) and the probabilities of the "
            "3 trends in 'probabilities' FP32 [batch, 3]."
        ),
        artifact=artifact,
        card=demo_card(
            "sequence-lstm",
            {"accuracy": accuracy},
            data="256 fresh sequences of 15 steps, not seen in training",
        ),
    )
