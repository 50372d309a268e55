"""The ``openmaas`` command, run as a user runs it, against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers.models import breast_cancer_rows, scale_model
from tests.helpers.server import LiveServer, server_env


def openmaas(
    *args: str, key: str | None = None, url: str | None = None, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would."""
    env = server_env(**env_extra)
    if url:
        env["OPENMAAS_URL"] = url
    if key:
        env["OPENMAAS_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "openmaas", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_publish_list_show_infer_with_the_cli(server: LiveServer, tmp_path: Path) -> None:
    model_file = tmp_path / "fraud.onnx"
    model_file.write_bytes(scale_model(2.0))

    def run(*args: str, key: str = server.admin_key) -> subprocess.CompletedProcess[str]:
        return openmaas(*args, key=key, url=server.url)

    first = run("models", "publish", str(model_file), "--name", "cli-fraud")
    assert first.returncode == 0, first.stderr
    assert "admin/cli-fraud version 1" in first.stdout
    model_file.write_bytes(scale_model(5.0))
    second = run("models", "publish", str(model_file), "--name", "cli-fraud", "--alias", "prod")
    assert "version 2" in second.stdout

    listing = run("models", "list")
    line = next(x for x in listing.stdout.splitlines() if x.startswith("admin/cli-fraud"))
    assert line.split()[1:] == ["2", "private"]
    shown = json.loads(run("models", "show", "admin/cli-fraud").stdout)
    assert shown["aliases"] == {"latest": 2, "prod": 2}
    assert shown["versions"][0]["signature"]["inputs"][0]["name"] == "x"

    inline = run("infer", "admin/cli-fraud", "--input", '{"x": [[1, 2, 3, 4]]}')
    assert json.loads(inline.stdout) == {"y": [[5.0, 10.0, 15.0, 20.0]]}
    run("models", "alias", "admin/cli-fraud", "prod", "1")
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"x": [[1, 1, 1, 1], [2, 2, 2, 2]]}))
    from_file = run("infer", "admin/cli-fraud", "--input", str(inputs_file), "--version", "prod")
    assert json.loads(from_file.stdout) == {"y": [[2.0] * 4, [4.0] * 4]}

    missing = run("infer", "admin/cli-nothing", "--input", '{"x": [[1, 2, 3, 4]]}')
    assert missing.returncode == 1
    assert "model_not_found" in missing.stderr


