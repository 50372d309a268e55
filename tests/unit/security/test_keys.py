"""API key format: prefix, length, checksum against typos, and the keyed hash."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmaas.errors import InvalidApiKeyFormatError
from openmaas.security.keys import (
    ParsedKey,
    generate_api_key,
    hash_secret,
    parse_api_key,
    secrets_match,
)

KEY_LENGTH = 3 + 12 + 1 + 43 + 6
# Every character a typo could plausibly produce in a copied key.
TYPO_CHARACTERS = string.ascii_letters + string.digits + "_-. "


def test_key_format() -> None:
    token, parts = generate_api_key()
    assert token.startswith("om_")
    assert len(token) == KEY_LENGTH
    assert token[3:15] == parts.key_id
    assert token[15] == "_"
    assert token[16:59] == parts.secret
    assert parts.key_id.isalnum()
    assert parts.key_id == parts.key_id.lower()
    assert parts.secret.isalnum()
    assert token.isascii()


def test_parse_round_trips() -> None:
    token, parts = generate_api_key()
    assert parse_api_key(token) == parts


def test_keys_are_unique() -> None:
    tokens = [generate_api_key()[0] for _ in range(200)]
    assert len(set(tokens)) == 200
    assert len({parse_api_key(t).key_id for t in tokens}) == 200


def test_every_single_character_typo_is_rejected() -> None:
    token, _ = generate_api_key()
    for position, original in enumerate(token):
        for replacement in TYPO_CHARACTERS:
            if replacement == original:
                continue
            typo = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(InvalidApiKeyFormatError):
                parse_api_key(typo)


def test_swapped_neighbours_are_rejected() -> None:
    token, _ = generate_api_key()
    for position in range(len(token) - 1):
        a, b = token[position], token[position + 1]
        if a == b:
            continue
        swapped = token[:position] + b + a + token[position + 2 :]
        with pytest.raises(InvalidApiKeyFormatError, match=r"checksum|malformed"):
            parse_api_key(swapped)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "x",
        lambda t: t[1:],
        lambda t: "",
        lambda t: "om_",
        lambda t: "OM_" + t[3:],
        lambda t: "sk_" + t[3:],
        lambda t: " " + t[:-1],
        lambda t: t[:20],
    ],
    ids=[
        "truncated",
        "extended",
        "no-o",
        "empty",
        "prefix-only",
        "uppercase-prefix",
        "other-prefix",
        "leading-space",
        "half",
    ],
)
def test_wrong_length_or_prefix_is_rejected(mangle: object) -> None:
    token, _ = generate_api_key()
    assert callable(mangle)
    with pytest.raises(InvalidApiKeyFormatError, match="malformed"):
        parse_api_key(mangle(token))


def test_error_message_says_what_to_do() -> None:
    with pytest.raises(InvalidApiKeyFormatError) as caught:
        parse_api_key("om_short")
    assert "om_" in caught.value.detail
    assert str(KEY_LENGTH) in caught.value.detail


@settings(max_examples=50, database=None, deadline=None)
@given(data=st.data())
def test_generated_keys_parse_back_and_reject_any_typo(data: st.DataObject) -> None:
    token, parts = generate_api_key()
    assert parse_api_key(token) == parts
    assert f"om_{parts.key_id}_{parts.secret}" == token[:-6]
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(TYPO_CHARACTERS).filter(lambda c: c != token[position]),
        label="replacement",
    )
    with pytest.raises(InvalidApiKeyFormatError):
        parse_api_key(token[:position] + replacement + token[position + 1 :])


@settings(max_examples=100, database=None, deadline=None)
@given(token=st.text(alphabet=st.sampled_from(TYPO_CHARACTERS), max_size=80))
def test_arbitrary_text_is_rejected_with_the_format_error(token: str) -> None:
    with pytest.raises(InvalidApiKeyFormatError):
        parse_api_key("om_" + token)


def test_hash_depends_on_the_server_secret() -> None:
    _, parts = generate_api_key()
    first = hash_secret(b"server-secret-one", parts)
    second = hash_secret(b"server-secret-two", parts)
    assert first != second
    assert first == hash_secret(b"server-secret-one", parts)
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_hash_depends_on_key_id_and_secret() -> None:
    _, parts = generate_api_key()
    base = hash_secret(b"s", parts)
    assert hash_secret(b"s", ParsedKey(parts.key_id, parts.secret[::-1])) != base
    assert hash_secret(b"s", ParsedKey(parts.key_id[::-1], parts.secret)) != base


def test_hash_never_contains_the_secret() -> None:
    _, parts = generate_api_key()
    assert parts.secret not in hash_secret(b"s", parts)


def test_secrets_match() -> None:
    _, parts = generate_api_key()
    digest = hash_secret(b"s", parts)
    assert secrets_match(digest, hash_secret(b"s", parts))
    assert not secrets_match(digest, hash_secret(b"t", parts))
    assert not secrets_match(digest, "")
