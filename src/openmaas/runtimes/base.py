"""The ``Runtime`` protocol, model signatures, and the format registry.

Uploads that carry code are refused before any format parses them: Python pickles (what
``pickle.dump``, ``joblib.dump`` and ``torch.save`` write, also zipped, compressed or inside a
``.npy``) run arbitrary code when loaded. They are recognised by reading their opcodes with
``pickletools`` (``dis`` checks the stack and memo too), which never imports or calls anything.
"""

from __future__ import annotations

import bz2
import io
import lzma
import pickletools
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from openmaas.errors import InvalidArtifactError, UnsafeArtifactError

__all__ = [
    "FORMATS",
    "PreparedArtifact",
    "Runtime",
    "Signature",
    "TensorSpec",
    "load_runtime",
    "prepare_artifact",
]


FORMATS = ("onnx", "gguf", "text-onnx", "torchscript", "torch-export")
# Conversions of PyTorch uploads at a time: each runs in a confined child of up to 4 GiB.
_CONVERSIONS = threading.BoundedSemaphore(2)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature; ``-1`` in ``shape`` is a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["datatype"]), tuple(int(d) for d in data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs a model takes and returns."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )


@dataclass(frozen=True)
class PreparedArtifact:
    """An uploaded artifact after validation: the bytes to store, signature and facts."""

    format: str
    data: bytes
    signature: Signature
    facts: dict[str, Any] = field(default_factory=dict)


class Runtime(Protocol):
    """A loaded model: named arrays in, named arrays out."""

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run the model; return the requested outputs (all when ``outputs`` is empty)."""
        ...

    def unload(self) -> None:
        """Release the model's memory."""
        ...


# How much of a file (or zip member, or decompressed stream) is read to recognise a pickle.
_PEEK = 64 * 1024
_MAX_ZIP_MEMBERS = 1000
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
# What zipfile raises on a corrupt archive (BadZipFile is an Exception, bz2 raises OSError;
# RuntimeError: encrypted; NotImplementedError: unknown compression; ValueError: bad offsets).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


def _is_pickle(head: bytes, longer: bool) -> bool:
    """Whether ``head``, the first bytes of something, is a pickle.

    Protocols 2-5 open with PROTO (0x80 and the protocol number). Protocols 0 and 1 have no
    header: ``head`` must disassemble into a consistent pickle, or (when ``longer``: there is
    more than ``head``) into valid opcodes that only stop because ``head`` ends.
    """
    if head.startswith(_NPY_MAGIC) and len(head) > 12:
        # A .npy of an object array is a header, then a pickle. The header's length takes 2
        # bytes in format 1.0 and 4 after.
        size = 2 if head[6] == 1 else 4
        head = head[8 + size + int.from_bytes(head[8 : 8 + size], "little") :]
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    stream, listing = io.BytesIO(head), io.StringIO()
    try:
        pickletools.dis(stream, out=listing)  # one line per opcode
    except Exception:  # pickletools is not hardened against arbitrary bytes: any failure
        # Consistent opcodes until ``head`` ends, mid-opcode: the start of a longer pickle.
        ran_out = stream.tell() >= len(head) and listing.getvalue().count("\n") > 1
        return longer and ran_out
    return True


def _decompressed_head(data: bytes) -> bytes | None:
    """The first bytes inside a gzip, zlib, bz2, xz or lzma file (joblib's ``compress=``)."""
    chunk = data[: 4 * _PEEK]
    try:
        if data.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(chunk, _PEEK)
        if len(data) >= 2 and data[0] == 0x78 and int.from_bytes(data[:2], "big") % 31 == 0:
            return zlib.decompressobj().decompress(chunk, _PEEK)
        if data.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(chunk, max_length=_PEEK)
        if data.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
            return lzma.LZMADecompressor().decompress(chunk, max_length=_PEEK)
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return None
    return None


def _pickled_zip_member(data: bytes) -> str | None:
    """The name of a member of this zip (torch.save's format) that is a pickle, if any."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            for info in members:
                if info.filename.lower().endswith((".pkl", ".pickle")):
                    return info.filename
            for info in members[:_MAX_ZIP_MEMBERS]:
                with archive.open(info) as member:
                    head = member.read(_PEEK)
                    if _is_pickle(head, longer=len(head) == _PEEK):
                        return info.filename
    except _ZIP_ERRORS as exc:
        raise InvalidArtifactError(
            f"the upload is a zip archive that cannot be read ({exc}); publish an .onnx file"
        ) from exc
    return None


def _refuse_code(data: bytes) -> None:
    """Raise UnsafeArtifactError when the upload is, or holds, a pickle."""
    where = None
    if data.startswith(_ZIP_MAGIC):
        member = _pickled_zip_member(data)
        if member is not None:
            where = f"is a zip archive holding a Python pickle ({member!r})"
    # A protocol 0/1 pickle longer than the peek still ends with STOP.
    elif _is_pickle(data[:_PEEK], longer=len(data) > _PEEK and data.endswith(b".")):
        where = "is a Python pickle"
    else:
        head = _decompressed_head(data)
        if head is not None and _is_pickle(head, longer=len(head) == _PEEK):
            where = "is a compressed Python pickle"
    if where is not None:
        raise UnsafeArtifactError(
            f"the upload {where}, as torch.save, joblib.dump and pickle.dump write; loading "
            "one runs arbitrary code, so this server refuses it. Export the model to ONNX "
            "(torch.onnx.export, skl2onnx.to_onnx, tf2onnx) and publish the .onnx file"
        )


def prepare_artifact(data: bytes, format: str | None = None) -> PreparedArtifact:
    """Validate an uploaded artifact and extract its signature (format sniffed when None).

    Pickles, raw or wrapped, are refused first, before any parser sees the bytes.
    """
    from openmaas.runtimes import gguf, onnx_runtime, text_encoder
    from openmaas.runtimes.torch_convert import convert_to_onnx, looks_like_torch

    if format not in (None, *FORMATS):
        raise InvalidArtifactError(
            f"unsupported model format {format!r}; this server accepts: {', '.join(FORMATS)}",
            field="format",
        )
    if format == "gguf" or (format is None and data.startswith(gguf.MAGIC)):
        return gguf.prepare(data)  # llama.cpp's own format: tensors and key/values, no code
    if format in ("torchscript", "torch-export") or (format is None and looks_like_torch(data)):
        # TorchScript and torch.export archives hold pickles: they are opened only in a
        # confined child process, which hands back ONNX; that is what is stored and served.
        with _CONVERSIONS:
            data = convert_to_onnx(data)
        return onnx_runtime.prepare(data)
    _refuse_code(data)
    if format == text_encoder.FORMAT or (format is None and text_encoder.is_bundle(data)):
        return text_encoder.prepare(data)  # an ONNX encoder with its tokenizer
    return onnx_runtime.prepare(data)


def load_runtime(format: str, data: bytes, options: Mapping[str, Any] | None = None) -> Runtime:
    """Load a prepared artifact into a runtime of its format.

    ``options`` tune the runtime: ``threads`` for every format; ``slots`` and ``context``
    (tokens per slot) for language models.
    """
    options = options or {}
    threads = int(options.get("threads", 1))
    if format == "gguf":
        from openmaas.runtimes.gguf import LlamaRuntime

        slots, context = int(options.get("slots", 4)), int(options.get("context", 2048))
        return LlamaRuntime(data, slots=slots, context=context, threads=threads)
    if format == "text-onnx":
        from openmaas.runtimes.text_encoder import TextEncoderRuntime

        return TextEncoderRuntime(data)
    if format != "onnx":
        raise InvalidArtifactError(f"no runtime for format {format!r}")
    from openmaas.runtimes import onnx_runtime

    return onnx_runtime.OnnxRuntime(data)
