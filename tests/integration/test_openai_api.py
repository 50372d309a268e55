"""The OpenAI-compatible API with the official ``openai`` client against a real server.

The demo language model (SmolLM2-135M-Instruct, GGUF, from the llm extra) serves these. One
server is the session's (``server``, demo models on); another, started here with one slot and
a token quota, covers quotas, usage accounting and a client that leaves mid-stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from openmaas.client import Client
from tests.helpers.models import scale_model
from tests.helpers.server import LiveServer, live_server

LLM = "admin/smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]


_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS:
        client.close()


def _openai(server: LiveServer, key: str | None = None) -> openai.OpenAI:
    """The official client on the server's /v1 (closed when the module's tests end)."""
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key or server.admin_key, max_retries=0
    )
    _CLIENTS.append(client)
    return client


def _metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def tenant_key(server: LiveServer) -> str:
    """The owner key of a second tenant, which sees only public models."""
    with Client(server.url, server.admin_key) as admin:
        return str(admin.create_tenant("openai-lab")["api_key"])


def test_models_lists_only_what_the_key_may_call(server: LiveServer, tenant_key: str) -> None:
    ids = [m.id for m in _openai(server).models.list().data]
    assert LLM in ids
    with Client(server.url, tenant_key) as lab:
        lab.publish(scale_model(), "own")  # private to the lab
    with Client(server.url, server.admin_key) as admin:
        viewer = admin.create_key(role="viewer")["api_key"]
    assert _openai(server, viewer).models.list().data == []  # may read, may not call
    lab_ids = [m.id for m in _openai(server, tenant_key).models.list().data]
    assert LLM in lab_ids  # public
    assert "openai-lab/own" in lab_ids
    assert "openai-lab/own" not in ids


def test_chat_completion_answers_with_usage(server: LiveServer) -> None:
    client = _openai(server)
    first = client.chat.completions.create(
        model=LLM, messages=HELLO, max_tokens=8, temperature=0, seed=7
    )
    again = client.chat.completions.create(
        model=LLM, messages=HELLO, max_tokens=8, temperature=0, seed=7
    )
    assert first.model == LLM
    assert first.object == "chat.completion"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content
    assert first.choices[0].message.content == again.choices[0].message.content  # greedy
    assert first.usage is not None
    assert first.usage.completion_tokens == 8
    assert first.usage.prompt_tokens > 3
    assert first.usage.total_tokens == first.usage.prompt_tokens + 8
    assert first.choices[0].finish_reason == "length"


def test_chat_options_n_stop_and_logprobs(server: LiveServer) -> None:
    answer = _openai(server).chat.completions.create(
        model=LLM,
        messages=HELLO,
        max_completion_tokens=4,
        n=2,
        logprobs=True,
        top_logprobs=3,
        stop=["\n\n"],
        seed=1,
    )
    assert [c.index for c in answer.choices] == [0, 1]
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content
    first = logprobs.content[0]
    assert first.logprob <= 0
    assert len(first.top_logprobs) == 3
    assert first.top_logprobs[0].logprob >= first.top_logprobs[-1].logprob


def test_streamed_chat_ends_with_usage_when_asked(server: LiveServer) -> None:
    client = _openai(server)
    chunks = list(
        client.chat.completions.create(
            model=LLM,
            messages=HELLO,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.model == LLM for c in chunks)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    plain = list(
        client.chat.completions.create(model=LLM, messages=HELLO, max_tokens=3, stream=True)
    )
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason == "length"


def test_text_completion(server: LiveServer) -> None:
    answer = _openai(server).completions.create(
        model=LLM, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert answer.object == "text_completion"
    assert "Paris" in answer.choices[0].text
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 4


def test_errors_are_the_clients_own_classes(server: LiveServer, tenant_key: str) -> None:
    client = _openai(server)
    with pytest.raises(openai.AuthenticationError):
        _openai(server, "om_not-a-key").models.list()
    with Client(server.url, server.admin_key) as admin:
        viewer = admin.create_key(role="viewer")["api_key"]
    with pytest.raises(openai.PermissionDeniedError):
        _openai(server, viewer).chat.completions.create(model=LLM, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="admin/no-such-model", messages=HELLO)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": "word " * 5000}], max_tokens=2
        )
    assert too_long.value.code == "context_length_exceeded"
    assert "2048" in str(too_long.value.message)  # the limit is in the message
    with pytest.raises(openai.BadRequestError) as tabular:
        client.chat.completions.create(model="admin/digits", messages=HELLO)
    assert tabular.value.code == "wrong_model_task"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=LLM, messages=HELLO, temperature=5)
    with pytest.raises(openai.BadRequestError) as capped:
        client.chat.completions.create(model=LLM, messages=HELLO, max_tokens=100_000)
    assert "OPENMAAS_LLM_MAX_TOKENS" in str(capped.value.message)


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"OPENMAAS_LLM_SLOTS": "1", "OPENMAAS_KEY_TOKENS_PER_DAY": "120"}
    root: Path = tmp_path_factory.mktemp("quota")
    with live_server(root / "data", env=env) as running:
        yield running


def test_usage_is_metered_and_the_token_quota_applies(quota_server: LiveServer) -> None:
    with Client(quota_server.url, quota_server.admin_key) as admin:
        key = admin.create_key(role="consumer")["api_key"]
    client = _openai(quota_server, key)
    used = 0
    while used < 120:  # the day's quota
        answer = client.chat.completions.create(model=LLM, messages=HELLO, max_tokens=16)
        assert answer.usage is not None
        used += answer.usage.total_tokens
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=LLM, messages=HELLO, max_tokens=16)
    assert limited.value.code == "token_quota_exceeded"
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    served = _metric(quota_server, "openmaas_llm_tokens_total", tenant="admin")
    assert served >= used
    completion = _metric(quota_server, "openmaas_llm_tokens_total", kind="completion")
    assert completion >= 16 * (used // 60)


def test_a_client_that_leaves_mid_stream_frees_the_slot(quota_server: LiveServer) -> None:
    url = f"{quota_server.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {quota_server.admin_key}"}
    body = {
        "model": LLM,
        "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
        "max_tokens": 500,
        "stream": True,
    }
    with httpx.stream("POST", url, json=body, headers=auth, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        events = [line for line in (next(lines) for _ in range(6)) if line.startswith("data:")]
        assert events
    answer = _openai(quota_server).chat.completions.create(model=LLM, messages=HELLO, max_tokens=2)
    assert answer.choices[0].message.content is not None
    # llama.cpp logs each request's tokens (prompt + generated) when its slot is released:
    # the story stopped a few tokens in, far from its 500.
    released = re.findall(r"stop processing: n_tokens = (\d+)", quota_server.log_file.read_text())
    assert released
    assert max(int(n) for n in released) < 200


EMBEDDER = "admin/all-minilm-l6-v2"


def test_embeddings_as_floats_and_base64(server: LiveServer) -> None:
    client = _openai(server)
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is riding a horse.",
    ]
    as_floats = client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    default = client.embeddings.create(model=EMBEDDER, input=texts)  # the client asks base64
    vectors = np.array([item.embedding for item in as_floats.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, [item.embedding for item in default.data], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    similar = vectors @ vectors.T
    assert similar[0, 1] == pytest.approx(0.7553, abs=1e-3)  # sentence-transformers' figure
    assert similar[0, 1] > similar[0, 2]
    assert as_floats.model == EMBEDDER
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > 3 * 3
    one = client.embeddings.create(model=EMBEDDER, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, vectors[0], atol=1e-5)  # batch-invariant


def test_embeddings_refusals_and_the_same_model_on_oip(server: LiveServer) -> None:
    client = _openai(server)
    with pytest.raises(openai.BadRequestError) as shortened:
        client.embeddings.create(model=EMBEDDER, input="hi", dimensions=128)
    assert shortened.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as generator:
        client.embeddings.create(model=LLM, input="hi")
    assert generator.value.code == "wrong_model_task"
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model=EMBEDDER, messages=HELLO)
    assert chat.value.code == "wrong_model_task"
    with Client(server.url, server.admin_key) as oip:
        answer = oip.infer(EMBEDDER, {"text": np.array([b"hello"], dtype=object)})
    assert answer["embedding"].shape == (1, 384)
    assert answer["tokens"].tolist() == [3]  # [CLS] hello [SEP]


def test_a_language_model_also_answers_oip_inference(server: LiveServer) -> None:
    with Client(server.url, server.admin_key) as oip:
        prompts = np.array([b"The capital of France is", b"One, two, three,"], dtype=object)
        answer = oip.infer(LLM, {"text_input": prompts})
    completions = answer["text_output"].tolist()
    assert len(completions) == 2
    assert all(isinstance(text, bytes) and text.strip() for text in completions)
