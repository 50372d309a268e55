"""Model cards: parse (JSON or Markdown with YAML front matter), validate, render and hash.

A card has the nine sections of Mitchell et al. 2019 (``card_schema.SECTIONS``); each holds
a Markdown ``text`` and optional structured fields. In the Markdown form, the front matter
(``yaml.safe_load`` only) holds the structured fields as ``{section: {field: value}}`` and
each level-2 heading (``## Intended use``) starts a section whose text runs to the next one.
Every problem is an ``InvalidModelCardError`` whose detail names the field and what to fix.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from openmaas.errors import InvalidModelCardError
from openmaas.registry.card_markdown import check_text, clean_text, parse_markdown, render
from openmaas.registry.card_schema import (
    CARD_SCHEMA,
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    SECTION_HINTS,
    SECTION_TITLES,
    SECTIONS,
)

__all__ = [
    "CARD_SCHEMA",
    "MAX_CARD_BYTES",
    "NOT_DOCUMENTED",
    "SECTIONS",
    "card_hash",
    "default_card",
    "parse_card",
    "render_markdown",
    "validate_card",
    "with_explanation_quality",
]

MAX_CARD_BYTES = 256 * 1024
NOT_DOCUMENTED = "Not documented by the publisher."
_MAX_VALUES = 50_000  # strings, numbers, lists and objects in one card (YAML aliases count)
_MAX_DEPTH = 32
_VALIDATOR = jsonschema.Draft202012Validator(
    CARD_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def _fail(message: str) -> InvalidModelCardError:
    return InvalidModelCardError(message, field="card")


def parse_card(data: bytes) -> dict[str, Any]:
    """The card in ``data`` (a JSON object, or Markdown with YAML front matter), validated."""
    if len(data) > MAX_CARD_BYTES:
        raise _fail(f"card is {len(data)} bytes; at most {MAX_CARD_BYTES} are accepted")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise _fail(f"card is not UTF-8 text (bad byte at offset {error.start})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise _fail("card is empty: send a JSON object or Markdown with the nine sections")
    if text.lstrip()[:1] in ("{", "["):
        try:
            loaded = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as error:
            raise _fail(
                f"card is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
            ) from None
        except (ValueError, RecursionError) as error:
            raise _fail(f"card is not valid JSON: {_short(error)}") from None
        if not isinstance(loaded, dict):
            raise _fail("a JSON card must be an object with the nine sections as keys")
        return validate_card(loaded)
    return validate_card(parse_markdown(text))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a card can hold")


def validate_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised, schema-valid copy of ``card``, or ``InvalidModelCardError``.

    YAML dates become ISO strings and each text loses its leading and trailing blank lines.
    """
    plain = _Plain().convert(card, "card", 0)
    if not isinstance(plain, dict):
        raise _fail("card must be an object with the nine sections as keys")
    errors = list(_VALIDATOR.iter_errors(plain))
    if errors:
        raise _fail(_describe(min(errors, key=_error_rank)))
    for section in SECTIONS:
        text = clean_text(plain[section]["text"])
        check_text(text, f"card.{section}.text")
        plain[section]["text"] = text
    return plain


def render_markdown(card: Mapping[str, Any]) -> str:
    """``card`` (valid) as Markdown with YAML front matter; ``parse_card`` reads it back."""
    return render(card)


