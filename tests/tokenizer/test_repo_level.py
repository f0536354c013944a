"""Token shards for fine-tuning: held out by file within a repository, training files in the repository-level layout."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codekiln import fim
from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.errors import UserError
from codekiln.token_shards import ShardSet
from codekiln.tokenizer import load
from codekiln.tokenizer.repo_level import held_out_files, tokenize_repo_level

SNIPPETS = ["def {n}(x):\n    return x + {k}\n\n", "class {n}:\n    size = {k}\n\n", "{n} = [{k}, {k}]\n"]


def _corpus(directory, files):
    rows = [{"id": f"{i:032x}", "content": text, "path": path, "repo": repo, "lang": "Python", "license": "MIT",
             "source": "test", "bytes": len(text.encode()), "stars": None, "cluster_id": f"{i:032x}"}
            for i, (repo, path, text) in enumerate(files)]
    (directory / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), directory / "data" / "part-00000.parquet")
    return directory


@pytest.fixture(scope="module")
def setup(tmp_path_factory, code_tokenizer, snippet_files):
    texts = snippet_files(SNIPPETS, 60, seed=3)
    files = [("team/app" if i < 40 else "team/lib", f"{'src' if i % 2 else 'tests'}/m{i}.py", t)
             for i, t in enumerate(texts)]
    root = tmp_path_factory.mktemp("repo-level")
    return _corpus(root / "corpus", files), code_tokenizer("repo-level-tok", texts), files


def test_split_is_by_file_stable_and_val_is_the_held_out_files_alone(setup, tmp_path):
    corpus, tok_dir, files = setup
    meta = tokenize_repo_level(corpus, tok_dir, tmp_path / "a", holdout_fraction=0.25, seed=0, repo_context=0.5,
                               doc_tokens=256, progress=False)
    held = held_out_files(corpus, 0.25, 0)
    assert {h["repo"] for h in held} == {"team/app", "team/lib"}  # both repositories lend files
    assert 5 <= len(held) <= 25
    assert meta["splits"]["val"]["docs"] == len(held)
    assert meta["splits"]["train"]["docs"] == len(files) - len(held)
    tok = load(tok_dir)
    shards = ShardSet(tmp_path / "a")
    val_texts = [tok.decode(shards.doc("val", i)[:-1].tolist()) for i in range(meta["splits"]["val"]["docs"])]
    assert val_texts == [h["content"] for h in held]
    # no held-out text inside any training sequence
    train_text = "".join(tok.decode(shards.doc("train", i).tolist()) for i in range(meta["splits"]["train"]["docs"]))
    assert not any(f"<|file_sep|>{h['path']}\n" in train_text for h in held)
    # the same inputs give the same bytes; a rerun returns the finished shards
    again = tokenize_repo_level(corpus, tok_dir, tmp_path / "b", holdout_fraction=0.25, seed=0, repo_context=0.5,
                                doc_tokens=256, progress=False)
    assert again["splits"] == meta["splits"]
    for name in meta["splits"]["train"]["shards"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert tokenize_repo_level(corpus, tok_dir, tmp_path / "a", holdout_fraction=0.25, seed=0, repo_context=0.5,
                               doc_tokens=256, progress=False) == meta


def test_repository_level_sequences_fit_and_hold_nearest_files_last(setup, tmp_path):
    corpus, tok_dir, _ = setup
    tok = load(tok_dir)
    sp = tok.special_ids
    meta = tokenize_repo_level(corpus, tok_dir, tmp_path / "s", holdout_fraction=0.25, seed=0, repo_context=1.0,
                               doc_tokens=200, progress=False)
    shards = ShardSet(tmp_path / "s")
    with_others = 0
    starts = {sp[fim.REPO]: 0, sp[fim.FILE_SEP]: 0}
    empty_paths = 0
    for i in range(meta["splits"]["train"]["docs"]):
        ids = shards.doc("train", i)
        assert ids[0] in (sp[fim.REPO], sp[fim.FILE_SEP]) and ids[-1] == tok.eot_id
        starts[int(ids[0])] += 1
        seps = np.flatnonzero(ids == sp[fim.FILE_SEP])
        assert seps.size >= 1
        if ids.size > 200:  # only a current file longer than the budget by itself may exceed it
            assert seps.size == 1
        paths = [tok.decode(ids[s + 1:].tolist()).split("\n", 1)[0] for s in seps]
        current = paths[-1]
        empty_paths += current == ""
        if len(paths) > 2:
            with_others += 1
            # the file just before the current one is in its directory whenever any context file is
            same_dir = [p.split("/")[0] == current.split("/")[0] for p in paths[:-1]]
            if current and any(same_dir):
                assert same_dir[-1]
    assert with_others > 0
    # a stable quarter without the repository header, a quarter with an empty current path (clients that lack them)
    n = meta["splits"]["train"]["docs"]
    assert 0.05 * n < starts[sp[fim.FILE_SEP]] < 0.5 * n and 0.05 * n < empty_paths < 0.5 * n
    plain = tokenize_repo_level(corpus, tok_dir, tmp_path / "p", holdout_fraction=0.25, seed=0, repo_context=0.0,
                                doc_tokens=200, progress=False)
    first = ShardSet(tmp_path / "p").doc("train", 0)
    assert plain["splits"]["train"]["docs"] == meta["splits"]["train"]["docs"]
    assert sp[fim.REPO] not in first.tolist()
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["fingerprint"]["layout"] == "repo_level_fim"


def test_bad_shares_and_empty_splits_are_one_line_errors(setup, tmp_path):
    corpus, tok_dir, _ = setup
    with pytest.raises(UserError, match="held-out share"):
        tokenize_repo_level(corpus, tok_dir, tmp_path / "x", holdout_fraction=0.0, progress=False)
    with pytest.raises(UserError, match="no file"):
        tokenize_repo_level(corpus, tok_dir, tmp_path / "y", holdout_fraction=1e-9, progress=False)
