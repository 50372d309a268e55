"""Key wrapping, key ids, root key parsing and the root key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from openmaas.security.envelope import EnvelopeError
from openmaas.security.keywrap import (
    WRAPPED_KEY_SIZE,
    key_id,
    load_or_create_root_key_file,
    new_key,
    parse_root_key,
    unwrap_key,
    wrap_key,
)

CONTEXT = b"tenant=acme"


def test_new_keys_are_fresh_32_bytes() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) == 32 for key in keys)


def test_wrap_round_trip() -> None:
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, CONTEXT)
    assert len(wrapped) == WRAPPED_KEY_SIZE == 12 + 32 + 16
    assert key not in wrapped
    assert unwrap_key(kek, wrapped, CONTEXT) == key
    assert wrap_key(kek, key, CONTEXT) != wrapped  # a fresh nonce each time


def test_unwrap_fails_with_wrong_kek_or_context() -> None:
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, CONTEXT)
    with pytest.raises(EnvelopeError, match="wrong key-encryption key or context"):
        unwrap_key(new_key(), wrapped, CONTEXT)
    for context in (b"tenant=evil", b"", CONTEXT + b"\x00", CONTEXT[:-1]):
        with pytest.raises(EnvelopeError):
            unwrap_key(kek, wrapped, context)


def test_unwrap_fails_on_any_flipped_byte_or_wrong_length() -> None:
    kek = new_key()
    wrapped = wrap_key(kek, new_key(), CONTEXT)
    for position in range(len(wrapped)):
        for bit in (0, 7):
            tampered = bytearray(wrapped)
            tampered[position] ^= 1 << bit
            with pytest.raises(EnvelopeError):
                unwrap_key(kek, bytes(tampered), CONTEXT)
    for bad in (b"", wrapped[:-1], wrapped + b"\x00"):
        with pytest.raises(EnvelopeError, match="60 bytes"):
            unwrap_key(kek, bad, CONTEXT)


def test_keys_of_the_wrong_size_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="kek must be 32 bytes"):
        wrap_key(bytes(16), new_key(), CONTEXT)
    with pytest.raises(ValueError, match="key must be 32 bytes"):
        wrap_key(new_key(), bytes(31), CONTEXT)
    with pytest.raises(ValueError, match="32 bytes"):
        unwrap_key(bytes(33), bytes(WRAPPED_KEY_SIZE), CONTEXT)
    with pytest.raises(ValueError, match="32 bytes"):
        key_id(b"short")


def test_key_id() -> None:
    key = new_key()
    assert key_id(key) == key_id(bytes(key))
    assert len(key_id(key)) == 16
    assert all(char in "0123456789abcdef" for char in key_id(key))
    assert len({key_id(new_key()) for _ in range(1000)}) == 1000
    assert key.hex()[:16] not in key_id(key)
    assert key_id(bytes(32)) == key_id(bytes(32)) != key_id(bytes(31) + b"\x01")


def test_parse_root_key_accepts_hex_and_base64_forms() -> None:
    key = bytes(range(200, 232))  # base64 of it has '+' and '/', base64url '-' and '_'
    standard = base64.b64encode(key).decode()
    urlsafe = base64.urlsafe_b64encode(key).decode()
    assert "+" in standard or "/" in standard
    assert "-" in urlsafe or "_" in urlsafe
    for text in (
        key.hex(),
        key.hex().upper(),
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        f"  {urlsafe}\n",
    ):
        assert parse_root_key(text) == key, text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        bytes(31).hex(),
        bytes(33).hex(),
        bytes(32).hex()[:-1] + "g",
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        base64.urlsafe_b64encode(bytes(24)).decode(),  # 32 characters
        base64.b64encode(bytes(range(48))).decode(),  # 64 characters, not hex
        base64.b64encode(bytes(32)).decode() + "=",  # too much padding
        "A" * 42 + "B",  # stray low bits: not what any encoder writes
        "+" * 20 + "_" * 23,  # mixed alphabets
        "not a key at all, just some words!!!!!!!!!",
        "é" * 43,
    ],
)
def test_parse_root_key_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex characters, or base64") as caught:
        parse_root_key(text)
    if len(text) > 8:
        assert text.strip() not in str(caught.value)  # never echoes a possible secret


def test_root_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    key = load_or_create_root_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert content.endswith("\n")
    assert parse_root_key(content) == key
    assert base64.urlsafe_b64decode(content.strip()) == key
    assert load_or_create_root_key_file(path) == key
    assert load_or_create_root_key_file(tmp_path / "other.key") != key


def test_root_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    key = load_or_create_root_key_file(path)
    for mode in (0o644, 0o640, 0o604, 0o660, 0o602):
        path.chmod(mode)
        with pytest.raises(PermissionError, match="chmod 600"):
            load_or_create_root_key_file(path)
    path.chmod(0o400)
    assert load_or_create_root_key_file(path) == key


def test_root_key_file_with_bad_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"too short\n")
    os.close(fd)
    with pytest.raises(ValueError, match="root key file"):
        load_or_create_root_key_file(path)
    path.write_bytes(b"\xff" * 44)
    with pytest.raises(ValueError, match="not text"):
        load_or_create_root_key_file(path)
    directory = tmp_path / "a-directory.key"
    directory.mkdir(mode=0o700)
    with pytest.raises((PermissionError, IsADirectoryError)):
        load_or_create_root_key_file(directory)
