"""`codekiln serve`: load a model, start the engine, warm it up, serve HTTP until SIGTERM or Ctrl-C.

Shutdown is graceful: the server stops accepting connections, requests in flight finish (up to 30 s),
then the engine stops. This module imports nothing heavy until `run`, so the CLI starts fast and works
without the `serve` extra until the command is used.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from codekiln.errors import UserError

DEFAULT_DEADLINE_MS = 2000.0
DEFAULT_CONTEXT = 4096
STAGE_FOLDERS = ("run", "export", "import", "finetune")  # a `codekiln run` folder's model stages


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `serve` on the CLI's subparsers."""
    from codekiln.serve.settings import DEFAULT_EDITOR_MAX_TOKENS, DEFAULT_MAX_BODY_BYTES

    p = subparsers.add_parser("serve", help="serve completions over HTTP (OpenAI, Tabby, llama.cpp /infill APIs)",
                              description="Serve a model to editors over HTTP. See docs/serving.md.")
    p.add_argument("--model", required=True, help="run directory, checkpoints/step-N directory or exported directory")
    p.add_argument("--model-name", help="the name /v1/models and Tabby's health report (default: from the path)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accept requests carrying 'Authorization: Bearer KEY' (repeatable)")
    p.add_argument("--api-key-file", metavar="FILE", help="a file of API keys, one per line ('#' starts a comment)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without API keys on a non-loopback --host (otherwise refused)")
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (default 8)")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond the batch before 429 (default 4 x max-batch)")
    p.add_argument("--context", type=int,
                   help=f"served context per sequence in tokens (default: the model's, at most {DEFAULT_CONTEXT})")
    p.add_argument("--deadline-ms", type=float, default=DEFAULT_DEADLINE_MS,
                   help=f"latency budget of a request that sets none (default {DEFAULT_DEADLINE_MS:.0f}; 0: none)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none", help="int8: dynamic int8 linear layers")
    p.add_argument("--threads", type=int,
                   help="torch threads of the engine (default: one less than torch's default, the cores, at least 1: "
                        "the HTTP event loop keeps a core)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest request body accepted, else 413 (default {DEFAULT_MAX_BODY_BYTES})")
    p.add_argument("--editor-max-tokens", type=int, default=DEFAULT_EDITOR_MAX_TOKENS,
                   help=f"completion length for editors that do not send one (default {DEFAULT_EDITOR_MAX_TOKENS})")
    p.add_argument("--log-prompts", action="store_true", help="log prompt text (never logged otherwise)")
    p.add_argument("--fim-markers-in-prompt", action="store_true",
                   help="read FIM marker text in a prompt (Continue's templates) as a fill-in-the-middle request")
    p.set_defaults(func=run)
    return p


def api_keys(args) -> tuple[str, ...]:
    """The keys of --api-key and --api-key-file; a UserError when the options contradict the host."""
    from codekiln.serve.server import is_loopback

    keys = [k.strip() for k in args.api_key if k.strip()]
    if any(not k.strip() for k in args.api_key):
        raise UserError("--api-key is empty")
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --api-key-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not found:
            raise UserError(f"--api-key-file {path} holds no key")
        keys += found
    if keys and args.no_auth:
        raise UserError("--no-auth contradicts --api-key/--api-key-file; give one or the other")
    if not keys and not args.no_auth and not is_loopback(args.host):
        raise UserError(f"refusing to serve on {args.host} without an API key: anyone who reaches it could use it; "
                        "give --api-key or --api-key-file, or --no-auth to allow it")
    return tuple(keys)


def _check(args) -> None:
    for name, low in (("max_batch", 1), ("max_queue", 0), ("context", 2), ("threads", 1), ("max_body_bytes", 1024),
                      ("editor_max_tokens", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, not {value}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {args.port}")
    if not args.deadline_ms >= 0:
        raise UserError(f"--deadline-ms must be >= 0, not {args.deadline_ms}")


def require_serve_extra(command: str, modules) -> None:
    """A one-line UserError naming the `serve` extra when one of these modules is not installed."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserError(f"codekiln {command} needs the serve extra ({exc.name} is missing): "
                            "pip install 'codekiln[serve]'") from None


def engine_threads() -> int:
    """The engine's default thread count: one less than torch's default (the physical cores), at least 1.

    Measured on 2 cores (docs/benchmarks.md): with both cores in the matrix products, the HTTP event loop
    (streaming, JSON, disconnect polls) waits for a core at every token, and 4 concurrent streams got
    ~280 tokens/s; with one engine thread, ~335."""
    import torch

    return max(1, torch.get_num_threads() - 1)


def model_name(path: str) -> str:
    """A name for the served model: the run (or export) directory's name, or the pipeline run folder's name for
    one of its stage folders (`runs/demo/run` is "demo")."""
    p = Path(path).resolve()
    if p.name.startswith("step-") and p.parent.name == "checkpoints":
        p = p.parent.parent
    if p.name in STAGE_FOLDERS and p.parent.name:
        p = p.parent
    return p.name or "codekiln"


def run(args) -> int:
    """Serve until SIGTERM or Ctrl-C; 0 after a graceful shutdown."""
    t0 = time.monotonic()
    _check(args)
    keys = api_keys(args)
    require_serve_extra("serve", ("fastapi", "prometheus_client", "uvicorn"))
    import torch

    import codekiln
    from codekiln.infer import Engine, pack_linear
    from codekiln.serve.app import create_app
    from codekiln.serve.server import bind, make_server, url_of
    from codekiln.serve.settings import Settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_prompts:
        logging.getLogger("codekiln.serve").setLevel(logging.INFO)
    sock = bind(args.host, args.port)  # before loading: a port in use fails at once
    torch.set_flush_denormal(True)  # denormal floats make a CPU's matrix products many times slower
    model, tok = codekiln.load(args.model, quantize=args.quantize)
    if args.quantize == "none":
        pack_linear(model)  # the LM head on oneDNN's prepacked fp32 path: same arithmetic, faster decode steps
    loaded = time.monotonic()
    context = min(model.cfg.context, args.context or DEFAULT_CONTEXT)
    engine = Engine(model, tok, max_batch=args.max_batch, max_queue=args.max_queue, context=context,
                    default_deadline_ms=args.deadline_ms, threads=args.threads or engine_threads()).start()
    try:
        engine.warmup()
        settings = Settings(model_name=args.model_name or model_name(args.model), api_keys=keys,
                            max_body_bytes=args.max_body_bytes, editor_max_tokens=args.editor_max_tokens,
                            fim_markers_in_prompt=args.fim_markers_in_prompt, log_prompts=args.log_prompts)
        server = make_server(create_app(engine, tok, settings))
        ready = time.monotonic()
        print(f"codekiln serve: {settings.model_name} at {url_of(sock)} (ready in {ready - t0:.2f} s: load "
              f"{loaded - t0:.2f} s, warm-up {ready - loaded:.2f} s; context {context}, max batch {args.max_batch}, "
              f"auth {'on' if keys else 'off'})", flush=True)
        if threading.current_thread() is threading.main_thread():
            # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then raises the signal again with
            # the handlers it found: these make that second delivery a no-op, so the exit status is 0.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: None)
        server.run(sockets=[sock])
    finally:
        engine.stop()
        sock.close()
    print("codekiln serve: stopped", file=sys.stderr, flush=True)
    return 0
