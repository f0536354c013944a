"""What the tokenizer reads: a sample of the whole corpus (not its first documents), language weights,
and held-out / validation splits that work for documents without a repository."""

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codekiln.cli import main
from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.tokenizer import load
from codekiln.tokenizer.stats import held_out_documents
from codekiln.tokenizer.train import sample_texts, train_tokenizer

_PYTHON = "def pyonly_{a}(pyonly_{b}):\n    return pyonly_{b} + {k}\n\n"
_RUST = "fn rsonly_{a}(rsonly_{b}: u32) -> u32 {{\n    rsonly_{b} * {k}\n}}\n\n"


def write_halves(directory, docs: int = 400, repo: bool = True):
    """A corpus whose first half is Python and second half Rust, documents of about equal size."""
    rng = random.Random(1)
    rows = []
    for i in range(docs):
        python = i < docs // 2
        template = _PYTHON if python else _RUST
        text = "".join(template.format(a=rng.randint(0, 9), b=rng.randint(0, 9), k=rng.randint(0, 99))
                       for _ in range(8))
        rows.append({"id": f"{i:032x}", "content": text, "path": f"f{i}.{'py' if python else 'rs'}",
                     "repo": f"r{i % 7}" if repo else "", "lang": "Python" if python else "Rust", "license": "MIT",
                     "source": "test", "bytes": len(text.encode()), "stars": None, "cluster_id": f"{i:032x}"})
    (directory / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), directory / "data" / "part-00000.parquet")
    return directory, rows


def _share(texts, marker):
    return sum(len(t) for t in texts if marker in t) / sum(len(t) for t in texts)


def test_training_sample_spans_the_whole_corpus(tmp_path):
    corpus, rows = write_halves(tmp_path / "c")
    total = sum(r["bytes"] for r in rows)
    budget = total // 4  # far less than the first (Python) half
    texts = [t for batch in sample_texts(corpus, budget, {}, seed=0) for t in batch]
    # Both halves in proportion (half each; 0.35-0.65 allows the sampling noise of ~100 documents).
    assert 0.35 < _share(texts, "rsonly") < 0.65
    assert 0.8 * budget < sum(len(t) for t in texts) <= budget + max(r["bytes"] for r in rows)
    # The same seed gives the same sample; another seed another one.
    again = [t for batch in sample_texts(corpus, budget, {}, seed=0) for t in batch]
    other = [t for batch in sample_texts(corpus, budget, {}, seed=1) for t in batch]
    assert again == texts and other != texts
    # The vocabulary learns both languages' identifiers.
    train_tokenizer(corpus, tmp_path / "tok", vocab_size=300, sample_bytes=budget, holdout_fraction=0.0,
                    progress=False)
    vocab = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["model"]["vocab"]
    assert any("pyonly" in tok for tok in vocab) and any("rsonly" in tok for tok in vocab)
    tok = load(tmp_path / "tok")
    py_text, rs_text = rows[0]["content"], rows[-1]["content"]
    ratio = (len(py_text) / len(tok.encode(py_text))) / (len(rs_text) / len(tok.encode(rs_text)))
    assert 0.6 < ratio < 1.6  # neither language is left to byte-level fallbacks


def test_language_weights_are_applied(tmp_path):
    from codekiln.tokenizer.train import sampling_rates

    corpus, rows = write_halves(tmp_path / "c")
    budget = sum(r["bytes"] for r in rows) // 4
    texts = [t for batch in sample_texts(corpus, budget, {"Python": 3.0}, seed=0) for t in batch]
    assert 0.65 < 1 - _share(texts, "rsonly") < 0.85  # 3:1
    texts = [t for batch in sample_texts(corpus, budget, {"Rust": 0.0}, seed=0) for t in batch]
    assert texts and _share(texts, "rsonly") == 0
    # Under no budget pressure a weight is the plain chance a document is taken; no rate exceeds 1.
    assert sampling_rates({"Python": 100, "Rust": 100}, 10**6, {"Rust": 0.5}) == {"Python": 1.0, "Rust": 0.5}
    rates = sampling_rates({"Python": 1000, "Rust": 1000}, 1000, {"Python": 4.0})
    assert rates["Python"] == pytest.approx(0.8) and rates["Rust"] == pytest.approx(0.2)
    rates = sampling_rates({"Python": 1000, "Rust": 1000}, 1500, {"Python": 4.0})  # Python saturates; Rust fills
    assert rates["Python"] == 1.0 and rates["Rust"] == pytest.approx(0.5)
    rates = sampling_rates({"Python": 1000, "Rust": 1000}, 500, {"*": 1.0})
    assert rates["Python"] == pytest.approx(0.25) and rates["Rust"] == pytest.approx(0.25)


