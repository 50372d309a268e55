"""Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

import numpy as np

__all__ = ["DATATYPES", "datatype_of", "numpy_dtype"]

# OIP datatype -> numpy dtype. BYTES tensors are numpy object arrays of ``bytes``.
DATATYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

_BY_NUMPY = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of an OIP datatype (KeyError for an unknown one)."""
    return DATATYPES[datatype]


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array; strings and bytes are BYTES."""
    if array.dtype.kind in ("O", "U", "S"):
        return "BYTES"
    return _BY_NUMPY[array.dtype]
