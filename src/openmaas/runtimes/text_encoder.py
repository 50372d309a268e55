"""Text encoders: an ONNX transformer with its tokenizer, published as one bundle.

A bundle (format ``text-onnx``) is a zip of ``model.onnx`` (inputs ``input_ids`` and
``attention_mask``), ``tokenizer.json`` (Hugging Face ``tokenizers``) and ``openmaas.json``
(``task`` and ``max_length`` in tokens). Both files are data: the tokenizer runs in Rust, the
graph in onnxruntime, so the runtime may run in the server process like plain ONNX. The model
takes ``text`` (BYTES ``[batch]``) and answers ``tokens`` (INT64 ``[batch]``, what each text
counted, for usage) and, by task:

- ``embeddings``: the graph gives ``embedding`` (FP32 ``[batch, dim]``), answered as is;
- ``text-classification``: the graph gives ``logits`` (FP32 ``[batch, classes]``) and the
  manifest lists ``labels``; the answer is ``label`` (BYTES) and ``probabilities``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openmaas.errors import InvalidArtifactError, InvalidInputError
from openmaas.runtimes.base import PreparedArtifact, Signature, TensorSpec

__all__ = ["FORMAT", "TASKS", "TextEncoderRuntime", "is_bundle", "prepare"]

FORMAT = "text-onnx"
_MEMBERS = {"model.onnx", "tokenizer.json", "openmaas.json"}
_MAX_UNPACKED = 4 * 1024**3  # what the members may inflate to, in all
_MAX_TEXTS = 2048
TASKS = ("embeddings", "text-classification")


def is_bundle(data: bytes) -> bool:
    """Whether ``data`` is a zip holding a text bundle's manifest."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "openmaas.json" in archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return False


