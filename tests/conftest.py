"""Fixtures shared by every test folder."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
