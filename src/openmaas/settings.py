"""Server settings: read once from ``OPENMAAS_*`` environment variables, then passed down."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

MiB = 1024 * 1024


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Settings(BaseSettings):
    """Every knob of the server. Each field is documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="OPENMAAS_", extra="ignore")

    data_dir: Path = Field(
        default=Path("openmaas-data"),
        description="Directory for the SQLite database, blob store and admin key file.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; default SQLite in the data dir.",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP server binds to.")
    max_request_bytes: int = Field(
        default=16 * MiB, ge=1024, description="Largest accepted inference/API request body."
    )
    max_artifact_bytes: int = Field(
        default=1024 * MiB, ge=1024, description="Largest accepted model artifact upload."
    )
    max_tensor_elements: int = Field(
        default=10_000_000, ge=1, description="Most elements one input tensor may hold."
    )
    inference_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="Threads that run model inference (never the event loop).",
    )
    memory_budget_bytes: int = Field(
        default_factory=lambda: _physical_memory() // 2,
        ge=0,
        description="Memory loaded model replicas may use in all; idle models are evicted "
        "least recently used first to make room.",
    )
    cpu_capacity: float = Field(
        default_factory=lambda: float(os.cpu_count() or 1),
        gt=0,
        description="Cores that model replicas may reserve in all (each asks for its "
        "deployment's cpu).",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Default most rows merged into one batch."
    )
    max_queue: int = Field(
        default=256, ge=1, description="Default most requests waiting per model version."
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Default deadline of an inference (queueing and running); a request "
        "may ask for less with X-Request-Timeout or the `timeout` parameter.",
    )
    replica_idle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Default idle time after which a replica stops (down to min_replicas).",
    )
    drain_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long in-flight requests may take before a forced exit.",
    )
    isolation: str = Field(
        default="auto",
        pattern="^(auto|process)$",
        description="auto: ONNX models run in the server process, others in worker "
        "processes; process: every model runs in a worker process.",
    )
    metadata_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long API keys and model versions stay cached; writes clear it at once.",
    )
    demo_models: bool = Field(
        default=True, description="Publish the demo models into the admin tenant at first start."
    )
    log_level: str = Field(default="info", description="Log level of the server.")
    root_key: SecretStr | None = Field(
        default=None,
        description="Root key (32 bytes, base64 or hex); default: the 0600 root.key file.",
    )
    max_json_depth: int = Field(
        default=32, ge=2, description="Deepest nesting accepted in a JSON request body."
    )
    docs_enabled: bool = Field(
        default=True, description="Serve the OpenAPI schema and interactive docs (/docs)."
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate: serve HTTPS.")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    key_rate_per_second: float = Field(
        default=5000.0, gt=0, description="Sustained requests per second allowed per API key."
    )
    tenant_rate_per_second: float = Field(
        default=10000.0, gt=0, description="Sustained requests per second allowed per tenant."
    )
    grant_rate_per_second: float = Field(
        default=5000.0, gt=0, description="Sustained requests per second through one grant."
    )
    key_tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Language-model tokens (prompt + completion) per minute per API key "
        "(unset: no limit).",
    )
    key_tokens_per_day: int | None = Field(
        default=None,
        ge=1,
        description="Language-model tokens per UTC day per API key (unset: no limit).",
    )
    llm_slots: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Requests one language-model replica decodes together (llama.cpp slots).",
    )
    llm_context_tokens: int = Field(
        default=2048,
        ge=128,
        description="Context window, in tokens, of each language-model slot.",
    )
    llm_max_tokens: int = Field(
        default=512,
        ge=1,
        description="Most tokens one completion may generate (and the default max_tokens).",
    )
    explain_max_evals: int = Field(
        default=2048,
        ge=1,
        description="Model evaluations one explain call may use unless it sets max_evals.",
    )
    explain_max_evals_limit: int = Field(
        default=65_536,
        ge=1,
        description="The most model evaluations an explain call may ask for with max_evals.",
    )
    explain_background_rows: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Rows of background data kept per model version (a k-means summary).",
    )
    key_daily_quota: int | None = Field(
        default=None, ge=1, description="Requests per UTC day allowed per API key (unset: none)."
    )
    tenant_daily_quota: int | None = Field(
        default=None, ge=1, description="Requests per UTC day allowed per tenant (unset: none)."
    )
    rate_burst_seconds: float = Field(
        default=2.0, gt=0, description="Burst allowance of the rate limits, in seconds of rate."
    )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'openmaas.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        """Where the local blob store keeps artifacts."""
        return self.data_dir / "blobs"

    @property
    def admin_key_file(self) -> Path:
        """The 0600 file holding the first admin API key."""
        return self.data_dir / "admin.key"

    @property
    def root_key_file(self) -> Path:
        """The 0600 file holding the root key when OPENMAAS_ROOT_KEY is not set."""
        return self.data_dir / "root.key"

    @property
    def signing_key_file(self) -> Path:
        """The 0600 file holding the Ed25519 key that signs audit checkpoints and receipts."""
        return self.data_dir / "signing.key"

    @property
    def secret_file(self) -> Path:
        """The 0600 file holding the server secret that keys API-key hashes."""
        return self.data_dir / "server.secret"
