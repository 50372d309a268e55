"""Occlusion: how much the output drops when a patch of an image, or a token, is hidden.

Model-agnostic and cheap (one evaluation per patch or token), with no additivity: the
attributions are differences ``f(x) - f(x occluded)``, not a decomposition of ``f(x)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from openmaas.explain.types import CostCapError, Explanation, Predict, Quality

__all__ = [
    "MAX_CHANNELS",
    "default_spatial_axes",
    "occlude_image",
    "occlude_tokens",
    "patch_starts",
]

MAX_CHANNELS = 4  # a third axis at most this long is read as channels
_CHUNK_ROWS = 4096  # the most inputs one call of ``predict`` receives
_CHUNK_BYTES = 64 * 2**20  # ... and about the most float64 bytes one call is built from


def default_spatial_axes(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """Guess the (height, width) axes of one input (no batch axis), or None.

    ``[H, W]`` → ``(0, 1)``; ``[C, H, W]`` with ``C <= 4`` → ``(1, 2)`` (checked first);
    ``[H, W, C]`` with ``C <= 4`` → ``(0, 1)``; anything else → None.
    """
    if len(shape) == 2:
        return (0, 1)
    if len(shape) == 3:
        if shape[0] <= MAX_CHANNELS:
            return (1, 2)
        if shape[2] <= MAX_CHANNELS:
            return (0, 1)
    return None


def patch_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the patches along one axis: every ``stride``, plus a last patch flush
    with the end so every position is covered (one patch at 0 if ``window >= length``)."""
    starts = list(range(0, max(length - window, 0) + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def _predict_occluded(
    predict: Predict,
    moved: np.ndarray,
    axes: tuple[int, ...],
    corners: list[tuple[int, int]],
    window: int,
    baseline: float,
) -> np.ndarray:
    """Outputs ``[len(corners) + 2, k]``: one per patch (top-left ``corners``), then ``f(x)``,
    then ``f`` of x entirely ``baseline``. ``moved`` is x with its spatial axes first; inputs
    are built a chunk at a time (at most 4,096 and about 64 MiB)."""
    per_input = max(1, moved.size * 8)
    size = max(1, min(_CHUNK_ROWS, _CHUNK_BYTES // per_input))
    jobs: list[tuple[int, int] | None] = [*corners, None, None]
    parts = []
    for start in range(0, len(jobs), size):
        batch = jobs[start : start + size]
        block = np.broadcast_to(moved, (len(batch), *moved.shape)).copy()
        for row, corner in enumerate(batch):
            if corner is not None:
                top, left = corner
                block[row, top : top + window, left : left + window] = baseline
            elif start + row == len(jobs) - 1:
                block[row] = baseline
        inputs = np.ascontiguousarray(np.moveaxis(block, (1, 2), (axes[0] + 1, axes[1] + 1)))
        out = np.asarray(predict(inputs), dtype=np.float64)
        parts.append(out.reshape(out.shape[0], -1))
    return np.concatenate(parts, axis=0)


def occlude_image(
    x: np.ndarray,
    predict: Predict,
    *,
    spatial_axes: tuple[int, int],
    window: int,
    stride: int,
    baseline: float,
    max_evals: int,
) -> Explanation:
    """Occlusion attributions of one input ``x`` (any shape; ``predict`` takes ``[n, *shape]``).

    A ``window`` x ``window`` patch slides over ``spatial_axes`` by ``stride`` (see
    :func:`patch_starts`), covering every channel, and is set to ``baseline``. Each element's
    attribution is the mean, over the patches covering it, of ``f(x) - f(occluded)`` (one per
    output). ``base_values`` is ``f`` of ``x`` entirely set to ``baseline``; ``n_evals`` is
    ``patches + 2`` (the patches, ``f(x)`` and that baseline), and more than ``max_evals``
    raises ``CostCapError("occlusion", patches + 2, max_evals)``.
    """
    image = np.asarray(x, dtype=np.float64)
    inside = all(-image.ndim <= a < image.ndim for a in spatial_axes)
    axes = tuple(sorted(a % image.ndim for a in spatial_axes)) if inside else ()
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ValueError(f"spatial_axes {spatial_axes} must name two axes of shape {image.shape}")
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be at least 1")
    height, width = image.shape[axes[0]], image.shape[axes[1]]
    rows, cols = patch_starts(height, window, stride), patch_starts(width, window, stride)
    patches = len(rows) * len(cols)
    if patches + 2 > max_evals:
        raise CostCapError("occlusion", patches + 2, max_evals)
    corners = [(top, left) for top in rows for left in cols]
    moved = np.moveaxis(image, axes, (0, 1))  # [H, W, ...rest]
    outputs = _predict_occluded(predict, moved, axes, corners, window, baseline)
    prediction, base = outputs[-2], outputs[-1]
    drops = prediction[None, :] - outputs[:patches]  # [patches, k]
    total = np.zeros((height, width, drops.shape[1]))
    cover = np.zeros((height, width))
    for (top, left), drop in zip(corners, drops, strict=True):
        total[top : top + window, left : left + window] += drop
        cover[top : top + window, left : left + window] += 1.0
    grid = total / cover[:, :, None]  # [H, W, k]
    shape = [1] * image.ndim + [drops.shape[1]]
    shape[axes[0]], shape[axes[1]] = height, width
    attributions = np.broadcast_to(grid.reshape(shape), (*image.shape, drops.shape[1])).copy()
    return Explanation(
        method="occlusion",
        attributions=attributions,
        base_values=base,
        prediction=prediction,
        quality=Quality(n_evals=patches + 2, converged=True, additivity_error=None),
        parameters={"window": window, "stride": stride, "baseline": baseline, "patches": patches},
    )


def _masked(text: str, spans: list[tuple[int, int]], mask: str) -> str:
    """``text`` with every span (non-overlapping, any order) replaced by ``mask``."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + mask + text[end:]
    return text


def occlude_tokens(
    spans: list[tuple[int, int]],
    text: str,
    predict_texts: Callable[[list[str]], np.ndarray],
    mask: str,
    max_evals: int,
) -> Explanation:
    """Leave-one-out attributions of character ``spans`` (tokens) of ``text``.

    Span ``i``'s attribution is ``f(text) - f(text with span i replaced by mask)`` per output
    (``[n_spans, k]``); ``base_values`` is ``f`` of the text with every span masked.
    ``n_evals`` is ``spans + 2``; more than ``max_evals`` raises
    ``CostCapError("occlusion", spans + 2, max_evals)``. Spans must lie in the text, be
    non-empty and not overlap (``ValueError`` otherwise).
    """
    ordered = sorted(spans)
    for index, (start, end) in enumerate(ordered):
        if not 0 <= start < end <= len(text):
            raise ValueError(f"span ({start}, {end}) is not inside a text of {len(text)} chars")
        if index and start < ordered[index - 1][1]:
            raise ValueError(f"span ({start}, {end}) overlaps {ordered[index - 1]}")
    if len(spans) + 2 > max_evals:
        raise CostCapError("occlusion", len(spans) + 2, max_evals)
    texts = [_masked(text, [span], mask) for span in spans]
    texts += [text, _masked(text, list(spans), mask)]
    parts = []
    for start in range(0, len(texts), _CHUNK_ROWS):
        out = np.asarray(predict_texts(texts[start : start + _CHUNK_ROWS]), dtype=np.float64)
        parts.append(out.reshape(out.shape[0], -1))
    outputs = np.concatenate(parts, axis=0)
    prediction, base = outputs[-2], outputs[-1]
    return Explanation(
        method="occlusion",
        attributions=prediction[None, :] - outputs[: len(spans)],
        base_values=base,
        prediction=prediction,
        quality=Quality(n_evals=len(spans) + 2, converged=True, additivity_error=None),
        parameters={"mask": mask, "spans": len(spans)},
    )
