"""Text bundles (format ``text-onnx``): publishing checks, tokenizing and encoding, refusals."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from openmaas.errors import InvalidArtifactError, InvalidInputError
from openmaas.runtimes import Signature, TensorSpec, load_runtime, prepare_artifact
from openmaas.runtimes.bert_onnx import bundle
from openmaas.runtimes.text_encoder import FORMAT, TextEncoderRuntime, is_bundle, prepare
from tests.unit.runtimes.test_bert_onnx import HIDDEN, _reference, tiny_encoder, tiny_weights

MAX_LENGTH = 8
_WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "red", "blue"]
_WORDS += ["big", "small", "bird", "fish", "tree", "sun"]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(_WORDS)}


def tiny_tokenizer() -> str:
    """A word-level tokenizer.json that wraps each text in [CLS] ... [SEP]."""
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return str(tokenizer.to_str())


@pytest.fixture(scope="module")
def encoder() -> bytes:
    return tiny_encoder()


@pytest.fixture(scope="module")
def text_bundle(encoder: bytes) -> bytes:
    return bundle(encoder, tiny_tokenizer(), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def runtime(text_bundle: bytes) -> TextEncoderRuntime:
    return TextEncoderRuntime(text_bundle)


def _texts(*texts: str | bytes) -> dict[str, np.ndarray]:
    return {"text": np.array(texts, dtype=object)}


def _zip(members: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _members(encoder: bytes, **changes: bytes | str | None) -> dict[str, bytes | str]:
    """A good bundle's members (``model_onnx`` for model.onnx, ...), some changed or removed."""
    members: dict[str, bytes | str | None] = {
        "model.onnx": encoder,
        "tokenizer.json": tiny_tokenizer(),
        "openmaas.json": json.dumps({"task": "embeddings", "max_length": MAX_LENGTH}),
    }
    for key, value in changes.items():
        members[key.replace("_", ".")] = value
    return {name: value for name, value in members.items() if value is not None}


