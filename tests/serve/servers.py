"""Tiny random models saved as runs for the server tests (greedy output: printable code-like text), and real
servers around them (uvicorn on a free loopback port, in this process)."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass

import torch

import codekiln
from codekiln.infer import Engine

from codekiln.model import ModelConfig, Transformer
from codekiln.serve import Settings, create_app, serve_in_thread
from codekiln.tokenizer import load as load_tokenizer
from codekiln.train.checkpoint import save as save_checkpoint


def printable_run(run, tok_dir, *, context: int, seed: int = 0):
    """Save a run at `run`: a random 2-layer model over tok_dir's vocabulary; the checkpoint directory.

    The output rows of the special tokens, and of tokens that are not printable ASCII, are zero, so
    greedy decoding writes only printable code-like text and never ends a completion early (the other
    logits spread well above zero): a request runs to its max_tokens or deadline, which the concurrency,
    cancellation and deadline tests rely on, and the editor clean-up has lines to work on.
    """
    torch.manual_seed(seed)
    tok = load_tokenizer(tok_dir)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, context=context, init_std=0.15,
                      tie_embeddings=False)
    model = Transformer(cfg)
    with torch.no_grad():
        for tid in range(tok.vocab_size):
            text = tok.decode([tid])
            if tid in tok.special_ids.values() or not all(c == "\n" or " " <= c <= "~" for c in text):
                model.lm_head.weight[tid].zero_()
    shutil.copytree(tok_dir, run / "tokenizer")
    return save_checkpoint(run, 1, model.state_dict(), cfg, {}, {"tokens": 0}, keep=1)


@dataclass
class Served:
    """A running server: its URL, engine, tokenizer, app and the run it serves."""

    url: str
    engine: Engine
    tok: object
    app: object
    run: object


def start(run, settings: Settings, **engine_options):
    """A context manager serving the run with these settings and engine options."""
    @contextlib.contextmanager
    def served():
        torch.set_flush_denormal(True)
        model, tok = codekiln.load(run)
        engine = Engine(model, tok, **{"max_batch": 8, "threads": 1, **engine_options}).start()
        engine.warmup()
        app = create_app(engine, tok, settings)
        try:
            with serve_in_thread(app) as url:
                yield Served(url, engine, tok, app, run)
        finally:
            engine.stop()

    return served()
