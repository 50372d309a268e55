"""LocalBlobStore: content addressing, atomic writes and verification on every read."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from openmaas.store.blobs import BlobCorruptedError, BlobStore, LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_put_returns_the_sha256_and_get_round_trips(store: LocalBlobStore) -> None:
    data = b"\x00model bytes\xff" * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get(digest) == data


def test_blob_lives_under_its_digest_prefix(store: LocalBlobStore) -> None:
    digest = store.put(b"abc")
    assert (store.root / digest[:2] / digest).read_bytes() == b"abc"


def test_empty_blob_round_trips(store: LocalBlobStore) -> None:
    assert store.get(store.put(b"")) == b""


def test_put_leaves_no_temporary_files(store: LocalBlobStore) -> None:
    digests = {store.put(bytes([i]) * 1000) for i in range(5)}
    files = sorted(p for p in store.root.rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted(digests)
    assert not list(store.root.rglob(".tmp-*"))


def test_put_is_idempotent(store: LocalBlobStore) -> None:
    first = store.put(b"same bytes")
    path = store.root / first[:2] / first
    mtime = path.stat().st_mtime_ns
    second = store.put(b"same bytes")
    assert first == second
    assert path.stat().st_mtime_ns == mtime
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 1


def test_blob_files_are_private(store: LocalBlobStore) -> None:
    digest = store.put(b"secret weights")
    mode = (store.root / digest[:2] / digest).stat().st_mode
    assert stat.S_IMODE(mode) & 0o077 == 0
    assert stat.S_IMODE(store.root.stat().st_mode) & 0o077 == 0


def test_corrupted_blob_is_detected_on_get(store: LocalBlobStore) -> None:
    digest = store.put(b"original weights")
    path = store.root / digest[:2] / digest
    path.write_bytes(b"original weightz")
    with pytest.raises(BlobCorruptedError, match="does not match"):
        store.get(digest)


def test_truncated_blob_is_detected_on_get(store: LocalBlobStore) -> None:
    digest = store.put(b"original weights")
    (store.root / digest[:2] / digest).write_bytes(b"")
    with pytest.raises(BlobCorruptedError):
        store.get(digest)


def test_missing_blob_raises_corrupted(store: LocalBlobStore) -> None:
    with pytest.raises(BlobCorruptedError, match="missing"):
        store.get(hashlib.sha256(b"never stored").hexdigest())


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "abc",
        "A" * 64,
        "g" * 64,
        "0" * 63,
        "0" * 65,
        "../" + "0" * 61,
        "/etc/passwd".ljust(64, "0"),
    ],
)
def test_invalid_digest_is_rejected(store: LocalBlobStore, digest: str) -> None:
    with pytest.raises(BlobCorruptedError, match="not a sha256"):
        store.get(digest)
    with pytest.raises(BlobCorruptedError, match="not a sha256"):
        store.delete(digest)


def test_delete_removes_the_blob_and_tolerates_absence(store: LocalBlobStore) -> None:
    digest = store.put(b"to delete")
    store.delete(digest)
    with pytest.raises(BlobCorruptedError, match="missing"):
        store.get(digest)
    store.delete(digest)
    assert store.put(b"to delete") == digest
    assert store.get(digest) == b"to delete"


def test_store_reopens_existing_root(tmp_path: Path) -> None:
    digest = LocalBlobStore(tmp_path / "b").put(b"persisted")
    assert LocalBlobStore(tmp_path / "b").get(digest) == b"persisted"


def test_local_store_satisfies_the_protocol(store: LocalBlobStore) -> None:
    as_protocol: BlobStore = store
    assert as_protocol.get(as_protocol.put(b"x")) == b"x"
