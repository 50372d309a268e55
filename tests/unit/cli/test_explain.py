"""The terminal rendering of ``openmaas explain``."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from openmaas.cli.explain import _names, _print, bar_chart


def test_the_bar_chart_shows_the_largest_first_with_their_sign() -> None:
    lines = bar_chart(["a", "bb", "c"], [0.1, -0.4, 0.0], top=2)
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["bb", "-0.4"]
    assert lines[0].rstrip().endswith("-" * 30)
    assert lines[1].split()[:2] == ["a", "+0.1"]
    assert lines[1].rstrip().endswith("+" * 8)
    assert bar_chart([], [], top=3) == []


def test_image_elements_are_named_by_their_position() -> None:
    names = _names({"input": "pixels"}, (1, 2, 2))
    assert names == ["pixels[0,0,0]", "pixels[0,0,1]", "pixels[0,1,0]", "pixels[0,1,1]"]
    assert _names({"input": "x", "feature_names": ["u", "v"]}, (2,)) == ["u", "v"]


def test_a_prompt_attribution_prints_its_words() -> None:
    result = {
        "model_name": "admin/llm",
        "model_version": "1",
        "explanation": {
            "spans": [{"text": "The"}, {"text": "France"}],
            "attributions": [0.5, 3.0],
            "target": {"text": " Paris", "logprob": -0.5},
            "quality": {"n_evals": 3},
        },
    }
    out = CliRunner().invoke(_print_command(result))
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "3 model calls" in lines[0]
    assert "' Paris'" in lines[2]
    assert lines[3].split()[0] == "'France'"


def test_a_tabular_explanation_prints_the_predicted_class() -> None:
    result = {
        "model_name": "admin/m",
        "model_version": "2",
        "outputs": [{"shape": [1, 2], "data": [0.2, 0.8]}],
        "explanation": {
            "method": "tree",
            "input": "x",
            "output": "probabilities",
            "classes": ["no", "yes"],
            "feature_names": ["age", "income"],
            "attributions": np.array([[[0.0, 0.1], [0.0, 0.4]]]),
            "base_values": np.array([[0.5, 0.3]]),
            "quality": {"n_evals": 9, "converged": True, "additivity_error": 0.0},
        },
    }
    out = CliRunner().invoke(_print_command(result))
    assert out.exit_code == 0, out.output
    assert "probabilities[yes] = 0.8 (baseline 0.3)" in out.output
    bars = [line.split()[0] for line in out.output.splitlines() if line.endswith("+")]
    assert bars == ["income", "age"]


def _print_command(result: dict[str, object]):  # type: ignore[no-untyped-def]
    import click

    @click.command()
    def show() -> None:
        _print(result, top=5)

    return show
