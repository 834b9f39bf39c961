"""Token logprobs in OpenAI's legacy completions shape and in chat's."""

from __future__ import annotations

from deployments.contract import TokenLogprob
from serve_app.generation.logprobs import CompletionLogprobs, chat_logprobs

PROMPT = (TokenLogprob("The", None), TokenLogprob(" cat", -2.0, ((" dog", -1.0), (" cat", -2.0))))
GENERATED = (TokenLogprob(" sat", -0.5, ((" sat", -0.5),)), TokenLogprob("é", -3.0, ()))


def test_legacy_shape_with_offsets_running_across_chunks() -> None:
    choice = CompletionLogprobs()
    first = choice.render(PROMPT)
    assert first == {
        "tokens": ["The", " cat"],
        "token_logprobs": [None, -2.0],
        "top_logprobs": [None, {" dog": -1.0, " cat": -2.0}],
        "text_offset": [0, 3],
    }
    second = choice.render(GENERATED)
    assert second["text_offset"] == [7, 11]
    # logprobs=0: no alternatives, but the chosen token is still shown, as vLLM does.
    assert second["top_logprobs"] == [{" sat": -0.5}, {"é": -3.0}]


def test_tokens_that_decode_alike_keep_the_likelier_value() -> None:
    token = TokenLogprob("\ufffd", -4.0, (("\ufffd", -1.0), ("\ufffd", -2.0), ("a", -3.0)))
    [top] = CompletionLogprobs().render([token])["top_logprobs"]
    assert top == {"\ufffd": -1.0, "a": -3.0}


def test_chat_shape_has_bytes_and_ranked_alternatives() -> None:
    rendered = chat_logprobs(GENERATED)
    assert rendered["refusal"] is None
    assert rendered["content"] == [
        {
            "token": " sat",
            "logprob": -0.5,
            "bytes": [32, 115, 97, 116],
            "top_logprobs": [{"token": " sat", "logprob": -0.5, "bytes": [32, 115, 97, 116]}],
        },
        {"token": "é", "logprob": -3.0, "bytes": [195, 169], "top_logprobs": []},
    ]
