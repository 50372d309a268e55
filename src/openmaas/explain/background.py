"""Background data for the Shapley explainers: read a publisher's upload, summarise, store.

An upload (``.npy``, CSV or JSON) becomes float64 rows with :func:`parse_background`, which
turns every problem into a :class:`~openmaas.errors.RequestValidationError` on the field
``background`` saying what to fix. :func:`summarize` keeps small backgrounds as they are and
replaces large ones by a weighted k-means summary (k-means++ and Lloyd, our own, seeded).
:func:`background_bytes` / :func:`background_from_bytes` are the storage format: an ``.npz``
of plain arrays, read back without pickles.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.errors import RequestValidationError
from openmaas.explain.types import Background

__all__ = [
    "KMEANS_ITERATIONS",
    "BackgroundUpload",
    "background_bytes",
    "background_from_bytes",
    "parse_background",
    "summarize",
]

KMEANS_ITERATIONS = 50  # Lloyd iterations at most
_DISTANCE_CHUNK = 8192  # rows per block of the point-to-centre distance matrix
_NPY_MAGIC = b"\x93NUMPY"
_SOURCES = ("sample", "kmeans", "baseline")


@dataclass(frozen=True)
class BackgroundUpload:
    """A parsed upload: float64 ``rows`` ``[n, n_features]`` and the header's names, if any."""

    rows: np.ndarray
    feature_names: list[str] | None = None


def _invalid(message: str) -> RequestValidationError:
    """The error for a bad upload; ``message`` says what to fix."""
    return RequestValidationError(message, field="background")


# ---------------------------------------------------------------------------- summarising


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each point (squared Euclidean), in row blocks."""
    centre_norms = np.einsum("cm,cm->c", centres, centres)
    labels = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], _DISTANCE_CHUNK):
        block = points[start : start + _DISTANCE_CHUNK]
        distances = centre_norms[None, :] - 2.0 * block @ centres.T
        labels[start : start + block.shape[0]] = np.argmin(distances, axis=1)
    return labels


def _seed_centres(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: each next centre drawn with probability proportional to its squared
    distance to the nearest centre so far (fewer than ``count`` when points run out)."""
    chosen = [int(rng.integers(points.shape[0]))]
    gaps = np.sum((points - points[chosen[0]]) ** 2, axis=1)
    while len(chosen) < count:
        total = float(gaps.sum())
        if total <= 0.0:
            break
        pick = int(rng.choice(points.shape[0], p=gaps / total))
        chosen.append(pick)
        gaps = np.minimum(gaps, np.sum((points - points[pick]) ** 2, axis=1))
    return points[chosen].copy()