def card_hash(card: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the card's canonical JSON: sorted keys, compact, UTF-8."""
    canonical = json.dumps(
        card, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_DETAIL_FIELDS = {
    "version": 100,
    "type": 1_000,
    "license": 200,
    "contact": 1_000,
    "citation": 5_000,
}


def default_card(name: str, description: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """A valid card for a version published without one: every section says that the
    publisher did not document it; model details come from ``name``, ``description`` and
    ``facts`` (``version``, ``date``, ``type``, ``license``, ``authors``, ``contact`` and
    ``citation`` become fields; any other fact is listed in the text)."""
    description = description or ""  # a model may have none
    details: dict[str, Any] = {"name": _clip(name, 200) or "unnamed"}
    others: list[str] = []
    for key, value in facts.items():
        if value is None or (isinstance(value, str | list | tuple | dict) and not value):
            continue
        if key in _DETAIL_FIELDS:
            details[key] = _clip(str(value), _DETAIL_FIELDS[key])
        elif key == "date" and (date := _iso_date(value)) is not None:
            details["date"] = date
        elif key == "authors" and isinstance(value, list | tuple):
            details["authors"] = [_clip(str(author), 200) for author in value[:200]]
        elif len(others) < 50:
            others.append(f"- {_clip(_fact(str(key)), 100)}: {_clip(_fact(value), 500)}")
    lines = []
    if description.strip():  # quoted: its headings and code fences stay inside the quote
        quoted = (f"> {line}".rstrip() for line in _clip(description, 5_000).splitlines())
        lines.append("The publisher's description:\n\n" + "\n".join(quoted))
    if others:
        lines.append("Recorded by OpenMaaS when the version was published:\n\n" + "\n".join(others))
    lines.append(
        f"{NOT_DOCUMENTED} OpenMaaS wrote this card from the version's description and the "
        "facts it records at publishing; the publisher gave no model card."
    )
    card: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for section in SECTIONS:
        hint = SECTION_HINTS[section]
        card[section] = {"text": f"{NOT_DOCUMENTED} This section would describe {hint}."}
    card["model_details"] = {**details, "text": _clip("\n\n".join(lines), MAX_TEXT_CHARS)}
    return validate_card(card)


def with_explanation_quality(card: Mapping[str, Any], quality: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``card`` whose ``quantitative_analyses.explanation_quality`` is ``quality``."""
    result: dict[str, Any] = copy.deepcopy(dict(card))
    section = dict(result["quantitative_analyses"])
    section["explanation_quality"] = copy.deepcopy(dict(quality))
    result["quantitative_analyses"] = section
    return result


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fact(value: object) -> str:
    """A fact on one line: lists of plain values comma-separated, others as compact JSON."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        text = ", ".join(str(v) for v in value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return " ".join(text.split())


def _iso_date(value: object) -> str | None:
    if isinstance(value, datetime.datetime):
        return value.date().isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            return None
    return None


class _Plain:
    """Turns parsed YAML or JSON into plain JSON values, within size and depth limits."""

    def __init__(self) -> None:
        self.left = _MAX_VALUES

    def convert(self, value: object, path: str, depth: int) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _fail(f"card is too large: more than {_MAX_VALUES} values")
        if depth > _MAX_DEPTH:
            raise _fail(f"{path} nests deeper than {_MAX_DEPTH} levels")
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _fail(f"{path} must be a finite number")
            return value
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(f"{path} holds an unpaired surrogate (not valid Unicode)") from None
            return value
        if isinstance(value, datetime.datetime | datetime.date):
            return value.isoformat()
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _fail(f"{path} has a key {key!r} that is not a string")
                result[key] = self.convert(item, f"{path}.{key}", depth + 1)
            return result
        if isinstance(value, list | tuple):
            return [self.convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        raise _fail(f"{path} holds a {type(value).__name__}, which a card cannot store")


def _short(error: BaseException) -> str:
    return str(error)[:200] or type(error).__name__


def _path(parts: list[Any]) -> str:
    return "card" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _full_path(error: jsonschema.ValidationError) -> list[Any]:
    """The error's path, ending in the missing property for a ``required`` error."""
    parts = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [key for key in error.validator_value if key not in error.instance]
        parts.append(missing[0] if missing else "?")
    return parts


def _error_rank(error: jsonschema.ValidationError) -> tuple[int, list[str]]:
    """Unknown sections first, then by section order and path: deterministic and readable."""
    parts = _full_path(error)
    if not parts:
        return (-1, [])
    first = parts[0]
    rank = SECTIONS.index(first) if first in SECTIONS else len(SECTIONS)
    return (rank, [f"{part:08d}" if isinstance(part, int) else str(part) for part in parts[1:]])


def _describe(error: jsonschema.ValidationError) -> str:
    """What is wrong and what to do, naming the field (``card.metrics.text``)."""
    parts = _full_path(error)
    where = _path(parts)
    kind, limit, value = error.validator, error.validator_value, error.instance
    section = parts[0] if parts and parts[0] in SECTIONS else None
    if kind == "required" and len(parts) == 1 and section is not None:
        return (
            f"{where} is required: add a '## {SECTION_TITLES[section]}' section that "
            f"describes {SECTION_HINTS[section]}"
        )
    if (
        section is not None
        and parts[1:] == ["text"]
        and kind in ("required", "minLength", "pattern")
    ):
        state = "is required" if kind == "required" else "is empty"
        return f"{where} {state}: describe {SECTION_HINTS[section]}"
    if kind == "required":
        return f"{where} is required"
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(key for key in value if key not in known)
        if not parts:
            return (
                f"card has an unknown section {extra[0]!r}: the sections are "
                f"{', '.join(SECTIONS)} (and schema_version)"
            )
        return f"{where} has an unknown field {extra[0]!r}: its fields are {', '.join(known)}"
    if kind == "type":
        if value is None:
            return f"{where} is empty: fill it in or remove it"
        expected = limit if isinstance(limit, str) else " or ".join(limit)
        return f"{where} must be of type {expected}, not {_json_type(value)}"
    messages = {
        "maxLength": f"{where} is too long: at most {limit} characters",
        "minLength": f"{where} must not be empty",
        "pattern": f"{where} must not be blank",
        "maxItems": f"{where} has too many items: at most {limit}",
        "maxProperties": f"{where} has too many fields: at most {limit}",
        "minimum": f"{where} must be at least {limit}",
        "format": f"{where} must be a date written YYYY-MM-DD, such as 2024-05-31",
        "const": f"{where} must be {limit!r}",
        "anyOf": f"{where} must be a whole number of examples or a short text",
    }
    return messages.get(kind, f"{where} does not match the card schema ({kind})")


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number"}
    return names.get(type(value), type(value).__name__)
