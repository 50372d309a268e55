"""tritonclient's compressed requests (gzip, deflate) reach the real server's models intact."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from openmaas import Client
from tests.helpers.models import scale_model
from tests.helpers.server import LiveServer

MODEL = "admin/compression-scale"


@pytest.fixture(scope="module")
def published(server: LiveServer) -> str:
    with Client(server.url, server.admin_key) as client:
        client.publish(scale_model(2.0), "compression-scale")
    return MODEL


@pytest.fixture
def triton_client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    opened = triton.InferenceServerClient(f"{server.host}:{server.port}")
    yield opened
    opened.close()


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    triton_client: triton.InferenceServerClient,
    server: LiveServer,
    published: str,
    algorithm: str,
    binary: bool,
) -> None:
    rows = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    output = triton.InferRequestedOutput("y", binary_data=binary)
    result = triton_client.infer(
        published,
        [tensor],
        outputs=[output],
        request_compression_algorithm=algorithm,
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )
    np.testing.assert_array_equal(result.as_numpy("y"), rows * 2)


def test_compressed_bomb_is_refused(
    triton_client: triton.InferenceServerClient, server: LiveServer, published: str
) -> None:
    """A tensor of zeros over the 16 MiB request limit compresses to a few KB: still 413."""
    zeros = np.zeros((1_100_000, 4), dtype=np.float32)
    tensor = triton.InferInput("x", list(zeros.shape), "FP32")
    tensor.set_data_from_numpy(zeros)
    with pytest.raises(InferenceServerException, match="inflates to more than"):
        triton_client.infer(
            published,
            [tensor],
            request_compression_algorithm="gzip",
            headers={"Authorization": f"Bearer {server.admin_key}"},
        )
