"""Encryption at rest as a user of the server meets it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update

from openmaas.bootstrap import Services, build_services
from openmaas.security.keyring import WrongRootKeyError
from openmaas.settings import Settings
from openmaas.store.tables import ModelVersion
from tests.helpers.models import scale_model, tabular_classifier

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def _blob_files(services: Services) -> list[Path]:
    return [p for p in services.settings.blob_dir.rglob("*") if p.is_file()]


def test_only_ciphertext_reaches_the_blob_store(http: TestClient, services: Services) -> None:
    artifact = tabular_classifier()
    assert http.post("/api/v1/models/cancer/versions", content=artifact).status_code == 201
    files = _blob_files(services)
    assert len(files) == 1
    stored = files[0].read_bytes()
    assert stored.startswith(b"OMENC\x01")
    assert artifact[100:164] not in stored  # no stretch of the plaintext survives
    mode = stat.S_IMODE(services.settings.root_key_file.stat().st_mode)
    assert mode == 0o600


def test_a_wrong_root_key_refuses_to_start(http: TestClient, services: Services) -> None:
    http.post("/api/v1/models/m/versions", content=scale_model())
    wrong = Settings(
        data_dir=services.settings.data_dir,
        demo_models=False,
        root_key=SecretStr(os.urandom(32).hex()),
    )
    with pytest.raises(WrongRootKeyError, match="OPENMAAS_ROOT_KEY"):
        build_services(wrong)


def test_a_blob_without_a_valid_envelope_is_refused(http: TestClient, services: Services) -> None:
    http.post("/api/v1/models/m/versions", content=scale_model())
    (blob,) = _blob_files(services)
    blob.write_bytes(scale_model())  # swapped for plaintext behind the server's back
    problems = services.registry.check_storage()
    assert len(problems) == 1
    assert "not an OpenMaaS envelope" in problems[0]
    refused = http.post("/v2/models/m/infer", json=BODY)
    assert refused.status_code == 500
    assert refused.json()["code"] == "inference_failed"
    assert "failed its check" in refused.json()["detail"]


def test_a_version_stored_without_encryption_is_refused(
    http: TestClient, services: Services
) -> None:
    http.post("/api/v1/models/m/versions", content=scale_model())
    with services.db.session() as session:
        session.execute(update(ModelVersion).values(wrapped_key=None))
        session.commit()
    services.registry.invalidate()
    assert "stored without encryption" in services.registry.check_storage()[0]
    refused = http.post("/v2/models/m/infer", json=BODY)
    assert refused.status_code == 503
    assert "publish it again" in refused.json()["detail"]
