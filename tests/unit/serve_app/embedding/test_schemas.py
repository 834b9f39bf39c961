"""OpenAI's shapes of embeddings `input`: texts, one token-id array, or a list of arrays, and the
400 message each malformed shape gets (the message a client sees)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from serve_app.embedding.schemas import MAX_TOKENS_PER_INPUT, EmbeddingRequest
from serve_app.errors import validation_error
from serve_app.protocol import MAX_INPUTS


def parsed(value: Any) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate_json(json.dumps({"model": "m", "input": value}))


def refusal(value: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        parsed(value)
    error = validation_error(caught.value)
    assert error.status_code == 400
    assert error.param == "input"
    return error.message


def test_texts_stay_texts() -> None:
    assert parsed("hello").token_arrays() is None
    assert parsed("hello").texts() == ["hello"]
    assert parsed(["a", "b"]).texts() == ["a", "b"]
    assert parsed(["a", "b"]).token_arrays() is None


def test_one_token_array_is_one_input_and_a_list_of_arrays_is_several() -> None:
    assert parsed([15339, 1917]).token_arrays() == [[15339, 1917]]
    assert parsed([[15339], [1917, 0]]).token_arrays() == [[15339], [1917, 0]]


def test_ids_past_any_vocabulary_pass_the_schema_the_model_checks_them() -> None:
    assert parsed([[10**30]]).token_arrays() == [[10**30]]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, "a"], "'input' mixes strings and token ids; send one kind per request"),
        (["a", [1]], "'input' mixes strings and token-id arrays"),
        ([1, [2]], "'input' mixes token ids and token-id arrays"),
        ([[1], []], "'input[1]' is an empty token-id array"),
        ([], "'input' must not be an empty list"),
        ([[]], "'input[0]' is an empty token-id array"),
        ([3, -1], "'input[1]' is -1; token ids are never negative"),
        ([[3], [4, -7]], "'input[1][1]' is -7; token ids are never negative"),
        ([[1, True]], "'input[0][1]' is not an integer token id: True"),
        ([[1, 2.5]], "'input[0][1]' is not an integer token id: 2.5"),
        ([[[1]]], "'input[0][0]' is not an integer token id: [1]"),
        ([1.0], "an array of token-id arrays; it holds a number"),
        ([None], "it holds a null"),
        ([True], "it holds a boolean"),
        (7, "'input' must be a string, an array of strings, an array of token ids or an array"),
        (["a", ""], "'input[1]' is an empty string"),
    ],
)
def test_malformed_inputs_are_named(value: Any, expected: str) -> None:
    assert expected in refusal(value)


def test_ids_per_input_are_capped_at_openais_limit() -> None:
    assert parsed([1] * MAX_TOKENS_PER_INPUT).token_arrays() == [[1] * MAX_TOKENS_PER_INPUT]
    assert f"'input' has {MAX_TOKENS_PER_INPUT + 1} token ids; at most 8192" in refusal(
        [1] * (MAX_TOKENS_PER_INPUT + 1)
    )
    too_long = [[1], [2] * (MAX_TOKENS_PER_INPUT + 1)]
    assert "'input[1]' has 8193 token ids; at most 8192 are allowed per input" in refusal(too_long)


def test_token_arrays_count_as_inputs_against_the_same_limit_as_texts() -> None:
    assert len(parsed([[1]] * MAX_INPUTS).token_arrays() or []) == MAX_INPUTS
    message = refusal([[1]] * (MAX_INPUTS + 1))
    assert f"'input' has {MAX_INPUTS + 1} items; at most {MAX_INPUTS} are allowed" in message
    assert message == refusal(["x"] * (MAX_INPUTS + 1))
