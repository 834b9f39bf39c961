"""Domain errors and their one mapping to HTTP: status, headers and an OpenAI-shaped body.

Routes raise these; the handlers installed by `install_error_handlers` turn them (and anything
unexpected) into `{"error": {"message", "type", "param", "code"}}`. Tracebacks go to the log only.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error a client can act on. Subclasses fix the status and OpenAI error type."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationFailed(APIError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        names = ", ".join(sorted(available))
        super().__init__(
            f"The model '{model}' does not exist. Served models: {names}.", param="model"
        )


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


def retry_after_header(retry_after_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class Overloaded(APIError):
    """The model's queue is full: come back later (503 + Retry-After)."""

    status_code = 503
    error_type = "server_error"
    default_code = "overloaded"
    reason = "queue_full"  # the rejections metric's label; subclasses name other causes

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message, headers=retry_after_header(retry_after_s))


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "server_error"
    default_code = "unavailable"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message, headers=retry_after_header(retry_after_s))


class DeadlineExceeded(APIError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "deadline_exceeded"


class RequestTimeout(APIError):
    """The client did not finish sending its request in time."""

    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class InternalError(APIError):
    status_code = 500
    error_type = "server_error"
    default_code = "internal_error"


def error_response(error: APIError) -> Response:
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


def validation_error(exc: Any) -> InvalidRequest:
    """A pydantic/FastAPI validation failure as one readable 400, naming the first bad field."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return InvalidRequest("The request body is not valid.")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return InvalidRequest(f"The request body is not valid JSON: {message}.")
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    where = f"'{param}'" if param else "the request body"
    return InvalidRequest(f"Invalid value for {where}: {message}.", param=param)


_STATUS_TO_ERROR: dict[int, type[APIError]] = {
    404: NotFound,
    405: InvalidRequest,
    413: PayloadTooLarge,
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error, expected or not, leaves as an OpenAI-shaped JSON body."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        return error_response(validation_error(exc))

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_class = _STATUS_TO_ERROR.get(exc.status_code, InvalidRequest)
        error = error_class(str(exc.detail), code=None)
        error.status_code = exc.status_code
        return error_response(error)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(InternalError("The server had an error processing the request."))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
