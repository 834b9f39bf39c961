"""Hostile requests as hypothesis strategies, and the checks every answer must pass.

Shared by the Ray-free fuzz (tests/unit/test_fuzz_api.py) and the one over HTTP against a real
service (tests/integration/test_fuzz_service.py). Bodies come from the app's own OpenAPI document
(`from_schema`, a small JSON-Schema-to-strategy translator: hypothesis-jsonschema is not a
dependency), then are mutated, re-encoded, truncated, nested deeply, inflated or replaced by raw
bytes; headers, methods and paths are generated too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

Json = Any
Headers = list[tuple[str, str]]

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

JSON_ROUTES = ("/v1/embeddings", "/v1/completions", "/v1/chat/completions", "/v1/classify")
GET_ROUTES = ("/v1/models", "/healthz", "/readyz", "/openapi.json")
TIMEOUT_HEADER = "x-request-timeout"
# A client that asks for less than this may legitimately get 504 deadline_exceeded.
SHORT_DEADLINE_S = 1.0

# Text a client can send: any Unicode scalar (JSON cannot carry lone surrogates as UTF-8).
_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
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
        _TEXT,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(_TEXT, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# ---------------------------------------------------------------------------------------------
# JSON Schema -> strategy (the subset pydantic emits into the OpenAPI document)


def resolve_ref(ref: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A JSON pointer such as `#/components/schemas/X`, resolved against the whole document,
    as an OpenAPI client resolves it. Raises KeyError for a dangling reference."""
    if not ref.startswith("#/"):
        raise KeyError(f"only local references are supported, not {ref!r}")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return dict(node)


def dangling_refs(node: Any, document: Mapping[str, Any]) -> list[str]:
    """Every `$ref` under `node` that does not resolve against `document`."""
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolve_ref(ref, document)
            except (KeyError, TypeError):
                found.append(ref)
        for value in node.values():
            found += dangling_refs(value, document)
    elif isinstance(node, list):
        for value in node:
            found += dangling_refs(value, document)
    return found


def _bounded_integers(schema: Mapping[str, Any]) -> st.SearchStrategy[int]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = math.floor(schema["exclusiveMinimum"]) + 1
    if "exclusiveMaximum" in schema:
        high = math.ceil(schema["exclusiveMaximum"]) - 1
    low = None if low is None else math.ceil(low)
    high = None if high is None else math.floor(high)
    edges = [v for v in (low, high) if v is not None]
    near_low = st.integers(low, low + 64) if low is not None else st.integers(-64, 64)
    parts: list[st.SearchStrategy[int]] = [st.integers(low, high), near_low]
    if edges:
        parts.append(st.sampled_from(edges))
    return st.one_of(parts)


def _bounded_floats(schema: Mapping[str, Any]) -> st.SearchStrategy[float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )
    edges = [v for k, v in schema.items() if k in ("minimum", "maximum")]
    if low is not None:  # just above the bottom, down to the smallest double
        edges += [low + tiny for tiny in (5e-324, 1e-300, 1e-45, 1e-8)]
    edges = [v for v in edges if high is None or v <= high]
    return st.one_of(floats, st.sampled_from(edges)) if edges else floats


