"""Training data: memory-mapped shards, mixture shares, repeated epochs, exact resume, validation bytes."""

import numpy as np
import pytest

from codekiln.errors import UserError
from codekiln.token_shards import ShardSet
from codekiln.tokenizer import load
from codekiln.train.data import TrainStream, mixture, plan_table
from codekiln.validation import ValSet, bits_per_byte, token_bytes


@pytest.fixture(scope="module")
def data(shards):
    tok_dir, shard_dir = shards
    return load(tok_dir), ShardSet(shard_dir)


def _stream(s, tok, **kw):
    args = dict(seq_len=32, batch_size=4, seed=7, tok=tok, fim_rate=0.5)
    args.update(kw)
    comps = mixture([s], None, args.pop("language_weights", {}))
    return TrainStream(comps, **args)


def test_documents_come_back_whole(data):
    tok, s = data
    ix = s.index["train"]
    for i in range(0, len(ix["tokens"]), 37):
        ids = s.doc("train", i)
        assert ids[-1] == tok.eot_id and tok.eot_id not in ids[:-1]
        assert len(tok.decode(ids[:-1].tolist()).encode()) == ix["bytes"][i]


def test_natural_mixture_and_explicit_shares(data):
    tok, s = data
    natural = {c.name: c.share for c in mixture([s], None, {})}
    sizes = s.languages()
    assert natural == pytest.approx({k: v / sum(sizes.values()) for k, v in sizes.items()})
    fixed = {c.name: c.share for c in mixture([s], None, {"JavaScript": 0.5})}
    assert fixed == pytest.approx({"JavaScript": 0.5, "Python": 0.5})
    only = {c.name: c.share for c in mixture([s], None, {"JavaScript": 1.0})}
    assert only == {"JavaScript": 1.0}
    with pytest.raises(UserError, match="Rust"):
        mixture([s], None, {"Rust": 0.2})
    two = {c.name: c.share for c in mixture([s, s], [3, 1], {"JavaScript": 0.5})}
    assert two == pytest.approx({"0:JavaScript": 0.375, "0:Python": 0.375, "1:JavaScript": 0.125, "1:Python": 0.125})


def test_samples_follow_shares(data):
    tok, s = data
    stream = _stream(s, tok, language_weights={"JavaScript": 0.25})
    for _ in range(100):
        stream.next_batch()
    counts = dict(zip([c.name for c in stream.comps], stream.counts.tolist()))
    assert counts == {"JavaScript": 100, "Python": 300}  # the greedy blend is exact, not just on average


def test_batches_interleave_streams_that_waste_nothing(data):
    tok, s = data
    stream = _stream(s, tok, fim_rate=0.0, language_weights={"Python": 1.0}, batch_size=64)
    walk = stream.walks[0]
    assert walk.streams == 64
    x1, y1 = stream.next_batch()
    x2, y2 = stream.next_batch()
    assert x1.shape == y1.shape == (64, 32) and x1.dtype == np.int64
    assert np.array_equal(x1[:, 1:], y1[:, :-1])
    # row j of the next batch continues stream j exactly where this batch's row j ended
    assert np.array_equal(y1[:, -1], x2[:, 0])
    # and the streams read different documents: rows of a batch start in different places
    assert len({tuple(r) for r in x1.tolist()}) == 64
    # stream j reads documents j, j+64, ... of the epoch's order, back to back
    eot = tok.eot_id
    first = [s.doc("train", int(walk.order(0)[j])) for j in range(3)]
    for j in range(3):
        got = np.concatenate([x1[j], x2[j]])
        want = first[j][: got.size]
        assert np.array_equal(got[: want.size], want)


def test_epochs_repeat_in_a_new_order(data):
    tok, s = data
    stream = _stream(s, tok, fim_rate=0.0, language_weights={"JavaScript": 1.0}, batch_size=8)
    walk = stream.walks[0]
    order0 = walk.order(0).copy()
    while min(c[0] for c in walk.cursors) < 2:
        stream.next_batch()
    assert sorted(walk.order(1).tolist()) == sorted(order0.tolist()) and not np.array_equal(walk.order(1), order0)
    assert stream.epochs()["JavaScript"] >= 2
    rows = plan_table(stream.comps, 10 * stream.comps[0].tokens)
    assert rows[0]["epochs"] == pytest.approx(10.0)


def test_state_restores_the_exact_batches(data):
    tok, s = data
    a = _stream(s, tok)
    for _ in range(13):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(20)]
    b = _stream(s, tok)
    b.load_state_dict(state)
    got = [b.next_batch() for _ in range(20)]
    for (x1, y1), (x2, y2) in zip(expected, got):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    with pytest.raises(UserError):
        _stream(s, tok, language_weights={"Python": 1.0}).load_state_dict(state)


def test_ranks_read_disjoint_documents(data):
    tok, s = data
    comps = mixture([s], None, {})
    r0 = TrainStream(comps, 32, 2, seed=1, rank=0, world=2, tok=tok)
    r1 = TrainStream(comps, 32, 2, seed=1, rank=1, world=2, tok=tok)
    for w0, w1 in zip(r0.walks, r1.walks):
        o0, o1 = set(w0.order(0).tolist()), set(w1.order(0).tolist())
        assert not o0 & o1 and o0 | o1 == set(w0.comp.docs.tolist())


def test_fim_reaches_the_batches(data):
    tok, s = data
    pre = tok.special_ids["<|fim_prefix|>"]
    with_fim = np.concatenate([_stream(s, tok, fim_rate=0.9).next_batch()[0] for _ in range(5)])
    without = np.concatenate([_stream(s, tok, fim_rate=0.0).next_batch()[0] for _ in range(5)])
    assert (with_fim == pre).sum() > 0 and (without == pre).sum() == 0


def test_validation_bytes_match_the_index(data):
    tok, s = data
    table = token_bytes(tok)
    ix = s.index["val"]
    total = sum(int(table[s.doc("val", i)].sum()) for i in range(len(ix["tokens"])))
    assert total == int(ix["bytes"].sum()) == s.meta["splits"]["val"]["bytes"]
    val = ValSet([s], seq_len=16, max_tokens=10**9, tok_bytes=table)
    assert len(val) == (s.meta["splits"]["val"]["tokens"] - 1) // 16
    assert set(val.languages) == set(ix["lang"].tolist())
    assert np.array_equal(val.inputs[:, 1:], val.targets[:, :-1])
    assert bits_per_byte(8 * np.log(2), 4) == pytest.approx(2.0)


def test_bad_directories(tmp_path):
    with pytest.raises(UserError, match="meta.json"):
        ShardSet(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": "codekiln-tokens/1"}')
    with pytest.raises(UserError, match="rerun codekiln data tokenize"):
        ShardSet(tmp_path)
