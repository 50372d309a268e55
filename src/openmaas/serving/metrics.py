"""Prometheus metrics of the serving engine, in a registry of their own (one per app).

The engine calls these methods on the hot path, so each caches the labelled children it has
made: a repeat call is a dict lookup and an increment (about a microsecond), never
``.labels(...)``. Children are made only through those caches, so ``forget_model`` and
``forget_tenant`` know every series an erased name appears in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "COLD_START_BUCKETS",
    "REJECTION_REASONS",
    "REQUEST_DURATION_BUCKETS",
    "EngineMetrics",
]

REQUEST_DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Request latency, 0.1 ms to 30 s."""

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Rows (or requests) in one batch."""

COLD_START_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
"""Time to load a model into a fresh replica, 10 ms to 60 s."""

REJECTION_REASONS: tuple[str, ...] = (
    "over_share",
    "queue_full",
    "deadline",
    "draining",
    "rate_limited",
    "quota_exceeded",
    "worker_unavailable",
)
"""The reasons the engine rejects a request with; ``rejected`` takes any, keep to these."""

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Children(Generic[_K, _V]):
    """Labelled children by key, made once under the lock and read without it."""

    def __init__(
        self, lock: threading.RLock, make: Callable[[_K], _V], drop: Callable[[_K], None]
    ) -> None:
        self._lock = lock
        self._make = make
        self._drop = drop
        self.by_key: dict[_K, _V] = {}

    def get(self, key: _K) -> _V:
        """The children for ``key``, made on first use."""
        with self._lock:
            found = self.by_key.get(key)
            if found is None:
                found = self.by_key[key] = self._make(key)
            return found

    def forget(self, match: Callable[[_K], bool]) -> None:
        """Drop every key that ``match`` accepts, and its series (caller holds the lock)."""
        for key in [k for k in self.by_key if match(k)]:
            del self.by_key[key]
            self._drop(key)


class EngineMetrics:
    """Counters, gauges and histograms of one engine, exposed by ``render``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._lock = threading.RLock()  # making a status child makes its model's children
        self._loaded: set[str] = set()

        self._requests = Counter(
            "openmaas_requests_total",
            "Inference requests answered, by model and HTTP status.",
            ["model", "status"],
            registry=reg,
        )
        self._duration = Histogram(
            "openmaas_request_duration_seconds",
            "Time from accepting an inference request to answering it.",
            ["model"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=reg,
        )
        self._queue_depth = Gauge(
            "openmaas_queue_depth",
            "Requests waiting in a model's queue.",
            ["model"],
            registry=reg,
        )
        self._batch_size = Histogram(
            "openmaas_batch_size",
            "Size of the batches sent to a model's replicas.",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self._replicas = Gauge(
            "openmaas_model_replicas", "Replicas of a model now loaded.", ["model"], registry=reg
        )
        self._memory = Gauge(
            "openmaas_model_memory_bytes",
            "Memory held by a model's loaded replicas.",
            ["model"],
            registry=reg,
        )
        self._models_loaded = Gauge(
            "openmaas_models_loaded", "Models with at least one replica loaded.", registry=reg
        )
        self._evictions = Counter(
            "openmaas_evictions_total",
            "Times a model was unloaded to make room for another.",
            ["model"],
            registry=reg,
        )
        self._cold_start = Histogram(
            "openmaas_cold_start_seconds",
            "Time to load a model into a new replica.",
            ["model"],
            buckets=COLD_START_BUCKETS,
            registry=reg,
        )
        self._restarts = Counter(
            "openmaas_worker_restarts_total",
            "Worker processes restarted after they died or hung.",
            ["model"],
            registry=reg,
        )
        self._tokens = Counter(
            "openmaas_llm_tokens_total",
            "Language-model tokens served, by tenant, model and kind (prompt or completion).",
            ["tenant", "model", "kind"],
            registry=reg,
        )
        self._rejections = Counter(
            "openmaas_rejections_total",
            "Inference requests refused before they ran, by reason.",
            ["model", "reason"],
            registry=reg,
        )
        self._tenant_requests = Counter(
            "openmaas_tenant_requests_total",
            "Inference requests served, by calling tenant and model.",
            ["tenant", "model"],
            registry=reg,
        )
        self._tenant_rows = Counter(
            "openmaas_tenant_rows_total",
            "Rows (batch items) served, by calling tenant and model.",
            ["tenant", "model"],
            registry=reg,
        )
        self._tenant_seconds = Counter(
            "openmaas_tenant_compute_seconds_total",
            "Compute time spent serving, by calling tenant and model.",
            ["tenant", "model"],
            registry=reg,
        )

        self._explains = Counter(
            "openmaas_explain_requests_total",
            "Explain calls answered, by model, method and HTTP status.",
            ["model", "method", "code"],
            registry=reg,
        )
        self._explain_duration = Histogram(
            "openmaas_explain_duration_seconds",
            "Time from an explain call's arrival to its answer, by model and method.",
            ["model", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=reg,
        )
        self._explain_evals = Counter(
            "openmaas_explain_evaluations_total",
            "Model evaluations spent on explanations, by model and method.",
            ["model", "method"],
            registry=reg,
        )

        lock = self._lock
        self._by_explain = _Children[tuple[str, str, str], Counter](
            lock,
            lambda k: self._explains.labels(*k),
            lambda k: _remove(self._explains, *k),
        )
        self._by_explain_method = _Children[tuple[str, str], tuple[Histogram, Counter]](
            lock,
            lambda k: (self._explain_duration.labels(*k), self._explain_evals.labels(*k)),
            lambda k: _remove_all((self._explain_duration, self._explain_evals), *k),
        )
        self._by_status = _Children[tuple[str, int], tuple[Counter, Histogram]](
            lock,
            lambda k: (self._requests.labels(k[0], str(k[1])), self._model(k[0]).duration),
            lambda k: _remove(self._requests, k[0], str(k[1])),
        )
        self._by_model = _Children[str, _ModelChildren](
            lock, self._make_model_children, self._drop_model_children
        )
        self._by_reason = _Children[tuple[str, str], Counter](
            lock,
            lambda k: self._rejections.labels(*k),
            lambda k: _remove(self._rejections, *k),
        )
        self._by_tenant = _Children[tuple[str, str], tuple[Counter, Counter, Counter]](
            lock,
            lambda k: (
                self._tenant_requests.labels(*k),
                self._tenant_rows.labels(*k),
                self._tenant_seconds.labels(*k),
            ),
            lambda k: _remove_all(
                (self._tenant_requests, self._tenant_rows, self._tenant_seconds), *k
            ),
        )

        self._by_token_kind = _Children[tuple[str, str, str], Counter](
            lock,
            lambda k: self._tokens.labels(*k),
            lambda k: _remove(self._tokens, *k),
        )

    # -- hot path ---------------------------------------------------------------------------

    def observe_request(self, model: str, status: int, seconds: float) -> None:
        """Count an answered request and observe how long it took."""
        key = (model, status)
        children = self._by_status.by_key.get(key)
        if children is None:
            children = self._by_status.get(key)
        children[0].inc()
        children[1].observe(seconds)

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Set how many requests wait in ``model``'s queue."""
        self._model(model).queue_depth.set(depth)

    def observe_batch(self, model: str, size: int) -> None:
        """Observe the size of a batch sent to ``model``."""
        self._model(model).batch_size.observe(size)

    def served(self, tenant: str, model: str, rows: int, seconds: float, requests: int = 1) -> None:
        """Account served requests to ``tenant``: their count, rows and compute seconds."""
        key = (tenant, model)
        children = self._by_tenant.by_key.get(key)
        if children is None:
            children = self._by_tenant.get(key)
        children[0].inc(requests)
        children[1].inc(rows)
        children[2].inc(seconds)

    def tokens(self, tenant: str, model: str, count: int, kind: str) -> None:
        """Count language-model tokens served to ``tenant`` (``kind``: prompt, completion)."""
        if count > 0:
            self._by_token_kind.get((tenant, model, kind)).inc(count)

    def observe_explain(self, model: str, method: str, status: int, seconds: float) -> None:
        """Count an answered explain call and observe how long it took."""
        self._by_explain.get((model, method, str(status))).inc()
        self._by_explain_method.get((model, method))[0].observe(seconds)

    def explain_evals(self, model: str, method: str, evaluations: int) -> None:
        """Count the model evaluations an explanation used."""
        self._by_explain_method.get((model, method))[1].inc(evaluations)

    def rejected(self, model: str, reason: str) -> None:
        """Count a request refused before it ran (see ``REJECTION_REASONS``)."""
        key = (model, reason)
        child = self._by_reason.by_key.get(key)
        if child is None:
            child = self._by_reason.get(key)
        child.inc()

    # -- lifecycle --------------------------------------------------------------------------

    def set_loaded(self, model: str, replicas: int, memory_bytes: int) -> None:
        """Record ``model``'s loaded replicas and the memory they hold."""
        children = self._model(model)
        children.replicas.set(replicas)
        children.memory.set(memory_bytes)
        with self._lock:
            if replicas > 0:
                self._loaded.add(model)
            else:
                self._loaded.discard(model)
            self._models_loaded.set(len(self._loaded))

    def set_unloaded(self, model: str) -> None:
        """Record that ``model`` has no replica loaded."""
        self.set_loaded(model, 0, 0)

    def evicted(self, model: str) -> None:
        """Count an eviction of ``model``."""
        self._model(model).evictions.inc()

    def cold_start(self, model: str, seconds: float) -> None:
        """Observe how long loading ``model`` into a new replica took."""
        self._model(model).cold_start.observe(seconds)

    def worker_restarted(self, model: str) -> None:
        """Count a restart of one of ``model``'s workers."""
        self._model(model).restarts.inc()

    # -- erasure ----------------------------------------------------------------------------

    def forget_model(self, model: str) -> None:
        """Drop every series labelled with ``model`` (after it is erased)."""
        with self._lock:
            self._forget_models(lambda m: m == model)

    def forget_tenant(self, tenant: str) -> None:
        """Drop every series of ``tenant``: its usage and its models (``tenant/...``)."""
        prefix = f"{tenant}/"
        with self._lock:
            self._by_tenant.forget(lambda k: k[0] == tenant)
            self._by_token_kind.forget(lambda k: k[0] == tenant)
            self._forget_models(lambda m: m.startswith(prefix))

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- internals --------------------------------------------------------------------------

    def _model(self, model: str) -> _ModelChildren:
        children = self._by_model.by_key.get(model)
        if children is None:
            children = self._by_model.get(model)
        return children

    def _forget_models(self, match: Callable[[str], bool]) -> None:
        self._by_status.forget(lambda k: match(k[0]))
        self._by_reason.forget(lambda k: match(k[0]))
        self._by_tenant.forget(lambda k: match(k[1]))
        self._by_token_kind.forget(lambda k: match(k[1]))
        self._by_explain.forget(lambda k: match(k[0]))
        self._by_explain_method.forget(lambda k: match(k[0]))
        self._by_model.forget(match)
        gone = {m for m in self._loaded if match(m)}
        if gone:
            self._loaded -= gone
            self._models_loaded.set(len(self._loaded))

    def _make_model_children(self, model: str) -> _ModelChildren:
        return _ModelChildren(
            duration=self._duration.labels(model),
            queue_depth=self._queue_depth.labels(model),
            batch_size=self._batch_size.labels(model),
            replicas=self._replicas.labels(model),
            memory=self._memory.labels(model),
            evictions=self._evictions.labels(model),
            cold_start=self._cold_start.labels(model),
            restarts=self._restarts.labels(model),
        )

    def _drop_model_children(self, model: str) -> None:
        _remove_all(
            (
                self._duration,
                self._queue_depth,
                self._batch_size,
                self._replicas,
                self._memory,
                self._evictions,
                self._cold_start,
                self._restarts,
            ),
            model,
        )


class _ModelChildren:
    """The children labelled only by one model."""

    __slots__ = (
        "batch_size",
        "cold_start",
        "duration",
        "evictions",
        "memory",
        "queue_depth",
        "replicas",
        "restarts",
    )

    def __init__(
        self,
        *,
        duration: Histogram,
        queue_depth: Gauge,
        batch_size: Histogram,
        replicas: Gauge,
        memory: Gauge,
        evictions: Counter,
        cold_start: Histogram,
        restarts: Counter,
    ) -> None:
        self.duration = duration
        self.queue_depth = queue_depth
        self.batch_size = batch_size
        self.replicas = replicas
        self.memory = memory
        self.evictions = evictions
        self.cold_start = cold_start
        self.restarts = restarts


_Metric = Counter | Gauge | Histogram


def _remove(metric: _Metric, *labels: str) -> None:
    metric.remove(*labels)


def _remove_all(metrics: tuple[_Metric, ...], *labels: str) -> None:
    for metric in metrics:
        metric.remove(*labels)
