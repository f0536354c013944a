"""Fixtures for the server tests: a small code tokenizer, a tiny random model saved as a run, and real
servers (uvicorn on a free loopback port, in this process) around engines that drive it."""

from __future__ import annotations

import pytest

from codekiln.serve import Settings
from serve_client import post, sse
from servers import printable_run, start

CONTEXT = 256
SNIPPETS = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
            "            total += item\n    return total\n",
            "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
            "    def double(self):\n        return self.value * 2\n",
            "import math\n\n\ndef {n}(p, q):\n    dx = q[0] - p[0]\n    dy = q[1] - p[1]\n"
            "    return math.hypot(dx, dy)\n"]


@pytest.fixture(scope="session")
def serve_tok_dir(code_tokenizer, snippet_files):
    """A byte-level BPE tokenizer of 384 tokens trained on 150 generated Python files."""
    return code_tokenizer("serve-tok", snippet_files(SNIPPETS, 150))


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory, serve_tok_dir):
    """A run directory holding a tiny random model (2 layers, d_model 64, context 256) whose greedy output is
    printable code that never ends early (servers.printable_run)."""
    run = tmp_path_factory.mktemp("serve-run") / "tiny-run"
    printable_run(run, serve_tok_dir, context=CONTEXT)
    return run




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
