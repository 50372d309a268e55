"""Model cards: the schema, JSON and Markdown parsing, errors, rendering, hashing, defaults."""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
import time
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from openmaas.errors import InvalidModelCardError, RequestValidationError
from openmaas.registry.card_schema import SECTION_TITLES
from openmaas.registry.cards import (
    CARD_SCHEMA,
    MAX_CARD_BYTES,
    NOT_DOCUMENTED,
    SECTIONS,
    card_hash,
    default_card,
    parse_card,
    render_markdown,
    validate_card,
    with_explanation_quality,
)
from openmaas.registry.demo_cards import DEMO_CARD_NAMES, demo_card

FRONT = """---
model_details:
  name: fraud-detector
  version: "2"
  date: 2024-05-31
  license: MIT
  authors: [Ada, Grace]
metrics:
  measures:
    - {name: recall, description: share of frauds caught}
quantitative_analyses:
  results:
    - {metric: recall, value: 0.91, slice: card-not-present}
---
# Fraud detector

## Model details
Gradient-boosted trees on card transactions.

## 1. Intended use
Flag transactions for review.

### Not a decision
A person decides.

## factors
Merchant type.

## METRICS:
Recall at a 0.3 threshold.

## Evaluation Data
Held-out month.

## Training data
Eleven months.

## Quantitative analysis
See the results.

## Ethical Considerations
Card holders' data.

## Caveats & Recommendations
```python
## this is code, not a heading
```
Retrain monthly.
"""


def full_card() -> dict[str, Any]:
    """A valid card with a text in every section and a few fields."""
    card: dict[str, Any] = {
        section: {"text": f"About {SECTION_TITLES[section].lower()}."} for section in SECTIONS
    }
    card["model_details"].update(name="m", version="1", license="Apache-2.0")
    return card


