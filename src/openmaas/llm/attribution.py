"""Prompt attribution by occlusion: which words of a prompt made a language model answer so.

The target is the first ``completion_tokens`` tokens of a completion: the model's own greedy
one, or one the caller gives. Each word of the prompt (a whitespace-separated unit; adjacent
words are grouped into spans when there are more words than the cost cap allows) is removed
in turn, and its attribution is how much the target's log-probability drops without it::

    attribution(span) = logp(target | prompt) - logp(target | prompt without span)

summed over the target's tokens, each scored after the target tokens before it. Every
evaluation is one ``generate`` call (llama.cpp's OpenAI-shaped answer, ``max_tokens`` 1,
temperature 0) that asks for the top logprobs and pushes the target token to be the one
generated with a logit bias: llama.cpp reports the generated token's log-probability from the
model's raw logits, before any bias or grammar, so it is exact wherever the target ranks. If
an answer still does not generate the target, its logprob is looked up among the top ones,
and failing that the smallest of those stands in as an upper bound (``floored``).

A given completion is tokenized by llama.cpp itself: a grammar keeps a greedy generation on
its text and a logit bias on the tokens of that text makes them the ones chosen. Every token
after the first is scored after the target tokens before it: as token ids after a completion
prompt (exact), or for a chat as the start of the assistant's answer, which llama.cpp
continues (its text, tokenized again with the template: nearly always the same tokens).

Occlusion is not additive, so there is no base value that the attributions add up from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from openmaas.errors import ExplanationUnavailableError, InvalidInputError
from openmaas.explain.types import CostCapError, Quality

__all__ = [
    "MAX_COMPLETION_TOKENS",
    "TOP_LOGPROBS",
    "Generate",
    "Span",
    "attribute_prompt",
    "count_evals",
    "occlude",
    "plan_spans",
    "split_words",
]

# ``generate(kind, body)``: an OpenAI-shaped ``chat`` or ``completion`` request, its answer.
Generate = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_COMPLETION_TOKENS = 8
TOP_LOGPROBS = 20  # the most the OpenAI API (and ours) gives
_FORCE = 100.0  # logit bias that makes a token the greedy choice
_LOWEST_LOGPROB = -104.0  # float32 probabilities end near exp(-103.3); llama.cpp says -3e38
_COMPLETION_CHARS = 1024  # the part of a given completion that is tokenized (>= 8 tokens)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Span:
    """Adjacent words of the prompt: ``prompt[start:end] == text``."""

    text: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class _Token:
    id: int
    text: str
    data: bytes
    logprob: float


def split_words(prompt: str) -> list[Span]:
    """The prompt's words: maximal runs of non-whitespace characters."""
    return [Span(m.group(), m.start(), m.end()) for m in _WORD.finditer(prompt)]


def count_evals(spans: int, completion_tokens: int) -> int:
    """Generate calls for ``spans`` spans: the whole prompt and each occlusion, per token."""
    return (spans + 1) * completion_tokens


def plan_spans(prompt: str, completion_tokens: int, max_evals: int, chat: bool) -> list[Span]:
    """The spans to occlude: one per word, or adjacent words grouped to fit ``max_evals``.

    Raises InvalidInputError for a prompt without words (or, for a completion prompt, with
    one: removing it would leave nothing to condition on) or a ``completion_tokens`` out of
    1..8, and CostCapError when even the fewest spans would need more calls than the cap.
    """
    if not 1 <= completion_tokens <= MAX_COMPLETION_TOKENS:
        raise InvalidInputError(
            f"completion_tokens is {completion_tokens}; give 1 to {MAX_COMPLETION_TOKENS}",
            field="completion_tokens",
        )
    words = split_words(prompt)
    fewest = 1 if chat else 2
    if len(words) < fewest:
        raise InvalidInputError(
            "the prompt needs at least two words to attribute (removing the only one would "
            "leave the model nothing to continue)"
            if words
            else "the prompt has no words to attribute",
            field="prompt",
        )
    allowed = max_evals // completion_tokens - 1
    if allowed < fewest:
        raise CostCapError("occlusion", count_evals(fewest, completion_tokens), max_evals)
    return _group(prompt, words, min(len(words), allowed))


