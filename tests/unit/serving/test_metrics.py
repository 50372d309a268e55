"""EngineMetrics: each method shows up in the exposition text with its labels and values."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from openmaas.serving import metrics as metrics_module
from openmaas.serving.metrics import EngineMetrics

Labels = tuple[tuple[str, str], ...]


def _samples(engine: EngineMetrics) -> dict[tuple[str, Labels], float]:
    """Every sample of ``render()``, by sample name and sorted labels."""
    body, _ = engine.render()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _value(engine: EngineMetrics, name: str, **labels: str) -> float | None:
    return _samples(engine).get((name, tuple(sorted(labels.items()))))


def _series_with(engine: EngineMetrics, text: str) -> list[str]:
    """Names of the samples any of whose label values contain ``text``."""
    return [
        name for (name, labels) in _samples(engine) if any(text in value for _, value in labels)
    ]


def test_all_is_guarded() -> None:
    assert metrics_module.__all__ == [
        "BATCH_SIZE_BUCKETS",
        "COLD_START_BUCKETS",
        "REJECTION_REASONS",
        "REQUEST_DURATION_BUCKETS",
        "EngineMetrics",
    ]


def test_render_gives_text_format_and_content_type() -> None:
    body, content_type = EngineMetrics().render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE openmaas_requests_total counter" in body
    assert b"# TYPE openmaas_request_duration_seconds histogram" in body


def test_observe_request_counts_by_status_and_times_by_model() -> None:
    engine = EngineMetrics()
    engine.observe_request("acme/iris", 200, 0.0002)
    engine.observe_request("acme/iris", 200, 0.003)
    engine.observe_request("acme/iris", 503, 12.0)

    assert _value(engine, "openmaas_requests_total", model="acme/iris", status="200") == 2
    assert _value(engine, "openmaas_requests_total", model="acme/iris", status="503") == 1
    name = "openmaas_request_duration_seconds"
    assert _value(engine, f"{name}_count", model="acme/iris") == 3
    assert _value(engine, f"{name}_sum", model="acme/iris") == pytest.approx(12.0032)
    assert _value(engine, f"{name}_bucket", model="acme/iris", le="0.0001") == 0
    assert _value(engine, f"{name}_bucket", model="acme/iris", le="0.00025") == 1
    assert _value(engine, f"{name}_bucket", model="acme/iris", le="0.005") == 2
    assert _value(engine, f"{name}_bucket", model="acme/iris", le="30.0") == 3


def test_queue_depth_is_a_gauge() -> None:
    engine = EngineMetrics()
    engine.set_queue_depth("acme/iris", 7)
    engine.set_queue_depth("acme/iris", 3)
    assert _value(engine, "openmaas_queue_depth", model="acme/iris") == 3


def test_batch_size_buckets() -> None:
    engine = EngineMetrics()
    for size in (1, 3, 200):
        engine.observe_batch("acme/iris", size)
    name = "openmaas_batch_size_bucket"
    assert _value(engine, name, model="acme/iris", le="1.0") == 1
    assert _value(engine, name, model="acme/iris", le="4.0") == 2
    assert _value(engine, name, model="acme/iris", le="128.0") == 2
    assert _value(engine, name, model="acme/iris", le="256.0") == 3
    assert _value(engine, "openmaas_batch_size_sum", model="acme/iris") == 204


def test_loaded_and_unloaded_models() -> None:
    engine = EngineMetrics()
    engine.set_loaded("acme/iris", 2, 1_000_000)
    engine.set_loaded("acme/digits", 1, 500)
    assert _value(engine, "openmaas_model_replicas", model="acme/iris") == 2
    assert _value(engine, "openmaas_model_memory_bytes", model="acme/iris") == 1_000_000
    assert _value(engine, "openmaas_models_loaded") == 2

    engine.set_loaded("acme/iris", 3, 1_500_000)  # a replica more is still one model
    assert _value(engine, "openmaas_models_loaded") == 2

    engine.set_unloaded("acme/iris")
    assert _value(engine, "openmaas_model_replicas", model="acme/iris") == 0
    assert _value(engine, "openmaas_model_memory_bytes", model="acme/iris") == 0
    assert _value(engine, "openmaas_models_loaded") == 1

    engine.set_loaded("acme/digits", 0, 0)  # zero replicas is unloaded too
    assert _value(engine, "openmaas_models_loaded") == 0


def test_evictions_cold_starts_and_restarts() -> None:
    engine = EngineMetrics()
    engine.evicted("acme/iris")
    engine.evicted("acme/iris")
    engine.cold_start("acme/iris", 0.3)
    engine.worker_restarted("acme/iris")

    assert _value(engine, "openmaas_evictions_total", model="acme/iris") == 2
    assert _value(engine, "openmaas_cold_start_seconds_count", model="acme/iris") == 1
    assert _value(engine, "openmaas_cold_start_seconds_bucket", model="acme/iris", le="0.25") == 0
    assert _value(engine, "openmaas_cold_start_seconds_bucket", model="acme/iris", le="0.5") == 1
    assert _value(engine, "openmaas_cold_start_seconds_bucket", model="acme/iris", le="60.0") == 1
    assert _value(engine, "openmaas_worker_restarts_total", model="acme/iris") == 1


def test_rejections_by_reason() -> None:
    engine = EngineMetrics()
    for reason in metrics_module.REJECTION_REASONS:
        engine.rejected("acme/iris", reason)
    engine.rejected("acme/iris", "queue_full")

    name = "openmaas_rejections_total"
    assert _value(engine, name, model="acme/iris", reason="queue_full") == 2
    assert _value(engine, name, model="acme/iris", reason="over_share") == 1
    assert _value(engine, name, model="acme/iris", reason="worker_unavailable") == 1


def test_served_accounts_per_tenant() -> None:
    engine = EngineMetrics()
    engine.served("globex", "acme/iris", 10, 0.25)
    engine.served("globex", "acme/iris", 5, 0.5)
    engine.served("acme", "acme/iris", 1, 0.125)

    labels = {"tenant": "globex", "model": "acme/iris"}
    assert _value(engine, "openmaas_tenant_requests_total", **labels) == 2
    assert _value(engine, "openmaas_tenant_rows_total", **labels) == 15
    assert _value(engine, "openmaas_tenant_compute_seconds_total", **labels) == 0.75
    own = {"tenant": "acme", "model": "acme/iris"}
    assert _value(engine, "openmaas_tenant_rows_total", **own) == 1


def _use_every_method(engine: EngineMetrics, tenant: str, model: str) -> None:
    engine.observe_request(model, 200, 0.01)
    engine.set_queue_depth(model, 1)
    engine.observe_batch(model, 4)
    engine.set_loaded(model, 1, 100)
    engine.evicted(model)
    engine.cold_start(model, 1.0)
    engine.worker_restarted(model)
    engine.rejected(model, "deadline")
    engine.served(tenant, model, 4, 0.01)


def test_forget_model_drops_every_series_of_that_model() -> None:
    engine = EngineMetrics()
    _use_every_method(engine, "globex", "acme/secret")
    _use_every_method(engine, "globex", "acme/iris")
    engine.observe_request("acme/only-requests", 200, 0.01)
    assert _value(engine, "openmaas_models_loaded") == 2

    engine.forget_model("acme/secret")
    engine.forget_model("acme/only-requests")

    assert _series_with(engine, "acme/secret") == []
    assert _series_with(engine, "acme/only-requests") == []
    assert _value(engine, "openmaas_models_loaded") == 1
    assert _value(engine, "openmaas_requests_total", model="acme/iris", status="200") == 1
    assert _value(engine, "openmaas_evictions_total", model="acme/iris") == 1

    engine.observe_request("acme/secret", 200, 0.01)  # a new model by that name starts at 0
    assert _value(engine, "openmaas_requests_total", model="acme/secret", status="200") == 1
    assert _value(engine, "openmaas_evictions_total", model="acme/secret") == 0


def test_forget_tenant_drops_its_usage_and_its_models() -> None:
    engine = EngineMetrics()
    _use_every_method(engine, "globex", "acme/iris")
    _use_every_method(engine, "globex", "globex/churn")
    _use_every_method(engine, "acme", "acme/iris")
    engine.served("globexcorp", "acme/iris", 1, 0.01)  # a name that merely starts the same

    engine.forget_tenant("globex")

    assert _series_with(engine, "globex/") == []
    assert _value(engine, "openmaas_tenant_rows_total", tenant="globex", model="acme/iris") is None
    assert _value(engine, "openmaas_tenant_rows_total", tenant="acme", model="acme/iris") == 4
    labels = {"tenant": "globexcorp", "model": "acme/iris"}
    assert _value(engine, "openmaas_tenant_rows_total", **labels) == 1
    assert _value(engine, "openmaas_requests_total", model="acme/iris", status="200") == 2
    assert _value(engine, "openmaas_models_loaded") == 1


def test_instances_do_not_share_state() -> None:
    first, second = EngineMetrics(), EngineMetrics()
    first.observe_request("acme/iris", 200, 0.01)
    first.set_loaded("acme/iris", 1, 10)

    assert first.registry is not second.registry
    assert _value(first, "openmaas_requests_total", model="acme/iris", status="200") == 1
    assert _value(second, "openmaas_requests_total", model="acme/iris", status="200") is None
    assert _value(second, "openmaas_models_loaded") == 0


def test_concurrent_calls_lose_no_counts() -> None:
    engine = EngineMetrics()
    models = [f"acme/m{i}" for i in range(8)]

    def hammer() -> None:
        for _ in range(500):
            for model in models:
                engine.observe_request(model, 200, 0.001)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model in models:
        assert _value(engine, "openmaas_requests_total", model=model, status="200") == 2000
