"""Schemathesis over every operation of the in-process app: every check, valid and invalid data.

The schema is the app's own ``/openapi.json``, loaded over ASGI from an app on a fresh data
directory with one small published model (``admin/scale``), so the model routes have something
real to find. Every call carries a valid admin key; the ``ignored_auth`` check then repeats
calls without it, and with a wrong one, and expects a 401.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from openmaas.app import create_app
from openmaas.bootstrap import Services
from openmaas.security.policy import default_scopes
from openmaas.settings import Settings
from tests.helpers.models import scale_model

# Spelled out, so that no schemathesis.toml can narrow the run: every check, both generation
# modes (schema-valid and schema-violating data), every phase a pytest run has (stateful
# runs need OpenAPI links, which the schema has none of).
CONFIG = {
    "checks": {"enabled": True},
    # The calls carry a real key (below); generating the Authorization header too would only
    # make "negative" cases whose missing or random key the real one then replaces.
    "generation": {"mode": "all", "with-security-parameters": False},
    "phases": {name: {"enabled": True} for name in ("examples", "coverage", "fuzzing")},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The conftest settings (services and keys follow them), with rate limits out of the way."""
    return Settings(
        data_dir=tmp_path / "data",
        demo_models=False,
        inference_threads=2,
        key_rate_per_second=1_000_000.0,
        tenant_rate_per_second=1_000_000.0,
    )


@pytest.fixture
def api_schema(
    request: pytest.FixtureRequest, settings: Settings, services: Services, admin_key: str
) -> BaseSchema:
    # schemathesis 4.32 renames the running test through ``Node._nodeid``, which pytest 9.2 no
    # longer has; give it one (only the names in the report depend on it).
    request.node._nodeid = request.node.nodeid
    app = create_app(settings, services)
    client = TestClient(app, headers={"Authorization": f"Bearer {admin_key}"})
    published = client.post("/api/v1/models/scale/versions", content=scale_model())
    assert published.status_code == 201, published.text
    config = SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(
    max_examples=30,  # per operation and mode; the whole run stays under a minute
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app per test, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, admin_key: str) -> None:
    if case.meta is not None and case.meta.generation.mode.is_positive:
        _obey_runtime_rules(case)
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_key}"})


def _obey_runtime_rules(case: schemathesis.Case) -> None:
    """Make a schema-valid case valid for the rules JSON Schema cannot state.

    Without this, ``positive_data_acceptance`` reports each of these rules as a schema-valid
    request refused with 400 or 422. Schema-violating (negative) cases are left alone.
    """
    body = case.body
    label = case.operation.label
    if label == "POST /api/v1/models/{model_id}/versions":
        # An artifact is a model, not any bytes. Valid forms (artifact, card, background) are
        # the subject of tests/api/test_explain.py: here the model goes as the plain body.
        case.media_type = "application/octet-stream"
        case.body = scale_model()
    elif label == "POST /api/v1/keys" and isinstance(body, dict):
        if body.get("expires_at") is not None:  # in the future
            body["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        if body.get("scopes") is not None:  # a subset of the role's scopes
            allowed = default_scopes(str(body.get("role", "consumer")))
            body["scopes"] = [scope for scope in body["scopes"] if scope in allowed]
        body.pop("member", None)  # a member that exists
    elif label == "POST /api/v1/models/{model_id}/grants" and isinstance(body, dict):
        if body.get("tenant") == "admin":  # another tenant: one's own may always call
            body["tenant"] = "someone-else"
    elif label == "PUT /api/v1/models/{model_id}/deployment" and isinstance(body, dict):
        least = max(1, body.get("min_replicas") or 0)  # max_replicas >= min_replicas
        if (body.get("max_replicas") or 1) < least:
            body["max_replicas"] = least
    elif label.startswith("POST /v1/") and isinstance(body, dict):
        body["model"] = "admin/no-language-model"  # none here: the route answers 404
        for name in ("max_tokens", "max_completion_tokens"):  # within OPENMAAS_LLM_MAX_TOKENS
            if body.get(name) is not None:
                body[name] = min(body[name], 512)
    elif label == "POST /v2/models/{model_path}" and isinstance(body, dict):
        for tensor in body.get("inputs", []):
            _fill_tensor(tensor)


def _fill_tensor(tensor: dict[str, Any]) -> None:
    """Data that agrees with the tensor's shape and datatype (at most 16 elements)."""
    shape = [min(dim, 2) for dim in tensor["shape"][:4]]
    zero = {"BOOL": False, "BYTES": ""}.get(tensor["datatype"], 0)
    tensor["shape"] = shape
    tensor["data"] = [zero] * math.prod(shape)
    tensor.pop("parameters", None)  # no binary_data_size: the data is in the JSON
