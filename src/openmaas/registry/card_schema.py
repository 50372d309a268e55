"""The JSON Schema (draft 2020-12) of a model card and the names of its nine sections.

The sections are those of Mitchell et al. 2019, "Model Cards for Model Reporting". Each is an
object with a required, non-blank Markdown ``text`` and optional structured fields; unknown
sections and fields are refused (a typo is caught, not stored), and every string and list is
bounded so that a card stays small.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CARD_SCHEMA",
    "MAX_ITEMS",
    "MAX_TEXT_CHARS",
    "SCHEMA_VERSION",
    "SECTIONS",
    "SECTION_HINTS",
    "SECTION_TITLES",
]

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 20_000  # one section's Markdown text
MAX_ITEMS = 200  # one list

SECTIONS = (
    "model_details",
    "intended_use",
    "factors",
    "metrics",
    "evaluation_data",
    "training_data",
    "quantitative_analyses",
    "ethical_considerations",
    "caveats_and_recommendations",
)

SECTION_TITLES = {
    "model_details": "Model details",
    "intended_use": "Intended use",
    "factors": "Factors",
    "metrics": "Metrics",
    "evaluation_data": "Evaluation data",
    "training_data": "Training data",
    "quantitative_analyses": "Quantitative analyses",
    "ethical_considerations": "Ethical considerations",
    "caveats_and_recommendations": "Caveats and recommendations",
}

# What each section's text should say: the second half of an error message.
SECTION_HINTS = {
    "model_details": "who made the model and when, its version, type and licence",
    "intended_use": "what the model is for, who should use it and which uses are out of scope",
    "factors": "the groups, instruments or conditions whose differences change the results",
    "metrics": "which performance measures are reported, why, and any decision thresholds",
    "evaluation_data": "the data the results were measured on and how it was prepared",
    "training_data": "the data the model learned from (or what can be said about it)",
    "quantitative_analyses": "the measured results, overall and per factor",
    "ethical_considerations": "sensitive data, risks and harms, and how they are mitigated",
    "caveats_and_recommendations": "known limitations and advice for users",
}


def _string(max_chars: int = 1_000) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_chars}


def _strings(max_chars: int = 1_000) -> dict[str, Any]:
    return {"type": "array", "maxItems": MAX_ITEMS, "items": _string(max_chars)}


def _objects(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "maxItems": MAX_ITEMS,
        "items": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }


def _section(**fields: dict[str, Any]) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": r"\S"}
    return {
        "type": "object",
        "properties": {"text": text, **fields},
        "required": ["text"],
        "additionalProperties": False,
    }


_DATASETS = _objects(
    {
        "name": _string(200),
        # a count of examples, or words when the unit is not examples ("2 trillion tokens")
        "size": {"anyOf": [{"type": "integer", "minimum": 0}, _string(200)]},
        "description": _string(5_000),
    },
    ["name"],
)

_PROPERTIES: dict[str, Any] = {
    "model_details": _section(
        name=_string(200),
        version=_string(100),
        date={"type": "string", "format": "date"},
        type=_string(),
        license=_string(200),
        authors=_strings(200),
        contact=_string(),
        citation=_string(5_000),
        references=_strings(2_000),
    ),
    "intended_use": _section(
        primary_uses=_strings(), primary_users=_strings(), out_of_scope=_strings()
    ),
    "factors": _section(relevant_factors=_strings(), evaluation_factors=_strings()),
    "metrics": _section(
        measures=_objects({"name": _string(200), "description": _string(5_000)}, ["name"]),
        decision_thresholds=_string(5_000),
        variation_approaches=_string(5_000),
    ),
    "evaluation_data": _section(datasets=_DATASETS, preprocessing=_string(5_000)),
    "training_data": _section(datasets=_DATASETS, preprocessing=_string(5_000)),
    "quantitative_analyses": _section(
        results=_objects(
            {
                "metric": _string(200),
                "value": {"type": "number"},
                "slice": _string(200),
                "data": _string(200),
            },
            ["metric", "value"],
        ),
        # measured and filled by the platform; free-form but bounded
        explanation_quality={"type": "object", "maxProperties": MAX_ITEMS},
    ),
    "ethical_considerations": _section(risks=_strings(), mitigations=_strings()),
    "caveats_and_recommendations": _section(caveats=_strings(), recommendations=_strings()),
}

CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:openmaas:model-card:1",
    "title": "OpenMaaS model card",
    "description": "Mitchell et al. 2019, 'Model Cards for Model Reporting': nine sections.",
    "type": "object",
    "properties": {"schema_version": {"const": SCHEMA_VERSION}, **_PROPERTIES},
    "required": list(SECTIONS),
    "additionalProperties": False,
}
