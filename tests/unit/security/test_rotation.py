"""Root key rotation re-wraps tenant keys; the old root key then opens nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from openmaas.bootstrap import build_services, initialize
from openmaas.registry import ModelRef
from openmaas.security.keyring import WrongRootKeyError
from openmaas.security.rotation import rotate_root_key
from openmaas.serving import InferenceRequest, Tensor
from openmaas.settings import Settings
from tests.helpers.models import scale_model

X = np.ones((1, 4), np.float32)


def _infer(settings: Settings) -> np.ndarray:
    services = build_services(settings)
    try:
        admin = services.accounts.authenticate(settings.admin_key_file.read_text().strip())
        request = InferenceRequest([Tensor("x", "FP32", (1, 4), X)])
        response = asyncio.run(services.dataplane.infer(admin, ModelRef(None, "m"), request))
        return response.outputs[0].array
    finally:
        services.db.close()


def test_rotation_with_the_key_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False)
    services = build_services(settings)
    admin = services.accounts.authenticate(str(initialize(services).admin_key))
    services.registry.publish(admin, "m", scale_model(3.0))
    services.db.close()
    old_text = settings.root_key_file.read_text().strip()

    outcome = rotate_root_key(settings)

    assert outcome.tenant_keys == 1
    assert outcome.new_key_text is None
    assert settings.root_key_file.read_text().strip() != old_text
    assert not (settings.root_key_file.parent / "root.key.new").exists()
    np.testing.assert_array_equal(_infer(settings), X * 3)
    with_old = Settings(data_dir=settings.data_dir, demo_models=False, root_key=SecretStr(old_text))
    with pytest.raises(WrongRootKeyError):
        build_services(with_old)


def test_rotation_with_an_environment_key_returns_the_new_key(tmp_path: Path) -> None:
    first = "A" * 43
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, root_key=SecretStr(first))
    services = build_services(settings)
    admin = services.accounts.authenticate(str(initialize(services).admin_key))
    services.registry.publish(admin, "m", scale_model(2.0))
    services.db.close()
    assert not settings.root_key_file.exists()  # the key never touched the disk

    outcome = rotate_root_key(settings)

    assert outcome.new_key_text
    rotated = Settings(
        data_dir=settings.data_dir, demo_models=False, root_key=SecretStr(outcome.new_key_text)
    )
    np.testing.assert_array_equal(_infer(rotated), X * 2)
    with pytest.raises(WrongRootKeyError):
        build_services(settings)
