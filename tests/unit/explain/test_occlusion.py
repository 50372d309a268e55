"""Occlusion of image patches and of text spans."""

from __future__ import annotations

import re

import numpy as np
import pytest

from openmaas.explain.occlusion import (
    default_spatial_axes,
    occlude_image,
    occlude_tokens,
    patch_starts,
)
from openmaas.explain.types import CostCapError


def quadrant_model(batch: np.ndarray) -> np.ndarray:
    """Looks only at the top-left quadrant of ``[n, C, H, W]`` images: two outputs."""
    h, w = batch.shape[2] // 2, batch.shape[3] // 2
    corner = batch[:, :, :h, :w]
    return np.stack([corner.sum(axis=(1, 2, 3)), (corner**2).mean(axis=(1, 2, 3))], axis=1)


def test_a_model_of_the_top_left_quadrant_gets_attribution_only_there() -> None:
    x = np.random.default_rng(0).random((1, 8, 8)) + 0.5
    calls: list[tuple[int, ...]] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return quadrant_model(batch)

    explanation = occlude_image(
        x, predict, spatial_axes=(1, 2), window=2, stride=2, baseline=0.0, max_evals=100
    )
    phi = explanation.attributions
    assert phi.shape == (1, 8, 8, 2)
    assert np.all(phi[:, 4:, :, :] == 0.0)
    assert np.all(phi[:, :, 4:, :] == 0.0)
    assert np.all(phi[:, :4, :4, :] > 0.0)
    assert explanation.quality.n_evals == 16 + 2 == sum(shape[0] for shape in calls)
    assert all(shape[1:] == (1, 8, 8) for shape in calls)
    assert explanation.quality.additivity_error is None
    assert explanation.quality.converged
    assert explanation.parameters == {"window": 2, "stride": 2, "baseline": 0.0, "patches": 16}
    assert np.allclose(explanation.prediction, quadrant_model(x[None])[0])
    assert np.allclose(explanation.base_values, [0.0, 0.0])


def test_channels_last_images_and_every_channel_occluded_at_once() -> None:
    x = np.random.default_rng(1).random((28, 28, 3)) + 0.5

    def predict(batch: np.ndarray) -> np.ndarray:
        return quadrant_model(np.moveaxis(batch, 3, 1))

    axes = default_spatial_axes(x.shape)
    assert axes == (0, 1)
    explanation = occlude_image(
        x, predict, spatial_axes=axes, window=7, stride=7, baseline=0.0, max_evals=18
    )
    phi = explanation.attributions
    assert phi.shape == (28, 28, 3, 2)
    assert np.all(phi[14:] == 0.0)
    assert np.all(phi[:, 14:] == 0.0)
    # a patch hides all three channels, so they share one attribution
    assert np.array_equal(phi[:, :, 0], phi[:, :, 2])
    assert np.all(phi[:14, :14, :, 0] > 0.0)


def test_one_pixel_windows_of_a_linear_model_give_weight_times_gap() -> None:
    rng = np.random.default_rng(2)
    weights, x = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.einsum("nhw,hw->n", batch, weights)[:, None]

    explanation = occlude_image(
        x, predict, spatial_axes=(0, 1), window=1, stride=1, baseline=0.25, max_evals=27
    )
    assert np.allclose(explanation.attributions[:, :, 0], weights * (x - 0.25), atol=1e-12)
    assert np.isclose(explanation.base_values[0], 0.25 * weights.sum())


def test_overlapping_patches_average_their_drops() -> None:
    x = np.ones((1, 4))

    def predict(batch: np.ndarray) -> np.ndarray:  # only element 1 matters
        return batch[:, :, 1]

    explanation = occlude_image(
        x, predict, spatial_axes=(0, 1), window=2, stride=1, baseline=0.0, max_evals=100
    )
    # patches start at columns 0, 1, 2; column 1 is under the first two (both drop 1)
    assert explanation.parameters["patches"] == 3
    assert np.allclose(explanation.attributions[0, :, 0], [1.0, 1.0, 0.5, 0.0])


def test_patch_starts_cover_every_position() -> None:
    assert patch_starts(8, 2, 2) == [0, 2, 4, 6]
    assert patch_starts(8, 3, 2) == [0, 2, 4, 5]
    assert patch_starts(3, 5, 1) == [0]
    assert patch_starts(7, 7, 3) == [0]


def test_image_cost_cap_and_bad_axes() -> None:
    x = np.zeros((1, 8, 8))
    with pytest.raises(CostCapError) as caught:
        occlude_image(
            x, quadrant_model, spatial_axes=(1, 2), window=2, stride=2, baseline=0.0, max_evals=17
        )
    assert (caught.value.method, caught.value.needed, caught.value.cap) == ("occlusion", 18, 17)
    for axes in ((1, 1), (1, 3)):
        with pytest.raises(ValueError, match="spatial_axes"):
            occlude_image(
                x, quadrant_model, spatial_axes=axes, window=2, stride=2, baseline=0.0, max_evals=99
            )


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((28, 28), (0, 1)),
        ((1, 8, 8), (1, 2)),
        ((3, 224, 224), (1, 2)),
        ((28, 28, 3), (0, 1)),
        ((64, 64, 4), (0, 1)),
        ((10,), None),
        ((8, 8, 8), None),
        ((1, 3, 8, 8), None),
    ],
)
def test_default_spatial_axes(shape: tuple[int, ...], axes: tuple[int, int] | None) -> None:
    assert default_spatial_axes(shape) == axes


def word_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in re.finditer(r"\S+", text)]


def test_text_occlusion_credits_only_the_counted_word() -> None:
    text = "the cat sat on the mat"
    seen: list[str] = []

    def count(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        words = [t.split() for t in texts]
        return np.array([[w.count("cat"), w.count("the")] for w in words], dtype=float)

    spans = word_spans(text)
    explanation = occlude_tokens(spans, text, count, "[MASK]", max_evals=8)
    phi = explanation.attributions
    assert phi.shape == (6, 2)
    assert np.array_equal(phi[:, 0], [0, 1, 0, 0, 0, 0])
    assert np.array_equal(phi[:, 1], [1, 0, 0, 0, 1, 0])
    assert np.array_equal(explanation.prediction, [1, 2])
    assert np.array_equal(explanation.base_values, [0, 0])
    assert explanation.quality.n_evals == len(seen) == 8
    assert seen[1] == "the [MASK] sat on the mat"
    assert seen[-1] == " ".join(["[MASK]"] * 6)
    assert explanation.quality.additivity_error is None


def test_text_cost_cap_and_bad_spans() -> None:
    text = "one two three"
    with pytest.raises(CostCapError) as caught:
        occlude_tokens(word_spans(text), text, lambda t: np.zeros((len(t), 1)), "_", 4)
    assert (caught.value.method, caught.value.needed) == ("occlusion", 5)
    for spans in ([(0, 5), (4, 7)], [(0, 99)], [(3, 3)]):
        with pytest.raises(ValueError, match="span"):
            occlude_tokens(spans, text, lambda t: np.zeros((len(t), 1)), "_", 99)
