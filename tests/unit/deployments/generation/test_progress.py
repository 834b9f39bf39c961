"""Text bookkeeping for streamed generation: stop sequences, incremental detokenization, chat
prompts, and how a batch splits when padding would overrun the context."""

from __future__ import annotations

import pytest

from deployments.contract import ChatMessage, InputRejected
from deployments.generation.chat_prompt import plain_chat_prompt, render_chat
from deployments.generation.model import plan_groups
from deployments.generation.progress import IncrementalDetokenizer, StopMatcher
from tests.support.tiny_models import CHAT_TEMPLATE, build_bpe_tokenizer


def feed_all(matcher: StopMatcher, deltas: list[str]) -> tuple[str, bool]:
    out = []
    for delta in deltas:
        text, stopped = matcher.feed(delta)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_sequence_split_across_deltas_is_cut_and_never_emitted() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("hello E") == ("hello ", False)  # "E" held back: it may start "END"
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("D and more") == ("", True)


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    assert feed_all(StopMatcher(["END"]), ["abc E", "NX", "yz"]) == ("abc ENXyz", False)
    assert feed_all(StopMatcher(["END"]), ["tail E"]) == ("tail E", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["zz", "b"]), ["aaabzz"]) == ("aaa", True)
    assert feed_all(StopMatcher([]), ["no", " stops"]) == ("no stops", False)


@pytest.mark.parametrize(
    "text",
    ["plain ascii text", "héllo wörld — ünïcode ✓ 日本語 🙂🙂", "\x15 bytes\x00 and tabs\t"],
)
def test_incremental_detokenization_equals_a_full_decode(text: str) -> None:
    tokenizer = build_bpe_tokenizer()
    ids: list[int] = tokenizer(text)["input_ids"]
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.add(token) for token in ids]
    assert "".join(pieces) + detokenizer.flush() == tokenizer.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces)  # multi-byte characters arrive whole


def test_bytes_that_never_form_a_character_do_not_stall_the_stream() -> None:
    tokenizer = build_bpe_tokenizer()
    lone = tokenizer.get_vocab()["Ã"]  # byte 0xC3: a lead byte, never completed here
    detokenizer = IncrementalDetokenizer(tokenizer)
    emitted = "".join(detokenizer.add(lone) for _ in range(8))
    assert emitted.startswith("\ufffd")  # released after at most 4 held tokens


def test_chat_uses_the_tokenizer_template_or_the_documented_plain_one() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi!")]
    tokenizer = build_bpe_tokenizer()
    assert render_chat(tokenizer, messages) == "System: Be brief.\nUser: Hi!\nAssistant:"
    assert plain_chat_prompt(messages) == "System: Be brief.\nUser: Hi!\nAssistant:"
    tokenizer.chat_template = CHAT_TEMPLATE
    assert render_chat(tokenizer, messages) == "<|system|>Be brief.\n<|user|>Hi!\n<|assistant|>"


def test_batch_stays_whole_when_it_fits_the_context() -> None:
    assert plan_groups([(10, 100), (50, 20), (5, 5)], context_tokens=200) == [[0, 1, 2]]


def test_batch_splits_when_left_padding_would_overrun_the_context() -> None:
    # 900 + 900 > 1000: the long prompt and the long completion cannot share a generate call.
    groups = plan_groups([(10, 900), (900, 10), (20, 50), (850, 100)], context_tokens=1000)
    assert groups == [[0, 2], [1, 3]]
    for group in groups:
        shapes = [[(10, 900), (900, 10), (20, 50), (850, 100)][i] for i in group]
        assert max(p for p, _ in shapes) + max(m for _, m in shapes) <= 1000


def test_a_template_that_refuses_the_chat_is_a_client_error() -> None:
    tokenizer = build_bpe_tokenizer()
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('the first message must be from the user') }}{% endif %}"
        "{{ messages[0]['content'] }}"
    )
    with pytest.raises(InputRejected, match="first message must be from the user") as caught:
        render_chat(tokenizer, [ChatMessage("system", "x")])
    assert caught.value.param == "messages"
