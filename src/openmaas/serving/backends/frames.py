"""A binary frame of named numpy arrays, for passing tensors between processes.

Nothing is pickled. A frame is, little-endian::

    b"OMF1" | u32 header size | header (UTF-8 JSON) | tensor 0 | tensor 1 | ...

The header is ``{"x": extra, "t": [[name, dtype, shape, nbytes], ...]}``; each tensor starts
at a multiple of 8 bytes (zero padding before it) and the frame ends where the last one does.
Numeric tensors are their C-order bytes; ``bytes`` tensors are one u32 length per element,
then the elements' bytes. Decoding trusts nothing: a frame from a compromised process decodes
to arrays of the allowed dtypes or raises ValueError.

On a pipe each frame is preceded by its size as a u64 (``PREFIX``); size 0 is a heartbeat.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "BYTES",
    "DTYPES",
    "HEARTBEAT",
    "MAX_FRAME_BYTES",
    "PREFIX",
    "Part",
    "decode_arrays",
    "encode_arrays",
    "frame_size",
]

Part = bytes | memoryview

# Wire dtype name -> numpy dtype; "bytes" tensors decode to object arrays of ``bytes``.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    )
}
BYTES = "bytes"
_WIRE_NAMES = {dtype: name for name, dtype in DTYPES.items()}  # also native on this host
_LENGTH = np.dtype("<u4")
_MAGIC = b"OMF1"
_HEAD = struct.Struct("<4sI")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DECODER = json.JSONDecoder()
_ALIGN = 8
_MAX_DIMS = 32
PREFIX = struct.Struct("<Q")
HEARTBEAT = PREFIX.pack(0)
MAX_FRAME_BYTES = 1 << 32  # 4 GiB: a larger size from a peer is refused, not allocated


def _padding(offset: int) -> int:
    return -offset % _ALIGN


def _raw(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without copying."""
    return array.reshape(-1).view(np.uint8).data


def _bytes_parts(array: np.ndarray) -> tuple[int, list[Part]]:
    items: list[bytes] = []
    for value in array.reshape(-1).tolist():
        if isinstance(value, bytes):
            items.append(value)
        elif isinstance(value, str):
            items.append(value.encode("utf-8"))
        else:
            raise ValueError(f"a bytes tensor holds a {type(value).__name__}, not bytes or str")
    if any(len(item) > 0xFFFFFFFF for item in items):
        raise ValueError("a bytes tensor element is over 4 GiB")
    lengths = np.array([len(item) for item in items], dtype=_LENGTH)
    data = b"".join(items)
    return lengths.nbytes + len(data), [_raw(lengths), data]


