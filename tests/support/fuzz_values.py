"""Hostile JSON values and bodies as hypothesis strategies: any JSON, valid documents with one
part broken, other encodings, and bytes broken below the JSON level or at the server's limits.

Valid documents come from tests/support/openapi_values.py; whole requests (headers, methods,
paths) from tests/support/fuzz_requests.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from serve_app.protocol import MAX_INPUTS, TASK_PATHS

Json = Any

# Hypothesis settings shared by every fuzz test: reproducible in CI, no per-example deadline
# (the machine is shared), no example database written into the checkout.
FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# Text a client can send: any Unicode scalar (JSON cannot carry lone surrogates as UTF-8).
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_HUGE_INTS = st.sampled_from([2**31, 2**63, 2**64 + 1, 10**30, -(2**63) - 1, -(10**30)])
_BOUNDARY_NUMBERS = st.sampled_from([0, -1, 1, -0.0, 1e-300, 1e308, -1e308, 2.0000001, 65537])


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Json]:
    """Any JSON document, small, with the awkward scalars (huge and negative numbers) common."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        _HUGE_INTS,
        _BOUNDARY_NUMBERS,
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Json]) -> Json:
    """A value of `values` with one part broken: a key dropped, added or retyped, an item
    replaced, or the whole value wrapped."""
    value = copy.deepcopy(draw(values))  # broken in place: never a value `values` may share
    target = value
    # Walk down a few levels so nested fields (messages[0].role) get broken too.
    for _ in range(draw(st.integers(0, 2))):
        if not isinstance(target, dict | list):
            break
        children = list(target.values()) if isinstance(target, dict) else target
        containers = [c for c in children if isinstance(c, dict | list) and c]
        if not containers:
            break
        target = draw(st.sampled_from(containers))
    kind = draw(st.sampled_from(["drop", "extra", "retype", "boundary", "wrap"]))
    if kind == "wrap" or not isinstance(target, dict | list) or not target:
        return draw(st.sampled_from([[value], {"data": value}, json.dumps(value), None]))
    replacement = draw(
        json_values(6)
        if kind == "retype"
        else st.one_of(_HUGE_INTS, _BOUNDARY_NUMBERS, st.sampled_from(["", "x" * 5000, [], {}]))
    )
    if isinstance(target, dict):
        key = draw(st.sampled_from(sorted(target)))
        if kind == "drop":
            del target[key]
        elif kind == "extra":
            target[draw(TEXT)] = draw(json_values(4))
        else:
            target[key] = replacement
    else:
        index = draw(st.integers(0, len(target) - 1))
        if kind == "drop":
            del target[index]
        elif kind == "extra":
            target.append(draw(json_values(4)))
        else:
            target[index] = replacement
    return value


# ---------------------------------------------------------------------------------------------
# Encodings and raw bodies

ENCODINGS = ("utf-8", "utf-8", "utf-8", "ascii-escaped", "utf-16", "utf-32", "latin-1")


def encode_json(value: Json, encoding: str) -> bytes:
    """`value` as JSON text in `encoding` (only UTF-8 is what the API accepts)."""
    if encoding == "ascii-escaped":
        return json.dumps(value, ensure_ascii=True).encode()
    text = json.dumps(value, ensure_ascii=False)
    return text.encode(encoding, errors="replace")


def deep_json(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


# Bytes that are not UTF-8: a lone continuation, an overlong form, a UTF-8-encoded surrogate,
# a truncated sequence, and bytes never valid in UTF-8.
_INVALID_UTF8 = (
    b"\x80",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xff\xfe",
    b"\xf5\x80\x80\x80",
)
_NUMBER_LITERALS = (
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-0",
    b"123456789012345678901234567890123456789",
    b"0.000000000000000000000000000001",
    b"1" * 5000,
)


# Per route: its text field, and the fields a number goes in (a text field, where there is none).
_GENERATION_NUMBERS = ("max_tokens", "temperature", "top_p", "seed", "n", "presence_penalty")
_ROUTE_FIELDS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "/v1/embeddings": (b'"input":"x"', ("dimensions", "user")),
    "/v1/completions": (b'"prompt":"x"', (*_GENERATION_NUMBERS, "logprobs")),
    "/v1/chat/completions": (
        b'"messages":[{"role":"user","content":"x"}]',
        (*_GENERATION_NUMBERS, "max_completion_tokens"),
    ),
    "/v1/classify": (b'"user":"x"', ("input",)),
    **dict.fromkeys(TASK_PATHS["rerank"], (b'"query":"x","documents":["x"]', ("top_n",))),
}


@st.composite
def raw_bodies(
    draw: st.DrawFn,
    documents: st.SearchStrategy[bytes],
    route: str,
    model: str,
    max_body_bytes: int,
) -> bytes:
    """Bodies broken below the JSON level, or at the edges of what the server accepts."""
    kind = draw(
        st.sampled_from(
            ["truncate", "invalid-utf8", "number", "deep", "deep-field", "huge", "many", "binary"]
        )
    )
    if kind == "binary":
        return draw(st.binary(max_size=256))
    if kind == "deep":
        return deep_json(draw(st.integers(1, 50_000)), draw(st.sampled_from("[{")))
    if kind == "deep-field":
        depth = draw(st.integers(1, 5_000))
        return b'{"model":"' + model.encode() + b'","input":' + deep_json(depth, "[") + b"}"
    if kind == "huge":
        size = draw(st.sampled_from([max_body_bytes - 64, max_body_bytes, max_body_bytes * 4]))
        size = max(1, size + draw(st.integers(-8, 8)))
        head = b'{"model":"' + model.encode() + b'","input":"'
        return head + b"a " * (size // 2) + b'"}'
    if kind == "many":  # inputs around the most one request may carry
        count = draw(st.sampled_from([MAX_INPUTS - 1, MAX_INPUTS, MAX_INPUTS + 1, 5000]))
        return json.dumps({"model": model, "input": ["x"] * count}).encode()
    document = draw(documents)
    if kind == "truncate":
        return document[: draw(st.integers(0, max(0, len(document) - 1)))]
    if kind == "number":
        literal = draw(st.sampled_from(_NUMBER_LITERALS))
        text_field, numeric_fields = _ROUTE_FIELDS[route]
        field_name = draw(st.sampled_from(numeric_fields))
        return (
            b'{"model":"' + model.encode() + b'",' + text_field + b',"'
            + field_name.encode() + b'":' + literal + b"}"
        )  # fmt: skip
    position = draw(st.integers(0, len(document)))
    return document[:position] + draw(st.sampled_from(_INVALID_UTF8)) + document[position:]