def from_schema(
    schema: Mapping[str, Any],
    document: Mapping[str, Any],
    overrides: Mapping[str, st.SearchStrategy[Json]] | None = None,
) -> st.SearchStrategy[Json]:
    """Values valid for `schema` (as far as a JSON Schema says; validators in code may still
    refuse them). `overrides` replaces the strategy of object properties with those names."""
    overrides = overrides or {}

    def build(node: Mapping[str, Any]) -> st.SearchStrategy[Json]:
        if "$ref" in node:
            return st.deferred(lambda: build(resolve_ref(node["$ref"], document)))
        if "const" in node:
            return st.just(node["const"])
        if "enum" in node:
            return st.sampled_from(list(node["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in node:
                return st.one_of([build(option) for option in node[key]])
        if "allOf" in node:
            merged: dict[str, Any] = {}
            for part in node["allOf"]:
                merged.update(resolve_ref(part["$ref"], document) if "$ref" in part else part)
            return build(merged)
        kind = node.get("type")
        if isinstance(kind, list):
            return st.one_of([build({**node, "type": k}) for k in kind])
        if kind == "string":
            low = int(node.get("minLength", 0))
            high = int(node.get("maxLength", low + 40))
            return st.text(
                st.characters(codec="utf-8"), min_size=low, max_size=min(high, low + 40)
            ) | st.just("x" * high)
        if kind == "integer":
            return _bounded_integers(node)
        if kind == "number":
            return _bounded_floats(node)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            low = int(node.get("minItems", 0))
            high = int(node.get("maxItems", low + 6))
            items = build(node.get("items", {}))
            return st.lists(items, min_size=low, max_size=min(high, low + 6))
        if kind == "object" or "properties" in node:
            properties = node.get("properties", {})
            required = set(node.get("required", ()))

            def prop(name: str) -> st.SearchStrategy[Json]:
                return overrides[name] if name in overrides else build(properties[name])

            return st.fixed_dictionaries(
                {name: prop(name) for name in properties if name in required},
                optional={name: prop(name) for name in properties if name not in required},
            )
        return json_values(6)

    return build(schema)


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Json]) -> Json:
    """A value of `values` with one part broken: a key dropped, added or retyped, an item
    replaced, or the whole value wrapped."""
    value = draw(values)
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
            target[draw(_TEXT)] = draw(json_values(4))
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

_ENCODINGS = ("utf-8", "utf-8", "utf-8", "ascii-escaped", "utf-16", "utf-32", "latin-1")


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
    if kind == "many":
        count = draw(st.sampled_from([2047, 2048, 2049, 5000]))
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


# ---------------------------------------------------------------------------------------------
# Headers

_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
_CONTENT_TYPES = (
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json; charset=utf-16",
    "application/vnd.api+json",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/octet-stream",
    "",
    "*/*",
)
_TIMEOUTS = ("0", "-1", "nan", "inf", "-inf", "1e-9", "0.001", "1e308", "abc", "", "5", "0x10")


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], rare_percent: int) -> Any:
    """`rare` about `rare_percent` times in a hundred, else `common`."""
    return st.integers(0, 99).flatmap(lambda n: rare if n < rare_percent else common)


@dataclass(frozen=True)
class HostileRequest:
    method: str
    path: str
    headers: Headers
    body: bytes = b""
    short_deadline: bool = False  # the client asked for a deadline a 504 may honour

    def describe(self) -> str:
        return f"{self.method} {self.path} headers={self.headers!r} body={self.body[:300]!r}"


@st.composite
def header_sets(draw: st.DrawFn, api_key: str | None, body_route: bool) -> Headers:
    headers: Headers = []
    if body_route:
        content_type = draw(
            mostly(
                st.sampled_from(["application/json", "application/json; charset=utf-8", None]),
                st.one_of(st.sampled_from(_CONTENT_TYPES), _HEADER_VALUE),
                rare_percent=10,
            )
        )
        if content_type is not None:
            headers.append(("content-type", content_type))
    if api_key is not None:
        authorization = draw(
            mostly(
                st.just(f"Bearer {api_key}"),
                st.one_of(
                    st.sampled_from(["", "Bearer", "Bearer ", "Basic abc", f"bearer  {api_key} "]),
                    _HEADER_VALUE,
                    st.none(),
                ),
                rare_percent=7,
            )
        )
        if authorization is not None:
            headers.append(("authorization", authorization))
    timeout = draw(st.one_of(st.none(), st.none(), st.sampled_from(_TIMEOUTS), _HEADER_VALUE))
    if timeout is not None:
        headers.append((TIMEOUT_HEADER, timeout))
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "x-request-id",
                        "content-encoding",
                        "accept",
                        "accept-encoding",
                        "transfer-encoding-hint",
                        "x-forwarded-for",
                        "openai-organization",
                        "user-agent",
                    ]
                ),
                st.one_of(st.sampled_from(["gzip", "*/*", "identity", "x" * 300]), _HEADER_VALUE),
            ),
            max_size=3,
        )
    )
    # Values as HTTP/1.1 carries them: no surrounding whitespace (h11 refuses to send it).
    return [(name, value.strip()) for name, value in headers + extra]


def asks_short_deadline(headers: Headers) -> bool:
    for name, value in headers:
        if name == TIMEOUT_HEADER:
            try:
                seconds = float(value)
            except ValueError:
                return False
            return math.isfinite(seconds) and 0 < seconds < SHORT_DEADLINE_S
    return False


@dataclass(frozen=True)
class ApiShape:
    """What the fuzzer needs to know about the API: the OpenAPI document, the models, a key."""

    openapi: Mapping[str, Any]
    models_by_route: Mapping[str, str]  # route -> a served model of the right task
    all_models: tuple[str, ...]
    api_key: str | None
    max_body_bytes: int
    # More paths for the method-and-path fuzz (e.g. /docs).
    extra_paths: tuple[str, ...] = field(default=())

    def body_schema(self, route: str) -> Mapping[str, Any]:
        operation = self.openapi["paths"][route]["post"]
        schema: Mapping[str, Any] = operation["requestBody"]["content"]["application/json"][
            "schema"
        ]
        return schema


def model_names(shape: ApiShape, route: str) -> st.SearchStrategy[Json]:
    return st.one_of(
        st.just(shape.models_by_route[route]),
        st.just(shape.models_by_route[route]),
        st.sampled_from(shape.all_models),
        _TEXT,
        json_values(3),
    )


def schema_documents(shape: ApiShape, route: str) -> st.SearchStrategy[Json]:
    """JSON values for `route`: valid by its schema, then some broken."""
    valid = from_schema(
        shape.body_schema(route), shape.openapi, overrides={"model": model_names(shape, route)}
    )
    return st.one_of(valid, valid, mutated(valid), json_values())


def body_requests(
    shape: ApiShape, routes: Iterable[str] = JSON_ROUTES
) -> st.SearchStrategy[HostileRequest]:
    def for_route(route: str) -> st.SearchStrategy[HostileRequest]:
        documents = st.builds(
            encode_json, schema_documents(shape, route), st.sampled_from(_ENCODINGS)
        )
        bodies = st.one_of(
            documents,
            documents,
            raw_bodies(documents, route, shape.models_by_route[route], shape.max_body_bytes),
        )
        return st.builds(
            lambda headers, body: HostileRequest(
                "POST", route, headers, body, asks_short_deadline(headers)
            ),
            header_sets(shape.api_key, body_route=True),
            bodies,
        )

    return st.one_of([for_route(route) for route in routes])


# Options the schema allows but the service refuses unless left at their default (400s):
# pinned, so every generated request gets past the route to the model.
SUPPORTED_GENERATION_OPTIONS: Mapping[str, st.SearchStrategy[Json]] = {
    "n": st.just(1),
    "logprobs": st.sampled_from([None, False]),
    "echo": st.just(False),
    "presence_penalty": st.just(0.0),
    "frequency_penalty": st.just(0.0),
    "max_tokens": st.one_of(st.none(), st.integers(1, 8)),
    "max_completion_tokens": st.one_of(st.none(), st.integers(1, 8)),
}


def valid_body_requests(
    shape: ApiShape,
    routes: Iterable[str] = JSON_ROUTES,
    overrides: Mapping[str, st.SearchStrategy[Json]] | None = None,
) -> st.SearchStrategy[HostileRequest]:
    """Schema-valid bodies with well-formed headers: these reach the backends."""
    headers: Headers = [("content-type", "application/json")]
    if shape.api_key is not None:
        headers.append(("authorization", f"Bearer {shape.api_key}"))

    def for_route(route: str) -> st.SearchStrategy[HostileRequest]:
        valid = from_schema(
            shape.body_schema(route),
            shape.openapi,
            overrides={"model": st.just(shape.models_by_route[route]), **(overrides or {})},
        )
        return valid.map(
            lambda doc: HostileRequest("POST", route, headers, json.dumps(doc).encode())
        )

    return st.one_of([for_route(route) for route in routes])


_PATH_SEGMENT = st.one_of(
    st.sampled_from(
        ["v1", "embeddings", "..", ".", "%2e%2e", "%ff", "%00", "", "models", "x" * 300]
    ),
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="?#/"),
        max_size=12,
    ),
)


