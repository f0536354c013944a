"""Reading a request body: the size limit (413), JSON (400) and the typed model of its spec (422)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from codekiln.serve.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, at most `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise ApiError(400, f"Content-Length {length!r} is not a number of bytes")
        if int(length) > limit:
            raise ApiError(413, f"the request body has {int(length)} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {limit} bytes, the most this server accepts")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def validate(model: type[M], body: dict[str, Any]) -> M:
    """body as `model`; a 422 naming each wrong field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """One line naming each field that failed and why."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
