"""Each row's progress through a shared generation, checked once per decoding step: new tokens
to text, stop sequences, eos, max_tokens, cancellation.

`BatchProgress` is the stopping criterion: every step it hands each row its new token, lets the
row turn it into text, passes the new chunks to `emit`, and tells `generate` which rows are done.
It runs on the generate thread.

Detokenizing is incremental, O(window) per token: decoding the whole sequence every step costs
O(n) per token; instead decode a short window and diff it against the previous one. A
byte-level tokenizer can split one character over several tokens; while the window ends in the
replacement character, nothing is emitted yet, for at most the 4 tokens a UTF-8 character can
span: bytes that never complete one are emitted as U+FFFD rather than widening the window (and
the cost per token) forever. Stop sequences over streamed text cut at the first match and hold
back what might start one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from deployments.contract import (
    FinishReason,
    GenerationChunk,
    GenerationOutcome,
    SamplingParams,
    TokenLogprob,
)
from deployments.generation.logprobs import LogprobCapture, describe

Emit = Callable[[list[GenerationChunk | None]], None]


@dataclass
class GenerationJob:
    """A validated request, tokenized, ready for a batch. `cancel()` may come from any thread."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    cancelled: threading.Event = field(default_factory=threading.Event)
    logprobs: int | None = None  # top alternatives per token; None: no logprobs
    index: int = 0  # the choice this job is, of its request's n

    def cancel(self) -> None:
        self.cancelled.set()


class RowProgress:
    def __init__(self, job: GenerationJob, tokenizer: Any, eos_ids: Collection[int]) -> None:
        self.job = job
        self._eos_ids = eos_ids
        self._tokenizer = tokenizer
        # Filled by the sampling processor as tokens are chosen; sent with the chunk they end in.
        self.capture = LogprobCapture(job.logprobs) if job.logprobs is not None else None
        self._logprobs: list[TokenLogprob] = []
        self._detokenizer = IncrementalDetokenizer(tokenizer)
        self._stops = StopMatcher(job.stop)
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def advance(self, token_id: int) -> GenerationChunk | None:
        """Take one generated token; the chunk to send, or None when there is nothing yet."""
        if self.job.cancelled.is_set():
            self.finish_reason = "cancelled"
            return None  # nobody is listening any more
        self.completion_tokens += 1
        if self.capture is not None:
            step = self.capture.steps[self.completion_tokens - 1]
            self._logprobs.append(describe(self._tokenizer, step))
        if token_id in self._eos_ids:
            text, _ = self._stops.feed(self._detokenizer.flush())
            return self._finish("stop", text)
        text, stopped = self._stops.feed(self._detokenizer.add(token_id))
        if stopped:
            return self._finish("stop", text)
        if self.completion_tokens >= self.job.max_tokens:
            tail, stopped = self._stops.feed(self._detokenizer.flush())
            return self._finish("stop" if stopped else "length", text + tail)
        return self._chunk(text, None) if text else None

    def end(self) -> GenerationChunk | None:
        """`generate` returned while this row was still open: it ran out of room."""
        if self.finished:
            return None
        text, stopped = self._stops.feed(self._detokenizer.flush())
        return self._finish("stop" if stopped else "length", text)

    def cancel(self) -> None:
        """The caller went away before the row ended (no-op once it has ended)."""
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    def outcome(self, batch_id: int | None) -> GenerationOutcome:
        return GenerationOutcome(
            request_id=self.job.request_id,
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(self.job.prompt_ids),
            completion_tokens=self.completion_tokens,
            batch_id=batch_id,
        )

    def _finish(self, reason: FinishReason, text: str) -> GenerationChunk:
        self.finish_reason = reason
        # Text held back as a possible stop-sequence start is output after all (empty after a hit).
        return self._chunk(text + self._stops.flush(), reason)

    def _chunk(self, text: str, reason: FinishReason | None) -> GenerationChunk:
        logprobs, self._logprobs = tuple(self._logprobs), []
        return GenerationChunk(
            text=text,
            prompt_tokens=len(self.job.prompt_ids),
            completion_tokens=self.completion_tokens,
            finish_reason=reason,
            index=self.job.index,
            logprobs=logprobs,
        )


class BatchProgress(StoppingCriteria):
    """`on_finish` hears of each row as it ends, on the generate thread, before later chunks."""

    def __init__(
        self,
        rows: Sequence[RowProgress],
        emit: Emit,
        on_finish: Callable[[RowProgress], None] | None = None,
    ) -> None:
        self.rows = list(rows)
        self._emit = emit
        self._on_finish = on_finish

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        open_before = [not row.finished for row in self.rows]
        updates = [
            row.advance(token) if still_open else None
            for row, token, still_open in zip(self.rows, tokens, open_before, strict=True)
        ]
        self._report(open_before, updates)
        done = [row.finished for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def end(self) -> None:
        open_before = [not row.finished for row in self.rows]
        self._report(open_before, [row.end() for row in self.rows])

    def _report(self, open_before: list[bool], updates: list[GenerationChunk | None]) -> None:
        if self._on_finish is not None:
            for row, was_open in zip(self.rows, open_before, strict=True):
                if was_open and row.finished:
                    self._on_finish(row)
        if any(update is not None for update in updates):
            self._emit(updates)


_INCOMPLETE = "\ufffd"
_MAX_HELD_TOKENS = 4


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # end of the text already emitted

    def add(self, token_id: int) -> str:
        """The new text `token_id` completes (may be empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        held = len(self._ids) - self._read_offset
        if len(full) > len(prefix) and (not full.endswith(_INCOMPLETE) or held >= _MAX_HELD_TOKENS):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (a dangling partial character decodes as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text


class StopMatcher:
    """Feed text deltas; get back what is safe to emit, and whether a stop sequence was hit.

    Text that could be the beginning of a stop sequence is held back until the next delta
    settles it, so a client never sees part of a stop sequence (OpenAI excludes it from output).
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        text = self._pending + delta
        hits = [index for index in (text.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            self._pending = ""
            return text[: min(hits)], True
        held = self._longest_partial_stop(text)
        self._pending = text[len(text) - held :]
        return text[: len(text) - held], False

    def flush(self) -> str:
        """The held-back text, once no more text is coming."""
        pending, self._pending = self._pending, ""
        return pending

    def _longest_partial_stop(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
