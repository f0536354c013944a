"""Token shards: format, counts, split by repository, packing, determinism, resume, bad input."""

import contextlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_tokenizer import write_corpus

from codekiln.cli import main
from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.errors import UserError
from codekiln.tokenizer import load, tokenizer_hash
from codekiln.tokenizer import shards as shards_mod
from codekiln.tokenizer.shards import tokenize_corpus
from codekiln.tokenizer.train import is_held_out, train_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    corpus = write_corpus(root / "corpus", docs=700)
    train_tokenizer(corpus, root / "tok", vocab_size=400, progress=False)
    return root, corpus, root / "tok"


def _docs(corpus):
    return pq.read_table(corpus / "data").to_pylist()


def _split_docs(data: np.ndarray, eot: int) -> list[list[int]]:
    cuts = np.flatnonzero(data == eot)
    out, start = [], 0
    for c in cuts:
        out.append(data[start:c].tolist())
        start = c + 1
    assert start == len(data)  # every sequence ends with <|endoftext|>
    return out


def _interrupted_after(tasks: int, monkeypatch, corpus, tok_dir, out) -> None:
    """`data tokenize` interrupted (Ctrl-C) after this many finished tasks; run_task restored afterwards."""
    real, calls = shards_mod.run_task, []

    def dying(task):
        if len(calls) == tasks:
            raise KeyboardInterrupt
        calls.append(task["id"])
        return real(task)

    monkeypatch.setattr(shards_mod, "run_task", dying)
    with pytest.raises(KeyboardInterrupt):
        tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3, workers=1)
    monkeypatch.setattr(shards_mod, "run_task", real)


def test_format_counts_and_split(setup, tmp_path):
    root, corpus, tok_dir = setup
    out = tmp_path / "s"
    meta = tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3, workers=2)
    tok = load(tok_dir)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train-00000.bin", "train-index.parquet",
                                                     "val-00000.bin", "val-index.parquet"]
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 400 and meta["special_ids"] == tok.special_ids
    docs = _docs(corpus)
    for split in ("train", "val"):
        data = np.fromfile(out / f"{split}-00000.bin", dtype="<u2")
        assert meta["splits"][split]["tokens"] == data.size
        seqs = _split_docs(data, tok.eot_id)
        expected = [d for d in docs if is_held_out(d["repo"], 0.3, 0) == (split == "val")]
        assert [tok.decode(s) for s in seqs] == [d["content"] for d in expected]
        assert meta["splits"][split]["docs"] == len(expected)
        assert meta["splits"][split]["bytes"] == sum(len(d["content"].encode()) for d in expected)
        assert sum(meta["splits"][split]["bytes_by_lang"].values()) == meta["splits"][split]["bytes"]
        assert sum(meta["splits"][split]["tokens_by_lang"].values()) == meta["splits"][split]["tokens"]
        # the document index: one row per sequence, pointing at exactly its tokens, with its bytes and language
        index = pq.read_table(out / meta["splits"][split]["index"]).to_pylist()
        assert len(index) == len(expected)
        for row, doc, seq in zip(index, expected, seqs):
            assert row["shard"] == 0 and row["lang"] == doc["lang"]
            assert row["bytes"] == len(doc["content"].encode())
            assert data[row["offset"]: row["offset"] + row["tokens"]].tolist() == seq + [tok.eot_id]
    train_repos = {d["repo"] for d in docs if not is_held_out(d["repo"], 0.3, 0)}
    val_repos = {d["repo"] for d in docs if is_held_out(d["repo"], 0.3, 0)}
    assert train_repos and val_repos and not train_repos & val_repos
    assert json.loads((out / "meta.json").read_text())["tokenizer_sha256"] == tokenizer_hash(tok_dir)


