"""Merge compatible requests into one batch along the first dimension, and split the answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["BatchKey", "batch_key", "merge", "rows_of", "split"]

BatchKey = tuple[object, ...]


def rows_of(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The common first dimension of every input, or None when they differ or are scalars."""
    rows = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(rows) != 1:
        return None
    (only,) = rows
    return only


def batch_key(inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> BatchKey | None:
    """What requests must share to run as one batch; None when this one cannot be batched."""
    if rows_of(inputs) is None:
        return None
    parts: list[object] = [tuple(outputs)]
    for name in sorted(inputs):
        array = inputs[name]
        if array.dtype == object:
            return None  # strings: ragged byte lengths, not worth merging
        parts.append((name, array.dtype.str, array.shape[1:]))
    return tuple(parts)


def merge(requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate each input of the requests along the first dimension."""
    if len(requests) == 1:
        return dict(requests[0])
    return {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}


def split(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[int]
) -> list[dict[str, np.ndarray]] | None:
    """Cut each output back into per-request parts; None if an output lost the batch dim."""
    if len(sizes) == 1:
        return [dict(outputs)]
    total = sum(sizes)
    if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
        return None
    bounds = np.cumsum(sizes)[:-1]
    parts: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, array in outputs.items():
        for part, piece in zip(parts, np.split(array, bounds), strict=True):
            part[name] = piece
    return parts
