"""OIP tensors on the client side: numpy dtypes, BYTES framing, binary responses."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from openmaas.errors import OpenMaaSError

__all__ = ["DTYPES", "datatype_of", "decode_response", "encode_bytes_tensor"]

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        value = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(value)) + value)
    return b"".join(parts)


def _decode_bytes_tensor(raw: bytes, shape: Sequence[int]) -> np.ndarray:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(tuple(shape))


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in DTYPES.items():
        if array.dtype == np.dtype(dtype):
            return name
    raise OpenMaaSError(f"cannot send numpy dtype {array.dtype} as an OIP tensor")


def decode_response(response: httpx.Response) -> dict[str, np.ndarray]:
    body = response.content
    length_header = response.headers.get("Inference-Header-Content-Length")
    split = int(length_header) if length_header else len(body)
    document = json.loads(body[:split])
    offset = split
    results: dict[str, np.ndarray] = {}
    for output in document["outputs"]:
        shape = output["shape"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            dtype = DTYPES.get(output["datatype"], object)
            results[output["name"]] = np.asarray(output["data"], dtype=dtype).reshape(shape)
            continue
        raw = body[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            results[output["name"]] = _decode_bytes_tensor(raw, shape)
        else:
            dtype = np.dtype(DTYPES[output["datatype"]]).newbyteorder("<")
            results[output["name"]] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return results