def test_demo_model_through_the_cli(server: LiveServer) -> None:
    row = breast_cancer_rows(1).tolist()
    result = openmaas(
        "infer",
        "admin/breast-cancer",
        "--input",
        json.dumps({"float_input": row}),
        key=server.admin_key,
        url=server.url,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["output_label"] == [0]
    assert np.isclose(sum(output["output_probability"][0]), 1.0)


def test_tenants_and_keys_with_the_cli(server: LiveServer) -> None:
    created = openmaas("tenants", "create", "cli-lab", key=server.admin_key, url=server.url)
    assert created.returncode == 0, created.stderr
    lab_key = created.stdout.strip().splitlines()[-1]
    assert lab_key.startswith("om_")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return openmaas(*args, key=lab_key, url=server.url)

    assert json.loads(run("whoami").stdout)["tenant"] == "cli-lab"
    made = run("keys", "create", "--role", "viewer", "--name", "reader", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    viewer_key = made.stdout.strip().splitlines()[-1]
    key_id = viewer_key[3:15]
    listing = run("keys", "list").stdout
    assert key_id in listing
    assert viewer_key not in listing
    assert "reader" in listing
    assert openmaas("models", "list", key=viewer_key, url=server.url).returncode == 0
    assert run("keys", "revoke", key_id).returncode == 0
    revoked = openmaas("models", "list", key=viewer_key, url=server.url)
    assert revoked.returncode == 1
    assert "revoked" in revoked.stderr
    bad_role = run("keys", "create", "--role", "emperor")
    assert bad_role.returncode == 2
    denied = run("tenants", "create", "cli-lab-2")
    assert denied.returncode == 1
    assert "permission_denied" in denied.stderr


def test_init_creates_a_data_dir_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    first = openmaas("init", "--data-dir", str(data_dir), OPENMAAS_DEMO_MODELS="false")
    assert first.returncode == 0, first.stderr
    key = (data_dir / "admin.key").read_text().strip()
    assert key in first.stdout
    second = openmaas("init", "--data-dir", str(data_dir), OPENMAAS_DEMO_MODELS="false")
    assert second.returncode == 0
    assert key not in second.stdout
    assert "already initialised" in second.stdout


def test_unreachable_server_is_a_clear_error() -> None:
    result = openmaas("models", "list", key="om_x", url="http://127.0.0.1:9")
    assert result.returncode == 2
    assert "cannot reach the server" in result.stderr


def test_share_erase_and_audit_with_the_cli(server: LiveServer, tmp_path: Path) -> None:
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(scale_model(2.0))

    def run(*args: str, key: str = server.admin_key) -> subprocess.CompletedProcess[str]:
        return openmaas(*args, key=key, url=server.url)

    run("models", "publish", str(model_file), "--name", "cli-shared")
    lab_key = run("tenants", "create", "cli-share-lab").stdout.strip().splitlines()[-1]
    request = json.dumps({"x": [[1, 1, 1, 1]]})
    assert run("infer", "admin/cli-shared", "--input", request, key=lab_key).returncode == 1
    shared = run(
        "models", "share", "admin/cli-shared", "--with", "cli-share-lab", "--quota", "1/day"
    )
    assert shared.returncode == 0, shared.stderr
    assert "(1/day)" in shared.stdout
    assert run("infer", "admin/cli-shared", "--input", request, key=lab_key).returncode == 0
    over = run("infer", "admin/cli-shared", "--input", request, key=lab_key)
    assert over.returncode == 1
    assert "quota_exceeded" in over.stderr
    assert "cli-share-lab" in run("models", "grants", "admin/cli-shared").stdout

    erased = run("erase", "tenant", "cli-share-lab")
    assert erased.returncode == 0, erased.stderr
    receipt_id = erased.stdout.strip().split("Receipt: ")[-1]
    verified = run("erasure", "verify", receipt_id)
    assert verified.returncode == 0, verified.stdout
    assert "ok   keys destroyed" in verified.stdout
    assert run("erasure", "verify", "0" * 32).returncode == 1
    audit = run("audit", "verify")
    assert audit.returncode == 0, audit.stdout
    assert "ok:" in audit.stdout
    listing = run("audit", "list", "--limit", "1000").stdout
    assert "model.share" in listing
    assert "erase" in listing


def test_deploy_weights_and_weighted_shares_with_the_cli(
    server: LiveServer, tmp_path: Path
) -> None:
    model_file = tmp_path / "d.onnx"
    model_file.write_bytes(scale_model(2.0))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return openmaas(*args, key=server.admin_key, url=server.url)

    assert run("models", "publish", str(model_file), "--name", "cli-deployed").returncode == 0
    shown = run("models", "deploy", "admin/cli-deployed")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["max_replicas"] == 1
    deployed = run(
        "models", "deploy", "admin/cli-deployed",
        "--min-replicas", "1", "--max-replicas", "2", "--max-batch-size", "16",
        "--max-queue", "64", "--cpu", "1", "--memory-bytes", "1048576", "--gpu", "0",
        "--idle-seconds", "60", "--isolation", "process",
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    wanted = {
        "min_replicas": 1,
        "max_replicas": 2,
        "max_batch_size": 16,
        "max_queue": 64,
        "cpu": 1.0,
        "memory_bytes": 1048576,
        "gpu": 0,
        "idle_seconds": 60.0,
        "isolation": "process",
    }
    assert json.loads(deployed.stdout) == wanted
    kept = run("models", "deploy", "admin/cli-deployed", "--max-queue", "8")  # others are kept
    assert json.loads(kept.stdout) == {**wanted, "max_queue": 8}
    assert json.loads(run("models", "deploy", "admin/cli-deployed").stdout)["max_queue"] == 8
    reset = json.loads(run("models", "deploy", "admin/cli-deployed", "--reset").stdout)
    assert (reset["min_replicas"], reset["max_queue"], reset["isolation"]) == (0, None, "auto")
    invalid = run("models", "deploy", "admin/cli-deployed", "--min-replicas", "3")
    assert invalid.returncode == 1
    assert "validation_error" in invalid.stderr
    assert "max_replicas" in invalid.stderr

    assert run("tenants", "create", "cli-weighted").returncode == 0
    weighted = run("tenants", "weight", "cli-weighted", "2.5")
    assert weighted.returncode == 0, weighted.stderr
    assert "weight 2.5" in weighted.stdout
    row = next(x for x in run("tenants", "list").stdout.splitlines() if "cli-weighted" in x)
    assert row.split() == ["cli-weighted", "2.5"]
    assert run("tenants", "weight", "cli-weighted", "0").returncode == 1
    shared = run("models", "share", "admin/cli-deployed", "--with", "cli-weighted", "--weight", "3")
    assert shared.returncode == 0, shared.stderr
    assert "at weight 3" in shared.stdout
    grants = run("models", "grants", "admin/cli-deployed").stdout.splitlines()
    grant = next(x for x in grants if x.startswith("cli-weighted"))
    assert grant.split() == ["cli-weighted", "unlimited", "3"]
