"""Erasing a tenant on a real server leaves no canary byte on disk, in logs or temp files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from openmaas import Client
from tests.helpers.models import scale_model
from tests.helpers.server import live_server

CANARY = "CANARY-b8d14e0f92"


def _canary_model() -> bytes:
    model = onnx.load_model_from_string(scale_model())
    model.doc_string = CANARY * 4
    return model.SerializeToString()


def _holders(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            try:
                if path.is_file() and CANARY.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue  # another process's private file: not ours to read
    return found


def test_tenant_erasure_leaves_no_canary_anywhere(tmp_path: Path) -> None:
    data_dir = tmp_path / "openmaas-data"
    with live_server(data_dir, demo_models=False) as server:
        with Client(server.url, server.admin_key) as admin:
            lab_key = admin.create_tenant("canary-lab")["api_key"]
            with Client(server.url, lab_key) as lab:
                lab.publish(_canary_model(), "secret-model", description=f"{CANARY} card")
                consumer_key = lab.create_key(role="consumer", name=CANARY)["api_key"]
                lab.infer("canary-lab/secret-model", {"x": [[1.0, 2.0, 3.0, 4.0]]})
            assert _holders(data_dir), "the canary should be in the database before erasure"
            # API key secrets never reach the database, the logs or an error message.
            secrets = [key.split("_")[2] for key in (lab_key, consumer_key)]
            everything = (
                b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
                + server.log_file.read_bytes()
            )
            assert not [s for s in secrets if s.encode() in everything]
            receipt = admin.erase(tenant="canary-lab")
            assert admin.verify_erasure(receipt["receipt_id"])["ok"]
        server_log = server.log_file
        temp_dirs = [
            Path(tempfile.gettempdir()) / name
            for name in os.listdir(tempfile.gettempdir())
            if name.startswith("openmaas")
        ]
        assert _holders(data_dir, *temp_dirs) == []
        assert CANARY not in server_log.read_text()
