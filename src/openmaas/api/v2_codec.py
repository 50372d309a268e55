"""Open Inference Protocol wire format: JSON tensors and the binary tensor data extension.

A binary request starts with a JSON header of ``Inference-Header-Content-Length`` bytes;
inputs with a ``binary_data_size`` parameter take their data, in order, from the bytes that
follow. BYTES elements are each a 4-byte little-endian length and then the bytes.

Untrusted sizes are checked before anything is allocated: ``parse_json`` measures how deep the
JSON nests (``check_json_depth``, linear and without recursion) before ``json.loads`` sees it,
and each input's declared shape is multiplied out, and refused over the element limit, before
its data is converted.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson

from openmaas.errors import (
    BadRequestError,
    DataLengthMismatchError,
    InvalidInputError,
    JSONTooDeepError,
    MalformedJSONError,
    TensorTooLargeError,
)
from openmaas.runtimes import DATATYPES
from openmaas.serving.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

__all__ = ["check_json_depth", "decode_request", "encode_response", "parse_json"]

# bytes.translate tables: keep only quotes and brackets, as 2 (quote), 1 (opener), -1 (closer).
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRUCTURE = bytes.maketrans(b'"[{]}', b"\x02\x01\x01\xff\xff")
_BLOCK = 1 << 20
# Beyond these a shape is refused outright (numpy itself stops at 32 or 64 dimensions).
_MAX_DIMS = 32
_MAX_DIM = 2**40


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Raise JSONTooDeepError when ``body`` nests arrays/objects more than ``max_depth`` deep.

    Linear time and no recursion, so it is safe to run before ``json.loads`` (and many times
    faster than it): escaped backslashes and quotes are dropped (escapes pair up left to right),
    every byte but quotes and brackets is dropped, and the depth is a running sum of +1/-1 over
    the brackets outside strings (numpy, in blocks). Malformed JSON is left to the parser, which
    stops at the first error, so only the valid prefix it would descend into has to be right.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        # json.loads reads UTF-16/32 too: scan the same text, as UTF-8 (where no multi-byte
        # sequence contains a quote, backslash or bracket byte).
        try:
            body = body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
        except UnicodeError:
            return  # the parser will refuse it as malformed
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kinds = np.frombuffer(body.translate(_STRUCTURE, _NOT_STRUCTURE), np.int8)
    depth = quotes = 0
    for start in range(0, len(kinds), _BLOCK):
        block = kinds[start : start + _BLOCK]
        is_quote = block == 2
        in_string = (np.cumsum(is_quote, dtype=np.int64) + quotes) % 2 == 1
        running = np.cumsum(np.where(is_quote | in_string, 0, block), dtype=np.int64) + depth
        if int(running.max()) > max_depth:
            raise JSONTooDeepError(
                f"the JSON body nests arrays/objects more than {max_depth} levels deep, this "
                "server's limit (OPENMAAS_MAX_JSON_DEPTH); send tensor data as a flat list "
                "with its shape"
            )
        depth = int(running[-1])
        quotes += int(np.count_nonzero(is_quote))


def parse_json(body: bytes, *, max_depth: int) -> Any:
    """Parse a JSON body (at most ``max_depth`` levels deep) or raise saying what is wrong."""
    check_json_depth(body, max_depth)
    try:
        encoding = json.detect_encoding(body)
        # orjson reads UTF-8 only; the standard allows UTF-16/32 too (and a BOM).
        return orjson.loads(body if encoding == "utf-8" else body.decode(encoding))
    except orjson.JSONDecodeError as exc:
        raise MalformedJSONError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise MalformedJSONError(f"the body is not valid JSON: {type(exc).__name__}") from exc


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be a JSON object", field=where)
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if type(value) is list and all(type(d) is int and d >= 0 for d in value):
        pass  # the usual case, checked cheaply
    elif isinstance(value, list):
        # The parser reads integers beyond 64 bits as floats: they are absurd sizes, which
        # the element check refuses as too large.
        value = [
            int(d) if isinstance(d, float) and d.is_integer() and d > _MAX_DIM else d for d in value
        ]
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequestError(
            f"{where} must be a list of non-negative integers, e.g. [1, 30]", field=where
        )
    if len(value) > _MAX_DIMS:
        raise BadRequestError(
            f"{where} has {len(value)} dimensions; at most {_MAX_DIMS} are supported",
            field=where,
        )
    return tuple(value)


def _check_elements(shape: tuple[int, ...], where: str, max_elements: int) -> None:
    """Refuse a shape over the element limit before any of its data is allocated."""
    count = 0 if 0 in shape else 1
    for dim in shape:
        count *= dim
        if dim > _MAX_DIM or count > max_elements:
            raise TensorTooLargeError(
                f"{where} has shape {list(shape)}, more than the {max_elements} elements one "
                "input may hold on this server (OPENMAAS_MAX_TENSOR_ELEMENTS); split the batch "
                "into smaller requests",
                field=f"{where}.shape",
            )


def _flatten_strings(data: Any, where: str) -> list[bytes]:
    out: list[bytes] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item.encode("utf-8"))
        else:
            raise InvalidInputError(
                f"{where} is BYTES: its data must be strings, not {type(item).__name__}",
                field=where,
            )
    return out


_KINDS = {"BOOL": "b", "UINT": "iu", "INT": "iu", "FP": "iuf"}
_KIND_WORDS = {"b": "true/false", "iu": "integers", "iuf": "numbers"}


def _kinds_for(datatype: str) -> str:
    return next(kinds for prefix, kinds in _KINDS.items() if datatype.startswith(prefix))


def _typed_array(datatype: str, data: Any, where: str) -> np.ndarray:
    """Convert JSON values without silent coercion: no strings as booleans, no 1.5 as 1."""
    target = DATATYPES[datatype]
    kinds = _kinds_for(datatype)
    field = f"{where}.data"
    try:
        raw = np.asarray(data)
    except ValueError as exc:
        raise InvalidInputError(
            f"{field} is not a regular nested list (rows of different lengths?)", field=field
        ) from exc
    if raw.size == 0:
        return np.empty(raw.shape, dtype=target)
    if raw.dtype.kind == "f" and kinds == "iu":
        # numpy turns integers beyond int64 into floats: look at the JSON values themselves.
        raw = np.asarray(data, dtype=object)
    if raw.dtype.kind == "O":  # mixed, null, or integers beyond int64
        values = raw.reshape(-1).tolist()
        accepted = (int,) if kinds == "iu" else (int, float)
        if kinds == "b" or not all(
            isinstance(v, accepted) and not isinstance(v, bool) for v in values
        ):
            raise InvalidInputError(
                f"{field} must hold only {_KIND_WORDS[kinds]} for {datatype}", field=field
            )
        try:
            return np.array(values, dtype=target).reshape(raw.shape)
        except OverflowError as exc:
            raise InvalidInputError(
                f"{field} has values out of range for {datatype}", field=field
            ) from exc
    if raw.dtype.kind not in kinds:
        raise InvalidInputError(
            f"{field} must hold {_KIND_WORDS[kinds]} for {datatype}, not {raw.dtype.kind!r} "
            f"values like {raw.reshape(-1)[0]!r}",
            field=field,
        )
    if target.kind in "iu":
        info = np.iinfo(str(target))
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInputError(
                f"{field} has values outside {datatype}'s range {info.min}..{info.max}",
                field=field,
            )
    try:
        with np.errstate(over="raise"):
            return raw.astype(target)
    except FloatingPointError as exc:
        raise InvalidInputError(
            f"{field} has values too large for {datatype}", field=field
        ) from exc


_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}


def _flat_floats(datatype: str, data: list[Any], where: str) -> np.ndarray | None:
    """A flat list of JSON numbers as a float array, converted in C; None if it is not one
    (nested, strings, nulls: the strict path then says what is wrong)."""
    try:
        wide = np.fromiter(data, np.float64, len(data))
    except (TypeError, ValueError, OverflowError):
        return None
    if datatype == "FP64" or not len(wide):
        return wide if datatype == "FP64" else wide.astype(DATATYPES[datatype])
    if not np.maximum.reduce(np.abs(wide)) <= _FLOAT_MAX[datatype]:
        return None  # a null (NaN here) or a value too large: the strict path says which
    return wide.astype(DATATYPES[datatype])


def _json_array(
    datatype: str, shape: tuple[int, ...], data: Any, where: str, fast: bool = False
) -> np.ndarray:
    expected = math.prod(shape)
    if fast and datatype in _FLOAT_TYPES and type(data) is list and len(data) == expected:
        floats = _flat_floats(datatype, data, where)
        if floats is not None:
            return floats.reshape(shape)
    if datatype == "BYTES":
        flat = _flatten_strings(data, where)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = _typed_array(datatype, data, where)
    if array.size != expected:
        raise DataLengthMismatchError(
            f"{where} has shape {list(shape)}, which needs {expected} elements, "
            f"but its data holds {array.size}",
            field=f"{where}.data",
        )
    return array.reshape(shape)


def _binary_array(datatype: str, shape: tuple[int, ...], raw: bytes, where: str) -> np.ndarray:
    expected = math.prod(shape)
    if datatype != "BYTES":
        dtype = DATATYPES[datatype].newbyteorder("<")
        if len(raw) != expected * dtype.itemsize:
            raise DataLengthMismatchError(
                f"{where} has shape {list(shape)} of {datatype}, which needs "
                f"{expected * dtype.itemsize} bytes, but binary_data_size is {len(raw)}",
                field=f"{where}.parameters.binary_data_size",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInputError(f"{where}: truncated BYTES element length", field=where)
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInputError(f"{where}: BYTES element runs past its data", field=where)
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != expected:
        raise DataLengthMismatchError(
            f"{where} has shape {list(shape)}, which needs {expected} elements, "
            f"but its binary data holds {len(items)}",
            field=f"{where}.data",
        )
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


_PLAIN_KEYS = frozenset({"name", "datatype", "shape", "data"})


def _plain_float_input(item: Any, max_elements: int) -> Tensor | None:
    """The common input, checked and converted in a few C calls: a name, a float datatype,
    a small shape and a flat list of exactly that many numbers. None for anything else (the
    strict path then decodes it, or says what is wrong)."""
    if type(item) is not dict or not _PLAIN_KEYS.issuperset(item):
        return None
    name, datatype, shape, data = (
        item.get("name"),
        item.get("datatype"),
        item.get("shape"),
        item.get("data"),
    )
    if type(name) is not str or not name or datatype not in _FLOAT_TYPES:
        return None
    if type(shape) is not list or len(shape) > _MAX_DIMS or type(data) is not list:
        return None
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0 or dim > _MAX_DIM:
            return None
        count *= dim
    if count > max_elements or len(data) != count:
        return None
    floats = _flat_floats(datatype, data, name)
    if floats is None:
        return None
    dims = tuple(shape)
    return Tensor(name, datatype, dims, floats.reshape(dims))


def _decode_input(
    item: Any, index: int, binary: memoryview, offset: int, max_elements: int, fast: bool
) -> tuple[Tensor, int]:
    if fast:
        plain = _plain_float_input(item, max_elements)
        if plain is not None:
            return plain, 0
    where = f"inputs[{index}]"
    spec = _object(item, where)
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"{where}.name must be a non-empty string", field=f"{where}.name")
    where = f"inputs.{name}"
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInputError(
            f"{where}.datatype {datatype!r} is not an OIP datatype; use one of "
            + ", ".join(DATATYPES),
            field=f"{where}.datatype",
        )
    shape = _shape(spec.get("shape"), f"{where}.shape")
    _check_elements(shape, where, max_elements)
    parameters = _object(spec.get("parameters") or {}, f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        fits = isinstance(size, int) and not isinstance(size, bool) and size >= 0
        if not fits or offset + size > len(binary):
            raise BadRequestError(
                f"{where}.parameters.binary_data_size ({size!r}) does not fit the "
                f"{len(binary) - offset} binary bytes left in the body",
                field=f"{where}.parameters.binary_data_size",
            )
        raw = bytes(binary[offset : offset + size])
        return Tensor(name, datatype, shape, _binary_array(datatype, shape, raw, where)), size
    if "data" not in spec:
        raise BadRequestError(
            f"{where} has no 'data' (and no binary_data_size parameter)", field=f"{where}.data"
        )
    array = _json_array(datatype, shape, spec["data"], where, fast)
    return Tensor(name, datatype, shape, array), 0


def decode_request(
    body: bytes, header_length: int | None, *, max_elements: int, max_depth: int
) -> InferenceRequest:
    """Decode an OIP inference request (JSON, or JSON header + binary tensor data).

    ``max_elements`` bounds each input tensor (checked on its shape, before its data is read);
    ``max_depth`` bounds how deep the JSON nests.
    """
    if header_length is not None and not 0 <= header_length <= len(body):
        raise BadRequestError(
            f"Inference-Header-Content-Length is {header_length} but the body has "
            f"{len(body)} bytes",
            field="Inference-Header-Content-Length",
        )
    split = len(body) if header_length is None else header_length
    header = body[:split]
    document = _object(parse_json(header, max_depth=max_depth), "body")
    # Float data converts in one C loop unless a boolean (which it would take as 0/1) may
    # be in it; the strict path refuses those.
    fast = b"true" not in header and b"false" not in header
    binary = memoryview(body)[split:]
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequestError(
            "'inputs' must be a non-empty list, e.g. "
            '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}',
            field="inputs",
        )
    inputs: list[Tensor] = []
    offset = 0
    for index, item in enumerate(raw_inputs):
        tensor, used = _decode_input(item, index, binary, offset, max_elements, fast)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise BadRequestError(
            f"{len(binary) - offset} binary bytes after the last input are not claimed by any "
            "input's binary_data_size",
            field="Inference-Header-Content-Length",
        )
    outputs = []
    for index, item in enumerate(document.get("outputs") or []):
        out = _object(item, f"outputs[{index}]")
        if not isinstance(out.get("name"), str):
            raise BadRequestError(f"outputs[{index}].name must be a string", field="outputs")
        params = _object(out.get("parameters") or {}, f"outputs[{index}].parameters")
        outputs.append(RequestedOutput(out["name"], params))
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError("'id' must be a string", field="id")
    parameters = _object(document.get("parameters") or {}, "parameters")
    return InferenceRequest(inputs, outputs, request_id, parameters)


def _wants_binary(request: InferenceRequest, name: str) -> bool:
    for output in request.outputs:
        if output.name == name and "binary_data" in output.parameters:
            return bool(output.parameters["binary_data"])
    return bool(request.parameters.get("binary_data_output", False))


def _raw_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts = []
        for item in tensor.array.reshape(-1):
            value = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(value)) + value)
        return b"".join(parts)
    dtype = DATATYPES[tensor.datatype].newbyteorder("<")
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()


def _json_data(tensor: Tensor) -> list[Any]:
    flat = tensor.array.reshape(-1)
    if tensor.datatype == "BYTES":
        return [
            v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v) for v in flat
        ]
    data: list[Any] = flat.tolist()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        # NaN and infinities are not JSON: send null, as strict parsers require.
        return [v if math.isfinite(v) else None for v in data]
    return data


def encode_response(
    response: InferenceResponse, request: InferenceRequest
) -> tuple[bytes, int | None]:
    """Encode a response; return the body and, when binary data follows, the JSON length."""
    outputs = []
    chunks = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if _wants_binary(request, tensor.name):
            raw = _raw_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    header = orjson.dumps(document)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