def _graph(inputs: list[str], output: str) -> bytes:
    """A valid ONNX model: the sum of its INT64 inputs over tokens, as FP32 [b, 1], named
    ``output``."""
    values = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"]) for n in inputs]
    nodes = [helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in inputs]
    nodes.append(helper.make_node("Sum", [f"{n}_f" for n in inputs], ["total"]))
    nodes.append(helper.make_node("ReduceSum", ["total", "axis"], [output], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "g",
        values,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["b", 1])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# -- prepare --------------------------------------------------------------------------------


def test_prepare_describes_the_bundle(text_bundle: bytes) -> None:
    prepared = prepare(text_bundle)
    assert prepared.format == FORMAT == "text-onnx"
    assert prepared.data == text_bundle
    assert prepared.signature == Signature(
        inputs=(TensorSpec("text", "BYTES", (-1,)),),
        outputs=(
            TensorSpec("embedding", "FP32", (-1, HIDDEN)),
            TensorSpec("tokens", "INT64", (-1,)),
        ),
    )
    assert prepared.facts == {"task": "embeddings", "dimensions": HIDDEN, "max_length": MAX_LENGTH}


def test_prepare_artifact_sniffs_a_text_bundle(text_bundle: bytes) -> None:
    assert prepare_artifact(text_bundle) == prepare(text_bundle)
    assert prepare_artifact(text_bundle, format="text-onnx") == prepare(text_bundle)


def test_is_bundle(text_bundle: bytes, encoder: bytes) -> None:
    assert is_bundle(text_bundle)
    assert not is_bundle(encoder)
    no_manifest = _zip({"model.onnx": encoder, "tokenizer.json": tiny_tokenizer()})
    assert not is_bundle(no_manifest)
    assert not is_bundle(b"PK\x03\x04 this is not a zip archive")


def test_plain_onnx_is_not_taken_for_a_text_model(encoder: bytes) -> None:
    assert prepare_artifact(encoder).format == "onnx"


def test_load_runtime_gives_a_text_encoder(text_bundle: bytes) -> None:
    runtime = load_runtime("text-onnx", text_bundle)
    assert isinstance(runtime, TextEncoderRuntime)
    assert runtime.predict(_texts("the cat"), ["tokens"])["tokens"].tolist() == [4]


# -- predict --------------------------------------------------------------------------------


def test_embeddings_are_those_of_the_token_ids(runtime: TextEncoderRuntime) -> None:
    """The tokenizer's ids, with [CLS] and [SEP], are what the encoder sees."""
    got = runtime.predict(_texts("the cat sat"), ["embedding"])["embedding"]
    ids = np.array([[2, VOCAB["the"], VOCAB["cat"], VOCAB["sat"], 3]])
    np.testing.assert_allclose(got, _reference(tiny_weights(), ids, np.ones_like(ids)), atol=1e-5)


def test_a_batch_gives_what_each_text_gives_alone(runtime: TextEncoderRuntime) -> None:
    texts = ("the cat sat on the mat", "a dog", "", "big red bird ran fast")
    batch = runtime.predict(_texts(*texts), [])
    assert set(batch) == {"embedding", "tokens"}
    assert batch["embedding"].shape == (4, HIDDEN)
    assert batch["embedding"].dtype == np.float32
    for i, text in enumerate(texts):
        alone = runtime.predict(_texts(text), [])
        np.testing.assert_allclose(batch["embedding"][i], alone["embedding"][0], atol=1e-6)
        assert batch["tokens"][i] == alone["tokens"][0]
    np.testing.assert_allclose(np.linalg.norm(batch["embedding"], axis=1), 1.0, atol=1e-6)
    assert np.abs(batch["embedding"][0] - batch["embedding"][1]).max() > 0.01


def test_tokens_count_the_real_tokens_with_cls_and_sep(runtime: TextEncoderRuntime) -> None:
    tokens = runtime.predict(_texts("the cat sat on the mat", "a dog", "", "zebra"), ["tokens"])
    assert tokens["tokens"].dtype == np.int64
    assert tokens["tokens"].tolist() == [8, 4, 2, 3]  # "zebra" is one [UNK]


def test_bytes_and_str_texts_are_the_same(runtime: TextEncoderRuntime) -> None:
    as_bytes = runtime.predict(_texts(b"a dog ran", "a dog ran"), ["embedding"])["embedding"]
    np.testing.assert_array_equal(as_bytes[0], as_bytes[1])


def test_long_texts_are_truncated_to_max_length(runtime: TextEncoderRuntime) -> None:
    long = " ".join(_WORDS)  # 18 words, 20 tokens
    result = runtime.predict(_texts(long, "a dog"), [])
    assert result["tokens"].tolist() == [MAX_LENGTH, 4]
    # What is kept: [CLS], the first MAX_LENGTH - 2 words, [SEP].
    head = runtime.predict(_texts(" ".join(_WORDS[: MAX_LENGTH - 2])), [])
    assert head["tokens"].tolist() == [MAX_LENGTH]
    np.testing.assert_allclose(result["embedding"][0], head["embedding"][0], atol=1e-6)


@pytest.mark.parametrize("count", [0, 2049])
def test_batches_must_hold_1_to_2048_texts(runtime: TextEncoderRuntime, count: int) -> None:
    with pytest.raises(InvalidInputError, match="1 to 2048 texts") as caught:
        runtime.predict(_texts(*(["a cat"] * count)), [])
    assert caught.value.field == "text"


def test_a_batch_of_2048_texts_is_served(runtime: TextEncoderRuntime) -> None:
    result = runtime.predict(_texts(*(["a cat"] * 2048)), ["tokens"])
    assert result["tokens"].shape == (2048,)


@pytest.mark.parametrize("outputs", [["embedding"], ["tokens"], ["tokens", "embedding"]])
def test_only_the_requested_outputs_are_returned(
    runtime: TextEncoderRuntime, outputs: list[str]
) -> None:
    result = runtime.predict(_texts("a cat", "the dog sat"), outputs)
    assert list(result) == outputs
    assert len(result[outputs[0]]) == 2


def test_an_unloaded_runtime_refuses_to_predict(text_bundle: bytes) -> None:
    runtime = TextEncoderRuntime(text_bundle)
    runtime.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        runtime.predict(_texts("a cat"), [])


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["model.onnx", "tokenizer.json", "openmaas.json"])
def test_a_bundle_missing_a_member_is_refused(encoder: bytes, member: str) -> None:
    data = _zip(_members(encoder, **{member.replace(".", "_"): None}))
    with pytest.raises(InvalidArtifactError, match=f"lacks {re.escape(member)}"):
        prepare(data)
    with pytest.raises(InvalidArtifactError, match=f"lacks {re.escape(member)}"):
        TextEncoderRuntime(data)


@pytest.mark.parametrize(
    "manifest",
    [{"task": "classification", "max_length": MAX_LENGTH}, {"max_length": MAX_LENGTH}, ["x"]],
)
def test_a_manifest_for_another_task_is_refused(encoder: bytes, manifest: object) -> None:
    data = _zip(_members(encoder, openmaas_json=json.dumps(manifest)))
    with pytest.raises(InvalidArtifactError, match='"task": "embeddings"'):
        prepare(data)


@pytest.mark.parametrize("length", [0, -1, 9000, "x", 12.5])
def test_a_max_length_out_of_range_is_refused(encoder: bytes, length: object) -> None:
    data = _zip(
        _members(encoder, openmaas_json=json.dumps({"task": "embeddings", "max_length": length}))
    )
    with pytest.raises(InvalidArtifactError, match="max_length must be 1 to 8192"):
        prepare(data)
    with pytest.raises(InvalidArtifactError, match="max_length must be 1 to 8192"):
        TextEncoderRuntime(data)


