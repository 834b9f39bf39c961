"""Values valid for a route's body, as the app's own OpenAPI document describes it.

The generation is hypothesis-jsonschema's; this module only hands it schemas it can resolve and
swaps in strategies of the caller's for some fields. What the library does not handle is dealt
with here, narrowly, each with a comment saying why.

The document is OpenAPI 3.1, whose schemas are JSON Schema 2020-12; the library implements
drafts 4 to 7. The keywords the app's request models produce (type, properties, required,
additionalProperties, anyOf, enum, const, items, min/max and exclusiveMinimum, min/maxLength,
min/maxItems) mean the same in both, and tests/unit/serve_app/test_fuzz_api.py validates what is
drawn with a 2020-12 validator, so a keyword the library reads otherwise fails there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

Json = Any
_DOCUMENT_URI = "urn:openapi-document"


def body_schema(openapi: Mapping[str, Any], route: str) -> Mapping[str, Any]:
    """The JSON Schema of `route`'s POST body, as the document states it."""
    operation = openapi["paths"][route]["post"]
    schema: Mapping[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def resolvable(schema: Mapping[str, Any], openapi: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` as a document of its own that its `$ref`s resolve in.

    An OpenAPI document's references point from its root (`#/components/schemas/X`), and
    hypothesis-jsonschema resolves them from the root of the schema it is given: the document's
    `components` attached at that root let both agree. (The library cannot resolve recursive
    references; the app's request models are not recursive.)"""
    components = openapi.get("components")
    return {**schema, "components": components} if components else dict(schema)


def body_values(
    openapi: Mapping[str, Any],
    route: str,
    overrides: Mapping[str, st.SearchStrategy[Json]] | None = None,
) -> st.SearchStrategy[Json]:
    """Bodies valid for `route` (as far as the schema says; validators in code may still refuse
    them). `overrides` draws the top-level properties of those names from the caller's strategies
    instead: always for a required property, else where the library put the property in."""
    schema = body_schema(openapi, route)
    values: st.SearchStrategy[Json] = from_schema(resolvable(schema, openapi))
    if not overrides:
        return values
    required = set(schema.get("required", ()))

    @st.composite
    def overridden(draw: st.DrawFn) -> Json:
        value = draw(values)
        for name, strategy in overrides.items():
            if name in required or name in value:
                value[name] = draw(strategy)
        return value

    return overridden()


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def dangling_refs(document: Mapping[str, Any]) -> list[str]:
    """Every `$ref` in `document` that does not resolve from the document's root, as an OpenAPI
    client resolves it."""
    resource = DRAFT202012.create_resource(dict(document))
    resolver = Registry().with_resource(_DOCUMENT_URI, resource).resolver(_DOCUMENT_URI)
    dangling = []
    for ref in _refs(document):
        try:
            resolver.lookup(ref)
        # A pointer that walks into a scalar fails with TypeError or ValueError, not Unresolvable.
        except (Unresolvable, TypeError, ValueError):
            dangling.append(ref)
    return dangling
