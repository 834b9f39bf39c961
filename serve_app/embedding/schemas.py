"""The shapes of POST /v1/embeddings: OpenAI's request (the response is built in route.py).

`input` is OpenAI's: a text, a list of texts, one array of token ids, or a list of such arrays.
The ids are checked here for shape only; what they mean (and their range) depends on the model's
`token_inputs` setting, which `token_inputs.py` applies once the model is known.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from pydantic import Field, StrictInt, StrictStr, field_validator

from serve_app.protocol import MAX_INPUTS, ModelRequest, check_input_count, check_texts

# OpenAI's limit on the tokens of one input.
MAX_TOKENS_PER_INPUT = 8192

TokenIds = list[StrictInt]
EmbeddingInput = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
_SHAPES = "a string, an array of strings, an array of token ids or an array of token-id arrays"
_JSON_TYPES = {type(None): "a null", bool: "a boolean", float: "a number", dict: "an object"}


class EmbeddingRequest(ModelRequest):
    max_inputs: ClassVar[int] = MAX_INPUTS

    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)

    @field_validator("input", mode="before")
    @classmethod
    def _one_shape(cls, value: object) -> object:
        # Before the union is tried: its own errors ("input.str: ...") name no shape a user sent.
        if isinstance(value, str):
            check_texts(value, cls.max_inputs)
        elif isinstance(value, list):
            _check_list(value, cls.max_inputs)
        else:
            raise ValueError(f"'input' must be {_SHAPES}")
        return value

    def texts(self) -> list[str]:
        """The text inputs; call only when `token_arrays()` is None."""
        return [self.input] if isinstance(self.input, str) else cast(list[str], self.input)

    def token_arrays(self) -> list[list[int]] | None:
        """One id array per input, or None when the inputs are text."""
        value = self.input
        if isinstance(value, str) or isinstance(value[0], str):
            return None
        if isinstance(value[0], int):
            return [value]
        return value


def _kind(item: object) -> str:
    if isinstance(item, str):
        return "string"
    if isinstance(item, int) and not isinstance(item, bool):
        return "token id"
    if isinstance(item, list):
        return "token-id array"
    found = _JSON_TYPES.get(type(item), type(item).__name__)
    raise ValueError(f"'input' must be {_SHAPES}; it holds {found}")


def _check_list(items: list[object], max_inputs: int) -> None:
    kinds = {_kind(item) for item in items}
    if len(kinds) > 1:
        raise ValueError(
            f"'input' mixes {' and '.join(kind + 's' for kind in sorted(kinds))}; send one "
            f"kind per request: {_SHAPES}"
        )
    if kinds == {"token id"}:
        _check_ids(items, "input")
    elif kinds == {"token-id array"}:
        check_input_count(len(items), max_inputs)
        for index, array in enumerate(items):
            _check_ids(cast(list[object], array), f"input[{index}]")
    else:
        check_texts(cast(list[str], items), max_inputs)


def _check_ids(ids: list[object], where: str) -> None:
    if not ids:
        raise ValueError(f"'{where}' is an empty token-id array; every input must have tokens")
    if len(ids) > MAX_TOKENS_PER_INPUT:
        raise ValueError(
            f"'{where}' has {len(ids)} token ids; at most {MAX_TOKENS_PER_INPUT} are allowed "
            "per input"
        )
    # `type(...) is int` also refuses JSON's true and false, which Python counts as ints.
    if all(type(token) is int for token in ids) and min(cast(list[int], ids)) >= 0:
        return
    for position, token in enumerate(ids):
        if type(token) is not int:
            raise ValueError(f"'{where}[{position}]' is not an integer token id: {token!r}")
        if token < 0:
            raise ValueError(f"'{where}[{position}]' is {token}; token ids are never negative")
