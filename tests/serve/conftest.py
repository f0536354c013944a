"""Fixtures for the server tests: a small code tokenizer, a tiny random model saved as a run, and real
servers (uvicorn on a free loopback port, in this process) around engines that drive it."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import codekiln
from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.infer import Engine
from codekiln.model import ModelConfig, Transformer
from codekiln.serve import Settings, create_app, serve_in_thread
from codekiln.tokenizer import load as load_tokenizer
from codekiln.tokenizer.train import train_tokenizer
from codekiln.train.checkpoint import save as save_checkpoint
from serve_client import post, sse

CONTEXT = 256
SNIPPETS = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
            "            total += item\n    return total\n",
            "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
            "    def double(self):\n        return self.value * 2\n",
            "import math\n\n\ndef {n}(p, q):\n    dx = q[0] - p[0]\n    dy = q[1] - p[1]\n"
            "    return math.hypot(dx, dy)\n"]


@pytest.fixture(scope="session")
def serve_tok_dir(tmp_path_factory):
    """A byte-level BPE tokenizer of 384 tokens trained on 150 generated Python files."""
    root = tmp_path_factory.mktemp("serve-tok")
    rng = random.Random(0)
    rows = []
    for i in range(150):
        text = "".join(rng.choice(SNIPPETS).format(n=f"name_{rng.randint(0, 30)}", k=rng.randint(0, 99))
                       for _ in range(rng.randint(2, 5)))
        rows.append({"id": f"{i:032x}", "content": text, "path": f"f{i}.py", "repo": f"repo{i // 10}",
                     "lang": "Python", "license": "MIT", "source": "test", "bytes": len(text.encode()),
                     "stars": None, "cluster_id": f"{i:032x}"})
    (root / "corpus" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), root / "corpus" / "data" / "part-0.parquet")
    train_tokenizer(root / "corpus", root / "tok", vocab_size=384, holdout_fraction=0.0, progress=False)
    return root / "tok"


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory, serve_tok_dir):
    """A run directory holding a tiny random model (2 layers, d_model 64, context 256).

    The output rows of the special tokens, and of tokens that are not printable ASCII, are zero, so
    greedy decoding writes only printable code-like text and never ends a completion early (the other
    logits spread well above zero): a request runs to its max_tokens or deadline, which the concurrency,
    cancellation and deadline tests rely on, and the editor clean-up has lines to work on.
    """
    torch.manual_seed(0)
    tok = load_tokenizer(serve_tok_dir)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, context=CONTEXT, init_std=0.15,
                      tie_embeddings=False)
    model = Transformer(cfg)
    with torch.no_grad():
        for tid in range(tok.vocab_size):
            text = tok.decode([tid])
            if tid in tok.special_ids.values() or not all(c == "\n" or " " <= c <= "~" for c in text):
                model.lm_head.weight[tid].zero_()
    run = tmp_path_factory.mktemp("serve-run") / "tiny-run"
    shutil.copytree(serve_tok_dir, run / "tokenizer")
    save_checkpoint(run, 1, model.state_dict(), cfg, {}, {"tokens": 0}, keep=1)
    return run


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
    import contextlib

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


# Disconnects are polled every 5 ms (20 by default), so a dropped request is noticed long before the
# tiny model could finish it on a fast machine.
MAIN = Settings(model_name="tiny", fim_markers_in_prompt=True, max_body_bytes=64 * 1024, disconnect_poll_s=0.005)


@pytest.fixture(scope="session")
def server(serve_run):
    """The main server: no auth, FIM markers read in prompts, a 64 KiB body limit, batch 8, queue 64."""
    with start(serve_run, MAIN, max_queue=64) as served:
        yield served


@pytest.fixture(scope="session")
def cold(serve_run):
    """cold(path, body, stream=False): one request to a fresh main-like server.

    A fresh server runs the same computation for the same request every time (the same warm-up, an empty
    prefix cache, a batch of one), so its greedy answers can be compared bit for bit. On a server with a
    history, a prompt that shares a prefix with an earlier one reuses cached keys and values: a different
    computation, which may round differently and flip a near tie.
    """
    def one(path: str, body: dict, stream: bool = False):
        with start(serve_run, MAIN, max_queue=64) as s:
            return sse(s.url, path, body) if stream else post(s.url, path, body)

    return one
