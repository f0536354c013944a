"""create_app: the FastAPI application around one engine, the same one `codekiln serve` runs.

Two pure-ASGI layers sit in front of the routes: API-key checking (401; /health and Tabby's /v1/health
stay open) and request accounting (latency and status per endpoint). Every error leaves as JSON
`{"error": {"message", "type"}}`: an ApiError with its status, a UserError as 400, an unknown route 404,
and a bug as 500 (logged), so no input produces a traceback on the wire.
"""

from __future__ import annotations

import hmac
import logging
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from codekiln import __version__
from codekiln.errors import UserError
from codekiln.serve import llamacpp, openai, playground, tabby
from codekiln.serve.errors import ApiError, error_body, error_bytes, error_response
from codekiln.serve.metrics import Metrics
from codekiln.serve.schemas import Model, ModelList
from codekiln.serve.settings import Settings

log = logging.getLogger("codekiln.serve")
OPEN_PATHS = frozenset({"/health", "/v1/health", "/"})
ENDPOINTS = frozenset({"/v1/completions", "/infill", "/completion", "/v1/events", "/v1/health", "/v1/models",
                       "/v1beta/server_setting", "/health", "/metrics", "/"})


class State:
    """What every route needs: the engine, the tokenizer, the settings and the metrics."""

    def __init__(self, engine, tok, settings: Settings):
        self.engine, self.tok, self.settings = engine, tok, settings
        self.metrics = Metrics(engine)
        self.created = int(time.time())
        self.marker_hint_logged = False


def create_app(engine, tok, settings: Settings | None = None) -> FastAPI:
    """The server's FastAPI app for a started (or startable) Engine and its tokenizer."""
    settings = settings or Settings()
    engine.start()
    app = FastAPI(title="codekiln", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    state = State(engine, tok, settings)
    app.state.codekiln = state

    app.include_router(openai.router)
    app.include_router(tabby.router)
    app.include_router(llamacpp.router)
    app.include_router(playground.router)

    @app.get("/health")
    async def health() -> dict:
        """llama.cpp's health check (llama.vscode reads `status`); needs no key."""
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> ModelList:
        """The one model this server serves."""
        return ModelList(data=[Model(id=settings.model_name, created=state.created)])

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def _api_error(request: HttpRequest, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(UserError)
    async def _user_error(request: HttpRequest, exc: UserError):
        return JSONResponse(error_body(str(exc), "invalid_request_error"), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: HttpRequest, exc: RequestValidationError):
        return JSONResponse(error_body(str(exc)[:500], "invalid_request_error"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: HttpRequest, exc: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return JSONResponse(error_body(message, "invalid_request_error" if exc.status_code < 500 else "server_error"),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: HttpRequest, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal server error; the server logged it", "server_error"), status_code=500)

    app.add_middleware(_ApiKeys, keys=settings.api_keys)
    app.add_middleware(_Accounting, metrics=state.metrics)  # added last: the outermost, so 401s are counted too
    return app


class _ApiKeys:
    """Bearer API keys: 401 without one of them (compared in constant time); /health needs none."""

    def __init__(self, app, keys: tuple[str, ...]):
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        ok = False
        for key in self.keys:  # every key is compared, so the time does not tell which one nearly matched
            ok |= hmac.compare_digest(given, key)
        if ok:
            return await self.app(scope, receive, send)
        message = ("a valid API key is required: send 'Authorization: Bearer KEY'" if given == b""
                   else "the API key is not valid")
        await _send_json(send, 401, error_bytes(401, message), [(b"www-authenticate", b"Bearer")])


class _Accounting:
    """HTTP status counts and latency (to the last byte of the answer) per endpoint."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.monotonic()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - t0)


async def _send_json(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A whole JSON response from an ASGI middleware."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