def test_stats_measure_a_sample_of_the_whole_held_out_corpus(tmp_path):
    corpus, rows = write_halves(tmp_path / "c")
    train_tokenizer(corpus, tmp_path / "tok", vocab_size=300, holdout_fraction=0.5, progress=False)
    everything = held_out_documents(corpus, tmp_path / "tok", max_bytes=10**9)
    langs = {lang for lang, _ in everything}
    assert langs == {"Python", "Rust"}
    held_bytes = sum(len(t) for _, t in everything)
    docs = held_out_documents(corpus, tmp_path / "tok", max_bytes=held_bytes // 4)
    rust = sum(len(t) for lang, t in docs if lang == "Rust") / sum(len(t) for _, t in docs)
    rust_all = sum(len(t) for lang, t in everything if lang == "Rust") / held_bytes
    assert abs(rust - rust_all) < 0.15  # the held-out mix, not its first documents
    assert {t for _, t in docs} <= {t for _, t in everything}


def test_documents_without_a_repository_split_by_id(tmp_path):
    corpus, rows = write_halves(tmp_path / "c", repo=False)
    # The tokenizer's hold-out: neither nothing nor everything.
    train_tokenizer(corpus, tmp_path / "tok", vocab_size=300, holdout_fraction=0.25, progress=False)
    held = held_out_documents(corpus, tmp_path / "tok", max_bytes=10**9)
    assert 0.15 * len(rows) < len(held) < 0.35 * len(rows)
    trained = {t for batch in sample_texts(corpus, 10**9, {}, 0, 0.25) for t in batch}
    assert not trained & {t for _, t in held} and len(trained) + len(held) == len(rows)


def _module(i: int) -> str:
    """A small, unique, parseable Python module (distinct enough to survive near-dedup)."""
    rng = random.Random(i)
    words = ["alpha", "beta", "gamma", "delta", "value", "count", "index", "total", "items", "result", "buffer"]
    lines = [f'"""Module {i}."""', ""]
    for j in range(4):
        a, b, c = rng.sample(words, 3)
        lines += [f"def {a}_{b}_{i}_{j}({a}, {b}={rng.randint(2, 99)}):",
                  f"    {c} = [{a} * n + {b} for n in range({rng.randint(2, 99)})]",
                  f"    return sum({c}) - {rng.randint(0, 9)}", ""]
    return "\n".join(lines) + "\n"


def test_repository_less_jsonl_gets_a_validation_split(tmp_path, capsys):
    """JSONL without `repo` -> data build -> tokenizer train -> data tokenize: val is about --val-fraction."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"content": _module(i), "path": f"m{i}.py", "license": "MIT"}) + "\n"
                           for i in range(300)))
    corpus, tok_dir, shards = tmp_path / "corpus", tmp_path / "tok", tmp_path / "tokens"
    assert main(["data", "build", str(src), "--out", str(corpus), "--workers", "1", "--quiet"]) == 0
    kept = pq.read_table(corpus / "data", columns=["repo"]).column("repo").to_pylist()
    assert len(kept) > 250 and not any(kept)  # the corpus really is repository-less
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--out", str(tok_dir), "--vocab-size", "300",
                 "--quiet", "tokenizer.holdout_fraction=0.2"]) == 0
    assert main(["data", "tokenize", "--corpus", str(corpus), "--tokenizer", str(tok_dir), "--out", str(shards),
                 "--val-fraction", "0.2", "--workers", "1"]) == 0
    capsys.readouterr()
    meta = json.loads((shards / "meta.json").read_text())
    val, train = meta["splits"]["val"]["docs"], meta["splits"]["train"]["docs"]
    assert val + train == len(kept)
    assert 0.12 < val / len(kept) < 0.28  # 0.2, with the noise of a 300-document hash split
    val_tokens = np.fromfile(shards / "val-00000.bin", dtype="<u2")
    assert (val_tokens == load(tok_dir).eot_id).sum() == val
