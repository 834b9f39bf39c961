"""Sampling at the edges of what the API accepts: any temperature in (0, 2], any top_p in
(0, 1], any seed, any logits row a model can produce, always draws a valid token.

Found by the fuzz over HTTP: a temperature of 2.8e-196 (valid: `ge=0`) overflowed the scaled
logits to inf and NaN, and a top_p of 5e-324 (valid: `gt=0`) rounded to 0 in float32 and kept no
token at all; both were 500s.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.contract import SamplingParams
from deployments.generation.sampling import make_generator, sample_token, top_p_filter
from serve_app.generation.schemas import MAX_SEED
from tests.support.fuzz_values import FUZZ_SETTINGS

TINY = st.sampled_from([5e-324, 1e-300, 1e-45, 1e-8])
TEMPERATURES = st.one_of(TINY, st.floats(min_value=0.0, max_value=2.0, exclude_min=True))
TOP_PS = st.one_of(TINY, st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
LOGITS = st.lists(
    st.one_of(
        st.floats(min_value=-1e4, max_value=1e4),
        st.just(float("-inf")),  # a token another processor masked
    ),
    min_size=1,
    max_size=64,
).filter(lambda row: any(value > float("-inf") for value in row))


@settings(FUZZ_SETTINGS, max_examples=400)
@given(LOGITS, TEMPERATURES, TOP_PS, st.integers(-MAX_SEED, MAX_SEED))
def test_any_accepted_sampling_draws_a_valid_token(
    row: list[float], temperature: float, top_p: float, seed: int
) -> None:
    assert not SamplingParams(temperature=temperature, top_p=top_p, seed=seed).greedy
    logits = torch.tensor(row, dtype=torch.float32)
    token = sample_token(logits, temperature, top_p, make_generator(seed, torch.device("cpu")))
    assert 0 <= token < len(row)
    assert logits[token] > float("-inf")


@settings(FUZZ_SETTINGS, max_examples=200)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=32), TOP_PS)
def test_top_p_always_keeps_the_most_likely_token(weights: list[float], top_p: float) -> None:
    probs = torch.tensor(weights, dtype=torch.float32) + 1e-6
    probs = probs / probs.sum()
    kept = top_p_filter(probs, top_p)
    assert kept.max() == probs.max()  # a most likely token (one of them, on a tie) stays
