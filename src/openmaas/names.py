"""Rules for the names of tenants and models (they travel in URLs: keep them plain)."""

from __future__ import annotations

import re

from openmaas.errors import RequestValidationError

__all__ = [
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "check_alias_name",
    "check_model_name",
    "check_tenant_name",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"  # what the API schema states for every name
_NAME = re.compile(NAME_PATTERN)
# Path words of the model routes; a model or tenant named like them would be ambiguous
# (``/api/v1/models/t/grants`` lists the grants of model ``t``, never shows model ``t/grants``).
RESERVED_NAMES = frozenset(
    {"versions", "ready", "infer", "explain", "metadata", "health", "grants", "deployment"}
)


def _check(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RequestValidationError(
            f"{kind} name {name!r} is not valid: use 1-63 lowercase letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit (for example 'fraud-detector')",
            field="name",
        )
    if name in RESERVED_NAMES:
        raise RequestValidationError(
            f"{kind} name {name!r} is reserved; choose another name", field="name"
        )
    return name


def check_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise RequestValidationError."""
    return _check("tenant", name)


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise RequestValidationError."""
    return _check("model", name)


def check_alias_name(name: str) -> str:
    """Like a model name, but not all digits: a number always means a version."""
    _check("alias", name)
    if name.isdigit():
        raise RequestValidationError(
            f"alias {name!r} is a number, which would read as a version; use a word like 'prod'",
            field="alias",
        )
    return name
