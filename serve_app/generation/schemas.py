"""OpenAI-compatible request bodies for /v1/completions and /v1/chat/completions.

Unknown fields are refused ("Unrecognized request argument"), as OpenAI's API does. Fields the
service accepts but cannot honour with other than their default (the penalties) are checked by
the routes, which say so in a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from serve_app.protocol import StrictRequest

MAX_PROMPTS = 64
MAX_STOP_SEQUENCES = 4
MAX_MESSAGES = 1024
MAX_SEED = 2**63 - 1
# Choices of one prompt run as rows of one batch: more than a batch holds would wait for themselves.
MAX_CHOICES = 16
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for /v1/completions
MAX_CHAT_TOP_LOGPROBS = 20  # and for chat's top_logprobs

TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
Several = Field(min_length=1, max_length=MAX_PROMPTS)


class StreamOptions(StrictRequest):
    include_usage: bool = False


class _SamplingFields(StrictRequest):
    model: StrictStr = Field(min_length=1, max_length=256)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: int | None = Field(default=None, ge=-MAX_SEED, le=MAX_SEED)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    user: StrictStr | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _few_non_empty_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_SamplingFields):
    """`prompt`: text, several texts, token ids in the model's own vocabulary, or several lists
    of them. `max_tokens` 0 (with `echo`) scores the prompt without generating."""

    prompt: (
        StrictStr
        | Annotated[list[StrictStr], Several]
        | TokenIds
        | Annotated[list[TokenIds], Several]
    )
    max_tokens: int | None = Field(default=None, ge=0)
    logprobs: int | None = Field(default=None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False

    def prompts(self) -> list[str | TokenIds]:
        """One entry per prompt: a text or a list of token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [self.prompt]  # type: ignore[list-item]
        return list(self.prompt)  # type: ignore[arg-type]


class TextPart(StrictRequest):
    type: Literal["text"]
    text: StrictStr


class ChatMessageIn(BaseModel):
    """One chat message; text content as a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")  # e.g. `name`, `tool_calls`: not used here

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` (the newer name) wins over the deprecated `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens
