"""`codekiln lsp`: a language server over stdio answering inline completion (LSP 3.18) from your model.

    codekiln lsp --model runs/demo/run                      # the engine in this process
    codekiln lsp --server http://127.0.0.1:8080 --api-key-file ~/.codekiln-key   # a running `codekiln serve`

The protocol runs on stdin/stdout; everything else (the ready line, warnings) goes to stderr, which
editors keep as the server's log. The server itself is serve.lsp_server, the backends serve.lsp_backend.
This module imports nothing heavy until `run`, so the CLI starts fast and works without the serve extra
until the command is used. See docs/lsp.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from codekiln.errors import UserError

DEFAULT_DEADLINE_MS = 2000.0
DEFAULT_CONTEXT = 4096
DEFAULT_MAX_TOKENS = 64
DEFAULT_DEBOUNCE_MS = 75.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lsp` on the CLI's subparsers."""
    p = subparsers.add_parser("lsp", help="a language server over stdio: inline completion from your model",
                              description="A language server (stdio) answering textDocument/inlineCompletion and "
                                          "textDocument/completion. See docs/lsp.md.")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `codekiln lsp`."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run directory, checkpoints/step-N directory or exported directory "
                                        "(the engine runs in this process)")
    source.add_argument("--server", metavar="URL", help="a running `codekiln serve`, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", metavar="KEY", help="with --server: the key sent as 'Authorization: Bearer KEY'")
    p.add_argument("--api-key-file", metavar="FILE", help="with --server: a file holding the key "
                                                          "(its first line that is not empty or a '#' comment)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"longest completion in tokens (default {DEFAULT_MAX_TOKENS}; at most half the context)")
    p.add_argument("--deadline-ms", type=float, default=DEFAULT_DEADLINE_MS,
                   help=f"latency budget of a completion (default {DEFAULT_DEADLINE_MS:.0f}; 0: none)")
    p.add_argument("--debounce-ms", type=float, default=DEFAULT_DEBOUNCE_MS,
                   help=f"wait this long after an automatic request before completing; a newer request in the "
                        f"same document replaces it (default {DEFAULT_DEBOUNCE_MS:.0f}; 0: none)")
    p.add_argument("--repo-context", choices=("auto", "on", "off"), default="auto",
                   help="add other open files of the document's language as repository context; auto: with "
                        "--model when the model was trained on repository-level FIM, off with --server")
    p.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="with --model: int8 dynamic linear layers")
    p.add_argument("--max-batch", type=int, default=4, help="with --model: sequences decoded together (default 4)")
    p.add_argument("--context", type=int,
                   help=f"with --model: context per sequence in tokens "
                        f"(default: the model's, at most {DEFAULT_CONTEXT})")
    p.add_argument("--threads", type=int, help="with --model: torch threads of the engine (default: torch's choice)")


def _check(args) -> None:
    for name, low in (("max_tokens", 1), ("max_batch", 1), ("context", 2), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, not {value}")
    for name in ("deadline_ms", "debounce_ms"):
        if not getattr(args, name) >= 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, not {getattr(args, name)}")
    if args.model is not None:
        used = [o for o, v in (("--api-key", args.api_key), ("--api-key-file", args.api_key_file)) if v]
        if used:
            raise UserError(f"{' and '.join(used)} go with --server, not --model")
    else:
        given = [o for o, v in (("--quantize", args.quantize != "none"), ("--context", args.context),
                                ("--threads", args.threads), ("--max-batch", args.max_batch != 4)) if v]
        if given:
            raise UserError(f"{', '.join(given)} go with --model; with --server the server's own settings apply")
        if args.api_key is not None and args.api_key_file:
            raise UserError("give --api-key or --api-key-file, not both")


def api_key(args) -> str | None:
    """The key of --api-key or --api-key-file, or None."""
    if args.api_key is not None:
        if not args.api_key.strip():
            raise UserError("--api-key is empty")
        return args.api_key.strip()
    if not args.api_key_file:
        return None
    path = Path(args.api_key_file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --api-key-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for line in lines:
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()
    raise UserError(f"--api-key-file {path} holds no key")


def _engine_backend(args):
    """Load the model, start and warm up the engine: (backend, engine, description of the load)."""
    import torch

    import codekiln
    from codekiln.checkpoint import repo_level_fim, resolve
    from codekiln.infer import Engine, pack_linear
    from codekiln.serve.lsp_backend import EngineBackend

    ckpt = resolve(args.model)
    torch.set_flush_denormal(True)  # denormal floats make a CPU's matrix products many times slower
    model, tok = codekiln.load(args.model, quantize=args.quantize)
    if args.quantize == "none":
        pack_linear(model)  # the LM head on oneDNN's prepacked fp32 path: same arithmetic, faster decode steps
    context = min(model.cfg.context, args.context or DEFAULT_CONTEXT)
    engine = Engine(model, tok, max_batch=args.max_batch, context=context, default_deadline_ms=args.deadline_ms,
                    threads=args.threads).start()
    try:
        engine.warmup()
    except BaseException:
        engine.stop()
        raise
    repo = repo_level_fim(ckpt) if args.repo_context == "auto" else args.repo_context == "on"
    backend = EngineBackend(engine, tok, max_tokens=args.max_tokens, deadline_ms=args.deadline_ms, repo_context=repo)
    return backend, engine, f"context {context}"


def run(args) -> int:
    """Serve the language server on stdio until `exit` (0 after `shutdown`, 1 without) or end of input."""
    t0 = time.monotonic()
    _check(args)
    key = api_key(args)
    from codekiln.serve.cli import require_serve_extra

    require_serve_extra("lsp", ("lsprotocol", "pygls"))
    from codekiln.serve.lsp_backend import HttpBackend
    from codekiln.serve.lsp_server import build_server, quiet_expected_errors

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_expected_errors()
    engine = None
    if args.model is not None:
        backend, engine, what = _engine_backend(args)
    else:
        backend = HttpBackend(args.server, key, max_tokens=args.max_tokens, deadline_ms=args.deadline_ms,
                              repo_context=args.repo_context == "on")
        what = "no model loaded here"
    server = build_server(backend, debounce_ms=args.debounce_ms)
    try:
        protocol_out = sys.stdout.buffer
        sys.stdout = sys.stderr  # a stray print must not corrupt the protocol stream
        print(f"codekiln lsp: ready in {time.monotonic() - t0:.2f} s ({backend.describe()}; {what}; "
              f"debounce {args.debounce_ms:.0f} ms)", file=sys.stderr, flush=True)
        server.start_io(sys.stdin.buffer, protocol_out)
    finally:
        if engine is not None:
            engine.stop(timeout=1.0)
    return 0 if server.shut_down else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m codekiln.serve.lsp ...`: the command without the codekiln CLI around it."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # noqa: D401 - argparse's hook: one line, exit 2
            self.exit(2, f"{self.prog}: error: {message}\n")

    parser = Parser(prog="codekiln lsp", description="A language server over stdio. See docs/lsp.md.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"codekiln: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
