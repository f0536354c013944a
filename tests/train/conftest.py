"""Shared fixtures for the trainer tests: a generated two-language corpus, a small tokenizer, token shards."""

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.tokenizer.shards import tokenize_corpus
from codekiln.tokenizer.train import train_tokenizer

PY = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
      "            total += item\n    return total\n",
      "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
      "    def double(self):\n        return self.value * 2\n"]
JS = ["function {n}(a, b) {{\n  const x = a * {k};\n  return x + b;\n}}\n",
      "export const {n} = (xs) => xs.map((x) => x + {k}).filter(Boolean);\n"]


def write_corpus(directory, docs: int = 600, seed: int = 0):
    """Python and JavaScript documents (3:1) in repositories of ten files."""
    rng = random.Random(seed)
    rows = []
    for i in range(docs):
        lang, snippets = ("JavaScript", JS) if i % 4 == 3 else ("Python", PY)
        text = "".join(rng.choice(snippets).format(n=f"name_{rng.randint(0, 40)}", k=rng.randint(0, 99))
                       for _ in range(rng.randint(2, 8)))
        rows.append({"id": f"{i:032x}", "content": text, "path": f"f{i}.{'js' if lang == 'JavaScript' else 'py'}",
                     "repo": f"repo{i // 10}", "lang": lang, "license": "MIT", "source": "test",
                     "bytes": len(text.encode()), "stars": None, "cluster_id": f"{i:032x}"})
    (directory / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), directory / "data" / "part-00000.parquet")
    return directory


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """(tokenizer dir, token-shards dir) for a 600-document corpus."""
    root = tmp_path_factory.mktemp("train-data")
    corpus = write_corpus(root / "corpus")
    train_tokenizer(corpus, root / "tok", vocab_size=384, holdout_fraction=0.0, progress=False)
    tokenize_corpus(corpus, root / "tok", root / "shards", val_fraction=0.15, seed=0)
    return root / "tok", root / "shards"

