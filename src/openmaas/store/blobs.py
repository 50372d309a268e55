"""Content-addressed blob store: atomic writes (temp, fsync, rename, fsync dir), sha256 on load."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["BlobCorruptedError", "BlobStore", "LocalBlobStore"]


class BlobCorruptedError(Exception):
    """A stored blob is missing or no longer matches its sha256 (a server-side fault)."""


class BlobStore(Protocol):
    """Where artifacts live; addressed by the sha256 of their bytes."""

    def put(self, data: bytes) -> str:
        """Store ``data`` durably and return its sha256 hex digest."""
        ...

    def get(self, sha256: str, *, verify: bool = True) -> bytes:
        """The bytes stored under ``sha256``, verified unless the caller authenticates them
        itself (AES-GCM envelopes do); raises BlobCorruptedError."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the blob if present."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        ...

    def prefix(self, sha256: str, size: int) -> bytes:
        """The first ``size`` bytes of a blob (unverified); BlobCorruptedError if missing."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """Blobs as files under one directory: ``<root>/<sha[:2]>/<sha>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BlobCorruptedError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self._path(sha256)
        if target.exists():
            return sha256
        target.parent.mkdir(exist_ok=True, mode=0o700)
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return sha256

    def get(self, sha256: str, *, verify: bool = True) -> bytes:
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobCorruptedError(f"blob {sha256} is missing from {self.root}") from exc
        if verify and hashlib.sha256(data).hexdigest() != sha256:
            raise BlobCorruptedError(f"blob {sha256} does not match its sha256")
        return data

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def prefix(self, sha256: str, size: int) -> bytes:
        try:
            with self._path(sha256).open("rb") as handle:
                return handle.read(size)
        except FileNotFoundError as exc:
            raise BlobCorruptedError(f"blob {sha256} is missing from {self.root}") from exc
