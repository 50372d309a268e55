"""Signing key: created 0600 once, refused when readable by others; signatures verify."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openmaas.security import signing
from openmaas.security.signing import Signer, verify_signature


def test_all_lists_the_public_names() -> None:
    assert signing.__all__ == ["Signer", "verify_signature"]


def test_key_file_is_created_0600_and_loads_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.key"
    first = Signer.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 32
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    second = Signer.load_or_create(path)
    assert second.public_key_hex == first.public_key_hex
    assert len(first.public_key_hex) == 64


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    Signer.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Signer.load_or_create(path)


def test_key_file_readable_by_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    Signer.load_or_create(path)
    os.chmod(path, 0o640)
    with pytest.raises(PermissionError, match="0640"):
        Signer.load_or_create(path)


def test_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(ValueError, match="5 bytes, expected 32"):
        Signer.load_or_create(path)


def test_sign_and_verify(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "signing.key")
    signature = signer.sign(b"7:abc")
    assert len(signature) == 128
    assert verify_signature(signer.public_key_hex, b"7:abc", signature)


def test_verify_rejects_wrong_key_message_and_signature() -> None:
    signer, other = Signer.generate(), Signer.generate()
    signature = signer.sign(b"message")
    assert not verify_signature(other.public_key_hex, b"message", signature)
    assert not verify_signature(signer.public_key_hex, b"messagf", signature)
    flipped = f"{int(signature[0], 16) ^ 1:x}" + signature[1:]
    assert not verify_signature(signer.public_key_hex, b"message", flipped)


@pytest.mark.parametrize(
    ("public_key", "message", "signature"),
    [
        ("zz", b"m", "00" * 64),
        ("00" * 31, b"m", "00" * 64),
        ("00" * 32, b"m", "00" * 64),
        ("", b"", ""),
        ("ab" * 32, b"m", "not hex"),
        ("ab" * 32, b"m", "00" * 63),
        (None, b"m", "00" * 64),
        ("ab" * 32, "a str, not bytes", "00" * 64),
        ("ab" * 32, b"m", None),
    ],
)
def test_verify_returns_false_for_garbage(
    public_key: object, message: object, signature: object
) -> None:
    assert verify_signature(public_key, message, signature) is False  # type: ignore[arg-type]
