"""POST /v2/models/{model}/explain in process: methods, quality, costs, errors, cards."""

from __future__ import annotations

import io
import json
from functools import cache

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openmaas.bootstrap import Services
from openmaas.settings import Settings

FEATURES = 5


@cache
def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 2 * x[:, 1] - x[:, 3] > 0).astype(np.int64)
    return x, y


def _onnx(estimator: object) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = to_onnx(
        estimator,
        initial_types=[("x", FloatTensorType([None, FEATURES]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(model.SerializeToString())


@cache
def _logistic() -> bytes:
    from sklearn.linear_model import LogisticRegression

    return _onnx(LogisticRegression().fit(*_data()))


@cache
def _forest() -> bytes:
    from sklearn.ensemble import RandomForestClassifier

    return _onnx(RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(*_data()))


def _csv(rows: np.ndarray) -> bytes:
    header = ",".join(f"f{i}" for i in range(rows.shape[1]))
    body = "\n".join(",".join(str(float(v)) for v in row) for row in rows)
    return f"{header}\n{body}\n".encode()


CARD = """---
model_details:
  license: Apache-2.0
---
# fraud

## Model details
A logistic regression on five synthetic features.

## Intended use
Tests of the explain endpoint.

## Factors
None.

## Metrics
Accuracy.

## Evaluation data
The training data.

## Training data
300 synthetic rows.

## Quantitative analyses
Not measured.

## Ethical considerations
Synthetic data only.

## Caveats and recommendations
Do not use it for anything real.
"""


def _publish(
    http: TestClient, name: str, artifact: bytes, background: bytes | None, card: bytes | None
) -> dict[str, object]:
    files = {"artifact": ("model.onnx", artifact)}
    if background is not None:
        files["background"] = ("background.csv", background)
    if card is not None:
        files["card"] = ("card.md", card)
    response = http.post(f"/api/v1/models/{name}/versions", files=files)
    assert response.status_code == 201, response.text
    published: dict[str, object] = response.json()
    return published


def _body(rows: np.ndarray, **parameters: object) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ],
        "parameters": parameters,
    }


@pytest.fixture
def published(http: TestClient) -> TestClient:
    x, _ = _data()
    _publish(http, "fraud", _logistic(), _csv(x[:100]), CARD.encode())
    _publish(http, "forest", _forest(), _csv(x[:100]), None)
    _publish(http, "bare", _logistic(), None, None)
    return http


def _explain(http: TestClient, model: str, rows: np.ndarray, **parameters: object) -> dict:
    response = http.post(f"/v2/models/admin/{model}/explain", json=_body(rows, **parameters))
    assert response.status_code == 200, response.text
    answer: dict = response.json()
    return answer


def test_exact_shapley_adds_up_to_the_prediction(published: TestClient) -> None:
    x, _ = _data()
    rows = x[200:203]
    answer = _explain(published, "fraud", rows)
    explanation = answer["explanation"]
    assert explanation["method"] == "exact"
    assert answer["sha256"]
    assert answer["model_version"] == "1"
    attributions = np.array(explanation["attributions"]["data"]).reshape(
        explanation["attributions"]["shape"]
    )
    assert attributions.shape == (3, FEATURES, 2)
    base = np.array(explanation["base_values"]["data"]).reshape(3, 2)
    predicted = np.array(answer["outputs"][0]["data"]).reshape(3, 2)
    assert np.abs(base + attributions.sum(axis=1) - predicted).max() <= 1e-6
    inferred = published.post("/v2/models/admin/fraud/infer", json=_body(rows)).json()
    probabilities = next(o for o in inferred["outputs"] if o["name"] == explanation["output"])
    assert np.allclose(np.array(probabilities["data"]).reshape(3, 2), predicted, atol=1e-6)
    quality = explanation["quality"]
    assert quality["additivity_error"] <= 1e-6
    assert quality["converged"] is True
    rows_of_background = explanation["baseline"]["rows"]
    # f(x) once, then every coalition but the full one against each background row.
    assert quality["n_evals"] == 3 * (1 + rows_of_background * (2**FEATURES - 1))
    assert explanation["feature_names"] == [f"f{i}" for i in range(FEATURES)]
    # Feature 2 and 4 play no part in the label: they get the smallest attributions.
    weights = np.abs(attributions[..., 1]).mean(axis=0)
    assert set(np.argsort(weights)[:2]) == {2, 4}


def test_tree_models_get_tree_shap(published: TestClient) -> None:
    x, _ = _data()
    answer = _explain(published, "forest", x[250:252])
    explanation = answer["explanation"]
    assert explanation["method"] == "tree"
    assert explanation["quality"]["additivity_error"] <= 1e-6
    assert explanation["quality"]["n_evals"] <= 2 * (1 + explanation["baseline"]["rows"])


def test_sampling_methods_are_deterministic_for_a_seed(published: TestClient) -> None:
    x, _ = _data()
    first = _explain(published, "fraud", x[:1], explainer="permutation", seed=7, max_evals=600)
    again = _explain(published, "fraud", x[:1], explainer="permutation", seed=7, max_evals=600)
    other = _explain(published, "fraud", x[:1], explainer="permutation", seed=8, max_evals=600)
    data = first["explanation"]["attributions"]["data"]
    assert data == again["explanation"]["attributions"]["data"]
    assert first["explanation"]["parameters"]["seed"] == 7
    assert first["explanation"]["quality"]["n_evals"] <= 600
    assert other["explanation"]["quality"]["n_evals"] <= 600
    kernel = _explain(published, "fraud", x[:1], explainer="kernel", seed=3)
    assert kernel["explanation"]["method"] == "kernel"
    assert kernel["explanation"]["quality"]["additivity_error"] <= 1e-6


def test_a_baseline_replaces_missing_background(published: TestClient) -> None:
    x, _ = _data()
    refused = published.post("/v2/models/admin/bare/explain", json=_body(x[:1]))
    assert refused.status_code == 422
    assert refused.json()["code"] == "explanation_unavailable"
    assert "background" in refused.json()["detail"]
    answer = _explain(published, "bare", x[:1], baseline=[0.0] * FEATURES)
    assert answer["explanation"]["baseline"] == {"source": "baseline", "rows": 1}
    assert answer["explanation"]["quality"]["n_evals"] == 2**FEATURES


@pytest.mark.parametrize(
    ("parameters", "code", "field"),
    [
        ({"max_evals": 10}, "explain_cost_exceeded", "max_evals"),
        ({"explainer": "exact", "max_evals": 100}, "explain_cost_exceeded", "max_evals"),
        ({"max_evals": 10**9}, "validation_error", "max_evals"),
        ({"explainer": "magic"}, "validation_error", "explainer"),
        ({"explainer": "tree"}, "explanation_unavailable", "explainer"),
        ({"explainer": "occlusion"}, "explanation_unavailable", "explainer"),
        ({"seed": -1}, "validation_error", "seed"),
        ({"baseline": [1, 2]}, "validation_error", "baseline"),
        ({"output": "label"}, "validation_error", "output"),
    ],
)
def test_bad_explain_requests_are_clear_422s(
    published: TestClient, parameters: dict[str, object], code: str, field: str
) -> None:
    x, _ = _data()
    response = published.post("/v2/models/admin/fraud/explain", json=_body(x[:1], **parameters))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert (problem["code"], problem["field"]) == (code, field)
    assert problem["detail"]


def test_the_cost_cap_counts_every_row(published: TestClient) -> None:
    x, _ = _data()
    response = published.post("/v2/models/admin/fraud/explain", json=_body(x[:40]))
    # 40 rows of exact Shapley over the background do not fit 2,048 evaluations: auto samples.
    assert response.status_code == 422 or response.json()["explanation"]["method"] != "exact"


def test_explain_needs_post_and_the_infer_right(published: TestClient) -> None:
    assert published.get("/v2/models/admin/fraud/explain").status_code == 405
    key = published.post("/api/v1/keys", json={"name": "viewer", "role": "viewer"}).json()
    x, _ = _data()
    denied = published.post(
        "/v2/models/admin/fraud/explain",
        json=_body(x[:1]),
        headers={"Authorization": f"Bearer {key['api_key']}"},
    )
    assert denied.status_code == 403


def test_model_card_as_json_and_markdown(published: TestClient, services: Services) -> None:
    card = published.get("/api/v1/models/admin/fraud/versions/1/card")
    assert card.status_code == 200
    sections = card.json()
    assert sections["model_details"]["license"] == "Apache-2.0"
    assert "logistic regression" in sections["model_details"]["text"]
    quality = sections["quantitative_analyses"]["explanation_quality"]
    assert quality["measured"] is True
    assert quality["method"] == "exact"
    assert quality["max_additivity_error"] <= 1e-6
    markdown = published.get(
        "/api/v1/models/admin/fraud/versions/latest/card", headers={"Accept": "text/markdown"}
    )
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("---\n")
    assert "## Caveats and recommendations" in markdown.text
    assert markdown.headers["etag"] == card.headers["etag"]
    detail = published.get("/api/v1/models/admin/fraud").json()
    digest = detail["versions"][0]["card_sha256"]
    assert card.headers["etag"] == f'"{digest}"'
    records = published.get("/api/v1/audit", params={"limit": 1000}).json()
    publishes = [r for r in records if r["action"] == "model.publish"]
    assert any(r["details"].get("card_sha256") == digest for r in publishes)
    generated = published.get("/api/v1/models/admin/bare/versions/1/card").json()
    assert "Not documented" in generated["intended_use"]["text"]
    schema = published.get("/api/v1/model-card-schema").json()
    assert set(schema["required"]) >= {"model_details", "caveats_and_recommendations"}


@pytest.mark.parametrize(
    ("part", "content", "code"),
    [
        ("card", b"---\nmodel_details: [\n---\n", "invalid_model_card"),
        ("card", json.dumps({"model_details": {"text": "x"}}).encode(), "invalid_model_card"),
        ("background", b"1,2,3\n4,5,6\n", "validation_error"),
        ("background", b"not,a,number,at,all\nx,y,z,w,v\n", "validation_error"),
    ],
)
def test_bad_cards_and_backgrounds_are_refused_and_store_nothing(
    http: TestClient, part: str, content: bytes, code: str
) -> None:
    files = {"artifact": ("m.onnx", _logistic()), part: (part, content)}
    response = http.post("/api/v1/models/strict/versions", files=files)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert response.json()["field"] in ("card", "background") or response.json()["field"]
    assert http.get("/api/v1/models/admin/strict").status_code == 404


def test_a_background_upload_as_npy(http: TestClient) -> None:
    x, _ = _data()
    buffer = io.BytesIO()
    np.save(buffer, x[:50].astype(np.float64), allow_pickle=False)
    info = _publish(http, "npy", _logistic(), buffer.getvalue(), None)
    assert info["background"] == {"source": "kmeans", "rows": 8}


def _cat_detector() -> bytes:
    """A toy text classifier: logits [-n, n] where n counts the word "cat" (one token id)."""
    from onnx import TensorProto, helper

    from tests.unit.runtimes.test_text_encoder import MAX_LENGTH, VOCAB, _members, _zip

    values = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"])
        for n in ("input_ids", "attention_mask")
    ]
    nodes = [
        helper.make_node("Equal", ["input_ids", "cat"], ["is_cat"]),
        helper.make_node("Cast", ["is_cat"], ["hits"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["hits", "axis"], ["count"], keepdims=1),
        helper.make_node("Mul", ["count", "sign"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cats",
        values,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        initializer=[
            helper.make_tensor("cat", TensorProto.INT64, [], [VOCAB["cat"]]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("sign", TensorProto.FLOAT, [2], [-1.0, 1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest = {"task": "text-classification", "max_length": MAX_LENGTH, "labels": ["no", "cat"]}
    return _zip(_members(model.SerializeToString(), openmaas_json=json.dumps(manifest)))


def test_a_text_classifier_gets_word_attributions(http: TestClient) -> None:
    pytest.importorskip("tokenizers")
    _publish(http, "cats", _cat_detector(), None, None)
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the cat sat"]}]
    }
    response = http.post("/v2/models/admin/cats/explain", json=body)
    assert response.status_code == 200, response.text
    explanation = response.json()["explanation"]
    assert explanation["method"] == "occlusion"
    assert explanation["tokens"] == ["the", "cat", "sat"]
    assert explanation["classes"] == ["no", "cat"]
    attributions = np.array(explanation["attributions"]["data"]).reshape(
        explanation["attributions"]["shape"]
    )
    assert attributions.shape == (1, 3, 2)
    assert attributions[0, 1, 1] > 0.2  # "cat" raised the probability of "cat"
    np.testing.assert_allclose(attributions[0, [0, 2]], 0, atol=1e-9)
    assert explanation["quality"]["n_evals"] == 3 + 2
    two = {**body, "inputs": [{**body["inputs"][0], "shape": [2], "data": ["a", "b"]}]}
    refused = http.post("/v2/models/admin/cats/explain", json=two)
    assert refused.status_code == 400
    assert refused.json()["field"] == "text"


def test_a_worker_process_explains_like_the_inline_replica(
    published: TestClient, services: Services
) -> None:
    from openmaas.serving.backends.worker_process import WorkerProcess

    x, _ = _data()
    inline = _explain(published, "fraud", x[:2])
    _publish(published, "isolated", _logistic(), _csv(x[:100]), None)
    moved = published.put("/api/v1/models/admin/isolated/deployment", json={"isolation": "process"})
    assert moved.status_code == 200, moved.text
    in_worker = _explain(published, "isolated", x[:2])
    assert in_worker["explanation"]["method"] == "exact"
    np.testing.assert_allclose(
        in_worker["explanation"]["attributions"]["data"],
        inline["explanation"]["attributions"]["data"],
        atol=1e-6,
    )
    runners = services.engine._runners.values()
    isolated = [r for r in runners if r.model.name.startswith("admin/isolated")]
    assert isinstance(isolated[0].slots[0].replica, WorkerProcess)
    # A refusal the worker makes (one permutation pair does not fit) stays a 422.
    refused = published.post(
        "/v2/models/admin/isolated/explain",
        json=_body(x[:1], explainer="permutation", max_evals=20),
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "explain_cost_exceeded"


def test_explanations_count_against_a_grant_quota(published: TestClient) -> None:
    key = published.post("/api/v1/tenants", json={"name": "lab2"}).json()["api_key"]
    grantee = {"Authorization": f"Bearer {key}"}
    shared = published.post(
        "/api/v1/models/admin/fraud/grants", json={"tenant": "lab2", "quota_per_day": 2}
    )
    assert shared.status_code == 201, shared.text
    x, _ = _data()
    path = "/v2/models/admin/fraud/explain"
    assert published.post(path, json=_body(x[:1]), headers=grantee).status_code == 200
    assert (
        published.post(
            "/v2/models/admin/fraud/infer", json=_body(x[:1]), headers=grantee
        ).status_code
        == 200
    )
    refused = published.post(path, json=_body(x[:1]), headers=grantee)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1


def test_publish_forms_must_be_well_formed(http: TestClient) -> None:
    extra = {"artifact": ("m.onnx", _logistic()), "surprise": ("s", b"x")}
    unexpected = http.post("/api/v1/models/forms/versions", files=extra)
    assert unexpected.status_code == 400
    assert "surprise" in unexpected.json()["detail"]
    missing = http.post("/api/v1/models/forms/versions", files={"card": ("c", CARD.encode())})
    assert missing.status_code == 400
    assert missing.json()["field"] == "artifact"
    no_boundary = http.post(
        "/api/v1/models/forms/versions",
        content=b"--x\r\n",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert no_boundary.status_code == 400
    broken = http.post(
        "/api/v1/models/forms/versions",
        content=b"garbage without any boundary line",
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    assert broken.status_code == 400
    assert http.get("/api/v1/models/admin/forms").status_code == 404


def test_erasing_a_version_deletes_its_background_too(
    http: TestClient, services: Services, settings: Settings
) -> None:
    from sqlalchemy import select

    from openmaas.store import LocalBlobStore
    from openmaas.store.tables import ModelVersion

    store = LocalBlobStore(settings.blob_dir)
    x, _ = _data()
    _publish(http, "erased", _logistic(), _csv(x[:50]), None)
    with services.db.session() as session:
        row = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).first()
        assert row is not None
        blobs = [row.blob_sha256, row.background_blob_sha256]
    assert all(blob and store.exists(blob) for blob in blobs)
    erased = http.post("/api/v1/erasures", json={"model": "admin/erased", "version": 1})
    assert erased.status_code == 201, erased.text
    assert not any(store.exists(blob) for blob in blobs if blob)


_WEIRD = [None, True, -1, 0, 1, 3, 2**40, 0.5, float("1e308"), "x", "", [], [1, 2], {"a": 1}]
_NAMES = [
    "explainer",
    "max_evals",
    "seed",
    "baseline",
    "output",
    "target",
    "window",
    "stride",
    "fill",
    "tolerance",
    "mask",
]


@pytest.mark.parametrize("name", _NAMES)
def test_odd_explain_parameters_never_fail_the_server(published: TestClient, name: str) -> None:
    x, _ = _data()
    for value in _WEIRD:
        parameters = {name: value, "max_evals": 600} if name != "max_evals" else {name: value}
        response = published.post(
            "/v2/models/admin/forest/explain", json=_body(x[:1], **parameters)
        )
        assert response.status_code in (200, 400, 422), (name, value, response.text)
        if response.status_code != 200:
            assert response.json()["detail"]


def _image_model() -> bytes:
    """Softmax of a linear map of a 1x4x4 image: an image model without torch."""
    from onnx import TensorProto, helper

    weights = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 4, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [16, 3], weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.mark.parametrize("name", [*_NAMES, "none"])
def test_odd_image_explain_parameters_never_fail_the_server(http: TestClient, name: str) -> None:
    _publish(http, "picture", _image_model(), None, None)
    image = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 1, 4, 4],
                "data": image.ravel().tolist(),
            }
        ]
    }
    for value in _WEIRD:
        for explainer in ("occlusion", "auto"):
            parameters = {"explainer": explainer, name: value}
            if name == "none":
                parameters = {"explainer": explainer}
            response = http.post(
                "/v2/models/admin/picture/explain", json={**body, "parameters": parameters}
            )
            assert response.status_code in (200, 400, 422), (name, value, response.text)
    png = http.post(
        "/v2/models/admin/picture/explain",
        json={**body, "parameters": {"explainer": "occlusion"}},
        headers={"Accept": "image/png"},
    )
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG")


def test_a_background_loaded_during_an_erasure_is_not_kept(
    published: TestClient, services: Services
) -> None:
    import asyncio

    from openmaas.registry import ModelRef

    dataplane = services.dataplane
    admin = services.accounts.authenticate(published.headers["Authorization"].split()[1])
    resolved = services.registry.resolve(admin, ModelRef.parse("admin/fraud"))
    load = services.registry.load_background

    def load_while_erasing(version: object) -> object:
        dataplane.forget(["unrelated"])  # an erasure lands while the rows are decrypted
        return load(version)  # type: ignore[arg-type]

    services.registry.load_background = load_while_erasing  # type: ignore[method-assign]
    try:
        rows = asyncio.run(dataplane._background(resolved))
    finally:
        services.registry.load_background = load  # type: ignore[method-assign]
    assert rows is not None
    assert resolved.background_blob_sha256 not in dataplane._backgrounds
    assert asyncio.run(dataplane._background(resolved)) is not None
    assert resolved.background_blob_sha256 in dataplane._backgrounds
