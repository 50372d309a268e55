"""Start the real server (``python -m openmaas serve``) on 127.0.0.1 for a test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class LiveServer:
    """A running server: where it listens, its admin key and data directory."""

    url: str
    host: str
    port: int
    admin_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    ready_after_s: float


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: ours, minus any OPENMAAS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAS_")}
    env.update(extra)
    return env


@contextmanager
def live_server(
    data_dir: Path,
    demo_models: bool = True,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Run ``openmaas serve`` until the block ends; stop it by its PID."""
    port = free_port()
    log_file = data_dir.parent / f"server-{port}.log"
    env = server_env(
        OPENMAAS_DEMO_MODELS=str(demo_models).lower(),
        OPENMAAS_INFERENCE_THREADS="2",
        **(env or {}),
    )
    started = time.monotonic()
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openmaas",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log_file.read_text()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"server not ready in {timeout}s:\n{log_file.read_text()}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        ready_after = time.monotonic() - started
        key = (data_dir / "admin.key").read_text().strip()
        yield LiveServer(url, "127.0.0.1", port, key, data_dir, process, log_file, ready_after)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
