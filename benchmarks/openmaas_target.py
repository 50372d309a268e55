"""The ``openmaas`` target of the serving benchmark harness (``run.py --extra-targets FILE``).

The harness imports this file with its own ``targets.py`` on ``sys.path``. The target starts
``benchmarks/bench_server.py`` (OpenMaaS as ``openmaas serve`` builds it, with API keys, rate
limits, quotas and the fair scheduler on) from the venv ``$BENCH_VENVS/openmaas``: a symlink
to this checkout's ``.venv`` that ``benchmarks/peers.py`` creates. Requests carry
``Authorization: Bearer <key>`` only in a harness copy patched by ``peers.py`` (unpatched,
every request is a 401 and the target fails its start check): run it through ``peers.py`` or
``scripts/bench-peers``.
"""

from __future__ import annotations

from pathlib import Path

from targets import V2, Target

BENCH_SERVER = str(Path(__file__).resolve().with_name("bench_server.py"))

TARGETS = [
    Target(
        "openmaas",
        cmd=["{py}", BENCH_SERVER, "--port", "{port}", "--models-dir", "{models}"],
        venv="openmaas",
        port=18900,
        # model ids are tenant/name: the harness's "tabular" is bench/tabular
        fmt=V2(path="/v2/models/bench/{model}/infer"),
        batching=(
            "OpenMaaS defaults: per-model fair queue (per tenant) with adaptive batching and no "
            "wait delay (requests that arrive while the replica is busy form the next batch), "
            "up to OPENMAAS_MAX_BATCH_SIZE rows (default 32); 'mean batch' shows what ran"
        ),
        startup_timeout_s=120,
        role="peer",
        notes=(
            "OpenMaaS defaults (FastAPI, API-key auth with a consumer key, rate limits and "
            "quotas, security headers, problem+json), V2 REST, uvicorn httptools+uvloop, "
            "1 process"
        ),
    ),
]

# The same server with every model in a worker process (OPENMAAS_ISOLATION=process): what the
# process boundary costs, for the in-process decision in docs/design.md. Run it with
# ``peers.py --peers openmaas-process``.
TARGETS.append(
    Target(
        "openmaas-process",
        cmd=["{py}", BENCH_SERVER, "--port", "{port}", "--models-dir", "{models}"],
        venv="openmaas",
        port=18901,
        fmt=V2(path="/v2/models/bench/{model}/infer"),
        env={"OPENMAAS_ISOLATION": "process"},
        batching="as openmaas; replicas are worker processes (binary frames over pipes)",
        startup_timeout_s=120,
        role="variant",
        notes="OpenMaaS with OPENMAAS_ISOLATION=process",
    )
)
