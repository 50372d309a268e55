"""Start OpenMaaS for the serving benchmark harness (``../shared/bench``), production-shaped.

The harness starts this file pinned to one core (``taskset``) and drives it with wrk. It builds
the services exactly as ``openmaas serve`` does (API keys, roles, rate limits and quotas, the
serving engine with its fair scheduler and batching: everything on by default stays on), on a
fresh temporary data directory with the demo models off, then:

1. creates the tenant ``bench`` and a ``consumer`` API key in it (may infer, nothing else);
2. publishes ``{models-dir}/tabular.onnx`` as ``bench/tabular`` and ``cnn.onnx`` as ``bench/cnn``
   (so the harness posts to ``/v2/models/bench/{model}/infer``);
3. writes ``Authorization: Bearer <key>`` to ``$BENCH_AUTH_DIR/<port>`` (or ``--auth-file``), the
   file the harness copy patched by ``benchmarks/peers.py`` sends with every request;
4. serves the app with uvicorn (httptools, uvloop, no access log, one process), like the peers.

When ``BENCH_STATS_DIR`` is set (the harness sets it), onnxruntime calls are counted the way
the harness's own ``common_ort.OrtModel`` counts them, so the report shows real batch sizes
(calls made in this process only: with ``OPENMAAS_ISOLATION=process`` the column stays empty).

Usage: python benchmarks/bench_server.py --port 18900 --models-dir /tmp/bench/models
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort
import uvicorn

from openmaas.app import create_app
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.settings import Settings

TENANT = "bench"
KEY_ROLE = "consumer"
# harness model name -> ONNX input name (to attribute onnxruntime calls to a request shape)
MODELS = {"tabular": "float_input", "cnn": "input"}


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to serve on")
    parser.add_argument(
        "--models-dir", type=Path, required=True, help="folder with tabular.onnx and cnn.onnx"
    )
    parser.add_argument(
        "--auth-file",
        type=Path,
        default=None,
        help="where to write the Authorization header line (default $BENCH_AUTH_DIR/<port>)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the temporary data directory at exit"
    )
    return parser.parse_args(argv)


def _provision(services: Services, models_dir: Path) -> str:
    """Tenant ``bench``, its two models and a consumer key; return the key (a bearer token)."""
    admin_token = initialize(services).admin_key
    if admin_token is None:
        raise SystemExit("the data directory was not fresh: no admin key was created")
    accounts, registry = services.accounts, services.registry
    admin = accounts.authenticate(admin_token)
    _, owner_token = accounts.create_tenant(admin, TENANT)
    owner = accounts.authenticate(owner_token)
    for name in MODELS:
        data = (models_dir / f"{name}.onnx").read_bytes()
        registry.publish(owner, name, data, description=f"serving benchmark model {name}")
    _, token = accounts.create_key(owner, name="bench-load", role=KEY_ROLE)
    return token


def _write_auth_header(path: Path, token: str) -> None:
    """Write the header line 0600 (atomically: a reader never sees half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"Bearer {token}\n")
    tmp.replace(path)


class _OrtCallCounter:
    """Count onnxruntime calls and rows per model, written like ``common_ort.OrtModel``."""

    def __init__(self, stats_dir: Path) -> None:
        self._dir = stats_dir
        self._lock = threading.Lock()
        self._stats = {name: {"calls": 0, "rows": 0, "hist": {}} for name in MODELS}
        self._last_flush = 0.0
        self._by_input = {inp: name for name, inp in MODELS.items()}

    def install(self) -> None:
        """Wrap ``InferenceSession.run`` (one dict update and a clock read per call)."""
        original = ort.InferenceSession.run
        counter = self

        def run(
            session: Any, output_names: Any, input_feed: Mapping[str, Any], *args: Any, **kw: Any
        ) -> Any:
            result = original(session, output_names, input_feed, *args, **kw)
            counter.record(input_feed)
            return result

        ort.InferenceSession.run = run  # type: ignore[method-assign]

    def record(self, feed: Mapping[str, Any]) -> None:
        for input_name, array in feed.items():
            name = self._by_input.get(input_name)
            if name is None:
                continue
            rows = int(array.shape[0]) if getattr(array, "ndim", 0) else 1
            with self._lock:
                stats = self._stats[name]
                stats["calls"] += 1
                stats["rows"] += rows
                stats["hist"][rows] = stats["hist"].get(rows, 0) + 1
                now = time.monotonic()
                if now - self._last_flush > 0.2:
                    self._last_flush = now
                    self._flush()
            return

    def _flush(self) -> None:
        for name, stats in self._stats.items():
            if not stats["calls"]:
                continue
            path = self._dir / f"{name}-{os.getpid()}.json"
            try:
                path.with_suffix(".tmp").write_text(json.dumps(stats))
                path.with_suffix(".tmp").replace(path)
            except OSError:
                pass


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit, so the cleanup below runs.

    uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    installed before it started: with the default handler the process would die there.
    """
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Provision a fresh OpenMaaS and serve it until SIGTERM."""
    args = _parse_args(argv)
    auth_dir = os.environ.get("BENCH_AUTH_DIR")
    auth_file = args.auth_file or (Path(auth_dir) / str(args.port) if auth_dir else None)
    data_dir = Path(tempfile.mkdtemp(prefix="openmaas-bench-"))
    settings = Settings(
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        demo_models=False,
        log_level="warning",
        # Checked on every request, set above what the load generator can offer, so the
        # run measures their cost without them refusing anything.
        key_rate_per_second=1_000_000,
        tenant_rate_per_second=1_000_000,
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    stats_dir = os.environ.get("BENCH_STATS_DIR")
    if stats_dir:
        _OrtCallCounter(Path(stats_dir)).install()
    try:
        services = build_services(settings)
        token = _provision(services, args.models_dir)
        app = create_app(settings, services)
        if auth_file is not None:
            _write_auth_header(auth_file, token)
            print(f"bench: Authorization header written to {auth_file}", flush=True)
        else:
            print(f"bench: API key of {TENANT} ({KEY_ROLE}): {token}", flush=True)
        print(
            f"bench: serving {TENANT}/tabular and {TENANT}/cnn on "
            f"http://{args.host}:{args.port} (data in {data_dir})",
            flush=True,
        )
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            http="httptools",
            loop="uvloop",
            log_level=settings.log_level,
            access_log=False,
            workers=1,
        )
    finally:
        if auth_file is not None:
            auth_file.unlink(missing_ok=True)
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