@st.composite
def other_requests(draw: st.DrawFn, shape: ApiShape) -> HostileRequest:
    """Known routes with the wrong method, unknown paths, and bodies sent where none belong."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = draw(
        st.one_of(
            st.sampled_from([*JSON_ROUTES, *GET_ROUTES, *shape.extra_paths]),
            st.lists(_PATH_SEGMENT, min_size=1, max_size=4).map(
                lambda parts: "/" + "/".join(parts)
            ),
        )
    )
    body = draw(st.one_of(st.just(b""), st.binary(max_size=64), st.just(b'{"model": "x"}')))
    headers = draw(header_sets(shape.api_key, body_route=bool(body)))
    return HostileRequest(method, path, headers, body, asks_short_deadline(headers))


def any_requests(shape: ApiShape) -> st.SearchStrategy[HostileRequest]:
    return st.one_of(body_requests(shape), body_requests(shape), other_requests(shape))


# ---------------------------------------------------------------------------------------------
# What every answer must be


class BadAnswer(AssertionError):
    pass


def check_error_body(body: bytes) -> dict[str, Any]:
    """An OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}`."""
    try:
        document = json.loads(body)
    except ValueError:
        raise BadAnswer(f"error body is not JSON: {body[:200]!r}") from None
    if not isinstance(document, dict) or set(document) != {"error"}:
        raise BadAnswer(f"error body is not {{'error': ...}}: {body[:200]!r}")
    error = document["error"]
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        raise BadAnswer(f"error object has the wrong keys: {body[:200]!r}")
    if not isinstance(error["message"], str) or not error["message"]:
        raise BadAnswer(f"error message missing: {body[:200]!r}")
    if not isinstance(error["type"], str):
        raise BadAnswer(f"error type missing: {body[:200]!r}")
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            raise BadAnswer(f"error {key} is not a string: {body[:200]!r}")
    if b"Traceback" in body or b'File "' in body:
        raise BadAnswer(f"a traceback reached the client: {body[:300]!r}")
    return error


def check_event_stream(body: bytes) -> None:
    """OpenAI's SSE: `data: {json}` events ending with `data: [DONE]`; errors OpenAI-shaped."""
    lines = [line for line in body.decode().split("\n") if line]
    if not lines or lines[-1] != "data: [DONE]":
        raise BadAnswer(f"stream does not end with [DONE]: {body[-200:]!r}")
    for line in lines[:-1]:
        if not line.startswith("data: "):
            raise BadAnswer(f"not an SSE data line: {line[:200]!r}")
        event = json.loads(line.removeprefix("data: "))
        if "error" in event:
            check_error_body(line.removeprefix("data: ").encode())


def check_answer(
    request: HostileRequest,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    seconds: float,
    max_seconds: float,
    ours: bool = True,
) -> None:
    """Raise BadAnswer unless the answer is one a trusted server may give to `request`.

    `ours`: the application answered (not a proxy in front of it, for a path outside the
    application's route prefix); only then must errors be OpenAI-shaped."""
    where = f"\n  request: {request.describe()}\n  answer: {status} {body[:300]!r}"
    if seconds > max_seconds:
        raise BadAnswer(f"answered after {seconds:.1f} s (limit {max_seconds} s){where}")
    deadline_honoured = status == 504 and request.short_deadline
    if status >= 500 and not deadline_honoured:
        raise BadAnswer(f"server error {status}{where}")
    if request.method == "HEAD" or not ours:
        return
    if status >= 400:
        try:
            check_error_body(body)
        except BadAnswer as exc:
            raise BadAnswer(f"{exc}{where}") from None
        if status in (429, 503) and not headers.get("retry-after", "").isdigit():
            raise BadAnswer(f"{status} without Retry-After{where}")
    elif headers.get("content-type", "").startswith("text/event-stream"):
        try:
            check_event_stream(body)
        except (BadAnswer, ValueError) as exc:
            raise BadAnswer(f"{exc}{where}") from None


@dataclass
class Tally:
    """What a fuzz run saw, for the report in docs/reliability.md."""

    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        parts = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.cases} requests ({parts})"
