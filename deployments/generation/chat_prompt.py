"""A chat as one prompt string: the tokenizer's own chat template, or a documented plain one.

The plain template (docs/models.md), for tokenizers without a chat template:

    System: {content}
    User: {content}
    Assistant: {content}
    Assistant:

one line per message, the role capitalised, then `Assistant:` for the model to continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2.exceptions import TemplateError

from deployments.contract import ChatMessage, InputRejected


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    if has_chat_template(tokenizer):
        try:
            rendered: str = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                tokenize=False,
                add_generation_prompt=True,
            )
        except TemplateError as exc:
            # Templates refuse some chats themselves (e.g. "roles must alternate"): a client error.
            raise InputRejected(
                f"The model's chat template refused the messages: {exc}", "messages"
            ) from exc
        return rendered
    return plain_chat_prompt(messages)


def plain_chat_prompt(messages: Sequence[ChatMessage]) -> str:
    lines = [f"{message.role.capitalize()}: {message.content}\n" for message in messages]
    return "".join(lines) + "Assistant:"
