"""Frames: named arrays round-trip exactly, without pickle, and corrupt frames are refused."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmaas.serving.backends.frames import DTYPES, decode_arrays, encode_arrays

NUMERIC = sorted(DTYPES)


def _frame(arrays: dict[str, Any], extra: dict[str, Any] | None = None) -> bytearray:
    return bytearray(b"".join(encode_arrays(arrays, extra)))


def _round_trip(
    arrays: dict[str, Any], extra: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return decode_arrays(_frame(arrays, extra))


def _values(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct values of ``dtype``, with its extremes (and inf, nan for floats) when they fit."""
    count = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(count) % 2 == 0).reshape(shape)
    array = np.arange(count).astype(dtype)
    extremes: list[Any]
    if dtype[0] in "iu":
        extremes = [np.iinfo(dtype).min, np.iinfo(dtype).max]
    else:
        extremes = [np.finfo(dtype).min, np.inf, np.nan, np.finfo(dtype).tiny]
    for i, value in enumerate(extremes[:count]):
        array[i] = value
    return array.reshape(shape)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape", [(2, 3), (), (0,), (0, 3), (1, 1, 5)])
def test_numeric_arrays_round_trip(dtype: str, shape: tuple[int, ...]) -> None:
    array = _values(dtype, shape)
    out, extra = _round_trip({"t": array})
    assert extra == {}
    assert out["t"].dtype == np.dtype(dtype)
    assert out["t"].shape == shape
    np.testing.assert_array_equal(out["t"], array)


def test_bytes_tensors_round_trip_as_object_arrays_of_bytes() -> None:
    array = np.array([[b"a", b""], ["é", b"\x00\xff" * 100]], dtype=object)
    out, _ = _round_trip({"s": array})
    assert out["s"].dtype == object
    assert out["s"].tolist() == [[b"a", b""], ["é".encode(), b"\x00\xff" * 100]]


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"ab", b"c"], dtype="S2"),
        np.array(["ab", "ü"], dtype="U2"),
        np.array(b"zero-d", dtype=object),
        np.empty((0, 2), dtype=object),
    ],
)
def test_string_kinds_become_bytes(array: np.ndarray) -> None:
    out, _ = _round_trip({"s": array})
    assert out["s"].dtype == object
    assert out["s"].shape == array.shape
    expected = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1).tolist()]
    assert out["s"].reshape(-1).tolist() == expected


def test_many_tensors_extra_and_odd_layouts() -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    strided = np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2]
    odd = np.array([1, 2, 3], dtype=np.int8)  # 3 bytes: the next tensor needs padding
    extra = {"op": "run", "id": 7, "outputs": ["y", "é"]}
    out, got_extra = _round_trip(
        {"big": big_endian, "strided": strided, "odd": odd, "half": np.float16([1.5])}, extra
    )
    assert got_extra == extra
    assert list(out) == ["big", "strided", "odd", "half"]
    np.testing.assert_array_equal(out["big"], big_endian)
    np.testing.assert_array_equal(out["strided"], strided)
    np.testing.assert_array_equal(out["odd"], odd)
    assert all(a.flags.aligned and a.flags.c_contiguous for a in out.values())


def test_decoding_is_zero_copy() -> None:
    buffer = _frame({"x": np.zeros(4, dtype=np.float32)})
    out, _ = decode_arrays(buffer)
    assert out["x"].flags.writeable  # a bytearray gives writable views
    buffer[-4:] = np.float32([9.0]).tobytes()
    assert out["x"][-1] == 9.0


def test_read_only_buffers_give_read_only_views() -> None:
    out, _ = decode_arrays(bytes(_frame({"x": np.ones(2)})))
    assert not out["x"].flags.writeable


@pytest.mark.parametrize(
    "array",
    [
        np.array([1 + 2j]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.array([1, b"a"], dtype=object),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f4")]),
    ],
)
def test_unsupported_dtypes_are_refused_on_encode(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"frames cannot carry|not bytes or str"):
        encode_arrays({"x": array})


def _raw(header: Any, body: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    head = struct.pack("<4sI", b"OMF1", len(text)) + text
    return head + bytes(-len(head) % 8) + body


GOOD = {"x": {}, "t": [["a", "float32", [2], 8]]}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "shorter than its header"),
        (b"XXXX\x00\x00\x00\x00", "bad magic"),
        (struct.pack("<4sI", b"OMF1", 99) + b"{}", "past the end"),
        (_raw(b"{not json"), "not valid JSON"),
        (_raw(b"[" * 100_000), "not valid JSON"),
        (_raw(b"\xff\xfe"), "not valid JSON"),
        (_raw([]), "no tensor list"),
        (_raw({"t": [], "x": []}), "extra is not an object"),
        (_raw({"t": [["a", "float32", [2]]]}), "not \\[name"),
        (_raw({"t": [[1, "float32", [2], 8]]}, bytes(8)), "not a string"),
        (_raw({"t": [["a", "complex64", [1], 8]]}, bytes(8)), "unknown dtype"),
        (_raw({"t": [["a", "object", [1], 8]]}, bytes(8)), "unknown dtype"),
        (_raw({"t": [["a", "float32", [-2], 8]]}, bytes(8)), "invalid shape"),
        (_raw({"t": [["a", "float32", [True, 2], 8]]}, bytes(8)), "invalid shape"),
        (_raw({"t": [["a", "float32", [2.0], 8]]}, bytes(8)), "invalid shape"),
        (_raw({"t": [["a", "float32", [1] * 33, 4]]}, bytes(4)), "invalid shape"),
        (_raw({"t": [["a", "float32", 2, 8]]}, bytes(8)), "invalid shape"),
        (_raw({"t": [["a", "float32", [2], -8]]}, bytes(8)), "invalid byte length"),
        (_raw({"t": [["a", "int8", [0, 1 << 61, 1 << 61], 0]]}), "too big"),
        (_raw({"t": [["a", "float32", [3], 8]]}, bytes(8)), "do not fit shape"),
        (_raw(GOOD, bytes(4)), "runs past the end"),
        (_raw(GOOD, bytes(16)), "bytes after its last tensor"),
        (_raw({"t": [*GOOD["t"], ["a", "float32", [0], 0]]}, bytes(8)), "repeated"),
        (_raw({"t": [["s", "bytes", [2], 4]]}, bytes(4)), "too short"),
        (_raw({"t": [["s", "bytes", [1], 6]]}, b"\x05\x00\x00\x00ab"), "do not add up"),
        (_raw({"t": [["s", "bytes", [1], 6]]}, b"\xff\xff\xff\xffab"), "do not add up"),
    ],
)
def test_corrupt_frames_are_refused(frame: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_arrays(frame)


def test_every_truncation_of_a_frame_is_refused() -> None:
    frame = bytes(_frame({"a": np.arange(3, dtype=np.int16), "s": np.array([b"xy"], object)}))
    for end in range(len(frame)):
        with pytest.raises(ValueError):  # noqa: PT011 (each cut fails its own way)
            decode_arrays(frame[:end])


@given(st.binary(max_size=64), st.integers(min_value=0))
def test_arbitrary_bytes_only_ever_raise_value_error(noise: bytes, where: int) -> None:
    frame = bytearray(_frame({"a": np.arange(3, dtype=np.int16), "s": np.array([b"xy"], object)}))
    at = where % len(frame)
    frame[at : at + len(noise)] = noise
    try:
        arrays, _ = decode_arrays(frame)
    except ValueError:
        return
    assert all(a.dtype == object or a.dtype.name in DTYPES for a in arrays.values())
