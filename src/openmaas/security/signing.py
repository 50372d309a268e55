"""Ed25519 signing key of the server: kept in one 0600 file, used for audit checkpoints.

The file holds the raw 32-byte private key. It is created once, atomically (written to a
private temp file, fsynced, then hard-linked into place, so no reader ever sees a partial
key), and refused later if its permissions let the group or others read it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = ["Signer", "verify_signature"]

_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_private_key_file(path: Path) -> bytes:
    """The key bytes; PermissionError if group/other may access the file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"the signing key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise PermissionError(
                f"the signing key {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}' "
                "and check that nobody else copied it"
            )
        data = b""
        while len(data) <= _KEY_BYTES:
            chunk = os.read(fd, _KEY_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) != _KEY_BYTES:
        raise ValueError(
            f"the signing key {path} is {len(data)} bytes, expected {_KEY_BYTES}: it is "
            "damaged; restore it from a backup (a new key cannot verify old audit checkpoints)"
        )
    return data


def _create_private_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` as a new 0600 file; FileExistsError if it already exists."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, path)  # atomic, and fails if another process created the key first
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


class Signer:
    """An Ed25519 private key that signs messages; its public key verifies them."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public_hex = (
            private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        )

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh key that lives only in memory (tests, tools)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Load the key at ``path``, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            try:
                _create_private_key_file(path, raw)
            except FileExistsError:
                pass  # another process won the race: use its key
            else:
                return cls(key)
        return cls(Ed25519PrivateKey.from_private_bytes(_read_private_key_file(path)))

    @property
    def public_key_hex(self) -> str:
        """The raw 32-byte public key, hex-encoded."""
        return self._public_hex

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of ``message``, hex-encoded."""
        return self._key.sign(message).hex()


def verify_signature(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is a valid signature of ``message``; never raises."""
    try:
        public = bytes.fromhex(public_key_hex)
        signature = bytes.fromhex(signature_hex)
        if len(public) != _KEY_BYTES or len(signature) != _SIGNATURE_BYTES:
            return False
        Ed25519PublicKey.from_public_bytes(public).verify(signature, bytes(message))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