def card_error(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(InvalidModelCardError) as caught:
        parse_card(raw)
    assert caught.value.field == "card"
    return caught.value.detail


def test_schema_is_valid_draft_2020_12_with_the_nine_sections() -> None:
    jsonschema.Draft202012Validator.check_schema(CARD_SCHEMA)
    assert CARD_SCHEMA["$schema"].endswith("2020-12/schema")
    assert CARD_SCHEMA["required"] == list(SECTIONS)
    assert len(SECTIONS) == 9
    assert CARD_SCHEMA["additionalProperties"] is False
    for section in SECTIONS:
        assert CARD_SCHEMA["properties"][section]["required"] == ["text"]
        assert CARD_SCHEMA["properties"][section]["properties"]["text"]["maxLength"] == 20_000


def test_error_class_is_a_request_validation_error() -> None:
    assert issubclass(InvalidModelCardError, RequestValidationError)
    assert InvalidModelCardError.status == 422
    assert InvalidModelCardError.code == "invalid_model_card"


def test_json_card_parses_to_itself() -> None:
    card = full_card()
    assert parse_card(json.dumps(card).encode()) == card
    assert parse_card(b"\xef\xbb\xbf  " + json.dumps(card).encode()) == card  # BOM, spaces


def test_json_texts_lose_outer_blank_lines_and_carriage_returns() -> None:
    card = full_card()
    card["factors"]["text"] = "\n\r\n  Line one\r\nline two  \n\n"
    assert parse_card(json.dumps(card).encode())["factors"]["text"] == "  Line one\nline two  "


def test_markdown_with_front_matter_parses() -> None:
    card = parse_card(FRONT.encode())
    assert set(card) == set(SECTIONS)
    details = card["model_details"]
    assert details["date"] == "2024-05-31"  # a YAML date becomes an ISO string
    assert details["authors"] == ["Ada", "Grace"]
    assert details["text"] == "Gradient-boosted trees on card transactions."
    assert card["intended_use"]["text"].endswith("### Not a decision\nA person decides.")
    assert card["metrics"]["text"] == "Recall at a 0.3 threshold."
    assert card["quantitative_analyses"]["results"][0]["value"] == 0.91
    assert "## this is code" in card["caveats_and_recommendations"]["text"]
    json.dumps(card, allow_nan=False)  # storable as JSON


def test_markdown_without_front_matter_and_with_crlf() -> None:
    body = "\r\n".join(f"## {SECTION_TITLES[s]}\r\n\r\nText {i}." for i, s in enumerate(SECTIONS))
    card = parse_card(body.encode())
    assert card["training_data"] == {"text": "Text 5."}


def test_render_then_parse_round_trips() -> None:
    card = parse_card(FRONT.encode())
    card["model_details"]["citation"] = "A\n---\nB: 'c' #d\n..."
    card["factors"]["text"] = "Ünïcode ✓ and trailing spaces  \n~~~\n## inside a fence\n~~~"
    card["factors"]["relevant_factors"] = ["yes", "no", "2024-01-01", "1e3", "null", "- x"]
    card["schema_version"] = 1
    card = with_explanation_quality(card, {"method": "kernel", "additivity_error": 1e-7})
    text = render_markdown(card)
    assert text.startswith("---\nschema_version: 1\n")
    assert "\n# fraud-detector\n" in text
    assert parse_card(text.encode()) == card


def test_render_writes_every_section_heading_in_order() -> None:
    text = render_markdown(full_card())
    positions = [text.index(f"\n## {SECTION_TITLES[s]}\n") for s in SECTIONS]
    assert positions == sorted(positions)


_TEXT = st.text(alphabet=st.sampled_from(list("ab #`~-:'\"\n\t\r*_é✓{}[]&>|!%@\\0")), max_size=60)
_RANDOM = ("model_details", "factors", "caveats_and_recommendations")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(texts=st.lists(_TEXT, min_size=3, max_size=3), name=_TEXT, license_=_TEXT)
def test_round_trip_holds_for_any_valid_card(texts: list[str], name: str, license_: str) -> None:
    raw = full_card()
    for section, text in zip(_RANDOM, texts, strict=True):
        raw[section]["text"] = text + "\nz"  # never blank; may still hold headings and fences
    raw["model_details"].update(name=name, license=license_)
    try:
        card = validate_card(raw)
    except InvalidModelCardError:
        assume(False)
    assert validate_card(card) == card
    assert parse_card(render_markdown(card).encode()) == card


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.pop("metrics"), "card.metrics is required: add a '## Metrics' section"),
        (lambda c: c["metrics"].pop("text"), "card.metrics.text is required: describe which"),
        (lambda c: c["factors"].update(text="  \n "), "card.factors.text is empty: describe"),
        (lambda c: c.update(metric={"text": "x"}), "unknown section 'metric'"),
        (lambda c: c["model_details"].update(licence="MIT"), "unknown field 'licence'"),
        (lambda c: c["model_details"].update(license=None), "license is empty: fill it in"),
        (lambda c: c["model_details"].update(date="31/05/2024"), "YYYY-MM-DD"),
        (lambda c: c["model_details"].update(authors="Ada"), "authors must be of type array"),
        (lambda c: c["metrics"].update(measures=[{}]), "card.metrics.measures[0].name is req"),
        (
            lambda c: c["quantitative_analyses"].update(results=[{"metric": "a", "value": "1"}]),
            "results[0].value must be of type number, not string",
        ),
        (lambda c: c["factors"].update(text="x" * 20_001), "at most 20000 characters"),
        (lambda c: c["intended_use"].update(out_of_scope=["x"] * 201), "at most 200"),
        (lambda c: c.update(schema_version=2), "schema_version must be 1"),
        (lambda c: c["factors"].update(text="a\n## New section"), "level-2 heading"),
        (lambda c: c["factors"].update(text="```\ncode"), "never closes it"),
    ],
)
def test_invalid_json_cards_name_the_field_and_the_fix(mutate: Any, expected: str) -> None:
    card = full_card()
    mutate(card)
    assert expected in card_error(json.dumps(card))


def test_first_error_follows_section_order() -> None:
    card = full_card()
    del card["caveats_and_recommendations"]["text"]
    del card["factors"]["text"]
    assert card_error(json.dumps(card)).startswith("card.factors.text is required")


