"""GGUF language models: checked and described at publish time from the file's own header.

A GGUF file starts with ``GGUF``, a version, the tensor and key/value counts, then typed
key/value pairs (the model's architecture, context length, chat template, vocabulary...).
``read_metadata`` walks that header with bounds checked at every step and keeps the scalar
and string values; arrays (the vocabulary) are skipped. Nothing is loaded or executed: the
model itself is only opened by llama.cpp, in a worker process (``openmaas.llm``).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import struct
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from openmaas.errors import InvalidArtifactError, InvalidInputError
from openmaas.runtimes.base import PreparedArtifact, Signature, TensorSpec

__all__ = ["MAGIC", "TEXT_SIGNATURE", "LlamaRuntime", "prepare", "read_metadata"]

MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_MAX_KEYS = 100_000
_MAX_STRING = 16 * 1024 * 1024  # a chat template is a few KiB; this bounds a corrupt length
_MAX_ITEMS = 8_000_000  # array items in all (vocabulary, merges, token types: a few million)
_MAX_NESTING = 2  # arrays of arrays exist in the format, not in real models

# value type -> struct format of a scalar
_SCALARS = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9

# The signature every text-generation model gets: prompts in, generated text out.
TEXT_SIGNATURE = Signature(
    inputs=(TensorSpec("text_input", "BYTES", (-1,)),),
    outputs=(TensorSpec("text_output", "BYTES", (-1,)),),
)


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.at = 0
        self.items = 0
        self.depth = 0

    def take(self, size: int) -> memoryview:
        end = self.at + size
        if size < 0 or end > len(self.data):
            raise InvalidArtifactError(
                "the GGUF header is truncated or corrupt (a length runs past the end of the "
                "file); upload the whole .gguf file"
            )
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.scalar("<Q")
        if size > _MAX_STRING:
            raise InvalidArtifactError(f"the GGUF header holds a {size}-byte string; corrupt")
        return bytes(self.take(size)).decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("<I"), self.scalar("<Q")
            self.skip_array(item_kind, count)
            return None  # arrays (the vocabulary, merges) are not kept
        raise InvalidArtifactError(f"the GGUF header has a value of unknown type {kind}")

    def skip_array(self, kind: int, count: int) -> None:
        self.items += count
        if self.items > _MAX_ITEMS or self.depth >= _MAX_NESTING:
            raise InvalidArtifactError(
                "the GGUF header holds more (or more deeply nested) arrays than any model "
                "needs; corrupt"
            )
        if kind in _SCALARS:
            self.take(struct.calcsize(_SCALARS[kind]) * count)
        elif kind == _STRING:
            for _ in range(count):
                self.take(self.scalar("<Q"))
        else:  # arrays of arrays: walk them one by one
            self.depth += 1
            for _ in range(count):
                self.value(kind)
            self.depth -= 1


def read_metadata(data: bytes | memoryview) -> dict[str, Any]:
    """The scalar and string key/values of a GGUF header (arrays left out).

    Raises InvalidArtifactError when ``data`` is not a GGUF file of a supported version.
    """
    reader = _Reader(data)
    if bytes(reader.take(4)) != MAGIC:
        raise InvalidArtifactError("not a GGUF file (it does not start with 'GGUF')")
    version = reader.scalar("<I")
    if version not in _SUPPORTED_VERSIONS:
        raise InvalidArtifactError(
            f"GGUF version {version} is not supported; use version 2 or 3 (any current "
            "llama.cpp conversion writes 3)"
        )
    reader.scalar("<Q")  # tensor count
    count = reader.scalar("<Q")
    if count > _MAX_KEYS:
        raise InvalidArtifactError(f"the GGUF header claims {count} keys; corrupt")
    metadata: dict[str, Any] = {"gguf.version": version}
    for _ in range(count):
        key = reader.string()
        value = reader.value(reader.scalar("<I"))
        if value is not None:
            metadata[key] = value
    return metadata


def prepare(data: bytes) -> PreparedArtifact:
    """Check a GGUF upload and describe it: architecture, context length, chat template."""
    metadata = read_metadata(data)
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise InvalidArtifactError("the GGUF header names no general.architecture")
    context = metadata.get(f"{architecture}.context_length")
    facts: dict[str, Any] = {
        "task": "text-generation",
        "architecture": architecture,
        "context_length": int(context) if isinstance(context, int) else None,
        "chat_template": isinstance(metadata.get("tokenizer.chat_template"), str),
        "name": metadata.get("general.name"),
        "parameters": metadata.get("general.size_label"),
    }
    return PreparedArtifact("gguf", data, TEXT_SIGNATURE, facts)


class LlamaRuntime:
    """A GGUF model in llama.cpp's server engine (``xllamacpp``), in a worker process.

    The weights go into an anonymous in-memory file (``memfd``), never to disk, which
    llama.cpp opens by its ``/proc/self/fd`` path. Up to ``slots`` requests decode together
    (continuous batching); each gets ``context`` tokens of context.
    """

    def __init__(self, data: bytes, *, slots: int = 4, context: int = 2048, threads: int = 1):
        import xllamacpp

        self.slots = slots
        self.context = context
        self._fd = os.memfd_create("openmaas-model.gguf", os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        params = xllamacpp.CommonParams()
        params.model.path = f"/proc/self/fd/{self._fd}"
        params.n_parallel = slots
        params.n_ctx = context * slots
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        # llama.cpp's server also listens on a loopback port; only this process may use it.
        key = secrets.token_urlsafe(32)
        params.api_keys = [key]
        self._server: Any = xllamacpp.Server(params)
        address = urllib.parse.urlsplit(self._server.listening_address)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def generate(
        self,
        kind: str,
        body: dict[str, Any],
        emit: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Run an OpenAI-shaped ``chat`` or ``completion`` request.

        With ``emit`` the answer streams: ``emit(chunk)`` gets each chunk and returns True to
        stop generating; the return value is then empty. llama.cpp's errors come back as
        ``{"error": {...}}``.
        """
        # Through llama.cpp's own HTTP server, whose threads wait on sockets: several Python
        # threads inside handle_*() at once spin against llama.cpp's compute threads (10x
        # slower with 2 of them here).
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        connection = http.client.HTTPConnection(self._host, self._port)
        try:
            connection.request("POST", path, json.dumps(body), self._headers)
            response = connection.getresponse()
            if emit is None or response.status != 200:
                answer = json.loads(response.read() or b"{}")
                if emit is not None:  # a refused stream: its error is its one chunk
                    emit(answer)
                    return {}
                return dict(answer)
            for line in response:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]" or emit(json.loads(payload)):
                    break  # closing the connection stops llama.cpp at its next token
            return {}
        finally:
            connection.close()

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """OIP: each ``text_input`` element is a prompt, ``text_output`` its completion."""
        answers = []
        for prompt in inputs["text_input"].reshape(-1):
            text = prompt.decode("utf-8", "replace") if isinstance(prompt, bytes) else str(prompt)
            result = self.generate("completion", {"prompt": text, "max_tokens": 64})
            if "error" in result:
                raise InvalidInputError(str(result["error"].get("message", "")))
            answers.append(str(result["choices"][0]["text"]).encode("utf-8"))
        array = np.empty(len(answers), dtype=object)
        array[:] = answers
        return {"text_output": array}

    def unload(self) -> None:
        self._server = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
