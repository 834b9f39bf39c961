"""An input a model replica refuses, carried back to the ingress to become a 400."""

from __future__ import annotations


class InputRejected(ValueError):
    """The request cannot be served as asked (e.g. prompt + max_tokens exceed the context).

    Raised inside a replica; `serve_app.backends` turns it into an OpenAI-shaped 400. `args` holds
    both fields so the exception survives pickling across Ray.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message
