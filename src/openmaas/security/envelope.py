"""Streaming, chunked AES-256-GCM for blobs of any size (encryption at rest).

One ``AESGCM`` call cannot take more than 2**31-1 bytes, and a blob should not have to fit in
memory, so the plaintext is cut into chunks that are sealed one by one::

    header = MAGIC (6) || chunk_size (4, big-endian) || nonce_prefix (8, random per blob)
    chunk i = AES-256-GCM(key, nonce_i, plaintext_i, aad_i) = ciphertext_i || tag_i (16)
    nonce_i = nonce_prefix || i (4, big-endian)
    aad_i   = header || len(context) (4) || context || i (8, big-endian) || final (1)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last one holds
fewer (possibly none: empty input, or input an exact multiple of ``chunk_size``) and is sealed
with ``final = 1``. Binding the header, the context, the index and the final flag into every
tag makes a truncated, reordered, duplicated, dropped, bit-flipped or transplanted chunk, a
changed header, a wrong key and a wrong context all fail with :class:`EnvelopeError`.

The nonce prefix is random (64 bits), so use a fresh data key per object (see
:mod:`openmaas.security.keywrap`) rather than one key for very many blobs.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "TAG_SIZE",
    "EnvelopeError",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "is_envelope",
]

MAGIC = b"OMENC\x01"
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 26  # bounds what a (forged) header can make decrypt allocate
MAX_CHUNKS = 1 << 32  # the chunk index is 4 bytes of the nonce
KEY_SIZE = 32
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 8
HEADER_SIZE = len(MAGIC) + 4 + NONCE_PREFIX_SIZE


class EnvelopeError(Exception):
    """The data is not a valid envelope for this key and context (bad, truncated, tampered)."""


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ValueError(f"an envelope key is {KEY_SIZE} bytes (got {size}); use keywrap.new_key()")


def _check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE} (got {chunk_size})")


def _aad_prefix(header: bytes, context: bytes) -> bytes:
    if len(context) >= 1 << 32:
        raise ValueError("context must be shorter than 2**32 bytes")
    return header + len(context).to_bytes(4, "big") + context


def _chunk_aad(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _chunk_nonce(nonce_prefix: bytes, index: int) -> bytes:
    return nonce_prefix + index.to_bytes(4, "big")


def _read_exact(source: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end of ``source`` (short reads are retried)."""
    first = source.read(size)
    if len(first) >= size or not first:
        return first
    parts = [first]
    missing = size - len(first)
    while missing:
        part = source.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def encrypt_stream(
    key: bytes,
    context: bytes,
    source: BinaryIO,
    sink: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt ``source`` to ``sink`` chunk by chunk; returns the number of bytes written.

    ``context`` (tenant, object id, ...) must be given again to decrypt.
    """
    _check_key(key)
    _check_chunk_size(chunk_size)
    nonce_prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = MAGIC + chunk_size.to_bytes(4, "big") + nonce_prefix
    aad_prefix = _aad_prefix(header, context)
    aead = AESGCM(key)
    sink.write(header)
    written = len(header)
    index = 0
    while True:
        if index >= MAX_CHUNKS:
            raise ValueError(
                f"input too large: more than {MAX_CHUNKS} chunks; use a larger chunk_size"
            )
        plaintext = _read_exact(source, chunk_size)
        final = len(plaintext) < chunk_size
        sealed = aead.encrypt(
            _chunk_nonce(nonce_prefix, index), plaintext, _chunk_aad(aad_prefix, index, final)
        )
        sink.write(sealed)
        written += len(sealed)
        if final:
            return written
        index += 1


def _read_header(source: BinaryIO) -> tuple[bytes, int, bytes]:
    header = _read_exact(source, HEADER_SIZE)
    if header[: len(MAGIC)] != MAGIC[: len(header)]:
        raise EnvelopeError("not an OpenMaaS envelope (bad magic)")
    if len(header) < HEADER_SIZE:
        raise EnvelopeError(f"truncated header ({len(header)} of {HEADER_SIZE} bytes)")
    chunk_size = int.from_bytes(header[len(MAGIC) : len(MAGIC) + 4], "big")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError(f"bad header: chunk size {chunk_size} is out of range")
    return header, chunk_size, header[len(MAGIC) + 4 :]


def decrypt_stream(key: bytes, context: bytes, source: BinaryIO, sink: BinaryIO) -> int:
    """Decrypt ``source`` to ``sink``; returns the number of plaintext bytes written.

    Only authenticated chunks reach ``sink``, but a failure after the first chunk leaves the
    chunks before it there: write to a temporary place and keep it only when this returns.
    """
    _check_key(key)
    header, chunk_size, nonce_prefix = _read_header(source)
    aad_prefix = _aad_prefix(header, context)
    aead = AESGCM(key)
    record_size = chunk_size + TAG_SIZE
    written = 0
    index = 0
    while True:
        # A full-size record is never the last one (the last holds < chunk_size bytes), so its
        # length alone says whether more must follow; reading it whole is the look-ahead.
        record = _read_exact(source, record_size)
        if not record:
            raise EnvelopeError(f"truncated: the final chunk is missing after {index} chunk(s)")
        if len(record) < TAG_SIZE:
            raise EnvelopeError(f"truncated chunk {index} ({len(record)} bytes)")
        if index >= MAX_CHUNKS:
            raise EnvelopeError(f"too many chunks (more than {MAX_CHUNKS})")
        final = len(record) < record_size
        try:
            plaintext = aead.decrypt(
                _chunk_nonce(nonce_prefix, index), record, _chunk_aad(aad_prefix, index, final)
            )
        except InvalidTag:
            if index == 0:
                raise EnvelopeError(
                    "chunk 0 failed authentication: wrong key or context, or tampered data"
                ) from None
            raise EnvelopeError(
                f"tampered chunk {index}: failed authentication "
                "(modified, reordered, dropped or truncated data)"
            ) from None
        sink.write(plaintext)
        written += len(plaintext)
        if final:
            return written
        index += 1


def encrypt(
    key: bytes, context: bytes, data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> bytes:
    """Encrypt ``data`` in memory (the envelope format of :func:`encrypt_stream`)."""
    sink = io.BytesIO()
    encrypt_stream(key, context, io.BytesIO(data), sink, chunk_size=chunk_size)
    return sink.getvalue()


def decrypt(key: bytes, context: bytes, blob: bytes) -> bytes:
    """Decrypt an in-memory envelope; raises :class:`EnvelopeError` and returns nothing if bad."""
    sink = io.BytesIO()
    decrypt_stream(key, context, io.BytesIO(blob), sink)
    return sink.getvalue()


def is_envelope(prefix: bytes) -> bool:
    """Whether data starting with ``prefix`` looks like an envelope (magic only, no key)."""
    return prefix.startswith(MAGIC)
