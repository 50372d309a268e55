"""The serving engine on a real server: graceful drain, worker crashes and hangs, metrics,
and disconnect cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from openmaas.client import Client
from tests.helpers.models import scale_model, slow_model
from tests.helpers.server import LiveServer, live_server

SLOW = slow_model(width=2048, layers=16)  # about 10-20 ms a row here


def _body(value: float = 1.0) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [value] * 4}]}


def _children(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (the server's worker processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def _metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}
    ).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_sigterm_drains_100_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    env = {"OPENMAAS_MAX_BATCH_SIZE": "1", "OPENMAAS_DRAIN_TIMEOUT_SECONDS": "60"}
    with live_server(tmp_path / "data", demo_models=False, env=env) as server:
        with Client(server.url, server.admin_key) as client:
            client.publish(SLOW, "slow")
        url = f"{server.url}/v2/models/admin/slow/infer"
        auth = {"Authorization": f"Bearer {server.admin_key}"}

        async def main() -> tuple[list[int], float, httpx.Response, int]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                flight = [
                    asyncio.ensure_future(http.post(url, json=_body(i), headers=auth))
                    for i in range(100)
                ]
                await asyncio.sleep(0.5)  # all sent; most still queued
                assert not all(f.done() for f in flight)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                while (await http.get(f"{server.url}/v2/health/ready")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                not_ready_after = time.monotonic() - signalled
                refused = await http.post(url, json=_body(), headers=auth)
                answers = await asyncio.gather(*flight)
                return [a.status_code for a in answers], not_ready_after, refused, 0

        statuses, not_ready_after, refused, _ = asyncio.run(main())
        assert statuses == [200] * 100
        assert not_ready_after < 1.0
        assert refused.status_code == 503
        assert refused.json()["code"] == "draining"
        assert int(refused.headers["Retry-After"]) >= 1
        assert server.process.wait(timeout=30) == 0


def test_a_drain_that_times_out_exits_non_zero(tmp_path: Path) -> None:
    env = {"OPENMAAS_MAX_BATCH_SIZE": "1", "OPENMAAS_DRAIN_TIMEOUT_SECONDS": "0.3"}
    with live_server(tmp_path / "data", demo_models=False, env=env) as server:
        with Client(server.url, server.admin_key) as client:
            client.publish(SLOW, "slow")
        url = f"{server.url}/v2/models/admin/slow/infer"
        auth = {"Authorization": f"Bearer {server.admin_key}"}

        async def main() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                flight = [
                    asyncio.ensure_future(http.post(url, json=_body(i), headers=auth))
                    for i in range(60)
                ]
                await asyncio.sleep(0.5)
                server.process.send_signal(signal.SIGTERM)
                await asyncio.gather(*flight, return_exceptions=True)

        asyncio.run(main())
        assert server.process.wait(timeout=30) != 0


@pytest.fixture
def isolated(tmp_path: Path) -> LiveServer:
    env = {"OPENMAAS_ISOLATION": "process"}
    with live_server(tmp_path / "data", demo_models=False, env=env) as server:
        with Client(server.url, server.admin_key) as client:
            client.publish(SLOW, "slow")
            client.publish(scale_model(2.0), "steady")
            assert client.infer("admin/steady", {"x": np.ones((1, 4), np.float32)})["y"][0][0] == 2
            assert client.infer("admin/slow", {"x": np.ones((1, 4), np.float32)})["y"][0][0] == 4
        yield server


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_worker_that_dies_or_hangs_answers_503_and_is_replaced(
    isolated: LiveServer, how: str
) -> None:
    server = isolated
    workers = set(_children(server.process.pid))
    assert len(workers) == 2  # one per model
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    url = f"{server.url}/v2/models/admin/slow/infer"
    body = {"inputs": [{"name": "x", "shape": [512, 4], "datatype": "FP32", "data": [1.0] * 2048}]}

    async def main() -> tuple[httpx.Response, float, list[int]]:
        async with httpx.AsyncClient(timeout=30) as http:
            pending = asyncio.ensure_future(http.post(url, json=body, headers=auth))
            await asyncio.sleep(0.2)  # the 512-row batch runs in its worker
            before = {pid: _cpu_ticks(pid) for pid in workers}
            await asyncio.sleep(0.2)
            victim = max(workers, key=lambda pid: _cpu_ticks(pid) - before[pid])
            os.kill(victim, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            hit = time.monotonic()
            steady = [
                (
                    await http.post(
                        f"{server.url}/v2/models/admin/steady/infer", json=_body(), headers=auth
                    )
                ).status_code
                for _ in range(20)
            ]
            answer = await pending
            return answer, time.monotonic() - hit, steady

    answer, after, steady = asyncio.run(main())
    assert answer.status_code == 503
    assert answer.json()["code"] == "worker_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    assert after < 3.0  # detected within 2 s (+ the answer's way back)
    assert steady == [200] * 20  # the other model never noticed
    with Client(server.url, server.admin_key) as client:
        again = client.infer("admin/slow", {"x": np.ones((1, 4), np.float32)})
    assert again["y"][0][0] == 4  # a fresh worker serves it
    assert _metric(server, "openmaas_worker_restarts_total", model="admin/slow:1") >= 1


def test_metrics_count_requests_batches_and_tenants(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", demo_models=False) as server:
        with Client(server.url, server.admin_key) as client:
            client.publish(scale_model(3.0), "scale")
            for _ in range(5):
                client.infer("admin/scale", {"x": np.ones((2, 4), np.float32)})
        assert _metric(server, "openmaas_requests_total", model="admin/scale:1", status="200") == 5
        assert _metric(server, "openmaas_tenant_rows_total", tenant="admin") == 10
        assert _metric(server, "openmaas_batch_size_count", model="admin/scale:1") == 5
        assert _metric(server, "openmaas_cold_start_seconds_count", model="admin/scale:1") == 1
        assert _metric(server, "openmaas_model_memory_bytes", model="admin/scale:1") > 0
        anonymous = httpx.get(f"{server.url}/metrics")
        assert anonymous.status_code == 401


def test_a_client_that_disconnects_has_its_queued_work_dropped(tmp_path: Path) -> None:
    env = {"OPENMAAS_MAX_BATCH_SIZE": "1"}
    with live_server(tmp_path / "data", demo_models=False, env=env) as server:
        with Client(server.url, server.admin_key) as client:
            client.publish(SLOW, "slow")
        url = f"{server.url}/v2/models/admin/slow/infer"
        auth = {"Authorization": f"Bearer {server.admin_key}"}
        body = {
            "inputs": [{"name": "x", "shape": [1024, 4], "datatype": "FP32", "data": [1.0] * 4096}]
        }

        async def main() -> int:
            async with httpx.AsyncClient(timeout=30) as keeper:
                kept = asyncio.ensure_future(keeper.post(url, json=body, headers=auth))
                await asyncio.sleep(0.1)  # running now, for about a second
                async with httpx.AsyncClient(timeout=0.2) as leaver:
                    gone = [leaver.post(url, json=_body(i), headers=auth) for i in range(10)]
                    results = await asyncio.gather(*gone, return_exceptions=True)
                assert all(isinstance(r, httpx.TimeoutException) for r in results)
                return (await kept).status_code

        assert asyncio.run(main()) == 200
        time.sleep(0.5)
        rows = _metric(server, "openmaas_tenant_rows_total", tenant="admin")
        assert rows == 1024  # the 10 that left never ran


def test_a_small_memory_budget_evicts_idle_models_and_keeps_the_pinned_one(
    tmp_path: Path,
) -> None:
    # Each model holds a 1024x1024 float32 matrix (4 MiB; measured 4.2 MB loaded here): the
    # budget holds the pinned one and one or two others, never all four.
    budget = 14 * 1024 * 1024
    env = {"OPENMAAS_MEMORY_BUDGET_BYTES": str(budget)}
    with live_server(tmp_path / "data", demo_models=False, env=env) as server:
        x = np.ones((1, 4), np.float32)
        with Client(server.url, server.admin_key) as client:
            for name in ("pinned", "a", "b", "c"):
                client.publish(slow_model(width=1024, layers=1), name)
            client.set_deployment("admin/pinned", min_replicas=1)
            deadline = time.monotonic() + 30
            while not _metric(server, "openmaas_model_replicas", model="admin/pinned:1"):
                assert time.monotonic() < deadline, "the pinned model was not loaded"
                time.sleep(0.1)
            for name in ("a", "b", "c", "a", "b", "c"):
                assert client.infer(f"admin/{name}", {"x": x})["y"][0][0] == 4
        assert _metric(server, "openmaas_model_replicas", model="admin/pinned:1") == 1
        assert _metric(server, "openmaas_evictions_total") >= 3
        assert _metric(server, "openmaas_evictions_total", model="admin/pinned:1") == 0
        loaded = _metric(server, "openmaas_model_memory_bytes")
        assert 0 < loaded <= budget
