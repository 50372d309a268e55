"""``openmaas serve`` on a fresh data directory, for benchmarks that call it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


class LocalServer:
    """A real server on 127.0.0.1 (demo models on), its admin key, and how to stop it."""

    def __init__(self, prefix: str, env: dict[str, str], start_seconds: float = 300) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix=prefix)
        port = 18000 + os.getpid() % 2000
        self.url = f"http://127.0.0.1:{port}"
        merged = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAS_")}
        merged.update(
            OPENMAAS_DATA_DIR=str(Path(self.dir.name) / "data"),
            OPENMAAS_PORT=str(port),
            OPENMAAS_LOG_LEVEL="warning",
            **env,
        )
        self.log = open(Path(self.dir.name) / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openmaas", "serve"],
            env=merged,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"openmaas serve did not start; see {self.log.name}")
            time.sleep(0.2)
        self.key = (Path(self.dir.name) / "data" / "admin.key").read_text().strip()

    def close(self) -> None:
        """Stop the server (SIGTERM: it drains) and delete its data."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()
        self.dir.cleanup()
