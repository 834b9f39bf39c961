"""What crosses the Ray handle between the ingress and a model replica, torch-free.

The ingress imports this module and never a model's: embeddings come back as numpy arrays,
classifications and generation results as plain dataclasses, a refused input as InputRejected.
Per task: embedding `list[str] -> EmbeddingBatch`; classification `list[str] ->
list[Classification]`; generation `GenerationRequest -> list[GenerationResult]` (one per
choice) or a stream of GenerationChunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt


class InputRejected(ValueError):
    """The request cannot be served as asked (e.g. prompt + max_tokens exceed the context).

    Raised inside a replica; `serve_app.routing.backends` turns it into an OpenAI-shaped 400.
    `args` holds both fields so the exception survives pickling across Ray.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class EmbeddingBatch:
    """One row per input text, in input order."""

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]


@dataclass(frozen=True)
class Classification:
    label: str
    score: float
    scores: dict[str, float]  # every label, in the model's id2label order
    tokens: int


@dataclass(frozen=True)
class RelevanceScore:
    """Rerank: one (query, document) pair's relevance, in [0, 1] for a sigmoid cross-encoder
    (the replica answers `(query, list[str]) -> list[RelevanceScore]`, in document order)."""

    score: float
    tokens: int  # the pair's tokens after truncation, special tokens included


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; `seed` makes sampling reproducible for this request alone."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt's completions. Exactly one of `prompt` (raw text), `prompt_token_ids` (ids in
    the model's own vocabulary) or `messages` (a chat) is set.

    `max_tokens_is_default` marks a max_tokens the server chose, which the replica may shorten to
    fit the context instead of refusing the request. `n` completions of the prompt run as rows of
    one batch. `logprobs`: how many top alternatives to report per token (0: the chosen token's
    own logprob only; None: no logprobs). `echo`: each choice starts with the prompt (and, with
    `logprobs`, the prompt tokens' logprobs).
    """

    request_id: str
    max_tokens: int
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    max_tokens_is_default: bool = False
    prompt_token_ids: tuple[int, ...] | None = None
    n: int = 1
    logprobs: int | None = None
    echo: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability: log-softmax of the model's raw logits at its position
    (before temperature and top_p), and the `top` most likely tokens there, most likely first.
    `logprob` is None for a prompt's first token, which nothing before it predicts."""

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationChunk:
    """New text since the previous chunk of choice `index`; the last chunk of a choice has a
    finish_reason. `logprobs`: the tokens this chunk adds, when the request asked for them."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()

    @classmethod
    def joined(cls, chunks: Sequence[GenerationChunk]) -> GenerationChunk:
        """Consecutive chunks of one choice as one: their text and logprobs, the last counts."""
        last = chunks[-1]
        text = "".join(chunk.text for chunk in chunks)
        logprobs = tuple(token for chunk in chunks for token in chunk.logprobs)
        return cls(
            text,
            last.prompt_tokens,
            last.completion_tokens,
            last.finish_reason,
            last.index,
            logprobs,
        )


@dataclass(frozen=True)
class GenerationResult:
    """One whole choice; `generate` answers a request with its `n` choices, in index order."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    index: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationOutcome:
    """How a request ended on the replica, kept for operators and tests.

    finish_reason "cancelled": the caller went away and its row was dropped from the batch.
    batch_id: the static batch that ran it; None under continuous batching, where rows join
    and leave one running batch.
    """

    request_id: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    batch_id: int | None