def test_a_manifest_that_is_not_json_is_refused(encoder: bytes) -> None:
    with pytest.raises(InvalidArtifactError, match="not valid JSON"):
        prepare(_zip(_members(encoder, openmaas_json="task: embeddings")))


@pytest.mark.parametrize("tokenizer", ["not json", "{}", json.dumps({"model": {"type": "Nope"}})])
def test_a_tokenizer_json_that_is_not_a_tokenizer_is_refused(
    encoder: bytes, tokenizer: str
) -> None:
    data = _zip(_members(encoder, tokenizer_json=tokenizer))
    with pytest.raises(InvalidArtifactError, match=r"tokenizer\.json is not a tokenizers file"):
        prepare(data)
    with pytest.raises(InvalidArtifactError, match=r"tokenizer\.json is not a tokenizers file"):
        TextEncoderRuntime(data)


@pytest.mark.parametrize(
    ("inputs", "output"),
    [
        (["x"], "embedding"),
        (["input_ids"], "embedding"),
        (["input_ids", "attention_mask", "token_type_ids"], "embedding"),
        (["input_ids", "attention_mask"], "vector"),
    ],
)
def test_a_graph_with_other_inputs_or_outputs_is_refused(inputs: list[str], output: str) -> None:
    data = _zip(_members(b"", model_onnx=_graph(inputs, output)))
    with pytest.raises(InvalidArtifactError, match="must take input_ids and attention_mask"):
        prepare(data)


def test_the_graph_check_passes_a_graph_with_the_right_names() -> None:
    """Guards the test above: its graphs are refused for their names, not for being broken."""
    data = _zip(_members(b"", model_onnx=_graph(["input_ids", "attention_mask"], "embedding")))
    assert prepare(data).format == FORMAT


def test_a_model_onnx_that_is_not_onnx_is_refused(encoder: bytes) -> None:
    with pytest.raises(InvalidArtifactError, match="not a valid ONNX model"):
        prepare(_zip(_members(encoder, model_onnx=b"\x00garbage" * 10)))


@pytest.mark.parametrize("cut", [30, 200, -30])
def test_a_corrupt_zip_is_refused(text_bundle: bytes, cut: int) -> None:
    data = text_bundle[:cut]
    with pytest.raises(InvalidArtifactError, match="text bundle"):
        prepare(data)
    with pytest.raises(InvalidArtifactError, match="text bundle"):
        TextEncoderRuntime(data)
    with pytest.raises(InvalidArtifactError):
        prepare_artifact(data, format="text-onnx")


def test_an_embedding_that_is_not_one_vector_per_text_is_refused() -> None:
    values = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"])
        for n in ("input_ids", "attention_mask")
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axis"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        values,
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", "t", 1])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(InvalidArtifactError, match=r"FP32 \[batch, size\]"):
        prepare(_zip(_members(model.SerializeToString())))  # token states, not one vector


def _classifier_graph(classes: int) -> bytes:
    """``logits`` FP32 [b, classes]: the mean token id times 1, 2, ... (so longer ids win)."""
    values = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"])
        for n in ("input_ids", "attention_mask")
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["mean", "scale"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        values,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", classes])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [classes], np.arange(classes) - 1.0),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _classifier_bundle(labels: list[str], classes: int = 3) -> bytes:
    manifest = {"task": "text-classification", "max_length": MAX_LENGTH, "labels": labels}
    return _zip(_members(_classifier_graph(classes), openmaas_json=json.dumps(manifest)))


def test_a_text_classifier_answers_labels_and_probabilities() -> None:
    data = _classifier_bundle(["low", "middle", "high"])
    prepared = prepare(data)
    assert prepared.facts["task"] == "text-classification"
    assert prepared.facts["labels"] == ["low", "middle", "high"]
    assert [spec.name for spec in prepared.signature.outputs] == [
        "label",
        "probabilities",
        "tokens",
    ]
    runtime = TextEncoderRuntime(data)
    texts = np.array([b"hello world", b"hello"], dtype=object)
    answer = runtime.predict({"text": texts}, [])
    probabilities = answer["probabilities"]
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)
    # The logits rise with the class index for any positive mean id: "high" wins.
    assert answer["label"].tolist() == [b"high", b"high"]
    assert (probabilities.argmax(axis=1) == 2).all()


@pytest.mark.parametrize("labels", [None, [], ["only"], ["a", ""], ["a", "b"]])
def test_a_classifier_needs_one_label_per_class(labels: list[str] | None) -> None:
    with pytest.raises(InvalidArtifactError, match="label"):
        prepare(_classifier_bundle(labels))  # type: ignore[arg-type]
