"""The Markdown form of a model card: YAML front matter, then one ``## `` section each.

Headings are ATX headings (``## Metrics``) outside fenced code blocks; a level-2 heading
starts a section and is matched to one of the nine case-insensitively, with "&" read as
"and", leading numbers ("2. Metrics") and punctuation ignored and a few singular or plural
variants accepted. Level-1 headings before the first section (the title) are skipped. A
section's text may hold any Markdown but a level-2 heading (use ``###`` inside a section).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml  # type: ignore[import-untyped]

from openmaas.errors import InvalidModelCardError
from openmaas.registry.card_schema import SECTION_TITLES, SECTIONS

__all__ = ["check_text", "clean_text", "parse_markdown", "render"]

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}(#{1,2})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_ALIASES = {
    "model_details": ("model details", "model detail"),
    "intended_use": ("intended use", "intended uses"),
    "factors": ("factors", "factor"),
    "metrics": ("metrics", "metric"),
    "evaluation_data": ("evaluation data", "evaluation dataset", "evaluation datasets"),
    "training_data": ("training data", "training dataset", "training datasets"),
    "quantitative_analyses": ("quantitative analyses", "quantitative analysis"),
    "ethical_considerations": ("ethical considerations", "ethical consideration"),
    "caveats_and_recommendations": ("caveats and recommendations", "caveat and recommendations"),
}


def _normalise(title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", title.lower().replace("&", " and ")).split()
    while words and words[0].isdigit():  # "2. Metrics", "3.1 Factors"
        words.pop(0)
    return " ".join(words)


_HEADINGS = {
    _normalise(name): section
    for section, names in _ALIASES.items()
    for name in (*names, section, SECTION_TITLES[section])
}
_VALID = ", ".join(f"'## {SECTION_TITLES[section]}'" for section in SECTIONS)


def _fail(message: str) -> InvalidModelCardError:
    return InvalidModelCardError(message, field="card")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def clean_text(text: str) -> str:
    """``text`` with Unix line ends and without leading or trailing blank lines."""
    lines = _lines(text)
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _outline(lines: list[str]) -> tuple[dict[int, tuple[int, str]], int | None]:
    """Level-1 and level-2 headings outside code fences (index: level, title), and the index
    of a fence left open at the end (None when every fence is closed)."""
    headings: dict[int, tuple[int, str]] = {}
    fence: tuple[re.Pattern[str], int] | None = None
    for index, line in enumerate(lines):
        if fence is not None:
            if fence[0].fullmatch(line):
                fence = None
        elif opening := _FENCE.match(line):
            marker = opening.group(1)
            closing = re.compile(rf" {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*")
            fence = (closing, index)
        elif heading := _HEADING.fullmatch(line):
            headings[index] = (len(heading.group(1)), (heading.group(2) or "").strip())
    return headings, None if fence is None else fence[1]


def check_text(text: str, path: str) -> None:
    """Refuse a section text that would not read back as itself from Markdown."""
    lines = _lines(text)
    headings, open_fence = _outline(lines)
    for index, (level, title) in headings.items():
        if level == 2:
            raise _fail(
                f"{path} has a level-2 heading '## {title[:100]}' (its line {index + 1}), which "
                "would start a new section: use '###' for a heading inside a section"
            )
    if open_fence is not None:
        raise _fail(f"{path} opens a code fence on its line {open_fence + 1} and never closes it")


def parse_markdown(text: str) -> dict[str, Any]:
    """The card's sections from Markdown: front matter fields plus each section's text
    (not yet validated against the schema)."""
    lines = _lines(text)
    card: dict[str, Any] = {}
    start = 0
    if lines[0].rstrip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), 0)
        if not end:
            raise _fail("card front matter starts on line 1 but has no closing '---' line")
        card = _front_matter("\n".join(lines[1:end]))
        start = end + 1
    for section, (section_text, number) in _sections(lines[start:], start + 1).items():
        fields = card.setdefault(section, {})
        if "text" in fields:
            raise _fail(
                f"card.{section}.text is given twice: in the front matter and under the "
                f"heading on line {number}"
            )
        fields["text"] = section_text
    return card


def _front_matter(source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(source)
    except yaml.MarkedYAMLError as error:
        line = f" (line {error.problem_mark.line + 2})" if error.problem_mark else ""
        raise _fail(f"card front matter is not valid YAML: {error.problem}{line}") from None
    except RecursionError:
        raise _fail("card front matter nests too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        reason = str(error)[:200] or type(error).__name__
        raise _fail(f"card front matter is not valid YAML: {reason}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise _fail(
            "card front matter must map sections to their fields, such as "
            "'model_details: {license: MIT}'"
        )
    card: dict[str, Any] = {}
    for key, fields in loaded.items():
        if key == "schema_version":
            card[key] = fields
        elif key not in SECTIONS:
            raise _fail(
                f"card front matter has an unknown section {key!r}: the sections are "
                f"{', '.join(SECTIONS)} (and schema_version)"
            )
        elif fields is None:
            card[key] = {}
        elif isinstance(fields, dict):
            card[key] = dict(fields)  # a copy: YAML aliases may share one mapping
        else:
            raise _fail(
                f"card.{key} in the front matter must be a mapping of its fields "
                f"(such as 'license: MIT'), not a {type(fields).__name__}"
            )
    return card


def _sections(lines: list[str], first: int) -> dict[str, tuple[str, int]]:
    """Each section's text and heading line number; ``first`` is the number of lines[0]."""
    headings, open_fence = _outline(lines)
    if open_fence is not None:
        raise _fail(f"card line {first + open_fence} opens a code fence that is never closed")
    found: dict[str, tuple[list[str], int]] = {}
    current: list[str] | None = None
    for index, line in enumerate(lines):
        level, title = headings.get(index, (0, ""))
        if level == 2:
            section = _HEADINGS.get(_normalise(title))
            if section is None:
                raise _fail(
                    f"card line {first + index}: unknown section heading '## {title[:100]}'; "
                    f"the sections are {_VALID} (use '###' for a heading inside a section)"
                )
            if section in found:
                raise _fail(
                    f"card line {first + index}: section '## {SECTION_TITLES[section]}' is "
                    f"given twice (first on line {found[section][1]})"
                )
            current = []
            found[section] = (current, first + index)
        elif current is not None:
            current.append(line)
        elif line.strip() and level != 1:
            raise _fail(
                f"card line {first + index}: text before the first section; put it under a "
                "section heading such as '## Model details'"
            )
    return {section: ("\n".join(body), number) for section, (body, number) in found.items()}


def render(card: Mapping[str, Any]) -> str:
    """``card`` (valid) as Markdown: front matter with the structured fields, a title, and
    one ``## `` section per text, in the schema's order."""
    front: dict[str, Any] = {}
    if "schema_version" in card:
        front["schema_version"] = card["schema_version"]
    for section in SECTIONS:
        fields = {key: value for key, value in card[section].items() if key != "text"}
        if fields:
            front[section] = fields
    parts = []
    if front:
        dumped = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
        if yaml.safe_load(dumped) != front:  # PyYAML writes a few line breaks (NEL) raw
            dumped = yaml.safe_dump(front, sort_keys=False, allow_unicode=False)
        parts.append(f"---\n{dumped}---\n\n")
    title = " ".join(str(card["model_details"].get("name", "")).split()) or "Model card"
    parts.append(f"# {title}\n")
    for section in SECTIONS:
        parts.append(f"\n## {SECTION_TITLES[section]}\n\n{card[section]['text']}\n")
    return "".join(parts)
