"""Token logprobs in OpenAI's two shapes: the legacy completions object (`tokens`,
`token_logprobs`, `top_logprobs`, `text_offset`) and chat's `logprobs.content` list.

The values come from the replica (deployments/generation/logprobs.py): log-softmax of the
model's raw logits, whatever the temperature or top_p.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deployments.contract import TokenLogprob


class CompletionLogprobs:
    """One choice's legacy logprobs, chunk by chunk: `text_offset` counts characters from the
    start of the choice's text (the echoed prompt's first, with echo) across chunks."""

    def __init__(self) -> None:
        self._offset = 0

    def render(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
        offsets: list[int] = []
        for token in tokens:
            offsets.append(self._offset)
            self._offset += len(token.token)
        return {
            "tokens": [token.token for token in tokens],
            "token_logprobs": [token.logprob for token in tokens],
            "top_logprobs": [_top_dict(token) for token in tokens],
            "text_offset": offsets,
        }


def _top_dict(token: TokenLogprob) -> dict[str, float] | None:
    """The alternatives and, as vLLM does, the chosen token itself (so logprobs=0 shows it).
    Tokens that decode alike (parts of one UTF-8 character) share a key: the likelier stays."""
    if token.logprob is None:
        return None  # the first prompt token: nothing predicts it
    top: dict[str, float] = {}
    for text, value in (*token.top, (token.token, token.logprob)):
        top.setdefault(text, value)
    return top


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                **_chat_token(token.token, token.logprob or 0.0),
                "top_logprobs": [_chat_token(text, value) for text, value in token.top],
            }
            for token in tokens
        ],
        "refusal": None,
    }


def _chat_token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