def test_unknown_heading_lists_the_nine_sections() -> None:
    detail = card_error(FRONT.replace("## factors", "## Fairness"))
    assert "unknown section heading '## Fairness'" in detail
    assert all(f"'## {title}'" in detail for title in SECTION_TITLES.values())
    assert "card line 26:" in detail


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        (FRONT.replace("## Training data", "## training data\nx\n## Training Data"), "twice"),
        (FRONT.replace("# Fraud detector", "Intro text"), "text before the first section"),
        (FRONT.replace("  license: MIT", "  text: hi"), "card.model_details.text is given twice"),
        (FRONT.replace("\n---\n# Fraud", "\n# Fraud"), "no closing '---'"),
        (FRONT.replace("date: 2024-05-31", "date: [unclosed"), "not valid YAML"),
        (FRONT.replace("date: 2024-05-31", "date: !!python/object:os.system x"), "not valid"),
        (FRONT.replace("date: 2024-05-31", "date: 2024-13-45"), "not valid YAML"),
        (FRONT.replace("metrics:\n  measures", "metricz:\n  measures"), "unknown section"),
        (FRONT.replace("model_details:\n", "model_details: 3\nx:\n"), "mapping"),
        ("---\n- a list\n---\n", "front matter must map sections"),
        (FRONT.replace('  version: "2"', "  7: x"), "not a string"),
        (FRONT.replace('  version: "2"', "  version: !!binary aGk="), "holds a bytes"),
        (FRONT.replace('  version: "2"', "  version: .nan"), "finite number"),
        (FRONT.replace("Retrain monthly.", "~~~\nunclosed"), "code fence that is never closed"),
        (FRONT.replace("## factors", ""), "card.factors is required"),
    ],
)
def test_invalid_markdown_cards(markdown: str, expected: str) -> None:
    assert expected in card_error(markdown)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"x" * (MAX_CARD_BYTES + 1), "at most 262144"),
        (b" \n\n ", "card is empty"),
        (b"---\nmodel_details: " + b"[" * 20_000 + b"\n---\n", "nests too deeply"),
        (b"## Model details\n\xff\xfe", "not UTF-8"),
        (b'{"model_details": ', "not valid JSON"),
        (b'{"model_details": NaN}', "NaN"),
        (b"[1, 2]", "must be an object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"model_details": {"text": "\\ud800"}}', "unpaired surrogate"),
        (b"{" + b'"a":{' * 40 + b"}" * 41, "nests deeper"),
    ],
)
def test_malformed_input_is_refused(data: bytes, expected: str) -> None:
    assert expected in card_error(data)


def test_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ["---", "model_details:", "  x0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    started = time.monotonic()
    assert "too large" in card_error("\n".join([*lines, "---", ""]))
    assert time.monotonic() - started < 30  # generous: expanding 10**9 values would take hours


def test_card_hash_is_canonical_sha256() -> None:
    card = full_card()
    card["factors"]["text"] = "Ünïcode"
    reordered = copy.deepcopy(dict(reversed(list(card.items()))))
    canonical = json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert card_hash(card) == card_hash(reordered)
    assert card_hash(card) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    card["factors"]["text"] = "Unicode"
    assert card_hash(card) != card_hash(reordered)


def test_default_card_is_valid_and_says_nothing_was_documented() -> None:
    facts = {
        "version": 3,
        "date": datetime.datetime(2024, 5, 31, 12, 0, tzinfo=datetime.UTC),
        "license": "MIT",
        "authors": ["Ada"],
        "producer": "skl2onnx 1.17",
        "class_labels": [0, 1],
        "opsets": {"ai.onnx": 17},
        "doc_string": "",
        "context_length": None,
    }
    card = default_card("acme/fraud", "Finds fraud.\n\nSecond paragraph.", facts)
    assert validate_card(card) == card
    assert all(card[section]["text"].startswith(NOT_DOCUMENTED) for section in SECTIONS[1:])
    details = card["model_details"]
    assert NOT_DOCUMENTED in details["text"]
    assert details["text"].startswith(
        "The publisher's description:\n\n> Finds fraud.\n>\n> Second paragraph."
    )
    assert "- producer: skl2onnx 1.17" in details["text"]
    assert "- class_labels: 0, 1" in details["text"]
    assert '- opsets: {"ai.onnx": 17}' in details["text"]
    assert "doc_string" not in details["text"]
    assert "context_length" not in details["text"]
    assert details["name"] == "acme/fraud"
    assert details["version"] == "3"
    assert details["date"] == "2024-05-31"
    assert details["license"] == "MIT"
    assert details["authors"] == ["Ada"]
    assert parse_card(render_markdown(card).encode()) == card


def test_default_card_quotes_a_description_with_headings_and_fences() -> None:
    description = "# Title\n## Usage\n```python\nprint('never closed')"
    card = default_card("m", description, {"doc_string": "a\n## b", "shape": [1, None]})
    text = card["model_details"]["text"]
    assert "> ## Usage\n> ```python" in text
    assert "- doc_string: a ## b" in text
    assert "- shape: [1, null]" in text
    assert parse_card(render_markdown(card).encode()) == card


def test_default_card_stays_valid_for_odd_input() -> None:
    card = default_card("x" * 500, "d" * 30_000, {"date": "yesterday", "version": "v" * 500})
    assert "date" not in card["model_details"]
    assert len(card["model_details"]["name"]) == 200
    assert len(card["model_details"]["version"]) == 100
    assert len(card["model_details"]["text"]) <= 20_000
    assert default_card("", "", {})["model_details"]["name"] == "unnamed"


def test_with_explanation_quality_copies() -> None:
    card = full_card()
    before = copy.deepcopy(card)
    quality = {"additivity_error": 0.001, "evaluations": {"median": 512}}
    updated = with_explanation_quality(card, quality)
    assert updated["quantitative_analyses"]["explanation_quality"] == quality
    assert card == before
    quality["evaluations"]["median"] = 0
    assert updated["quantitative_analyses"]["explanation_quality"]["evaluations"]["median"] == 512
    assert validate_card(updated) == updated


@pytest.mark.parametrize("name", DEMO_CARD_NAMES)
def test_demo_cards_are_valid_and_round_trip(name: str) -> None:
    card = demo_card(name)
    assert validate_card(card) == card
    assert card["model_details"]["name"] == name
    assert "results" not in card["quantitative_analyses"]
    assert "no measured results" in card["quantitative_analyses"]["text"]
    assert not any(NOT_DOCUMENTED in card[section]["text"] for section in SECTIONS)
    assert parse_card(render_markdown(card).encode()) == card


def test_demo_names_and_unknown_name() -> None:
    assert set(DEMO_CARD_NAMES) >= {
        "breast-cancer",
        "digits",
        "digits-cnn",
        "sequence-lstm",
        "smollm2-135m-instruct",
        "all-minilm-l6-v2",
    }
    with pytest.raises(KeyError, match="breast-cancer"):
        demo_card("mnist")


def test_demo_card_records_the_callers_metrics() -> None:
    card = demo_card("digits-cnn", {"accuracy": 0.98, "macro_f1": 0.975})
    results = card["quantitative_analyses"]["results"]
    assert results == [
        {"metric": "accuracy", "value": 0.98, "data": "the 360 held-out images (every fifth)"},
        {"metric": "macro_f1", "value": 0.975, "data": "the 360 held-out images (every fifth)"},
    ]
    own = demo_card("sequence-lstm", {"accuracy": 1.0}, data="2,000 fresh sequences")
    assert own["quantitative_analyses"]["results"][0]["data"] == "2,000 fresh sequences"
    bare = demo_card("smollm2-135m-instruct", {"tokens_per_second": 120.0})
    assert "data" not in bare["quantitative_analyses"]["results"][0]
    with pytest.raises(InvalidModelCardError, match="finite"):
        demo_card("digits", {"accuracy": math.nan})


def test_demo_cards_state_the_key_facts() -> None:
    cancer = demo_card("breast-cancer")
    assert "Not for clinical use" in cancer["intended_use"]["text"]
    assert cancer["training_data"]["datasets"][0]["size"] == 569
    assert "50 trees" in cancer["model_details"]["type"]
    assert (
        "none held out"
        in demo_card("digits", {"accuracy": 1.0})["quantitative_analyses"]["results"][0]["data"]
    )
    assert demo_card("digits")["training_data"]["datasets"][0]["size"] == 1797
    smol = demo_card("smollm2-135m-instruct")["model_details"]
    assert smol["license"] == "Apache-2.0"
    assert "Q4_1" in smol["type"]
    minilm = demo_card("all-minilm-l6-v2")
    assert minilm["model_details"]["license"] == "Apache-2.0"
    assert "384" in minilm["model_details"]["text"]
    pairs = sum(d.get("size", 0) for d in minilm["training_data"]["datasets"])
    assert pairs > 1_000_000_000
