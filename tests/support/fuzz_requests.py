"""Hostile requests as hypothesis strategies, driven by the app's own OpenAPI document.

Shared by the Ray-free fuzz (tests/unit/serve_app/test_fuzz_api.py) and the one over HTTP
against a real service (tests/integration/test_fuzz_service.py). Bodies are valid by the
document (tests/support/openapi_values.py, through hypothesis-jsonschema), then mutated,
re-encoded, truncated, nested deeply, inflated or replaced by raw bytes
(tests/support/fuzz_values.py); headers, methods and paths are generated here. What the
answers must be is checked by tests/support/answers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from serve_app.errors import InvalidRequest
from serve_app.gateway.deadline import TIMEOUT_HEADER, timeout_from_header
from serve_app.gateway.middleware import REQUEST_ID_HEADER
from serve_app.protocol import TASK_PATHS
from tests.support.fuzz_values import (
    ENCODINGS,
    TEXT,
    encode_json,
    json_values,
    mutated,
    raw_bodies,
)
from tests.support.openapi_values import body_schema, body_values

Json = Any
Headers = list[tuple[str, str]]

# The routes that take a JSON body: every task's.
JSON_ROUTES = tuple(path for paths in TASK_PATHS.values() for path in paths)
GET_ROUTES = ("/v1/models", "/healthz", "/readyz", "/openapi.json")
# A client that asks for less than this may legitimately get 504 deadline_exceeded.
SHORT_DEADLINE_S = 1.0

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
                        REQUEST_ID_HEADER,
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
    """Whether the gateway gives this request a deadline under SHORT_DEADLINE_S: its timeout
    header, read as the gateway reads it (the first one; a malformed value is a 400)."""
    value = next((value for name, value in headers if name == TIMEOUT_HEADER), None)
    try:
        return timeout_from_header(value, SHORT_DEADLINE_S) < SHORT_DEADLINE_S
    except InvalidRequest:
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
        return body_schema(self.openapi, route)

    def known_paths(self) -> tuple[str, ...]:
        """The app's routes (those the document lists too, should there be more) and the extra
        paths, each once."""
        paths = (*JSON_ROUTES, *GET_ROUTES, *self.openapi["paths"], *self.extra_paths)
        return tuple(dict.fromkeys(paths))


def model_names(shape: ApiShape, route: str) -> st.SearchStrategy[Json]:
    return st.one_of(
        st.just(shape.models_by_route[route]),
        st.just(shape.models_by_route[route]),
        st.sampled_from(shape.all_models),
        TEXT,
        json_values(3),
    )


def schema_documents(shape: ApiShape, route: str) -> st.SearchStrategy[Json]:
    """JSON values for `route`: valid by its schema, then some broken."""
    valid = body_values(shape.openapi, route, overrides={"model": model_names(shape, route)})
    return st.one_of(valid, valid, mutated(valid), json_values())


def body_requests(
    shape: ApiShape, routes: Iterable[str] = JSON_ROUTES
) -> st.SearchStrategy[HostileRequest]:
    def for_route(route: str) -> st.SearchStrategy[HostileRequest]:
        documents = st.builds(
            encode_json, schema_documents(shape, route), st.sampled_from(ENCODINGS)
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
    "top_logprobs": st.none(),  # needs logprobs: true
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
        valid = body_values(
            shape.openapi,
            route,
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
            st.sampled_from(shape.known_paths()),
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
