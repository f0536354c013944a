"""Shared fixtures for the trainer tests: a generated two-language corpus, a small tokenizer, token shards."""


import pytest

from codekiln.tokenizer.shards import tokenize_corpus
from codekiln.tokenizer.train import train_tokenizer

PY = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
      "            total += item\n    return total\n",
      "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
      "    def double(self):\n        return self.value * 2\n"]
JS = ["function {n}(a, b) {{\n  const x = a * {k};\n  return x + b;\n}}\n",
      "export const {n} = (xs) => xs.map((x) => x + {k}).filter(Boolean);\n"]


@pytest.fixture(scope="session")
def shards(tmp_path_factory, snippet_corpus):
    """(tokenizer dir, token-shards dir) for a 600-document corpus."""
    root = tmp_path_factory.mktemp("train-data")
    corpus = snippet_corpus(root / "corpus", PY, JS, docs=600)
    train_tokenizer(corpus, root / "tok", vocab_size=384, holdout_fraction=0.0, progress=False)
    tokenize_corpus(corpus, root / "tok", root / "shards", val_fraction=0.15, seed=0)
    return root / "tok", root / "shards"