def _tensor(name: str, value: np.ndarray) -> tuple[list[Any], list[Part]]:
    """The header entry and body parts of one tensor."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    shape = list(array.shape)
    wire = _WIRE_NAMES.get(array.dtype)
    if wire is None:
        if array.dtype.kind in "OSU":
            nbytes, parts = _bytes_parts(array)
            return [name, BYTES, shape, nbytes], parts
        if array.dtype.kind not in "biuf" or array.dtype.name not in DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {array.dtype}, which frames cannot carry")
        wire = array.dtype.name
        array = array.astype(DTYPES[wire])  # to little-endian
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    nbytes = array.nbytes
    return [name, wire, shape, nbytes], [_raw(array)] if nbytes else []


def encode_arrays(
    arrays: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None
) -> list[Part]:
    """A frame of ``arrays`` and the JSON-able ``extra``, as parts to write in order.

    Parts are bytes or byte views of the arrays (no copy when they are C-contiguous and
    little-endian): keep the arrays unchanged until the parts are written.
    """
    tensors: list[list[Any]] = []
    bodies: list[list[Part]] = []
    for name, value in arrays.items():
        entry, parts = _tensor(name, value)
        tensors.append(entry)
        bodies.append(parts)
    header = _ENCODER.encode({"x": extra or {}, "t": tensors}).encode()
    offset = _HEAD.size + len(header)
    out: list[Part] = [_HEAD.pack(_MAGIC, len(header)) + header]
    for (*_, nbytes), parts in zip(tensors, bodies, strict=True):
        pad = _padding(offset)
        if pad:
            out.append(bytes(pad))
        out.extend(parts)
        offset += pad + nbytes
    return out


def frame_size(parts: list[Part]) -> int:
    """The number of bytes of a frame given as parts."""
    return sum(memoryview(part).nbytes for part in parts)


def _check_entry(entry: Any, names: set[str]) -> tuple[str, str, tuple[int, ...], int]:
    if not (isinstance(entry, list) and len(entry) == 4):
        raise ValueError("frame tensor entry is not [name, dtype, shape, nbytes]")
    name, dtype, shape, nbytes = entry
    if not isinstance(name, str) or name in names:
        raise ValueError(f"frame tensor name {name!r} is not a string or is repeated")
    if dtype != BYTES and dtype not in DTYPES:
        raise ValueError(f"frame tensor {name!r} has unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(type(d) is int and 0 <= d < 1 << 62 for d in shape)
    ):
        raise ValueError(f"frame tensor {name!r} has an invalid shape {shape!r}")
    if type(nbytes) is not int or nbytes < 0:
        raise ValueError(f"frame tensor {name!r} has an invalid byte length {nbytes!r}")
    names.add(name)
    return name, dtype, tuple(shape), nbytes


def _decode_bytes(view: memoryview, count: int, name: str) -> np.ndarray:
    if view.nbytes < count * _LENGTH.itemsize:
        raise ValueError(f"frame tensor {name!r} is too short for {count} lengths")
    lengths = np.frombuffer(view, dtype=_LENGTH, count=count).astype(np.int64)
    start = count * _LENGTH.itemsize
    if start + int(lengths.sum()) != view.nbytes:
        raise ValueError(f"frame tensor {name!r}: its element lengths do not add up")
    bounds = [start, *(start + np.cumsum(lengths)).tolist()]
    out = np.empty(count, dtype=object)
    out[:] = [bytes(view[a:b]) for a, b in itertools.pairwise(bounds)]
    return out


def decode_arrays(
    buffer: bytes | bytearray | memoryview,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and extra of a frame; numeric arrays are views of ``buffer`` (no copy).

    Raises ValueError for anything that is not a well-formed frame.
    """
    view = memoryview(buffer).cast("B")
    size = view.nbytes
    if size < _HEAD.size:
        raise ValueError("frame is shorter than its header")
    magic, header_size = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise ValueError("not an OpenMaaS frame (bad magic)")
    offset = _HEAD.size + header_size
    if offset > size:
        raise ValueError("frame header runs past the end of the frame")
    try:
        header = _DECODER.decode(bytes(view[_HEAD.size : offset]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"frame header is not valid JSON: {exc}") from None
    if not (isinstance(header, dict) and isinstance(header.get("t"), list)):
        raise ValueError("frame header has no tensor list")
    extra = header.get("x", {})
    if not isinstance(extra, dict):
        raise ValueError("frame header extra is not an object")
    arrays: dict[str, np.ndarray] = {}
    names: set[str] = set()
    for entry in header["t"]:
        name, dtype, shape, nbytes = _check_entry(entry, names)
        offset += _padding(offset)
        if offset + nbytes > size:
            raise ValueError(f"frame tensor {name!r} runs past the end of the frame")
        count = math.prod(shape)
        body = view[offset : offset + nbytes]
        if dtype == BYTES:
            array = _decode_bytes(body, count, name)
        else:
            numpy_dtype = DTYPES[dtype]
            if nbytes != count * numpy_dtype.itemsize:
                raise ValueError(f"frame tensor {name!r}: {nbytes} bytes do not fit shape {shape}")
            array = np.frombuffer(body, dtype=numpy_dtype, count=count)
        arrays[name] = array.reshape(shape)
        offset += nbytes
    if offset != size:
        raise ValueError(f"frame has {size - offset} bytes after its last tensor")
    return arrays, extra
