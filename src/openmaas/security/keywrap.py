"""Key hierarchy helpers: data keys wrapped under key-encryption keys, and the root key file.

A root key (from a file or a setting) wraps per-tenant keys, which wrap per-object data keys;
each wrap binds a context (tenant, object), so a wrapped key copied elsewhere does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import string
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmaas.security.envelope import KEY_SIZE, TAG_SIZE, EnvelopeError

__all__ = [
    "WRAPPED_KEY_SIZE",
    "key_id",
    "load_or_create_root_key_file",
    "new_key",
    "parse_root_key",
    "unwrap_key",
    "wrap_key",
]

NONCE_SIZE = 12
WRAPPED_KEY_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE
_KEY_ID_DOMAIN = b"openmaas/key-id/v1\x00"
_WRAP_DOMAIN = b"openmaas/wrap-key/v1\x00"
_ROOT_KEY_FORMS = (
    "64 hex characters, or base64 / base64url of 32 bytes (43 characters, 44 with '=')"
)


def _check_key(key: bytes, name: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ValueError(f"{name} must be {KEY_SIZE} bytes (got {size}); use new_key()")


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (16 hex characters); it reveals nothing of the key."""
    _check_key(key, "key")
    return hashlib.sha256(_KEY_ID_DOMAIN + key).hexdigest()[:16]


def wrap_key(kek: bytes, key: bytes, context: bytes) -> bytes:
    """Encrypt ``key`` under ``kek``, bound to ``context``: ``nonce (12) || ciphertext || tag``."""
    _check_key(kek, "kek")
    _check_key(key, "key")
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(kek).encrypt(nonce, key, _WRAP_DOMAIN + context)


def unwrap_key(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """The key that :func:`wrap_key` wrapped; :class:`EnvelopeError` if anything is off."""
    _check_key(kek, "kek")
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise EnvelopeError(
            f"a wrapped key is {WRAPPED_KEY_SIZE} bytes (got {len(wrapped)}): truncated or not one"
        )
    nonce, sealed = wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:]
    try:
        return AESGCM(kek).decrypt(nonce, sealed, _WRAP_DOMAIN + context)
    except InvalidTag:
        raise EnvelopeError(
            "wrapped key failed authentication: wrong key-encryption key or context, or tampered"
        ) from None


def parse_root_key(text: str) -> bytes:
    """A 32-byte root key from hex or base64/base64url text (padding optional)."""
    value = text.strip()
    if len(value) == 2 * KEY_SIZE and all(char in string.hexdigits for char in value):
        return bytes.fromhex(value)
    raw = _decode_base64(value)
    if raw is None or len(raw) != KEY_SIZE:
        # never echo the text: it may be a real key with a typo
        raise ValueError(f"a root key must be {_ROOT_KEY_FORMS}; got {len(value)} characters")
    return raw


def _decode_base64(value: str) -> bytes | None:
    mixed = ("-" in value or "_" in value) and ("+" in value or "/" in value)
    if mixed or not value.isascii():
        return None
    standard = value.replace("-", "+").replace("_", "/")
    unpadded = standard.rstrip("=")
    if unpadded != standard and len(standard) % 4:
        return None  # padding, but not the right amount
    try:
        raw = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(raw).decode().rstrip("=") != unpadded:
        return None  # non-canonical (stray low bits), or padding where none belongs
    return raw


def load_or_create_root_key_file(path: Path) -> bytes:
    """The root key in ``path``, created (mode 0600, base64url) if the file does not exist.

    An existing file that group or others may access is refused: fix it with ``chmod 600``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_root_key_file(path)
    key = new_key()
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.urlsafe_b64encode(key) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return key


def _read_root_key_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise PermissionError(f"root key file {path} is not a regular file")
        if mode & 0o077:
            raise PermissionError(
                f"root key file {path} is accessible to group or others "
                f"(mode {stat.S_IMODE(mode):04o}); restrict it with: chmod 600 {path}"
            )
        content = handle.read()
    try:
        return parse_root_key(content.decode("ascii"))
    except UnicodeDecodeError:
        raise ValueError(
            f"root key file {path} is not text: a root key must be {_ROOT_KEY_FORMS}"
        ) from None
    except ValueError as exc:
        raise ValueError(f"root key file {path}: {exc}") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
