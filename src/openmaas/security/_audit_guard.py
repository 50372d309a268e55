"""What the audit log accepts: ids, counts and short facts, never payloads or secrets."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "check_fields", "clean_details"]

_MAX_DETAILS_BYTES = 4096
_MAX_DETAILS_ITEMS = 50
# An OpenMaaS API key (``om_<12-char key id>_<secret>``; see keys.py) or its prefix, as a
# word of its own (so that ``custom_preprocessor_v2`` is not one).
_API_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])om_[a-z0-9]{12}_", re.IGNORECASE)
# Words (or two adjacent words joined) of a details key that name a credential.
_SECRET_WORDS = frozenset(
    {
        "apikey",
        "apikeys",
        "authorization",
        "credential",
        "credentials",
        "passwd",
        "password",
        "passwords",
        "privatekey",
        "secret",
        "secrets",
        "token",
    }
)
_FIELD_LIMITS = {"actor_tenant": 63, "actor_key_id": 32, "action": 50, "target": 200, "outcome": 20}


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- what may be logged ---------------------------------------------------------------------


def _is_secret_name(name: str) -> bool:
    """Whether a details key names a credential: ``client_secret``, ``apiKey``, ``token``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    words = [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]
    joined = set(words) | {a + b for a, b in itertools.pairwise(words)}
    return bool(joined & _SECRET_WORDS)


def _check_text(where: str, text: str) -> None:
    if _API_KEY_PATTERN.search(text):
        raise ValueError(
            f"audit {where} contains what looks like an API key ('om_...'); "
            "log the key id (actor_key_id), never the key"
        )


def _check_scalar(where: str, value: object) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"audit {where} is {value}; log only finite numbers")
        return
    if isinstance(value, str):
        _check_text(where, value)
        return
    raise ValueError(
        f"audit {where} is a {type(value).__name__}; details hold only JSON scalars "
        "(str, int, float, bool, None) or short lists and dicts of them"
    )


def _check_key(where: str, key: object) -> None:
    if not isinstance(key, str):
        raise ValueError(f"audit {where} has a non-string key {key!r}")
    _check_text(f"{where} key {key!r}", key)
    if _is_secret_name(key):
        raise ValueError(
            f"audit {where} has a key {key!r} that names a credential; "
            "never log secrets, passwords, tokens or API keys"
        )


def clean_details(details: Mapping[str, object] | None) -> dict[str, Any]:
    """A JSON copy of ``details``; ValueError if it is too big, nested or holds a secret."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ValueError(f"audit details must be a mapping, not {type(details).__name__}")
    if len(details) > _MAX_DETAILS_ITEMS:
        raise ValueError(f"audit details have {len(details)} keys; at most {_MAX_DETAILS_ITEMS}")
    for key, value in details.items():
        _check_key("details", key)
        where = f"details[{key!r}]"
        if isinstance(value, Mapping):
            if len(value) > _MAX_DETAILS_ITEMS:
                raise ValueError(f"audit {where} has more than {_MAX_DETAILS_ITEMS} keys")
            for inner_key, inner in value.items():
                _check_key(where, inner_key)
                _check_scalar(f"{where}[{inner_key!r}]", inner)
        elif isinstance(value, list):
            if len(value) > _MAX_DETAILS_ITEMS:
                raise ValueError(f"audit {where} has more than {_MAX_DETAILS_ITEMS} items")
            for index, inner in enumerate(value):
                _check_scalar(f"{where}[{index}]", inner)
        else:
            _check_scalar(where, value)
    text = canonical_json(details)
    if len(text.encode()) > _MAX_DETAILS_BYTES:
        raise ValueError(
            f"audit details are {len(text.encode())} bytes of JSON; at most "
            f"{_MAX_DETAILS_BYTES}: log ids and counts, not payloads"
        )
    cleaned: dict[str, Any] = json.loads(text)
    return cleaned


def check_fields(fields: Mapping[str, str]) -> None:
    for name, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f"audit {name} must be a str, not {type(value).__name__}")
        if len(value) > _FIELD_LIMITS[name]:
            raise ValueError(
                f"audit {name} is {len(value)} characters; at most {_FIELD_LIMITS[name]}"
            )
        _check_text(name, value)
