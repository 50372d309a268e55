"""``openmaas explain``: why a model answered as it did, as a bar chart in the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from openmaas.cli._base import _Context, _echo_json, cli, pass_ctx

__all__ = ["bar_chart", "explain"]

_BAR = 30  # characters of the longest bar


def _read_rows(text: str, client: Any, model: str, version: str | None) -> dict[str, Any]:
    """``--input``: a JSON file or text: named inputs, one row (a list), or a text."""
    source = text[1:] if text.startswith("@") else text
    path = Path(source)
    try:
        is_file = text.startswith("@") or path.is_file()
    except OSError:  # inline JSON longer than a file name may be
        is_file = False
    if is_file:
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a plain text, for text models
    if isinstance(value, dict):
        return value
    inputs = client.model_metadata(model, version)["inputs"]
    if len(inputs) != 1:
        raise click.BadParameter('this model has several inputs: pass {"name": [...], ...}')
    spec = inputs[0]
    if spec["datatype"] == "BYTES":
        return {spec["name"]: [value] if isinstance(value, str) else value}
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == len(spec["shape"]) - 1:
        array = array[None]  # one row: add the batch axis
    return {spec["name"]: array}


def bar_chart(names: list[str], values: list[float], top: int) -> list[str]:
    """The ``top`` largest |values| as lines of a signed bar chart (+ to the right)."""
    order = sorted(range(len(values)), key=lambda i: -abs(values[i]))[:top]
    if not order:
        return []
    largest = max(abs(values[i]) for i in order) or 1.0
    width = max(len(names[i]) for i in order)
    lines = []
    for i in order:
        length = round(abs(values[i]) / largest * _BAR)
        bar = ("+" if values[i] >= 0 else "-") * max(length, 1 if values[i] else 0)
        lines.append(f"{names[i]:>{width}}  {values[i]:>+10.4g}  {bar}")
    return lines


def _names(explanation: dict[str, Any], shape: tuple[int, ...]) -> list[str]:
    """A label per element of one row: its token, its feature name, or its index."""
    count = int(np.prod(shape))
    tokens = explanation.get("tokens")
    if tokens:
        return [repr(t) for t in tokens]
    features = explanation.get("feature_names")
    if features and len(features) == count:
        return [str(f) for f in features]
    indices = np.unravel_index(np.arange(count), shape)
    return [
        f"{explanation['input']}[{','.join(str(int(axis[i])) for axis in indices)}]"
        for i in range(count)
    ]


def _print_prompt(result: dict[str, Any], top: int) -> None:
    """A language model's answer: the prompt's words behind its completion."""
    explanation = result["explanation"]
    target, quality = explanation["target"], explanation["quality"]
    click.echo(
        f"{result['model_name']} version {result['model_version']}: occlusion "
        f"({quality['n_evals']} model calls)"
    )
    click.echo(f"\ncompletion {target['text']!r} (log-probability {target['logprob']:.4g})")
    names = [repr(span["text"]) for span in explanation["spans"]]
    for line in bar_chart(names, list(explanation["attributions"]), top):
        click.echo("  " + line)


def _print(result: dict[str, Any], top: int) -> None:
    explanation = result["explanation"]
    if "spans" in explanation:
        _print_prompt(result, top)
        return
    attributions: np.ndarray = explanation["attributions"]
    prediction = np.asarray(result["outputs"][0]["data"], dtype=np.float64).reshape(
        result["outputs"][0]["shape"]
    )
    classes = explanation["classes"]
    quality = explanation["quality"]
    click.echo(
        f"{result['model_name']} version {result['model_version']}: "
        f"{explanation['method']} ({quality['n_evals']} model evaluations, "
        f"converged: {str(quality['converged']).lower()})"
    )
    for row in range(attributions.shape[0]):
        column = int(np.argmax(prediction[row]))
        label = classes[column] if column < len(classes) else column
        base = explanation["base_values"][row, column]
        click.echo(
            f"\nrow {row}: {explanation['output']}[{label}] = {prediction[row, column]:.4g} "
            f"(baseline {base:.4g})"
        )
        element = attributions[row][..., column]
        values = element.reshape(-1)
        for line in bar_chart(_names(explanation, element.shape), values.tolist(), top):
            click.echo("  " + line)
    error = quality.get("additivity_error")
    if error is not None:
        click.echo(f"\nadditivity error: {error:.3g}")
    if quality.get("convergence_delta") is not None:
        click.echo(f"completeness gap: {quality['convergence_delta']:.3%}")


@cli.command()
@click.argument("model")
@click.option(
    "--input",
    "input_text",
    required=True,
    help="The input: a JSON file (or @path) or JSON text — one row as a list, named inputs "
    '({"name": [[...]]}), or a text for text models.',
)
@click.option("--version", default=None, help="Version number or alias (default latest).")
@click.option(
    "--explainer",
    default="auto",
    show_default=True,
    type=click.Choice(
        ["auto", "exact", "permutation", "kernel", "tree", "integrated_gradients", "occlusion"]
    ),
)
@click.option("--max-evals", type=int, default=None, help="Most model evaluations to spend.")
@click.option("--seed", type=int, default=None, help="Seed of sampling explainers.")
@click.option("--target", type=int, default=None, help="Class to explain (gradients).")
@click.option("--top", type=int, default=10, show_default=True, help="Bars to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON answer.")
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write an image input's heatmap to this PNG file.",
)
@pass_ctx
def explain(
    ctx: _Context,
    model: str,
    input_text: str,
    version: str | None,
    explainer: str,
    max_evals: int | None,
    seed: int | None,
    target: int | None,
    top: int,
    as_json: bool,
    png: Path | None,
) -> None:
    """Explain MODEL's prediction for an input: the features that pushed it, largest first."""
    chosen = {"max_evals": max_evals, "seed": seed, "target": target}
    options = {name: value for name, value in chosen.items() if value is not None}
    with ctx.client() as client:
        inputs = _read_rows(input_text, client, model, version)
        if png is not None:
            image = client.explain_heatmap(
                model, inputs, version=version, explainer=explainer, **options
            )
            png.write_bytes(image)
            click.echo(f"Wrote {png} ({len(image)} bytes)")
            return
        result = client.explain(model, inputs, version=version, explainer=explainer, **options)
    if as_json:
        explanation = result["explanation"]
        for name in ("attributions", "base_values"):
            explanation[name] = np.asarray(explanation[name]).tolist()
        _echo_json(result)
        return
    _print(result, top)
