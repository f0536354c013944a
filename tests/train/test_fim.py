"""Fill-in-the-middle: character cuts, PSM/SPM layouts, invertibility, rate and mix, determinism."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codekiln.tokenizer import load
from codekiln import fim


@pytest.fixture(scope="module")
def tok(shards):
    return load(shards[0])


def test_split_cuts_at_characters():
    rng = np.random.default_rng(0)
    text = "héllo wörld ✓ 😀"
    for _ in range(200):
        pre, mid, suf = fim.split(text, rng)
        assert pre + mid + suf == text


def test_layouts(tok):
    sp = tok.special_ids
    p, m, s = [10, 11], [12], [13, 14]
    assert fim.arrange(p, m, s, sp, spm=False) == [sp[fim.PRE], 10, 11, sp[fim.SUF], 13, 14, sp[fim.MID], 12]
    assert fim.arrange(p, m, s, sp, spm=True) == [sp[fim.PRE], sp[fim.SUF], 13, 14, sp[fim.MID], 10, 11, 12]
    assert fim.prompt(p, s, sp) == [sp[fim.PRE], 10, 11, sp[fim.SUF], 13, 14, sp[fim.MID]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=300), seed=st.integers(0, 2**32 - 1))
def test_transform_is_invertible(tok, text, seed):
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    out = fim.transform(ids, tok, np.random.default_rng(seed), rate=1.0, spm_rate=0.5)
    assert out[0] == tok.special_ids[fim.PRE]
    assert fim.invert_text(out.tolist(), tok) == text


def test_rate_and_mix(tok):
    ids = np.asarray(tok.encode("def f(x):\n    return x * 2\n" * 3), dtype=np.int64)
    sp = tok.special_ids
    kinds = {"plain": 0, "psm": 0, "spm": 0}
    for seed in range(2000):
        out = fim.transform(ids, tok, np.random.default_rng(seed), rate=0.5, spm_rate=0.5)
        if out[0] != sp[fim.PRE]:
            kinds["plain"] += 1
            assert np.array_equal(out, ids)
        else:
            kinds["spm" if out[1] == sp[fim.SUF] else "psm"] += 1
    assert 900 < kinds["plain"] < 1100 and 400 < kinds["psm"] < 600 and 400 < kinds["spm"] < 600
    none = [fim.transform(ids, tok, np.random.default_rng(s), rate=0.0, spm_rate=0.5) for s in range(50)]
    assert all(np.array_equal(o, ids) for o in none)


def test_same_key_same_result_and_packed_docs_untouched(tok):
    ids = np.asarray(tok.encode("x = 1\ny = 2\n"), dtype=np.int64)
    a = fim.transform(ids, tok, np.random.default_rng([1, 2, 3]), 1.0, 0.5)
    b = fim.transform(ids, tok, np.random.default_rng([1, 2, 3]), 1.0, 0.5)
    assert np.array_equal(a, b)
    packed = np.concatenate([[tok.special_ids["<|file_sep|>"]], ids])
    assert np.array_equal(fim.transform(packed, tok, np.random.default_rng(0), 1.0, 0.5), packed)


def test_invert_rejects_plain_sequences(tok):
    with pytest.raises(ValueError):
        fim.invert([5, 6, 7], tok.special_ids)


def test_repository_level_documents_put_their_last_file_in_fim_form(tok):
    """A `<|repo_name|>` document keeps its header and other files and puts its last file in FIM form, in the
    layout infer.window.fit_repo_fim prompts with; inverting the FIM part gives the file back."""
    sp = tok.special_ids
    other = fim.repo_file("pkg/util.py", "def helper(x):\n    return x + 1\n", sp, tok.encode)
    text = "def main(items):\n    return [helper(i) for i in items]\n"
    doc = np.asarray([*fim.repo_header("team/app", sp, tok.encode), *other,
                      *fim.current_file("pkg/main.py", sp, tok.encode), *tok.encode(text)], dtype=np.int64)
    head = [*fim.repo_header("team/app", sp, tok.encode), *other, *fim.current_file("pkg/main.py", sp, tok.encode)]
    # pretraining's packed repositories (no repo_level flag) stay whole
    assert np.array_equal(fim.transform(doc, tok, np.random.default_rng(0), 1.0, 0.5), doc)
    for seed in range(20):
        out = fim.transform(doc, tok, np.random.default_rng(seed), 1.0, 0.5, repo_level=True)
        assert out[: len(head)].tolist() == head
        assert out[len(head)] == sp[fim.PRE]
        assert fim.invert_text(out[len(head):].tolist(), tok) == text
    assert np.array_equal(fim.transform(doc, tok, np.random.default_rng(0), 0.0, 0.5, repo_level=True), doc)
    # without the repository header (a client that does not know it), the document starts at a file separator
    bare = doc[len(fim.repo_header("team/app", sp, tok.encode)):]
    out = fim.transform(bare, tok, np.random.default_rng(3), 1.0, 0.5, repo_level=True)
    assert out[: len(head) - len(fim.repo_header("team/app", sp, tok.encode))].tolist() == head[len(fim.repo_header(
        "team/app", sp, tok.encode)):]
    # a repository document whose last file is empty stays plain
    empty = np.asarray([*fim.repo_header("r", sp, tok.encode), *fim.current_file("a.py", sp, tok.encode)], np.int64)
    assert np.array_equal(fim.transform(empty, tok, np.random.default_rng(0), 1.0, 0.5, repo_level=True), empty)