def _unpack(data: bytes) -> tuple[bytes, str, dict[str, Any]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            missing = _MEMBERS - set(infos)
            if missing:
                raise InvalidArtifactError(
                    f"the text bundle lacks {', '.join(sorted(missing))}; it needs model.onnx, "
                    "tokenizer.json and openmaas.json"
                )
            if sum(infos[name].file_size for name in _MEMBERS) > _MAX_UNPACKED:
                raise InvalidArtifactError("the text bundle unpacks to more than 4 GiB")
            model = archive.read("model.onnx")
            tokenizer = archive.read("tokenizer.json").decode("utf-8")
            manifest_text = archive.read("openmaas.json")
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InvalidArtifactError(f"the text bundle is not a readable zip: {exc}") from exc
    try:
        manifest = json.loads(manifest_text)
    except ValueError as exc:
        raise InvalidArtifactError(f"openmaas.json is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("task") not in TASKS:
        raise InvalidArtifactError(
            'openmaas.json must say {"task": "embeddings"} or {"task": "text-classification", '
            '"labels": [...]}'
        )
    if manifest["task"] == "text-classification":
        labels = manifest.get("labels")
        if (
            not isinstance(labels, list)
            or not 2 <= len(labels) <= 10_000
            or not all(isinstance(label, str) and label for label in labels)
        ):
            raise InvalidArtifactError(
                'a text classifier\'s openmaas.json lists its class names: "labels": '
                '["negative", "positive"] (2 or more, in the order of the logits)'
            )
    length = manifest.setdefault("max_length", 512)
    if type(length) is not int or not 1 <= length <= 8192:
        raise InvalidArtifactError("openmaas.json's max_length must be 1 to 8192 tokens")
    return model, tokenizer, manifest


def _tokenizer(text: str, max_length: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InvalidArtifactError(
            "text models need the nlp extra on the server: pip install 'openmaas[nlp]'"
        ) from exc
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:
        raise InvalidArtifactError(f"tokenizer.json is not a tokenizers file: {exc}") from exc
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()  # to the longest text of each batch
    return tokenizer


def prepare(data: bytes) -> PreparedArtifact:
    """Check a text bundle: its graph, tokenizer and manifest; describe it."""
    from openmaas.runtimes import onnx_runtime

    model, tokenizer, manifest = _unpack(data)
    _tokenizer(tokenizer, int(manifest.get("max_length", 512)))
    graph = onnx_runtime.prepare(model).signature
    names = {spec.name for spec in graph.inputs}
    task = manifest["task"]
    wanted = "embedding" if task == "embeddings" else "logits"
    output = next((s for s in graph.outputs if s.name == wanted), None)
    if names != {"input_ids", "attention_mask"} or output is None:
        raise InvalidArtifactError(
            f"model.onnx must take input_ids and attention_mask and give {wanted}"
        )
    if output.datatype != "FP32" or len(output.shape) != 2 or output.shape[1] < 1:
        raise InvalidArtifactError(
            f"model.onnx's {wanted} must be FP32 [batch, size] (pool the token states "
            "into one vector per text)"
        )
    size = output.shape[1]
    facts: dict[str, Any] = {"task": task, "max_length": manifest["max_length"]}
    tokens = TensorSpec("tokens", "INT64", (-1,))
    text = (TensorSpec("text", "BYTES", (-1,)),)
    if task == "embeddings":
        facts["dimensions"] = size
        signature = Signature(text, (TensorSpec("embedding", "FP32", (-1, size)), tokens))
    else:
        labels = manifest["labels"]
        if len(labels) != size:
            raise InvalidArtifactError(
                f"openmaas.json lists {len(labels)} labels and the logits have {size} classes"
            )
        facts["labels"] = labels
        outputs = (
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, size)),
            tokens,
        )
        signature = Signature(text, outputs)
    return PreparedArtifact(FORMAT, data, signature, facts)


class TextEncoderRuntime:
    """Tokenize a batch of texts and encode it in one onnxruntime call."""

    def __init__(self, data: bytes) -> None:
        from openmaas.runtimes.onnx_runtime import OnnxRuntime

        model, tokenizer, manifest = _unpack(data)
        self._tokenizer = _tokenizer(tokenizer, int(manifest["max_length"]))
        self._encoder: OnnxRuntime | None = OnnxRuntime(model)
        self._labels: list[str] | None = manifest.get("labels")

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self._encoder is None:
            raise RuntimeError("the model was unloaded")
        texts = [
            t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
            for t in inputs["text"].reshape(-1)
        ]
        if not texts or len(texts) > _MAX_TEXTS:
            raise InvalidInputError(f"send 1 to {_MAX_TEXTS} texts per request", field="text")
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        graph_inputs = {"input_ids": ids, "attention_mask": mask}
        answer: dict[str, np.ndarray] = {"tokens": mask.sum(axis=1)}
        if self._labels is None:
            answer["embedding"] = self._encoder.predict(graph_inputs, ["embedding"])["embedding"]
        else:
            logits = self._encoder.predict(graph_inputs, ["logits"])["logits"]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            answer["probabilities"] = (shifted / shifted.sum(axis=1, keepdims=True)).astype(
                np.float32
            )
            label = np.empty(len(texts), dtype=object)
            label[:] = [self._labels[i].encode("utf-8") for i in logits.argmax(axis=1)]
            answer["label"] = label
        return {name: answer[name] for name in outputs} if outputs else answer

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The character spans of ``text``'s words as the model reads them (its word pieces
        joined; special tokens and what truncation dropped left out)."""
        encoding = self._tokenizer.encode(text)
        spans: dict[int, tuple[int, int]] = {}
        for word, (start, end), special in zip(
            encoding.word_ids, encoding.offsets, encoding.special_tokens_mask, strict=True
        ):
            if special or word is None or end <= start:
                continue
            first, _ = spans.get(word, (start, end))
            spans[word] = (first, end)
        return list(spans.values())

    def unload(self) -> None:
        if self._encoder is not None:
            self._encoder.unload()
            self._encoder = None