def _group(prompt: str, words: list[Span], count: int) -> list[Span]:
    """``count`` spans of adjacent words, their sizes differing by at most one."""
    size, extra = divmod(len(words), count)
    spans, at = [], 0
    for index in range(count):
        take = size + (1 if index < extra else 0)
        first, last = words[at], words[at + take - 1]
        spans.append(Span(prompt[first.start : last.end], first.start, last.end))
        at += take
    return spans


def occlude(prompt: str, spans: list[Span], index: int) -> str:
    """The prompt without ``spans[index]`` and the whitespace that set it apart (the space
    before it, or after it when it starts the prompt)."""
    span = spans[index]
    if index > 0:
        start = spans[index - 1].end
        return prompt[:start] + prompt[span.end :]
    after = spans[1].start if len(spans) > 1 else len(prompt)
    return prompt[: span.start] + prompt[after:]


async def attribute_prompt(
    generate: Generate,
    prompt: str,
    *,
    completion: str | None = None,
    completion_tokens: int = 1,
    max_evals: int = 256,
    chat: bool = False,
) -> dict[str, Any]:
    """Attribute the log-probability of a completion's first tokens to the prompt's words.

    ``chat`` sends the prompt as the user's message (the model's chat template applies);
    otherwise it is a plain completion prompt. Without ``completion`` the target is the
    model's greedy completion. Makes at most ``(spans + 1) * completion_tokens`` calls, one
    after another, and refuses with CostCapError before any when that would pass
    ``max_evals``. Returns a plain JSON-ready dict (``method``, ``spans``, ``attributions``,
    ``target``, ``quality``, ``parameters``).
    """
    spans = plan_spans(prompt, completion_tokens, max_evals, chat)
    scorer = _Scorer(generate, chat)
    targets = await scorer.targets(prompt, completion, completion_tokens)
    # The whole prompt: the first token's logprob came with the targets; later ones are
    # scored like the occlusions (after the same prefix) so both sides measure alike.
    base = [targets[0].logprob]
    for position in range(1, len(targets)):
        base.append(await scorer.score(prompt, targets, position))
    attributions = []
    for index in range(len(spans)):
        text = occlude(prompt, spans, index)
        occluded = [await scorer.score(text, targets, i) for i in range(len(targets))]
        attributions.append(math.fsum(base) - math.fsum(occluded))
    quality = Quality(n_evals=scorer.calls, converged=True)
    return {
        "method": "occlusion",
        "spans": [span.to_dict() for span in spans],
        "attributions": attributions,
        "target": {
            "text": b"".join(t.data for t in targets).decode("utf-8", "replace"),
            "tokens": [
                {"id": t.id, "text": t.text, "logprob": lp}
                for t, lp in zip(targets, base, strict=True)
            ],
            "logprob": math.fsum(base),
        },
        "quality": quality.to_dict(),
        "parameters": {
            "completion_tokens": len(targets),
            "top_logprobs": TOP_LOGPROBS,
            "floored": scorer.floored,
            "units": "words",
            "words": len(split_words(prompt)),
        },
    }


