"""parse_model_path: how /v2/models/... paths name a model, a version and an action."""

from __future__ import annotations

import pytest

from openmaas.api.v2 import ModelPath, parse_model_path
from openmaas.errors import NotFoundError
from openmaas.registry import ModelRef


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("breast-cancer", ModelPath(ModelRef(None, "breast-cancer"), None, "metadata")),
        ("admin/breast-cancer", ModelPath(ModelRef("admin", "breast-cancer"), None, "metadata")),
        ("m/versions/3", ModelPath(ModelRef(None, "m"), "3", "metadata")),
        ("t/m/versions/3", ModelPath(ModelRef("t", "m"), "3", "metadata")),
        ("t/m/versions/prod", ModelPath(ModelRef("t", "m"), "prod", "metadata")),
        ("m/ready", ModelPath(ModelRef(None, "m"), None, "ready")),
        ("t/m/ready", ModelPath(ModelRef("t", "m"), None, "ready")),
        ("t/m/infer", ModelPath(ModelRef("t", "m"), None, "infer")),
        ("m/infer", ModelPath(ModelRef(None, "m"), None, "infer")),
        ("t/m/versions/3/ready", ModelPath(ModelRef("t", "m"), "3", "ready")),
        ("t/m/versions/3/infer", ModelPath(ModelRef("t", "m"), "3", "infer")),
        ("m/versions/latest/infer", ModelPath(ModelRef(None, "m"), "latest", "infer")),
        ("t/m/", ModelPath(ModelRef("t", "m"), None, "metadata")),
    ],
)
def test_valid_paths(path: str, expected: ModelPath) -> None:
    assert parse_model_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "infer",
        "ready",
        "a/b/c",
        "t/m/versions",
        "t/m/versions/",
        "t/m/metadata",
        "t/m/versions/3/extra",
        "t/m/ready/infer",
        "t/m/infer/ready",
        "x/t/m/versions/3",
        "t/m/versions/1/versions/2",
    ],
)
def test_invalid_paths_are_not_found(path: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        parse_model_path(path)
    assert caught.value.status == 404
    assert "/v2/models/<tenant>/<name>" in caught.value.detail
