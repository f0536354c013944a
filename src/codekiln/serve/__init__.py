"""The completion server: the HTTP APIs editors already speak, in front of the continuous-batching engine.

    engine = Engine(model, tok, max_batch=8).start()
    app = create_app(engine, tok, Settings(model_name="my-model"))   # a FastAPI app; run it with uvicorn
    with serve_in_thread(app) as url: ...                             # in-process, on a free loopback port

Endpoints (docs/serving.md): OpenAI `POST /v1/completions` (also Tabby's body on the same path),
llama.cpp `POST /infill` and `POST /completion`, Tabby's `/v1/health`, `/v1/events` and
`/v1beta/server_setting`, `GET /v1/models`, `GET /health`, `GET /metrics`. `codekiln serve` is serve.cli.
"""

from __future__ import annotations

__all__ = ["Settings", "create_app", "serve_in_thread"]


def __getattr__(name: str):
    # Imported on first use, so `codekiln --help` and serve.cli work without the serve extra installed.
    if name == "create_app":
        from codekiln.serve.app import create_app

        return create_app
    if name == "serve_in_thread":
        from codekiln.serve.server import serve_in_thread

        return serve_in_thread
    if name == "Settings":
        from codekiln.serve.settings import Settings

        return Settings
    raise AttributeError(f"module 'codekiln.serve' has no attribute {name!r}")
