"""Fixtures for the generation tests: a small code tokenizer and small random models over its vocabulary."""

import random

import pytest
import torch

from codekiln.model import ModelConfig, Transformer
from codekiln.tokenizer import load as load_tokenizer

STEPS = 100
SNIPPETS = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
            "            total += item\n    return total\n",
            "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
            "    def double(self):\n        return self.value * 2\n",
            "# {n} prints {k}\nprint({n}({k}))\nif __name__ == \"__main__\":\n    main()\n"]


def corpus_texts(docs=200, seed=0) -> list[str]:
    """Generated Python files, two to six snippets each."""
    rng = random.Random(seed)
    return ["".join(rng.choice(SNIPPETS).format(n=f"name_{rng.randint(0, 30)}", k=rng.randint(0, 99))
                    for _ in range(rng.randint(2, 6))) for _ in range(docs)]


@pytest.fixture(scope="session")
def infer_tok(code_tokenizer):
    """A byte-level BPE tokenizer of 384 tokens trained on 200 generated Python files."""
    return load_tokenizer(code_tokenizer("infer-tok", corpus_texts()))


@pytest.fixture(scope="session")
def small_lm(infer_tok):
    """build(**options): a random 2-layer model over infer_tok's vocabulary, weights large enough to vary."""
    torch.set_flush_denormal(True)

    def build(seed=0, **options):
        torch.manual_seed(seed)
        cfg = dict(vocab_size=infer_tok.vocab_size, d_model=64, n_layers=2, n_heads=4, kv_heads=2, context=96,
                   init_std=0.15)
        return Transformer(ModelConfig(**{**cfg, **options})).eval()

    return build


@pytest.fixture(scope="session")
def trained_lm(infer_tok, small_lm):
    """trained(positions): small_lm trained briefly on the corpus, so greedy output is varied code, not a loop."""
    models = {}

    def trained(positions="alibi"):
        if positions not in models:
            torch.manual_seed(0)
            stream = [t for text in corpus_texts() for t in infer_tok.encode(text) + [infer_tok.eot_id]]
            data = torch.tensor(stream)
            model = small_lm(positions=positions, init_std=0.02).train()
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            for _ in range(STEPS):
                starts = torch.randint(0, len(stream) - 65, (16,), generator=g)
                batch = torch.stack([data[s:s + 65] for s in starts.tolist()])
                logits = model(batch[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
                opt.zero_grad()
                loss.backward()
                opt.step()
            models[positions] = model.eval()
        return models[positions]

    return trained


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (tests/conftest.py, one_thread)."""


class Scripted(Transformer):
    """A model that writes `script` after any prompt (logits one-hot); its cache still fills as usual.

    For batches whose rows all finish together (one prompt, or equal prompts): the step is counted
    from the cache length after the prefill.
    """

    def __init__(self, cfg, script):
        super().__init__(cfg)
        self.script, self.prefill = list(script), None

    def forward(self, input_ids, doc_ids=None, *, cache=None, last_only=False):
        logits = super().forward(input_ids, doc_ids, cache=cache, last_only=last_only)
        if cache.length == input_ids.shape[1]:  # this forward was the prefill
            self.prefill = cache.length
        step = min(cache.length - self.prefill, len(self.script) - 1)
        out = torch.full_like(logits, -1e4)
        out[:, :, self.script[step]] = 1e4
        return out


@pytest.fixture
def scripted_lm(infer_tok):
    """scripted(script): a Scripted model over infer_tok's vocabulary."""
    def scripted(script):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=infer_tok.vocab_size, d_model=32, n_layers=1, n_heads=2, context=96)
        return Scripted(cfg, script).eval()

    return scripted
