"""A data directory survives restarts: same admin key, models and deployments, no bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openmaas import Client
from tests.helpers.models import scale_model
from tests.helpers.server import live_server


def test_restart_keeps_keys_and_models(tmp_path: Path) -> None:
    data_dir = tmp_path / "openmaas-data"
    with (
        live_server(data_dir, demo_models=False) as first,
        Client(first.url, first.admin_key) as client,
    ):
        client.publish(scale_model(4.0), "persisted")
        deployment = client.set_deployment("admin/persisted", min_replicas=1, max_batch_size=8)
        consumer = client.create_key(role="consumer")["api_key"]
    with live_server(data_dir, demo_models=False) as second:
        assert second.admin_key == first.admin_key
        assert second.admin_key not in second.log_file.read_text()
        with Client(second.url, consumer) as client:
            result = client.infer("admin/persisted", {"x": np.ones((2, 4), np.float32)})
            np.testing.assert_array_equal(result["y"], np.full((2, 4), 4.0))
            assert client.get_model("admin/persisted")["summary"]["latest_version"] == 1
            assert client.get_deployment("admin/persisted") == deployment