def _cluster_sums(points: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Per-cluster sums of ``points`` ``[count, M]``."""
    return np.stack(
        [
            np.bincount(labels, weights=points[:, j], minlength=count)
            for j in range(points.shape[1])
        ],
        axis=1,
    )


def _kmeans_labels(points: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Cluster labels of ``points`` after k-means++ and at most :data:`KMEANS_ITERATIONS`
    Lloyd steps, on standardised features (a constant feature keeps scale 1)."""
    scale = points.std(axis=0)
    scale[scale == 0.0] = 1.0
    z = (points - points.mean(axis=0)) / scale
    centres = _seed_centres(z, count, np.random.default_rng(seed))
    labels = _nearest(z, centres)
    for _ in range(KMEANS_ITERATIONS):
        sizes = np.bincount(labels, minlength=centres.shape[0])
        sums = _cluster_sums(z, labels, centres.shape[0])
        filled = sizes > 0
        centres[filled] = sums[filled] / sizes[filled, None]  # an empty cluster keeps its centre
        updated = _nearest(z, centres)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return labels


def summarize(rows: np.ndarray, max_rows: int, seed: int = 0) -> Background:
    """A background of at most ``max_rows`` rows from ``rows`` ``[n, *input shape]``.

    With ``n <= max_rows`` the rows are kept with equal weights (source ``"sample"``).
    Otherwise they are clustered into ``max_rows`` groups by k-means (deterministic for
    ``seed``), and each non-empty cluster becomes the mean of its rows weighted by its share of
    the rows (source ``"kmeans"``), so the weighted mean of the summary is the data's mean.
    """
    data = np.asarray(rows, dtype=np.float64)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"rows must be [n >= 1, ...], not {data.shape}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    n = int(data.shape[0])
    if n <= max_rows:
        return Background(rows=data.copy(), weights=np.full(n, 1.0 / n), source="sample")
    flat = data.reshape(n, -1)
    labels = _kmeans_labels(flat, max_rows, seed)
    sizes = np.bincount(labels, minlength=max_rows)
    filled = sizes > 0
    means = _cluster_sums(flat, labels, max_rows)[filled] / sizes[filled, None]
    return Background(
        rows=means.reshape((-1, *data.shape[1:])),
        weights=sizes[filled] / n,
        source="kmeans",
    )


# ---------------------------------------------------------------------------- parsing uploads


def _check_size(n_rows: int, n_columns: int, n_features: int, max_rows: int) -> None:
    """Refuse an empty, oversized or wrongly-wide table."""
    if n_rows == 0:
        raise _invalid("the background is empty: upload at least one row")
    if n_rows > max_rows:
        raise _invalid(
            f"the background has {n_rows} rows; at most {max_rows} are accepted "
            "(upload a random sample of your data)"
        )
    if n_columns != n_features:
        raise _invalid(f"expected {n_features} columns (one per model feature), got {n_columns}")


def _finished(rows: np.ndarray, n_features: int, max_rows: int) -> np.ndarray:
    """Final checks shared by every format: shape, row count, finiteness."""
    _check_size(int(rows.shape[0]), int(rows.shape[1]), n_features, max_rows)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise _invalid(
            f"the background holds {int(bad.sum())} non-finite values (NaN or infinity), "
            f"the first at row {row + 1}, column {col + 1}; impute or drop them"
        )
    return rows


def _parse_npy(data: bytes, n_features: int, max_rows: int) -> np.ndarray:
    """Read a ``.npy`` upload; its header is checked before any data is read or allocated."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, SyntaxError...
        raise _invalid(f"unreadable .npy file ({exc}); save it with numpy.save") from exc
    if dtype.hasobject:
        raise _invalid(
            "object arrays (pickled Python objects) are refused; save a numeric array, "
            "e.g. numpy.save(f, rows.astype('float64'))"
        )
    if dtype.kind not in "biuf":
        raise _invalid(f"the .npy array holds {dtype}, not numbers; save it as float64")
    if len(shape) != 2:
        raise _invalid(f"expected a 2-D array [rows, {n_features}], got shape {tuple(shape)}")
    _check_size(int(shape[0]), int(shape[1]), n_features, max_rows)
    if len(data) - stream.tell() != int(shape[0]) * int(shape[1]) * dtype.itemsize:
        raise _invalid("the .npy file is truncated or padded: its data does not match its shape")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise _invalid(f"unreadable .npy file ({exc}); save it with numpy.save") from exc
    return _finished(np.asarray(array, dtype=np.float64), n_features, max_rows)


def _number(value: str) -> float | None:
    """The float a CSV cell spells, or None."""
    try:
        return float(value)
    except ValueError:
        return None


def _parse_csv(text: str, n_features: int, max_rows: int) -> BackgroundUpload:
    """Read comma-separated rows, with an optional first line of (non-numeric) names."""
    names: list[str] | None = None
    rows: list[list[float]] = []
    width = -1
    try:
        reader = csv.reader(io.StringIO(text))
        for record in reader:
            cells = [cell.strip() for cell in record]
            if not any(cells):
                continue
            values = [_number(cell) for cell in cells]
            if names is None and not rows and all(v is None for v in values):
                if not all(cells):
                    raise _invalid(
                        f"the header line has an empty name in column {cells.index('') + 1}"
                    )
                if len(cells) != n_features:
                    raise _invalid(
                        f"expected {n_features} columns, got {len(cells)} in the header line"
                    )
                names = cells
                width = len(cells)
                continue
            if width < 0:
                if len(cells) != n_features:
                    raise _invalid(
                        f"expected {n_features} columns (one per model feature), "
                        f"got {len(cells)} on line {reader.line_num}"
                    )
                width = len(cells)
            elif len(cells) != width:
                raise _invalid(
                    f"ragged rows: line {reader.line_num} has {len(cells)} values, expected {width}"
                )
            for column, value in enumerate(values):
                if value is None:
                    raise _invalid(
                        f"line {reader.line_num}, column {column + 1}: {cells[column][:40]!r} "
                        "is not a number"
                    )
            rows.append([float(v) for v in values if v is not None])
            if len(rows) > max_rows:
                raise _invalid(
                    f"the background has more than {max_rows} rows; at most {max_rows} are "
                    "accepted (upload a random sample of your data)"
                )
    except csv.Error as exc:
        raise _invalid(f"unreadable CSV ({exc}); use plain comma-separated numbers") from exc
    array = np.array(rows, dtype=np.float64).reshape(len(rows), max(width, 0))
    return BackgroundUpload(_finished(array, n_features, max_rows), names)


def _json_rows(rows: Any, n_features: int, max_rows: int) -> np.ndarray:
    """Check a JSON list of rows of numbers and turn it into float64."""
    if not isinstance(rows, list):
        raise _invalid('"data" must be a list of rows (lists of numbers)')
    if len(rows) > max_rows:
        raise _invalid(f"the background has {len(rows)} rows; at most {max_rows} are accepted")
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise _invalid(
                f"row {index + 1} is not a list; send a list of rows, e.g. [[1.0, 2.0], ...]"
            )
        if len(row) != (n_features if index == 0 else len(rows[0])):
            if index == 0:
                raise _invalid(f"expected {n_features} columns, got {len(row)} in row 1")
            raise _invalid(
                f"ragged rows: row {index + 1} has {len(row)} values, expected {n_features}"
            )
        for column, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid(
                    f"row {index + 1}, column {column + 1}: {value!r:.40} is not a number"
                )
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), n_features)
    except OverflowError as exc:
        raise _invalid("a number is too large for float64") from exc


def _parse_json(text: str, n_features: int, max_rows: int) -> BackgroundUpload:
    """Read ``[[...], ...]`` or ``{"columns": [...], "data": [[...], ...]}``."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"unreadable JSON ({str(exc)[:80]})") from exc
    names: list[str] | None = None
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"columns", "data"})
        if unknown or "data" not in document:
            raise _invalid('a JSON object must be {"columns": [names...], "data": [[...], ...]}')
        columns = document.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise _invalid('"columns" must be a list of feature names (strings)')
            if len(columns) != n_features:
                raise _invalid(f'expected {n_features} columns, got {len(columns)} in "columns"')
            names = list(columns)
        document = document["data"]
    rows = _json_rows(document, n_features, max_rows)
    return BackgroundUpload(_finished(rows, n_features, max_rows), names)


