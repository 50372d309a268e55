"""The README is true: its quickstart runs against a freshly started server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.server import LiveServer, server_env

README = Path(__file__).resolve().parents[2] / "README.md"


def _quickstart_blocks() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)
    return dict(blocks)


def test_quickstart_is_short_and_has_curl_and_python() -> None:
    blocks = _quickstart_blocks()
    assert set(blocks) == {"bash", "python"}
    assert "curl" in blocks["bash"]
    assert "Client" in blocks["python"]
    lines = [x for b in blocks.values() for x in b.splitlines() if x.strip()]
    assert len(lines) <= 12


def test_quickstart_runs(server: LiveServer) -> None:
    blocks = _quickstart_blocks()
    # The README runs from the checkout after ./scripts/serve: the data dir is ./openmaas-data.
    workdir = server.data_dir.parent
    bin_dir = Path(sys.executable).parent
    env = server_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = blocks["bash"].replace("http://127.0.0.1:8000", server.url)
    script = script.replace("$PWD/.venv/bin", str(bin_dir))
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert '"output_label"' in shell.stdout
    assert "admin/breast-cancer" in shell.stdout
    assert shell.stdout.strip().splitlines()[-1].startswith("om_")  # lab2's owner key
    env.update(OPENMAAS_URL=server.url, OPENMAAS_API_KEY=server.admin_key)
    python = subprocess.run(
        [sys.executable, "-c", blocks["python"]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert python.returncode == 0, python.stderr
    assert "output_label" in python.stdout
    assert "'additivity_error'" in python.stdout
