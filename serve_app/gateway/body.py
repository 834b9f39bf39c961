"""Reading a JSON request body: size cap, content type, then one pydantic validation."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from serve_app.errors import APIError, InvalidRequest, PayloadTooLarge, validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


class UnsupportedMediaType(APIError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `max_bytes`, not after reading it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_json_body(request: Request, schema: type[ModelT], max_bytes: int) -> ModelT:
    content_type = request.headers.get("content-type", "application/json").lower()
    if "json" not in content_type:
        raise UnsupportedMediaType(f"Content-Type must be application/json, not '{content_type}'.")
    body = await read_body(request, max_bytes)
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None


def json_response(content: Any, status_code: int = 200) -> Response:
    """orjson encodes numpy vectors directly, much faster than the stdlib on float arrays."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def openapi_body(schema: type[BaseModel]) -> dict[str, Any]:
    """Document a body the route parses itself, so the OpenAPI spec still shows it."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_defs(schema.model_json_schema())}},
        }
    }


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without `$defs`: each `#/$defs/X` reference replaced by X itself.

    OpenAPI clients resolve a `$ref` from the document root, where `#/$defs` does not exist;
    the request models are not recursive, so inlining terminates.
    """
    defs: dict[str, Any] = schema.get("$defs", {})

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"recursive request schema {name!r} cannot be inlined")
            rest = {key: value for key, value in node.items() if key != "$ref"}
            return inline({**defs[name], **rest}, (*seen, name))
        return {key: inline(value, seen) for key, value in node.items() if key != "$defs"}

    inlined: dict[str, Any] = inline(schema, ())
    return inlined
