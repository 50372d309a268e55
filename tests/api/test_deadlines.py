"""Deadlines and priorities over HTTP: X-Request-Timeout, the timeout and priority parameters."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from openmaas.bootstrap import Services
from openmaas.security import Principal
from tests.helpers.models import scale_model, slow_model

INFER = "/v2/models/admin/{}/infer"


def _body(rows: int = 1, **parameters: object) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [
            {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [1.0] * (4 * rows)}
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def test_a_request_timeout_header_covers_loading_and_running_and_answers_504(
    http: TestClient, services: Services, admin: Principal
) -> None:
    services.registry.publish(admin, "slow", slow_model(width=2048, layers=16))
    late = http.post(  # nothing measured yet: admitted, then the load and run overrun it
        INFER.format("slow"), json=_body(rows=256), headers={"X-Request-Timeout": "0.05"}
    )
    assert late.status_code == 504
    assert late.json()["code"] == "deadline_exceeded"


def test_work_that_cannot_make_its_timeout_parameter_is_refused_up_front(
    http: TestClient, services: Services, admin: Principal
) -> None:
    services.registry.publish(admin, "slow", slow_model(width=2048, layers=16))
    assert http.post(INFER.format("slow"), json=_body()).status_code == 200  # measures it
    refused = http.post(INFER.format("slow"), json=_body(rows=256, timeout=0.05))
    assert refused.status_code == 503
    assert refused.json()["code"] == "overloaded"
    assert int(refused.headers["Retry-After"]) >= 1


def test_timeouts_and_priorities_are_checked(
    http: TestClient, services: Services, admin: Principal
) -> None:
    services.registry.publish(admin, "scale", scale_model(2.0))
    url = INFER.format("scale")
    header = http.post(url, json=_body(), headers={"X-Request-Timeout": "soon"})
    assert header.status_code == 400
    assert header.json()["field"] == "X-Request-Timeout"
    for bad in (-1, 0, "1", True):
        answer = http.post(url, json=_body(timeout=bad))
        assert answer.status_code == 422, bad
        assert answer.json()["field"] == "timeout"
    urgent = http.post(url, json=_body(priority="urgent"))
    assert urgent.status_code == 422
    assert urgent.json()["field"] == "priority"
    batch = http.post(url, json=_body(priority="batch", timeout=5))
    assert batch.status_code == 200
    assert np.array(batch.json()["outputs"][0]["data"]).tolist() == [2.0] * 4
