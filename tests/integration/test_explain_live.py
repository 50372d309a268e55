"""Explanations and model cards of the demo models on a real server, with the Python client
and the CLI, as a user calls them."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from openmaas.client import Client
from openmaas.errors import ExplanationUnavailableError
from tests.e2e.test_cli import openmaas
from tests.helpers.server import LiveServer

_NINE = (
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


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.admin_key, timeout=120) as opened:
        yield opened


def test_tree_shap_on_the_breast_cancer_demo(client: Client) -> None:
    cancer = load_breast_cancer()
    rows = cancer.data[:4].astype(np.float32)
    answer = client.explain("admin/breast-cancer", {"float_input": rows})
    explanation = answer["explanation"]
    assert explanation["method"] == "tree"
    attributions = explanation["attributions"]
    assert attributions.shape == (4, 30, 2)
    predicted = np.asarray(answer["outputs"][0]["data"]).reshape(4, 2)
    inferred = client.infer("admin/breast-cancer", {"float_input": rows})
    np.testing.assert_allclose(predicted, inferred["output_probability"], atol=1e-6)
    total = explanation["base_values"] + attributions.sum(axis=1)
    assert np.abs(total - predicted).max() <= 1e-6
    assert explanation["quality"]["converged"] is True
    assert explanation["feature_names"][:2] == ["mean radius", "mean texture"]
    assert explanation["baseline"] == {"source": "kmeans", "rows": 8}
    assert answer["sha256"] == client.get_model("admin/breast-cancer")["versions"][-1]["sha256"]


def test_sampling_on_64_pixels_is_seeded(client: Client) -> None:
    digits = load_digits()
    row = {"float_input": digits.data[:1].astype(np.float32)}
    first = client.explain("admin/digits", row, seed=5)
    again = client.explain("admin/digits", row, seed=5)
    assert first["explanation"]["method"] == "permutation"
    np.testing.assert_array_equal(
        first["explanation"]["attributions"], again["explanation"]["attributions"]
    )
    quality = first["explanation"]["quality"]
    assert quality["n_evals"] <= 2048
    assert quality["additivity_error"] <= 1e-6


def test_integrated_gradients_and_a_heatmap_for_the_cnn(client: Client) -> None:
    pytest.importorskip("torch")
    digits = load_digits()
    pixels = digits.images[:1, None].astype(np.float32)
    answer = client.explain("admin/digits-cnn", {"pixels": pixels})
    explanation = answer["explanation"]
    assert explanation["method"] == "integrated_gradients"
    assert explanation["quality"]["converged"] is True
    assert explanation["quality"]["convergence_delta"] <= 0.01
    assert explanation["attributions"].shape == (1, 1, 8, 8, 1)
    assert explanation["classes"] == [int(digits.target[0])]
    occluded = client.explain("admin/digits-cnn", {"pixels": pixels}, explainer="occlusion")
    assert occluded["explanation"]["method"] == "occlusion"
    assert occluded["explanation"]["attributions"].shape == (1, 1, 8, 8, 10)
    png = client.explain_heatmap("admin/digits-cnn", {"pixels": pixels})
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (64, 64)
    start = png.index(b"IDAT") + 4
    length = int.from_bytes(png[start - 8 : start - 4], "big")
    assert len(zlib.decompress(png[start : start + length])) == height * (1 + 3 * width)


def test_embeddings_have_nothing_to_attribute(client: Client) -> None:
    if "admin/all-minilm-l6-v2" not in {m["id"] for m in client.list_models()}:
        pytest.skip("the nlp extra is not installed")
    with pytest.raises(ExplanationUnavailableError, match="score or probability"):
        client.explain("admin/all-minilm-l6-v2", {"text": ["a cat"]})


def test_prompt_attribution_over_http(client: Client) -> None:
    if "admin/smollm2-135m-instruct" not in {m["id"] for m in client.list_models()}:
        pytest.skip("the llm extra is not installed")
    answer = client.explain(
        "admin/smollm2-135m-instruct",
        {"text_input": ["The capital city of France is called"]},
        completion_tokens=1,
    )
    explanation = answer["explanation"]
    spans = [span["text"] for span in explanation["spans"]]
    assert spans[int(np.argmax(explanation["attributions"]))] == "France"
    assert explanation["quality"]["n_evals"] == len(spans) + 1


def test_demo_models_ship_complete_cards(client: Client) -> None:
    card = client.model_card("admin/breast-cancer")
    assert all(card[section]["text"] for section in _NINE)
    results = {r["metric"]: r["value"] for r in card["quantitative_analyses"]["results"]}
    assert 0.9 < results["accuracy"] <= 1.0
    quality = card["quantitative_analyses"]["explanation_quality"]
    assert quality["method"] == "tree"
    assert quality["max_additivity_error"] <= 1e-6
    markdown = client.model_card("admin/digits", markdown=True)
    assert markdown.startswith("---\n")
    assert "## Ethical considerations" in markdown


def test_the_cli_prints_a_bar_chart(server: LiveServer, tmp_path: Path) -> None:
    row = tmp_path / "row.json"
    row.write_text(json.dumps(load_breast_cancer().data[0].tolist()))
    shown = openmaas(
        "explain", "admin/breast-cancer", "--input", str(row), key=server.admin_key, url=server.url
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "tree" in lines[0]
    assert "model evaluations" in lines[0]
    bars = [line for line in lines if line.rstrip().endswith(("+", "-")) and "  " in line]
    assert 5 <= len(bars) <= 10
    assert any("worst" in line or "mean" in line for line in bars)
    card = openmaas("models", "card", "admin/breast-cancer", key=server.admin_key, url=server.url)
    assert card.returncode == 0, card.stderr
    assert "## Caveats and recommendations" in card.stdout
