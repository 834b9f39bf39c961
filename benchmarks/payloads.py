"""Deterministic input texts and pre-encoded request bodies.

The ceiling and the service get the same texts (same seed, same generator),
and bodies are encoded once up front so the generator spends no CPU on JSON
while it shares the cores with the server.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

EMBEDDINGS_PATH = "/v1/embeddings"
COMPLETIONS_PATH = "/v1/completions"
RERANK_PATH = "/v1/rerank"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"

# A plain vocabulary: sentences of common English words tokenize to roughly
# one token per word, like typical short embedding inputs.
_VOCABULARY = (
    "the of and to in is was for on that with as by at from his it an were are which "
    "this be or has had first one their its new after who they two her she been other "
    "when time during there into school more may years over only year most would world "
    "city some where between later three state such then national used made known under "
    "many university united while part season team these american than film second born "
    "south became states war through being including both before north high however "
    "people family early history album area them series against until since district "
    "county name work life group music following number company several four called "
    "played released career league game government house each based day same won use "
    "station club international town located population general college east found age "
    "march end september river april june october major public members published system "
    "west park water small"
)
_WORDS = tuple(_VOCABULARY.split())


def make_texts(count: int, seed: int, words_per_text: int = 16) -> list[str]:
    """`count` pseudo-random sentences; the same arguments give the same texts."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choices(_WORDS, k=words_per_text)).capitalize() + "." for _ in range(count)
    ]


def make_mixed_length_texts(count: int, seed: int, long_share: float = 0.3) -> list[str]:
    """Queries and passages mixed, as a retrieval service sees them: 70% of 5-30 words, 30% of
    60-240 words (about 80-300 tokens, so the longest are truncated to MiniLM's 256)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = rng.randint(60, 240) if rng.random() < long_share else rng.randint(5, 30)
        texts.append(" ".join(rng.choices(_WORDS, k=words)).capitalize() + ".")
    return texts


@dataclass(frozen=True)
class RequestSet:
    """Bodies for one endpoint, each carrying `inputs_per_request` inputs."""

    path: str
    bodies: Sequence[bytes]
    inputs_per_request: int
    streamed: bool = False


def embedding_bodies(
    texts: Sequence[str],
    inputs_per_request: int,
    model: str = DEFAULT_EMBEDDING_MODEL,
    encoding_format: str = "float",
) -> RequestSet:
    """Chunk `texts` into embeddings requests; a single input is sent as a string."""
    if inputs_per_request < 1:
        raise ValueError("inputs_per_request must be >= 1")
    bodies: list[bytes] = []
    for start in range(0, len(texts) - inputs_per_request + 1, inputs_per_request):
        chunk = list(texts[start : start + inputs_per_request])
        payload: dict[str, object] = {
            "model": model,
            "input": chunk[0] if inputs_per_request == 1 else chunk,
            "encoding_format": encoding_format,
        }
        bodies.append(json.dumps(payload).encode())
    if not bodies:
        raise ValueError("fewer texts than inputs_per_request")
    return RequestSet(EMBEDDINGS_PATH, bodies, inputs_per_request)


def completion_bodies(
    texts: Sequence[str], model: str, max_tokens: int = 16, stream: bool = False
) -> RequestSet:
    """One greedy completions request per text, each asking for `max_tokens` tokens, whole
    or streamed (Server-Sent Events).

    Greedy (`temperature: 0`) as the generation ceiling is, so both produce the same tokens.
    """
    body: dict[str, object] = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body["stream"] = True
    bodies = [json.dumps({**body, "prompt": text}).encode() for text in texts]
    if not bodies:
        raise ValueError("no texts")
    return RequestSet(COMPLETIONS_PATH, bodies, 1, streamed=stream)


def rerank_queries(texts: Sequence[str], documents_per_query: int) -> list[tuple[str, list[str]]]:
    """`texts` cut into (query, documents): each query followed by its `documents_per_query`
    documents. The rerank ceiling scores the same pairs the load sends."""
    step = documents_per_query + 1
    return [
        (texts[start], list(texts[start + 1 : start + step]))
        for start in range(0, len(texts) - step + 1, step)
    ]


def rerank_bodies(texts: Sequence[str], documents_per_query: int, model: str) -> RequestSet:
    """One rerank request per query of `rerank_queries`; each document counts as an input."""
    bodies = [
        json.dumps({"model": model, "query": query, "documents": documents}).encode()
        for query, documents in rerank_queries(texts, documents_per_query)
    ]
    if not bodies:
        raise ValueError("fewer texts than one query and its documents")
    return RequestSet(RERANK_PATH, bodies, documents_per_query)
