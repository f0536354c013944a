"""Fixtures shared by every test folder."""

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.tokenizer.train import train_tokenizer


@pytest.fixture(scope="session")
def code_tokenizer(tmp_path_factory):
    """train(name, texts, vocab_size=384) -> Path: a byte-level BPE tokenizer directory trained on these texts,
    laid out as a corpus of Python files (f{i}.py, ten to a repository), as the test models use."""

    def train(name: str, texts: list[str], vocab_size: int = 384):
        root = tmp_path_factory.mktemp(name)
        rows = [{"id": f"{i:032x}", "content": text, "path": f"f{i}.py", "repo": f"repo{i // 10}", "lang": "Python",
                 "license": "MIT", "source": "test", "bytes": len(text.encode()), "stars": None,
                 "cluster_id": f"{i:032x}"} for i, text in enumerate(texts)]
        (root / "corpus" / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), root / "corpus" / "data" / "part-0.parquet")
        train_tokenizer(root / "corpus", root / "tok", vocab_size=vocab_size, holdout_fraction=0.0, progress=False)
        return root / "tok"

    return train


@pytest.fixture(scope="session")
def snippet_files():
    """files(snippets, docs, seed=0) -> list[str]: generated Python files, each two to five snippets with
    `{n}` a name and `{k}` a number filled in at random (seeded)."""

    def files(snippets: list[str], docs: int, seed: int = 0) -> list[str]:
        rng = random.Random(seed)
        return ["".join(rng.choice(snippets).format(n=f"name_{rng.randint(0, 30)}", k=rng.randint(0, 99))
                        for _ in range(rng.randint(2, 5))) for _ in range(docs)]

    return files


@pytest.fixture
def one_thread():
    """torch on one thread for the test: models this small gain nothing from threads, and spinning OpenMP
    workers only slow them on a busy machine. A folder's conftest makes it autouse for its tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
