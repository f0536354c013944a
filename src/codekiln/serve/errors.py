"""HTTP errors as JSON `{"error": {"message", "type"}}` (ARCHITECTURE.md), never a bare status or a traceback."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    """An error answer: HTTP status, a message a client can show, and optional headers (Retry-After)."""

    def __init__(self, status: int, message: str, type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.type = type or TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}


def error_body(message: str, type: str) -> dict:
    """The JSON body of an error."""
    return {"error": {"message": message, "type": type}}


def error_response(exc: ApiError) -> JSONResponse:
    """The response for an ApiError."""
    return JSONResponse(error_body(exc.message, exc.type), status_code=exc.status, headers=exc.headers)


def error_bytes(status: int, message: str) -> bytes:
    """An error body as bytes, for the ASGI middlewares that answer before the app runs."""
    return json.dumps(error_body(message, TYPES.get(status, "invalid_request_error")), separators=(",", ":")).encode()