def parse_background(data: bytes, n_features: int, max_rows: int = 100_000) -> BackgroundUpload:
    """Read a publisher's background upload into float64 rows ``[n, n_features]``.

    Accepted: ``.npy`` (numeric, never unpickled), CSV (commas, an optional header line of
    names) and JSON (a list of rows, or ``{"columns": [...], "data": [[...]]}``). Anything
    else, and empty, ragged, non-finite, wrongly-sized or oversized data, raises
    ``RequestValidationError(..., field="background")`` with a message saying what to fix.
    """
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, not {n_features}")
    if data.startswith(_NPY_MAGIC):
        return BackgroundUpload(_parse_npy(data, n_features, max_rows), None)
    if data.startswith(b"PK"):
        raise _invalid("zip and .npz archives are not accepted; upload one .npy, CSV or JSON file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid("unreadable format: expected .npy, or CSV or JSON text in UTF-8") from exc
    if not text.strip():
        raise _invalid("the background is empty: upload at least one row")
    if text.lstrip()[0] in "[{":
        return _parse_json(text, n_features, max_rows)
    return _parse_csv(text, n_features, max_rows)


# ---------------------------------------------------------------------------- storage


def background_bytes(background: Background) -> bytes:
    """Serialise a background as an ``.npz`` of plain arrays (rows, weights, source)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        rows=np.asarray(background.rows, dtype=np.float64),
        weights=np.asarray(background.weights, dtype=np.float64),
        source=np.array(background.source, dtype=np.str_),
    )
    return buffer.getvalue()


def background_from_bytes(data: bytes) -> Background:
    """Read back :func:`background_bytes` (pickles refused); ``ValueError`` if it is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            rows, weights, source = archive["rows"], archive["weights"], archive["source"]
    except Exception as exc:
        raise ValueError(f"not a stored background: {exc}") from exc
    if rows.dtype != np.float64 or weights.dtype != np.float64 or source.dtype.kind != "U":
        raise ValueError("not a stored background: unexpected array types")
    if rows.ndim < 2 or weights.shape != (rows.shape[0],) or source.ndim != 0:
        raise ValueError("not a stored background: unexpected array shapes")
    name = str(source[()])
    if name not in _SOURCES:
        raise ValueError(f"not a stored background: unknown source {name!r}")
    return Background(rows=rows, weights=weights, source=name)