def test_deterministic_across_workers_and_rerun(setup, tmp_path):
    _, corpus, tok_dir = setup
    a, b = tmp_path / "a", tmp_path / "b"
    tokenize_corpus(corpus, tok_dir, a, val_fraction=0.3, workers=1)
    tokenize_corpus(corpus, tok_dir, b, val_fraction=0.3, workers=2)
    for name in ("train-00000.bin", "val-00000.bin", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    before = (a / "train-00000.bin").stat().st_mtime_ns
    tokenize_corpus(corpus, tok_dir, a, val_fraction=0.3, workers=1)  # finished: nothing to do
    assert (a / "train-00000.bin").stat().st_mtime_ns == before


def test_resume_after_interruption(setup, tmp_path, monkeypatch):
    _, corpus, tok_dir = setup
    clean = tmp_path / "clean"
    tokenize_corpus(corpus, tok_dir, clean, val_fraction=0.3)
    out = tmp_path / "cut"
    _interrupted_after(2, monkeypatch, corpus, tok_dir, out)
    assert len(list((out / "_work").glob("*.done"))) == 2 and not (out / "meta.json").exists()
    tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3, workers=1)
    for name in ("train-00000.bin", "val-00000.bin", "meta.json"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()


def test_repository_packing(setup, tmp_path):
    _, corpus, tok_dir = setup
    out = tmp_path / "p"
    meta = tokenize_corpus(corpus, tok_dir, out, val_fraction=0.0, pack=True)
    tok = load(tok_dir)
    data = np.fromfile(out / "train-00000.bin", dtype="<u2")
    seqs = _split_docs(data, tok.eot_id)
    first = tok.decode(seqs[0])
    docs = _docs(corpus)
    assert first.startswith(f"<|repo_name|>{docs[0]['repo']}\n<|file_sep|>{docs[0]['path']}\n{docs[0]['content']}")
    assert all(s[0] == tok.special_ids["<|repo_name|>"] for s in seqs)
    assert meta["splits"]["train"]["bytes"] == sum(len(d["content"].encode()) for d in docs)


def test_bad_input(setup, tmp_path, capsys):
    root, corpus, tok_dir = setup
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), empty / "data" / "part-00000.parquet")
    with pytest.raises(UserError, match="has no documents"):
        tokenize_corpus(empty, tok_dir, tmp_path / "o")
    out = tmp_path / "s"
    tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3)
    other = tmp_path / "tok2"
    train_tokenizer(corpus, other, vocab_size=350, progress=False)
    assert main(["data", "tokenize", "--corpus", str(corpus), "--tokenizer", str(other), "--out", str(out),
                 "--val-fraction", "0.3"]) == 2
    assert "holds shards of another tokenizer" in capsys.readouterr().err
    assert main(["data", "tokenize", "--corpus", str(corpus), "--tokenizer", str(tmp_path), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err


def test_index_spans_many_shards(setup, tmp_path, monkeypatch):
    _, corpus, tok_dir = setup
    monkeypatch.setattr(shards_mod, "SHARD_TOKENS", 2000)
    out = tmp_path / "many"
    meta = tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3)
    tok = load(tok_dir)
    names = meta["splits"]["train"]["shards"]
    assert len(names) > 2
    data = [np.fromfile(out / n, dtype="<u2") for n in names]
    index = pq.read_table(out / "train-index.parquet").to_pylist()
    assert {r["shard"] for r in index} == set(range(len(names)))
    for row in index:
        ids = data[row["shard"]][row["offset"]: row["offset"] + row["tokens"]]
        assert ids[-1] == tok.eot_id and tok.eot_id not in ids[:-1].tolist()
    assert sum(r["tokens"] for r in index) == sum(d.size for d in data) == meta["splits"]["train"]["tokens"]


def _decoded(out, tok_dir, split="train"):
    tok = load(tok_dir)
    return [tok.decode(s) for s in _split_docs(np.fromfile(out / f"{split}-00000.bin", dtype="<u2"), tok.eot_id)]


def test_corpus_rebuilt_in_place_is_tokenized_again(setup, tmp_path, capsys):
    """data build -> data tokenize -> data build --overwrite from edited sources -> data tokenize: new shards."""
    _, _, tok_dir = setup
    src, corpus, out = tmp_path / "docs.jsonl", tmp_path / "corpus", tmp_path / "tokens"

    def build(tag):
        src.write_text("".join(json.dumps({"content": f"def {tag}_{i}(x):\n    return x * {i} + {len(tag)}\n",
                                           "path": f"m{i}.py", "license": "MIT", "repo": f"r{i % 5}"}) + "\n"
                               for i in range(40)))
        assert main(["data", "build", str(src), "--out", str(corpus), "--workers", "1", "--quiet", "--overwrite",
                     "data.dedup.enabled=false"]) == 0
        return sorted(pq.read_table(corpus / "data", columns=["content"]).column("content").to_pylist())

    first = build("first")
    tokenize_corpus(corpus, tok_dir, out, val_fraction=0.0, workers=1)
    assert sorted(_decoded(out, tok_dir)) == first
    second = build("second_version")
    assert second != first
    meta = tokenize_corpus(corpus, tok_dir, out, val_fraction=0.0, workers=1)
    assert sorted(_decoded(out, tok_dir)) == second
    assert meta["splits"]["train"]["bytes"] == sum(len(t.encode()) for t in second)
    assert "tokenizing it again" in capsys.readouterr().err
    # Unchanged since, it is not redone.
    before = (out / "train-00000.bin").stat().st_mtime_ns
    tokenize_corpus(corpus, tok_dir, out, val_fraction=0.0, workers=1)
    assert (out / "train-00000.bin").stat().st_mtime_ns == before


def test_unfinished_run_of_a_rebuilt_corpus_is_not_reused(setup, tmp_path, monkeypatch):
    _, _, tok_dir = setup
    corpus = write_corpus(tmp_path / "c", docs=700, seed=0)
    out = tmp_path / "cut"
    _interrupted_after(1, monkeypatch, corpus, tok_dir, out)
    # Rebuilt in place (same path, same size in documents), other content.
    (corpus / "data" / "part-00000.parquet").unlink()
    (corpus / "data").rmdir()
    write_corpus(corpus, docs=700, seed=1)
    tokenize_corpus(corpus, tok_dir, out, val_fraction=0.3, workers=1)
    clean = tmp_path / "clean"
    tokenize_corpus(corpus, tok_dir, clean, val_fraction=0.3, workers=1)
    for name in ("train-00000.bin", "val-00000.bin", "meta.json"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()


def test_tokenize_shows_progress_in_bytes(setup, tmp_path, monkeypatch):
    _, corpus, tok_dir = setup
    bars = []

    @contextlib.contextmanager
    def recording(label, total, enabled=True):
        bar = {"label": label, "total": total, "done": 0, "enabled": enabled}
        bars.append(bar)
        yield lambda n: bar.__setitem__("done", bar["done"] + n)

    monkeypatch.setattr(shards_mod, "task_progress", recording)
    tokenize_corpus(corpus, tok_dir, tmp_path / "s", val_fraction=0.3, workers=2)
    size = sum(d["bytes"] for d in _docs(corpus))
    assert bars == [{"label": "tokenize", "total": size, "done": size, "enabled": True}]
    tokenize_corpus(corpus, tok_dir, tmp_path / "q", val_fraction=0.3, progress=False)
    assert bars[-1]["enabled"] is False
