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


@pytest.fixture(scope="session")
def snippet_corpus():
    """write(directory, py, js, docs, seed=0) -> directory: a corpus directory of generated files, Python and
    JavaScript 3:1 (each two to eight snippets of its language, `{n}` and `{k}` filled in at random), ten to a
    repository, in one Parquet part."""
    from codekiln.data.document import DOCUMENT_SCHEMA

    def write(directory, py: list[str], js: list[str], docs: int, seed: int = 0):
        rng = random.Random(seed)
        rows = []
        for i in range(docs):
            lang, snippets = ("JavaScript", js) if i % 4 == 3 else ("Python", py)
            text = "".join(rng.choice(snippets).format(n=f"name_{rng.randint(0, 40)}", k=rng.randint(0, 99))
                           for _ in range(rng.randint(2, 8)))
            rows.append({"id": f"{i:032x}", "content": text, "path": f"f{i}.{'js' if lang == 'JavaScript' else 'py'}",
                         "repo": f"repo{i // 10}", "lang": lang, "license": "MIT", "source": "test",
                         "bytes": len(text.encode()), "stars": None, "cluster_id": f"{i:032x}"})
        (directory / "data").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), directory / "data" / "part-00000.parquet")
        return directory

    return write


@pytest.fixture(scope="session")
def stdlib_repos():
    """write(root, modules) -> root: one repository per standard-library module (an MIT LICENSE file beside it)."""
    import shutil
    import sysconfig
    from pathlib import Path

    def write(root, modules: list[str]):
        lib = Path(sysconfig.get_paths()["stdlib"])
        for i, name in enumerate(modules):
            repo = root / f"repo{i}"
            repo.mkdir(parents=True)
            (repo / "LICENSE").write_text("SPDX-License-Identifier: MIT\n")
            shutil.copy(lib / f"{name}.py", repo / f"{name}.py")
        return root

    return write

