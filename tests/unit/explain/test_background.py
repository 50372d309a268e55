"""Background uploads (parsing and refusing), k-means summaries and the storage format."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from openmaas.errors import RequestValidationError
from openmaas.explain.background import (
    background_bytes,
    background_from_bytes,
    parse_background,
    summarize,
)
from openmaas.explain.types import Background

UNPICKLED: list[str] = []


def record_unpickling(tag: str) -> str:
    """What a malicious pickle would run; here it only leaves a trace."""
    UNPICKLED.append(tag)
    return tag


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (record_unpickling, ("ran",))


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- summarize


def test_a_small_background_is_kept_as_it_is() -> None:
    rows = np.arange(12.0).reshape(4, 3)
    background = summarize(rows, max_rows=4)
    assert background.source == "sample"
    assert np.array_equal(background.rows, rows)
    assert np.array_equal(background.weights, np.full(4, 0.25))


def test_kmeans_summary_is_deterministic_weighted_and_keeps_the_mean() -> None:
    data = np.random.default_rng(0).normal(size=(3000, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0]
    first = summarize(data, max_rows=25, seed=3)
    again = summarize(data, max_rows=25, seed=3)
    other = summarize(data, max_rows=25, seed=4)
    assert first.source == "kmeans"
    assert 1 <= first.rows.shape[0] <= 25
    assert first.rows.shape[1] == 5
    assert np.array_equal(first.rows, again.rows)
    assert np.array_equal(first.weights, again.weights)
    assert not np.array_equal(first.rows, other.rows)
    assert abs(first.weights.sum() - 1.0) <= 1e-12
    assert (first.weights > 0).all()
    assert np.max(np.abs(first.weights @ first.rows - data.mean(axis=0))) <= 1e-9


def test_kmeans_finds_separated_blobs_and_their_shares() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    sizes = [600, 300, 100]
    data = np.concatenate(
        [c + rng.normal(size=(n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    summary = summarize(data, max_rows=3, seed=0)
    order = np.argsort(-summary.weights)
    assert np.allclose(summary.weights[order], [0.6, 0.3, 0.1])
    assert np.max(np.abs(summary.rows[order] - centres)) < 0.3


def test_kmeans_with_fewer_distinct_rows_than_clusters_and_image_rows() -> None:
    data = np.repeat(np.array([[1.0, 2.0], [3.0, 4.0]]), [300, 100], axis=0)
    summary = summarize(data, max_rows=10)
    assert summary.rows.shape == (2, 2)
    order = np.argsort(-summary.weights)
    assert np.allclose(summary.weights[order], [0.75, 0.25])
    images = np.random.default_rng(2).random((50, 1, 4, 4))
    summary = summarize(images, max_rows=5)
    assert summary.rows.shape[1:] == (1, 4, 4)
    assert summary.rows.shape[0] <= 5
    assert np.max(np.abs(np.tensordot(summary.weights, summary.rows, 1) - images.mean(0))) <= 1e-9


# ---------------------------------------------------------------------------- parsing


def test_csv_with_and_without_a_header() -> None:
    plain = parse_background(b"1,2,3\n4.5, -6e-1 ,7\n\n", n_features=3)
    assert plain.feature_names is None
    assert plain.rows.dtype == np.float64
    assert np.array_equal(plain.rows, [[1, 2, 3], [4.5, -0.6, 7]])
    named = parse_background(b'\xef\xbb\xbfage,"income, net",score\r\n1,2,3\r\n', n_features=3)
    assert named.feature_names == ["age", "income, net", "score"]
    assert np.array_equal(named.rows, [[1, 2, 3]])


def test_json_in_both_forms_and_npy() -> None:
    rows = [[1, 2.5], [3, -4]]
    listed = parse_background(json.dumps(rows).encode(), n_features=2)
    assert np.array_equal(listed.rows, rows)
    assert listed.feature_names is None
    framed = parse_background(
        json.dumps({"columns": ["a", "b"], "data": rows}).encode(), n_features=2
    )
    assert framed.feature_names == ["a", "b"]
    assert np.array_equal(framed.rows, rows)
    assert parse_background(json.dumps({"data": rows}).encode(), 2).feature_names is None
    for dtype in (np.float32, np.int64, np.float64):
        loaded = parse_background(npy(np.array(rows).astype(dtype)), n_features=2)
        assert loaded.rows.dtype == np.float64
        assert np.array_equal(loaded.rows, np.array(rows).astype(dtype))


BAD_UPLOADS = [
    # (upload, n_features, max_rows, words the message must hold)
    (b"1,2\n3,4\n", 3, 100, ["expected 3 columns", "got 2"]),
    (b"1,2,3\n4,5\n", 3, 100, ["ragged", "line 2"]),
    (b"1,nan,3\n", 3, 100, ["non-finite", "row 1, column 2"]),
    (b"1,2,3\n1,inf,3\n", 3, 100, ["non-finite", "row 2"]),
    (b"1,abc,3\n", 3, 100, ["'abc' is not a number"]),
    (b"a,b,c\n1,2,x\n", 3, 100, ["line 2, column 3", "not a number"]),
    (b"a,b\n1,2\n", 3, 100, ["expected 3 columns", "header"]),
    (b"", 3, 100, ["empty"]),
    (b" \n\n", 3, 100, ["empty"]),
    (b"a,b,c\n", 3, 100, ["empty"]),
    (b"1,2,3\n" * 11, 3, 10, ["more than 10 rows"]),
    (b"\xff\xfe\x00\x01garbage", 3, 100, ["unreadable", "UTF-8"]),
    (b"PK\x03\x04rest", 3, 100, ["npz"]),
    (b"[[1, 2]]", 3, 100, ["expected 3 columns", "got 2"]),
    (b"[[1, 2, 3], [1, 2]]", 3, 100, ["ragged", "row 2"]),
    (b"[[1, NaN, 3]]", 3, 100, ["non-finite"]),
    (b"[[1, 1e999, 3]]", 3, 100, ["non-finite"]),
    (b'[[1, "2", 3]]', 3, 100, ["column 2", "not a number"]),
    (b"[[1, true, 3]]", 3, 100, ["not a number"]),
    (b"[1, 2, 3]", 3, 100, ["row 1 is not a list"]),
    (b"[[1, [2], 3]]", 3, 100, ["not a number"]),
    (b"[]", 3, 100, ["empty"]),
    (b"[[1, 2, 3]" + b", [1, 2, 3]" * 10 + b"]", 3, 10, ["11 rows", "at most 10"]),
    (b"[[1, 2, 3]", 3, 100, ["unreadable JSON"]),
    (b"[" * 100_000, 3, 100, ["unreadable JSON"]),
    (b'{"rows": [[1, 2, 3]]}', 3, 100, ['"data"']),
    (b'{"columns": ["a"], "data": [[1, 2, 3]]}', 3, 100, ["expected 3 columns", "got 1"]),
    (b'{"columns": "abc", "data": [[1, 2, 3]]}', 3, 100, ['"columns" must be a list']),
    (b'{"data": 5}', 3, 100, ['"data" must be a list']),
]


@pytest.mark.parametrize(("upload", "n_features", "max_rows", "words"), BAD_UPLOADS)
def test_bad_text_uploads_say_what_to_fix(
    upload: bytes, n_features: int, max_rows: int, words: list[str]
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_background(upload, n_features, max_rows)
    assert caught.value.field == "background"
    for word in words:
        assert word in caught.value.detail


BAD_ARRAYS = [
    (np.zeros((4, 2)), 100, ["expected 3 columns", "got 2"]),
    (np.zeros(3), 100, ["2-D", "(3,)"]),
    (np.zeros((2, 3, 1)), 100, ["2-D"]),
    (np.zeros((0, 3)), 100, ["empty"]),
    (np.zeros((11, 3)), 10, ["11 rows", "at most 10"]),
    (np.array([[1.0, np.nan, 2.0]]), 100, ["non-finite"]),
    (np.array([["1", "2", "3"]]), 100, ["not numbers"]),
    (np.ones((1, 3), dtype=complex), 100, ["not numbers"]),
]


@pytest.mark.parametrize(("array", "max_rows", "words"), BAD_ARRAYS)
def test_bad_npy_uploads_say_what_to_fix(
    array: np.ndarray, max_rows: int, words: list[str]
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_background(npy(array), 3, max_rows)
    assert caught.value.field == "background"
    for word in words:
        assert word in caught.value.detail


def test_a_pickled_npy_is_refused_without_being_unpickled() -> None:
    upload = npy(np.array([Payload(), Payload(), Payload()], dtype=object), allow_pickle=True)
    UNPICKLED.clear()
    with pytest.raises(RequestValidationError) as caught:
        parse_background(upload, n_features=3)
    assert "object arrays" in caught.value.detail
    assert caught.value.field == "background"
    assert UNPICKLED == []
    # the upload really was live: loading it with pickles allowed runs the payload
    np.load(io.BytesIO(upload), allow_pickle=True)
    assert UNPICKLED == ["ran", "ran", "ran"]


def npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_a_truncated_or_lying_npy_is_refused_before_allocation() -> None:
    whole = npy(np.zeros((4, 3)))
    with pytest.raises(RequestValidationError, match="truncated"):
        parse_background(whole[:-8], 3)
    with pytest.raises(RequestValidationError, match="truncated"):
        parse_background(npy_header((9, 3)) + bytes(4 * 3 * 8), 3)
    with pytest.raises(RequestValidationError) as caught:
        parse_background(npy_header((10**18, 3)) + bytes(4 * 3 * 8), 3)
    assert "at most 100000" in caught.value.detail


def test_mangled_uploads_only_ever_raise_request_validation_errors() -> None:
    rng = np.random.default_rng(5)
    valid = [
        b"a,b,c\n1,2,3\n4,5,6\n",
        json.dumps({"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}).encode(),
        npy(np.ones((3, 3))),
    ]
    accepted, fields = 0, set()
    for _ in range(600):
        data = bytearray(valid[int(rng.integers(len(valid)))])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        cut = int(rng.integers(len(data) + 1))
        try:
            result = parse_background(bytes(data[:cut] if rng.random() < 0.3 else data), 3)
        except RequestValidationError as error:
            fields.add(error.field)
        else:
            accepted += 1
            assert result.rows.shape[1] == 3
            assert np.isfinite(result.rows).all()
    assert fields == {"background"}
    assert accepted > 0


# ---------------------------------------------------------------------------- storage


def test_background_bytes_round_trip() -> None:
    original = summarize(np.random.default_rng(6).normal(size=(200, 4)), max_rows=7)
    restored = background_from_bytes(background_bytes(original))
    assert np.array_equal(restored.rows, original.rows)
    assert np.array_equal(restored.weights, original.weights)
    assert restored.source == original.source == "kmeans"
    image = Background(rows=np.zeros((1, 1, 2, 2)), weights=np.ones(1), source="baseline")
    assert background_from_bytes(background_bytes(image)).rows.shape == (1, 1, 2, 2)


def test_background_from_bytes_refuses_anything_else() -> None:
    for data in (b"", b"not an archive", npy(np.ones((2, 2)))):
        with pytest.raises(ValueError, match="not a stored background"):
            background_from_bytes(data)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        rows=np.array([Payload()], dtype=object),
        weights=np.ones(1),
        source=np.array("sample"),
    )
    UNPICKLED.clear()
    with pytest.raises(ValueError, match="not a stored background"):
        background_from_bytes(buffer.getvalue())
    assert UNPICKLED == []
