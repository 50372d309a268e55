"""Prompt attribution by occlusion, over a fake llama.cpp that answers like the real one."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import pytest

from openmaas.errors import ExplanationUnavailableError, InvalidInputError
from openmaas.explain.types import CostCapError
from openmaas.llm.attribution import (
    TOP_LOGPROBS,
    attribute_prompt,
    count_evals,
    occlude,
    plan_spans,
    split_words,
)
from openmaas.llm.service import Generation, LlmService

T = TypeVar("T")

# The fake model's vocabulary; token 0 ends the generation (no bytes, like llama.cpp's EOS).
VOCAB = ["", " Paris", " Berlin", " Rome", ".", " is", " the", " a", " capital"]


def _run(awaitable: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout=5)

    return asyncio.run(bounded())


def _paris_model(context: str) -> list[float]:
    """Logits that depend on one word: " Paris" is likely only when "France" is there."""
    logits = [0.0] * len(VOCAB)
    if context.endswith(" Paris"):
        logits[4] = 3.0  # then a full stop, whatever came before
    elif "France" in context:
        logits[1] = 4.0
    return logits


class FakeLlama:
    """Answers OpenAI-shaped ``chat``/``completion`` bodies as llama.cpp does: raw logprobs
    of the generated token and the top ones, ``logit_bias`` ([[id or text, bias]]) and a
    literal grammar (here: the biased text, tokenized by longest match)."""

    def __init__(
        self, model: Any = _paris_model, honour_bias: bool = True, top: int | None = None
    ) -> None:
        self.model = model
        self.honour_bias = honour_bias
        self.top = top
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append((kind, body))
        if kind == "chat":
            messages = body["messages"]
            context = messages[0]["content"] + "".join(m["content"] for m in messages[1:])
            top = int(body["top_logprobs"])
        else:
            prompt = body["prompt"]
            parts = [prompt] if isinstance(prompt, str) else prompt
            context = "".join(p if isinstance(p, str) else VOCAB[p] for p in parts)
            top = int(body["logprobs"])
        top = min(top, self.top or top)
        forced_text = next((b[0] for b in body.get("logit_bias", ()) if isinstance(b[0], str)), "")
        forced_ids = [b[0] for b in body.get("logit_bias", ()) if isinstance(b[0], int)]
        script = [*_tokenize(forced_text), 0] if "grammar" in body else None
        content = []
        for step in range(int(body["max_tokens"])):
            logits = self.model(context)
            norm = math.log(sum(math.exp(x) for x in logits))
            logprobs = [x - norm for x in logits]
            if script is not None:
                chosen = script[step]
            elif forced_ids and self.honour_bias:
                chosen = forced_ids[0]
            else:
                chosen = max(range(len(VOCAB)), key=lambda i: (logprobs[i], -i))
            ranked = sorted(range(len(VOCAB)), key=lambda i: (-logprobs[i], i))[:top]
            content.append(
                {**_entry(chosen, logprobs), "top_logprobs": [_entry(i, logprobs) for i in ranked]}
            )
            context += VOCAB[chosen]
            if chosen == 0:
                break
        usage = {"prompt_tokens": len(context.split()), "completion_tokens": len(content)}
        return {"choices": [{"index": 0, "logprobs": {"content": content}}], "usage": usage}


def _entry(token: int, logprobs: list[float]) -> dict[str, Any]:
    text = VOCAB[token]
    return {"id": token, "token": text, "bytes": list(text.encode()), "logprob": logprobs[token]}


def _tokenize(text: str) -> list[int]:
    tokens = []
    while text:
        token = max((i for i, t in enumerate(VOCAB) if t and text.startswith(t)), key=_length)
        tokens.append(token)
        text = text[len(VOCAB[token]) :]
    return tokens


def _length(token: int) -> int:
    return len(VOCAB[token])


PROMPT = "The capital of France is"


def test_words_and_occlusion_keep_the_rest_of_the_prompt_intact() -> None:
    spans = split_words("  The capital\nof France is ")
    assert [s.text for s in spans] == ["The", "capital", "of", "France", "is"]
    assert all("  The capital\nof France is "[s.start : s.end] == s.text for s in spans)
    spans = split_words(PROMPT)
    assert occlude(PROMPT, spans, 0) == "capital of France is"
    assert occlude(PROMPT, spans, 3) == "The capital of is"
    assert occlude(PROMPT, spans, 4) == "The capital of France"


def test_one_call_per_span_and_token_plus_the_whole_prompt() -> None:
    for tokens in (1, 2):
        fake = FakeLlama()
        result = _run(attribute_prompt(fake, PROMPT, completion_tokens=tokens))
        assert len(result["spans"]) == 5
        assert result["quality"]["n_evals"] == len(fake.bodies) == count_evals(5, tokens)
        assert count_evals(5, tokens) == 6 * tokens
        assert result["parameters"]["completion_tokens"] == tokens
    assert result["target"]["text"] == " Paris."  # the greedy completion's first 2 tokens


def test_only_the_word_the_model_depends_on_gets_attribution() -> None:
    result = _run(attribute_prompt(FakeLlama(), PROMPT, completion_tokens=2))
    by_word = dict(zip((s["text"] for s in result["spans"]), result["attributions"], strict=True))
    assert by_word["France"] > 1.0
    assert all(value == 0.0 for word, value in by_word.items() if word != "France")
    # " Paris" then "." after it: the first depends on France, the second only on " Paris".
    logprobs = [_log_softmax(_paris_model(PROMPT))[1], _log_softmax(_paris_model(" Paris"))[4]]
    assert result["target"]["logprob"] == pytest.approx(sum(logprobs))
    without = _log_softmax(_paris_model("The capital of is"))[1] + logprobs[1]
    assert by_word["France"] == pytest.approx(sum(logprobs) - without)
    assert result["parameters"]["floored"] == 0
    assert result["quality"]["converged"] is True
    assert result["quality"]["additivity_error"] is None
    assert "base_value" not in result


def _log_softmax(logits: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(x) for x in logits))
    return [x - norm for x in logits]


def test_words_are_grouped_into_adjacent_spans_to_fit_the_cap() -> None:
    prompt = "one two three four five six seven eight nine ten"
    fake = FakeLlama()
    result = _run(attribute_prompt(fake, prompt, completion=" Rome", max_evals=4))  # 3 spans
    assert [s["text"] for s in result["spans"]] == [
        "one two three four",
        "five six seven",
        "eight nine ten",
    ]
    assert all(prompt[s["start"] : s["end"]] == s["text"] for s in result["spans"])
    assert len(fake.bodies) == result["quality"]["n_evals"] == 4
    assert result["parameters"]["words"] == 10
    occluded = [body["prompt"] for _, body in fake.bodies[1:]]
    assert occluded == [
        "five six seven eight nine ten",
        "one two three four eight nine ten",
        "one two three four five six seven",
    ]


def test_the_cap_refuses_before_any_call() -> None:
    fake = FakeLlama()
    with pytest.raises(CostCapError) as refused:
        _run(attribute_prompt(fake, PROMPT, completion_tokens=2, max_evals=5))
    assert (refused.value.needed, refused.value.cap) == (6, 5)  # 2 spans (+1) x 2 tokens
    assert fake.bodies == []
    assert len(plan_spans(PROMPT, 2, 6, chat=False)) == 2
    assert len(plan_spans(PROMPT, 1, 1000, chat=True)) == 5


def test_bad_parameters_are_refused() -> None:
    for tokens in (0, 9):
        with pytest.raises(InvalidInputError) as bad:
            plan_spans(PROMPT, tokens, 100, chat=False)
        assert bad.value.field == "completion_tokens"
    with pytest.raises(InvalidInputError):
        plan_spans("Paris", 1, 100, chat=False)  # nothing would be left to continue
    with pytest.raises(InvalidInputError):
        plan_spans("   ", 1, 100, chat=True)
    assert len(plan_spans("Paris?", 1, 100, chat=True)) == 1  # the template remains


def test_a_target_outside_the_top_logprobs_is_floored_and_counted() -> None:
    # A runtime that ignores the logit bias and gives only its top token: without "France",
    # " Paris" ties with the rest and the lowest id (the end) wins and is the only one shown.
    fake = FakeLlama(honour_bias=False, top=1)
    result = _run(attribute_prompt(fake, PROMPT))
    assert result["parameters"]["floored"] == 1
    by_word = dict(zip((s["text"] for s in result["spans"]), result["attributions"], strict=True))
    base = _log_softmax(_paris_model(PROMPT))[1]
    floor = _log_softmax(_paris_model("The capital of is"))[0]
    assert by_word["France"] == pytest.approx(base - floor)
    assert by_word["The"] == 0.0
    bodies = [body for _, body in fake.bodies[1:]]
    assert all(body["logprobs"] == TOP_LOGPROBS for body in bodies)
    assert all(body["logit_bias"] == [[1, 100.0]] for body in bodies)
    assert all(body["temperature"] == 0 and body["max_tokens"] == 1 for body in bodies)


def test_chat_continues_the_answer_after_the_target_prefix() -> None:
    fake = FakeLlama()
    result = _run(
        attribute_prompt(fake, "Where is France", completion=" Paris. is", chat=True, **_TWO)
    )
    assert [t["text"] for t in result["target"]["tokens"]] == [" Paris", "."]
    kind, first = fake.bodies[0]
    assert kind == "chat"
    assert first["grammar"] == 'root ::= " Paris. is"'
    assert first["logit_bias"] == [[" Paris. is", 100.0]]
    assert first["max_tokens"] == 2
    prefixed = [body for _, body in fake.bodies if len(body["messages"]) == 2]
    assert len(prefixed) == 4  # the second token, after the whole prompt and 3 occlusions
    assert all(
        body["messages"][1] == {"role": "assistant", "content": " Paris"} for body in prefixed
    )
    by_word = dict(zip((s["text"] for s in result["spans"]), result["attributions"], strict=True))
    assert by_word["France"] > 1.0
    assert by_word["Where"] == by_word["is"] == 0.0


_TWO: dict[str, Any] = {"completion_tokens": 2}


def test_a_given_completion_is_tokenized_by_the_model_and_cut_to_its_text() -> None:
    fake = FakeLlama()
    result = _run(attribute_prompt(fake, PROMPT, completion=" Rome", completion_tokens=3))
    assert result["target"]["text"] == " Rome"  # one token; the end of text is not a target
    assert [t["id"] for t in result["target"]["tokens"]] == [3]
    assert result["quality"]["n_evals"] == len(fake.bodies) == 6
    by_word = dict(zip((s["text"] for s in result["spans"]), result["attributions"], strict=True))
    assert by_word["France"] < 0  # France makes " Rome" less likely
    _, later = fake.bodies[1]
    assert later["prompt"] == "capital of France is"
    assert later["logit_bias"] == [[3, 100.0]]


def test_completion_prompts_score_later_tokens_after_the_target_ids() -> None:
    fake = FakeLlama()
    _run(attribute_prompt(fake, PROMPT, completion_tokens=2))
    prompts = [body["prompt"] for _, body in fake.bodies]
    assert prompts[1] == [PROMPT, 1]  # the second token, after " Paris" (id 1)
    assert prompts[2:4] == ["capital of France is", ["capital of France is", 1]]


def test_an_empty_completion_or_an_error_is_unavailable() -> None:
    def ends_at_once(context: str) -> list[float]:
        return [9.0] + [0.0] * (len(VOCAB) - 1)

    with pytest.raises(ExplanationUnavailableError):
        _run(attribute_prompt(FakeLlama(ends_at_once), PROMPT))

    async def refuses(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"error": {"code": 400, "message": "the request exceeds the context size"}}

    with pytest.raises(ExplanationUnavailableError) as refused:
        _run(attribute_prompt(refuses, PROMPT))
    assert "context size" in refused.value.detail


class _Tokens:
    """A TokenBudget stand-in that records what was consumed."""

    def __init__(self) -> None:
        self.consumed: list[int] = []

    def consume(self, scopes: object, key: object, used: int) -> None:
        self.consumed.append(used)


def test_the_service_refuses_over_the_cap_before_taking_a_slot() -> None:
    tokens = _Tokens()
    nothing = cast(Any, None)
    service = LlmService(nothing, nothing, nothing, None, cast(Any, tokens), slots=1)
    job = Generation(principal=nothing, resolved=nothing)
    with pytest.raises(CostCapError):
        _run(
            service.explain_prompt(
                job, PROMPT, completion=None, completion_tokens=1, max_evals=2, chat=False
            )
        )
    assert tokens.consumed == []
    assert job.prompt_tokens == 0
