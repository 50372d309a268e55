"""API key format: ``om_<key id>_<256-bit secret><checksum>``, stored only as a keyed hash.

The key id is public (it names the key in lists and logs); the secret is shown once. The
checksum lets a typo be rejected without touching the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

from openmaas.errors import InvalidApiKeyFormatError

__all__ = ["ParsedKey", "generate_api_key", "hash_secret", "parse_api_key", "secrets_match"]

PREFIX = "om_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_ID_LEN = 12
_SECRET_LEN = 43  # 62**43 > 2**256
_CHECKSUM_LEN = 6


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, rest = divmod(value, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


@dataclass(frozen=True)
class ParsedKey:
    """The two parts of an API key that the server looks at."""

    key_id: str
    secret: str


def generate_api_key() -> tuple[str, ParsedKey]:
    """A fresh key: the full token (show it once) and its parts."""
    key_id = "".join(secrets.choice(_ALPHABET[:36]).lower() for _ in range(_KEY_ID_LEN))
    secret = _base62(secrets.randbits(256), _SECRET_LEN)
    body = f"{PREFIX}{key_id}_{secret}"
    return body + _checksum(body), ParsedKey(key_id, secret)


def parse_api_key(token: str) -> ParsedKey:
    """Split a token into key id and secret; raise InvalidApiKeyFormatError if malformed."""
    expected_len = len(PREFIX) + _KEY_ID_LEN + 1 + _SECRET_LEN + _CHECKSUM_LEN
    if not token.startswith(PREFIX) or len(token) != expected_len:
        raise InvalidApiKeyFormatError(
            "the API key is malformed: OpenMaaS keys start with 'om_' and are "
            f"{expected_len} characters long; copy the whole key as it was shown at creation"
        )
    body, checksum = token[:-_CHECKSUM_LEN], token[-_CHECKSUM_LEN:]
    if not hmac.compare_digest(_checksum(body), checksum):
        raise InvalidApiKeyFormatError(
            "the API key's checksum does not match: it was mistyped or truncated"
        )
    key_id, _, secret = body[len(PREFIX) :].partition("_")
    return ParsedKey(key_id=key_id, secret=secret)


def hash_secret(server_secret: bytes, key: ParsedKey) -> str:
    """The keyed hash (HMAC-SHA256) stored instead of the secret."""
    message = f"{key.key_id}:{key.secret}".encode()
    return hmac.new(server_secret, message, hashlib.sha256).hexdigest()


def secrets_match(stored_hash: str, candidate_hash: str) -> bool:
    """Constant-time comparison of two keyed hashes."""
    return hmac.compare_digest(stored_hash.encode(), candidate_hash.encode())
