"""Chunked AES-256-GCM envelopes: round trips, every tampering fails, nonces, bounded memory."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from openmaas.security import envelope
from openmaas.security.envelope import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    MAGIC,
    TAG_SIZE,
    EnvelopeError,
    decrypt,
    decrypt_stream,
    encrypt,
    encrypt_stream,
    is_envelope,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CONTEXT = b"tenant=acme;object=models/iris/1/model.onnx"
CHUNK = 64
RECORD = CHUNK + TAG_SIZE
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 17]


class LazySource:
    """A deterministic byte stream of ``size`` bytes, generated on read and hashed as it goes."""

    def __init__(self, size: int, *, seed: int = 0, max_read: int | None = None) -> None:
        block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 4099  # 131,168 bytes
        self._block = memoryview(block)
        self._size = size
        self._position = 0
        self._max_read = max_read
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._position
        size = left if size < 0 else min(size, left)
        if self._max_read is not None:
            size = min(size, self._max_read)
        parts = []
        while size:
            start = self._position % len(self._block)
            part = self._block[start : start + size]
            parts.append(part)
            self._position += len(part)
            size -= len(part)
        data = b"".join(parts)
        self.sha256.update(data)
        return data


class HashingSink:
    """Keeps only a count and a sha256 of what is written."""

    def __init__(self) -> None:
        self.count = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.count += len(data)
        self.sha256.update(data)
        return len(data)


def _plaintext(size: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(size))


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    """The header and the chunk records of a blob encrypted with ``CHUNK``."""
    body = blob[HEADER_SIZE:]
    return blob[:HEADER_SIZE], [body[i : i + RECORD] for i in range(0, len(body), RECORD)]


def _fails(blob: bytes, *, key: bytes = KEY, context: bytes = CONTEXT) -> str:
    with pytest.raises(EnvelopeError) as caught:
        decrypt(key, context, blob)
    return str(caught.value)


def _reference_chunks(
    key: bytes, context: bytes, blob: bytes
) -> list[tuple[bytes, bytes]]:  # (nonce, plaintext) per chunk
    """Decrypt with plain AESGCM from the documented format, independent of the module."""
    header = blob[:HEADER_SIZE]
    assert header[:6] == MAGIC
    chunk_size = int.from_bytes(header[6:10], "big")
    prefix = header[10:18]
    body = blob[HEADER_SIZE:]
    record = chunk_size + TAG_SIZE
    records = [body[i : i + record] for i in range(0, len(body), record)]
    assert TAG_SIZE <= len(records[-1]) < record  # the final chunk is always short
    chunks = []
    for index, sealed in enumerate(records):
        final = index == len(records) - 1
        nonce = prefix + index.to_bytes(4, "big")
        aad = (
            header
            + len(context).to_bytes(4, "big")
            + context
            + index.to_bytes(8, "big")
            + bytes([final])
        )
        chunks.append((nonce, AESGCM(key).decrypt(nonce, sealed, aad)))
    return chunks


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_bytes_round_trip(size: int) -> None:
    data = _plaintext(size)
    blob = encrypt(KEY, CONTEXT, data, chunk_size=CHUNK)
    assert decrypt(KEY, CONTEXT, blob) == data
    assert data not in blob or size < 4


@pytest.mark.parametrize("size", SIZES)
def test_stream_round_trip(size: int) -> None:
    data = _plaintext(size)
    encrypted = io.BytesIO()
    written = encrypt_stream(KEY, CONTEXT, io.BytesIO(data), encrypted, chunk_size=CHUNK)
    assert written == len(encrypted.getvalue())
    encrypted.seek(0)
    decrypted = io.BytesIO()
    assert decrypt_stream(KEY, CONTEXT, encrypted, decrypted) == size
    assert decrypted.getvalue() == data


@pytest.mark.parametrize("size", SIZES)
def test_layout_matches_the_documented_format(size: int) -> None:
    data = _plaintext(size)
    blob = encrypt(KEY, CONTEXT, data, chunk_size=CHUNK)
    full, rest = divmod(size, CHUNK)
    assert len(blob) == HEADER_SIZE + full * RECORD + rest + TAG_SIZE
    assert int.from_bytes(blob[6:10], "big") == CHUNK
    chunks = _reference_chunks(KEY, CONTEXT, blob)
    assert len(chunks) == full + 1  # the final chunk is always short, possibly empty
    assert b"".join(plain for _, plain in chunks) == data


def test_short_reads_are_retried() -> None:
    size = 10 * CHUNK + 5
    blob = io.BytesIO()
    source = LazySource(size, max_read=7)
    encrypt_stream(KEY, CONTEXT, source, blob, chunk_size=CHUNK)
    sink = HashingSink()
    assert decrypt_stream(KEY, CONTEXT, _ShortReader(blob.getvalue()), sink) == size
    assert sink.sha256.digest() == source.sha256.digest()


class _ShortReader(io.RawIOBase):
    """A raw stream that hands out at most 5 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        chunk = self._data.read(min(5, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_default_chunk_size_and_empty_context() -> None:
    data = os.urandom(DEFAULT_CHUNK_SIZE + 3)
    blob = encrypt(KEY, b"", data)
    assert int.from_bytes(blob[6:10], "big") == DEFAULT_CHUNK_SIZE
    assert decrypt(KEY, b"", blob) == data


def test_is_envelope() -> None:
    assert is_envelope(encrypt(KEY, CONTEXT, b"x")[:16])
    assert is_envelope(MAGIC)
    assert not is_envelope(MAGIC[:-1])
    assert not is_envelope(b"PK\x03\x04 a zip file")
    assert not is_envelope(b"")


def test_programming_errors_are_value_errors() -> None:
    for key in (b"", bytes(16), bytes(31), bytes(33)):
        with pytest.raises(ValueError, match="32 bytes"):
            encrypt(key, CONTEXT, b"data")
        with pytest.raises(ValueError, match="32 bytes"):
            decrypt(key, CONTEXT, encrypt(KEY, CONTEXT, b"data"))
    for chunk_size in (0, -1, envelope.MAX_CHUNK_SIZE + 1):
        with pytest.raises(ValueError, match="chunk_size"):
            encrypt(KEY, CONTEXT, b"data", chunk_size=chunk_size)


def test_refuses_more_chunks_than_the_nonce_counter_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    four_chunks = encrypt(KEY, CONTEXT, _plaintext(3 * CHUNK), chunk_size=CHUNK)
    monkeypatch.setattr(envelope, "MAX_CHUNKS", 4)
    assert decrypt(KEY, CONTEXT, four_chunks) == _plaintext(3 * CHUNK)
    assert encrypt(KEY, CONTEXT, _plaintext(4 * CHUNK - 1), chunk_size=CHUNK)
    monkeypatch.setattr(envelope, "MAX_CHUNKS", 3)
    with pytest.raises(ValueError, match="too large"):
        encrypt(KEY, CONTEXT, _plaintext(3 * CHUNK), chunk_size=CHUNK)
    assert "too many chunks" in _fails(four_chunks)


# --- tampering ---------------------------------------------------------------------------


def _blob(size: int = 5 * CHUNK + 17) -> bytes:
    return encrypt(KEY, CONTEXT, _plaintext(size), chunk_size=CHUNK)


def test_every_truncation_fails() -> None:
    for size in (0, CHUNK, 3 * CHUNK + 10):
        blob = _blob(size)
        for cut in range(len(blob)):
            _fails(blob[:cut])


def test_truncation_at_a_chunk_boundary_says_truncated() -> None:
    header, records = _split(_blob())
    assert "truncated" in _fails(header + b"".join(records[:3]))
    assert "truncated" in _fails(header)
    exact = encrypt(KEY, CONTEXT, _plaintext(2 * CHUNK), chunk_size=CHUNK)
    assert "truncated" in _fails(exact[:-TAG_SIZE])  # drop the empty final chunk
    assert "truncated" in _fails(MAGIC + b"\x00")


def test_truncation_mid_chunk_fails() -> None:
    header, records = _split(_blob())
    assert "chunk 2" in _fails(header + b"".join(records[:2]) + records[2][:40])
    assert "chunk 2" in _fails(header + b"".join(records[:2]) + records[2][:5])
    assert "chunk 5" in _fails(_blob()[:-1])


def test_dropped_swapped_and_duplicated_chunks_fail() -> None:
    header, records = _split(_blob())
    assert len(records) == 6
    dropped = records[:2] + records[3:]
    swapped = [records[0], records[2], records[1], *records[3:]]
    duplicated = [*records[:3], records[2], *records[3:]]
    final_moved = [*records[:4], records[5], records[4]]
    for chunks in (dropped, swapped, duplicated, final_moved, records[1:]):
        _fails(header + b"".join(chunks))
    assert "tampered chunk 2" in _fails(header + b"".join(dropped))


def test_chunks_from_another_object_fail() -> None:
    header_a, records_a = _split(_blob())
    header_b, records_b = _split(_blob())  # same key, context and length
    assert header_a != header_b
    _fails(header_a + b"".join([records_a[0], records_b[1], *records_a[2:]]))
    _fails(header_b + b"".join(records_a))
    _fails(header_a + b"".join([*records_a[:-1], records_b[-1]]))
    other = encrypt(KEY, b"tenant=evil", _plaintext(5 * CHUNK + 17), chunk_size=CHUNK)
    _fails(header_a + other[HEADER_SIZE:])


@settings(max_examples=200, database=None, deadline=None)
@given(data=st.data())
def test_any_bit_flip_fails(data: st.DataObject) -> None:
    size = data.draw(st.sampled_from([0, 1, CHUNK, 3 * CHUNK + 5]))
    blob = bytearray(_blob(size))
    position = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[position // 8] ^= 1 << (position % 8)
    _fails(bytes(blob))


def test_wrong_key_or_context_fails() -> None:
    blob = _blob()
    assert "wrong key or context" in _fails(blob, key=OTHER_KEY)
    assert "wrong key or context" in _fails(blob, context=CONTEXT + b"x")
    assert "wrong key or context" in _fails(blob, context=b"")
    empty = encrypt(KEY, CONTEXT, b"")
    _fails(empty, key=OTHER_KEY)
    _fails(empty, context=b"other")


def test_changed_header_fails() -> None:
    blob = _blob()
    for chunk_size in (1, CHUNK // 2, CHUNK - 1, CHUNK + 1, 2 * CHUNK, DEFAULT_CHUNK_SIZE):
        _fails(blob[:6] + chunk_size.to_bytes(4, "big") + blob[10:])
    assert "chunk size" in _fails(blob[:6] + bytes(4) + blob[10:])
    assert "chunk size" in _fails(blob[:6] + b"\xff\xff\xff\xff" + blob[10:])
    assert "bad magic" in _fails(b"OMENC\x02" + blob[6:])
    assert "bad magic" in _fails(b"plain old bytes, not encrypted at all")
    _fails(blob[:10] + bytes(8) + blob[18:])  # another nonce prefix


def test_appended_garbage_fails() -> None:
    for size in (0, CHUNK, 3 * CHUNK + 5):
        blob = _blob(size)
        for garbage in (b"\x00", os.urandom(TAG_SIZE), os.urandom(RECORD), os.urandom(200)):
            _fails(blob + garbage)
        _, records = _split(blob)
        _fails(blob + records[0])


def test_failed_decrypt_stream_only_wrote_authenticated_chunks() -> None:
    data = _plaintext(5 * CHUNK + 17)
    header, records = _split(encrypt(KEY, CONTEXT, data, chunk_size=CHUNK))
    records[3] = records[3][:-1] + bytes([records[3][-1] ^ 1])
    sink = io.BytesIO()
    with pytest.raises(EnvelopeError, match="chunk 3"):
        decrypt_stream(KEY, CONTEXT, io.BytesIO(header + b"".join(records)), sink)
    assert sink.getvalue() == data[: 3 * CHUNK]


# --- nonces ------------------------------------------------------------------------------


def test_no_key_nonce_pair_is_ever_reused() -> None:
    """Many encryptions under one key: every chunk nonce (as actually used) is new."""
    seen: set[bytes] = set()
    count = 0

    @settings(max_examples=300, database=None, deadline=None)
    @given(
        sizes=st.lists(st.integers(0, 6 * 32), min_size=1, max_size=8),
        chunk_size=st.sampled_from([16, 32, 33]),
    )
    def encrypt_many(sizes: list[int], chunk_size: int) -> None:
        nonlocal count
        for size in sizes:
            data = os.urandom(size)
            blob = encrypt(KEY, CONTEXT, data, chunk_size=chunk_size)
            chunks = _reference_chunks(KEY, CONTEXT, blob)  # proves which nonces were used
            assert b"".join(plain for _, plain in chunks) == data
            for nonce, _ in chunks:
                assert nonce not in seen
                seen.add(nonce)
                count += 1

    encrypt_many()
    assert len(seen) == count > 300


def test_nonce_prefixes_are_random() -> None:
    prefixes = {encrypt(KEY, CONTEXT, b"")[10:HEADER_SIZE] for _ in range(20_000)}
    assert len(prefixes) == 20_000


# --- memory and size ---------------------------------------------------------------------


def _pipe_round_trip(size: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[bytes, bytes]:
    """Encrypt lazily generated data in a thread into a pipe and decrypt it from the other end.

    Returns the sha256 of the plaintext and of what decryption produced; nothing is stored.
    """
    source = LazySource(size)
    sink = HashingSink()
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                encrypt_stream(KEY, CONTEXT, source, pipe, chunk_size=chunk_size)
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        with open(read_fd, "rb", buffering=0) as pipe:  # raw: reads come back short
            written = decrypt_stream(KEY, CONTEXT, pipe, sink)
    finally:
        producer.join()
    assert not errors, errors
    assert written == sink.count == size
    return source.sha256.digest(), sink.sha256.digest()


def _peak_memory(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded() -> None:
    size = 64 << 20
    digests: list[tuple[bytes, bytes]] = []
    peak = _peak_memory(lambda: digests.append(_pipe_round_trip(size)))
    plain, decrypted = digests[0]
    assert decrypted == plain
    assert peak < 12 * DEFAULT_CHUNK_SIZE, f"peak {peak / 2**20:.1f} MiB for a 64 MiB stream"


@pytest.mark.slow
def test_more_than_2_gib_streams_through() -> None:
    """Past what one AESGCM call accepts (2**31-1 bytes); nightly: scripts/test -m slow."""
    size = (2 << 30) + (1 << 20)
    assert size > 2**31
    started = time.perf_counter()
    plain, decrypted = _pipe_round_trip(size)
    assert decrypted == plain
    print(f"2 GiB + 1 MiB round trip in {time.perf_counter() - started:.1f} s")