class _Scorer:
    """Builds the requests, counts the calls and the floored logprobs."""

    def __init__(self, generate: Generate, chat: bool) -> None:
        self._generate = generate
        self._chat = chat
        self.calls = 0
        self.floored = 0

    async def targets(self, prompt: str, completion: str | None, count: int) -> list[_Token]:
        """The target tokens (with their logprobs given the whole prompt), in one call."""
        body = self._body(prompt, [], count, top=1)
        wanted = None
        if completion is not None:
            text = completion[:_COMPLETION_CHARS]
            if not text:
                raise InvalidInputError("the completion is empty", field="completion")
            wanted = text.encode("utf-8")
            body["grammar"] = _literal_grammar(text)
            body["logit_bias"] = [[text, _FORCE]]  # llama.cpp biases the text's tokens
        tokens = [_token(entry) for entry in _entries(await self._call(body))]
        kept: list[_Token] = []
        covered = b""
        for token in tokens[:count]:
            if not token.data or (wanted is not None and len(covered) >= len(wanted)):
                break  # the end of the generation (or of the given text)
            kept.append(token)
            covered += token.data
        if not kept:
            raise ExplanationUnavailableError(
                "the model's completion is empty (it ended at once); nothing to attribute",
                field="completion",
            )
        if wanted is not None and not wanted.startswith(covered[: len(wanted)]):
            raise ExplanationUnavailableError(
                "the model could not be made to produce the given completion",
                field="completion",
            )
        return kept

    async def score(self, text: str, targets: list[_Token], position: int) -> float:
        """logp(targets[position] | text + the targets before it), exact or floored."""
        target = targets[position]
        body = self._body(text, targets[:position], 1, top=TOP_LOGPROBS)
        body["logit_bias"] = [[target.id, _FORCE]]
        entry = _entries(await self._call(body))[0]
        generated = _token(entry)
        if _same(generated, target):
            return generated.logprob
        alternatives = [_token(alt) for alt in entry.get("top_logprobs") or ()]
        for alternative in alternatives:
            if _same(alternative, target):
                return alternative.logprob
        if not alternatives:
            raise ExplanationUnavailableError("the model's answer carries no top logprobs")
        self.floored += 1
        return min(alternative.logprob for alternative in alternatives)

    def _body(self, text: str, prefix: list[_Token], max_tokens: int, top: int) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0}
        if self._chat:
            messages = [{"role": "user", "content": text}]
            if prefix:  # the start of the answer, which the model continues
                start = b"".join(t.data for t in prefix).decode("utf-8", "replace")
                messages.append({"role": "assistant", "content": start})
            body.update(messages=messages, logprobs=True, top_logprobs=top)
        else:
            body["prompt"] = [text, *(t.id for t in prefix)] if prefix else text
            body["logprobs"] = top
        return body

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        answer = await self._generate("chat" if self._chat else "completion", body)
        error = answer.get("error")
        if isinstance(error, dict):
            raise ExplanationUnavailableError(
                str(error.get("message", "the model refused the request"))[:1000]
            )
        return answer


def _entries(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-token logprob entries of an answer's first choice."""
    choices = answer.get("choices") or [{}]
    content = (choices[0].get("logprobs") or {}).get("content") or []
    if not content:
        raise ExplanationUnavailableError(
            "the model's answer carries no logprobs (an empty prompt, or a runtime that does "
            "not report them)"
        )
    return list(content)


def _token(entry: dict[str, Any]) -> _Token:
    text = str(entry.get("token", ""))
    raw = entry.get("bytes")
    data = bytes(raw) if isinstance(raw, list) else text.encode("utf-8")
    logprob = max(float(entry.get("logprob", _LOWEST_LOGPROB)), _LOWEST_LOGPROB)
    return _Token(int(entry.get("id", -1)), text, data, logprob)


def _same(one: _Token, other: _Token) -> bool:
    """The same token: by id, or by its bytes where an answer gives no ids."""
    if one.id >= 0 and other.id >= 0:
        return one.id == other.id
    return one.data == other.data


def _literal_grammar(text: str) -> str:
    """A GBNF grammar that matches exactly ``text`` (everything but plain ASCII escaped)."""
    chars = (
        c if c.isascii() and c.isprintable() and c not in '"\\' else f"\\U{ord(c):08X}"
        for c in text
    )
    return f'root ::= "{"".join(chars)}"'
