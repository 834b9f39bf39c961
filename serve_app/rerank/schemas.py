"""The shapes of POST /v1/rerank (and /v2/rerank, /rerank): what Cohere's and Jina's clients
send. route.py builds the answer."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
)
from pydantic.config import JsonDict

from serve_app.protocol import StrictRequest

# Documents one request may rank: Cohere recommends at most 1,000 per request.
MAX_DOCUMENTS = 1000
# The validators below refuse empty texts with their own messages; the schema says so too, so
# OpenAPI clients (and the fuzz tests) know what is valid.
NON_EMPTY: JsonDict = {"minLength": 1}


def _null_only(schema: JsonDict) -> None:
    """A field the service accepts only when absent or null."""
    schema.pop("anyOf", None)
    schema["type"] = "null"


def _text_only(schema: JsonDict) -> None:
    """`rank_fields` may only name the one field documents have."""
    schema["anyOf"] = [
        {"type": "array", "items": {"const": "text"}, "minItems": 1, "maxItems": 1},
        {"type": "null"},
    ]


class RerankDocument(StrictRequest):
    """A document given as an object (Cohere v1, Jina): its text, and nothing else."""

    text: StrictStr = Field(json_schema_extra=NON_EMPTY)


def _document_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict | RerankDocument):
        return "object"
    return None


# Told apart by their JSON type, so an error names the one kind the document was meant to be.
Document = Annotated[
    Annotated[StrictStr, Field(json_schema_extra=NON_EMPTY), Tag("string")]
    | Annotated[RerankDocument, Tag("object")],
    Discriminator(
        _document_kind,
        custom_error_type="document_type",
        custom_error_message='each document is a string or an object {"text": ...}',
    ),
]


class RerankRequest(StrictRequest):
    """`return_documents` defaults to false, as in Cohere's API (Jina's defaults to true)."""

    max_documents: ClassVar[int] = MAX_DOCUMENTS

    model: StrictStr = Field(min_length=1, max_length=256)
    query: StrictStr = Field(json_schema_extra=NON_EMPTY)
    documents: list[Document] = Field(json_schema_extra={"minItems": 1, "maxItems": MAX_DOCUMENTS})
    top_n: StrictInt | None = Field(default=None, ge=1)
    return_documents: StrictBool = False
    # Cohere's options the service does not implement, refused by name rather than ignored.
    rank_fields: list[StrictStr] | None = Field(default=None, json_schema_extra=_text_only)
    max_tokens_per_doc: StrictInt | None = Field(default=None, json_schema_extra=_null_only)
    max_chunks_per_doc: StrictInt | None = Field(default=None, json_schema_extra=_null_only)

    @field_validator("query")
    @classmethod
    def _query_has_text(cls, value: str) -> str:
        if not value:
            raise ValueError("'query' is an empty string; give the text to rank documents by")
        return value

    @field_validator("documents")
    @classmethod
    def _documents_have_text(cls, value: list[str | RerankDocument]) -> list[str | RerankDocument]:
        if not value:
            raise ValueError("'documents' must not be an empty list")
        if len(value) > cls.max_documents:
            raise ValueError(
                f"'documents' has {len(value)} items; at most {cls.max_documents} are allowed"
            )
        for index, document in enumerate(value):
            text = document if isinstance(document, str) else document.text
            if not text:
                raise ValueError(f"'documents[{index}]' has no text; every document must have some")
        return value

    @field_validator("rank_fields")
    @classmethod
    def _only_the_text_field(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and value != ["text"]:
            raise ValueError("documents are ranked by their 'text' field only; omit rank_fields")
        return value

    @field_validator("max_tokens_per_doc", "max_chunks_per_doc")
    @classmethod
    def _no_per_document_limits(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError(
                "not supported: each (query, document) pair is truncated to the model's "
                "max_input_tokens (see /v1/models); omit this field"
            )
        return value

    def texts(self) -> list[str]:
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]
