"""Pickles are refused before anything parses them, raw or wrapped, and nothing runs."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from openmaas.errors import InvalidArtifactError, UnsafeArtifactError
from openmaas.runtimes import prepare_artifact
from tests.helpers.models import identity_model, scale_model, tabular_classifier

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


class _System:
    """Unpickling this runs ``touch <marker>`` in a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    """Unpickling this runs Python code that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_like_zip(payload: bytes, member: str = "archive/data.pkl") -> bytes:
    """The layout torch.save writes: a zip whose data.pkl references storages beside it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.zeros(16, np.float32).tobytes())
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _joblib(value: object, compress: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer, compress=compress)
    return buffer.getvalue()


def _npy(value: object) -> bytes:
    buffer = io.BytesIO()
    array = np.empty(1, dtype=object)
    array[0] = value
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _corpus(marker: Path) -> dict[str, bytes]:
    """Malicious uploads, each of which would create ``marker`` if it were ever loaded."""
    corpus: dict[str, bytes] = {}
    for kind, payload in (("system", _System(marker)), ("exec", _Exec(marker))):
        for protocol in PROTOCOLS:
            raw = pickle.dumps(payload, protocol=protocol)
            corpus[f"{kind}-p{protocol}"] = raw
            corpus[f"{kind}-p{protocol}-torch-zip"] = _torch_like_zip(raw)
            corpus[f"{kind}-p{protocol}-trailing-junk"] = raw + b"\x08\x07 not onnx"
        corpus[f"{kind}-zip-innocent-name"] = _torch_like_zip(pickle.dumps(payload, 2), "w.bin")
        corpus[f"{kind}-zip-pickle-name"] = _torch_like_zip(b"anything", "model.pickle")
        corpus[f"{kind}-npy"] = _npy(payload)
        for compress in (0, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)):
            corpus[f"{kind}-joblib-{compress}"] = _joblib(payload, compress)
    # Protocol 0 needs no header: any opcode may come first, e.g. NONE then POP.
    corpus["p0-none-pop-prefix"] = b"N0" + pickle.dumps(_System(marker), protocol=0)
    corpus["p0-big"] = pickle.dumps([_System(marker), "x" * 200_000], protocol=0)
    return corpus


def _corpus_ids() -> list[str]:
    return list(_corpus(Path("marker")))


@pytest.mark.parametrize("name", _corpus_ids())
def test_every_malicious_upload_is_refused_and_nothing_runs(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    upload = _corpus(marker)[name]
    with pytest.raises(UnsafeArtifactError, match="ONNX") as caught:
        prepare_artifact(upload)
    assert caught.value.status == 400
    assert caught.value.code == "unsafe_artifact"
    with pytest.raises(UnsafeArtifactError):
        prepare_artifact(upload, "onnx")  # naming a format does not skip the check
    assert not marker.exists()


@pytest.mark.parametrize("name", ["system-p2", "exec-p0", "system-npy"])
def test_the_corpus_is_really_malicious(tmp_path: Path, name: str) -> None:
    """Control: loading one of them (in a child process) does create the marker."""
    marker = tmp_path / "pwned"
    artifact = tmp_path / "artifact"
    artifact.write_bytes(_corpus(marker)[name])
    loader = (
        "import pickle, sys, numpy; data = open(sys.argv[1], 'rb').read(); "
        "numpy.load(sys.argv[1], allow_pickle=True) if data[:6] == b'\\x93NUMPY' "
        "else pickle.loads(data)"
    )
    subprocess.run([sys.executable, "-c", loader, str(artifact)], check=True)
    assert marker.exists()


@pytest.mark.parametrize("model", [identity_model, scale_model, tabular_classifier])
def test_valid_onnx_models_still_pass(model: Any) -> None:
    assert prepare_artifact(model()).format == "onnx"


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x08" + b"\x00" * 100,  # an ONNX-like protobuf header
        b"(\x01not a pickle.",  # opens like protocol 0, then is not
        b".",  # STOP alone
        b"\x80\x01\x00",  # PROTO with a protocol that does not exist
        b"x\x9c" + b"\x00" * 20,  # looks like zlib, is not
        b"http://169.254.169.254/latest/meta-data/",  # valid opcodes, then no newline
        b"hello world.",  # valid opcodes up to STOP, but GETs from an empty memo
        b"(" + b"a" * 100_000 + b".",  # APPEND to nothing, long enough to be peeked
        b"V" + b"x" * 100_000 + b".",  # one opcode cut by the peek
    ],
    ids=["onnx-like", "p0-like", "stop", "proto-1", "zlib-like", "url", "text", "long", "one-op"],
)
def test_lookalikes_are_invalid_not_unsafe(data: bytes) -> None:
    with pytest.raises(InvalidArtifactError) as caught:
        prepare_artifact(data)
    assert type(caught.value) is InvalidArtifactError


def test_zip_without_pickles_is_just_invalid() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.onnx", scale_model())
    with pytest.raises(InvalidArtifactError) as caught:
        prepare_artifact(buffer.getvalue())
    assert type(caught.value) is InvalidArtifactError


def test_unreadable_zip_is_invalid() -> None:
    with pytest.raises(InvalidArtifactError, match="zip"):
        prepare_artifact(b"PK\x03\x04" + b"\x00" * 64)
