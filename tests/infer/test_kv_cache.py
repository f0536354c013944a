"""The model's KV cache: left-padded prefill and token-by-token decode equal recomputing each row alone."""

import pytest
import torch

from codekiln.model import ModelConfig, Transformer, attention
from codekiln.model.transformer import KVCache

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, context=64, init_std=0.2)


def build(seed=0, **options):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**{**SMALL, **options})).eval()


def sequences(lengths, extra, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, SMALL["vocab_size"], (n + extra,), generator=g) for n in lengths]


def left_padded(seqs, lengths):
    longest = max(lengths)
    batch = torch.zeros(len(seqs), longest, dtype=torch.long)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        batch[i, longest - n:] = s[:n]
    return batch, [longest - n for n in lengths]


@pytest.mark.parametrize("positions", ["alibi", "rope"])
@pytest.mark.parametrize("kv_heads", [None, 2, 1])
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
@torch.no_grad()
def test_cached_decode_equals_full_recompute(positions, kv_heads, impl):
    model = build(positions=positions, kv_heads=kv_heads, attn_impl=impl, norm="rmsnorm", mlp="swiglu")
    lengths, steps = [5, 11, 1], 10
    seqs = sequences(lengths, steps)
    batch, pad = left_padded(seqs, lengths)
    cache = KVCache.for_model(model, 3, max(lengths) + steps, pad)
    prefill = model(batch, cache=cache)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        assert torch.allclose(prefill[i, pad[i]:], model(s[None, :n])[0], atol=1e-4)
    for step in range(steps):
        nxt = torch.stack([s[n + step] for s, n in zip(seqs, lengths)])[:, None]
        logits = model(nxt, cache=cache)[:, -1]
        for i, (s, n) in enumerate(zip(seqs, lengths)):
            full = model(s[None, :n + step + 1])[0, -1]
            assert torch.allclose(logits[i], full, atol=1e-4), (step, i)


@pytest.mark.parametrize("positions", ["alibi", "rope"])
@torch.no_grad()
def test_rows_leaving_the_batch_keep_the_others_exact(positions):
    model = build(positions=positions, kv_heads=2)
    lengths, steps = [4, 9, 6], 8
    seqs = sequences(lengths, steps, seed=2)
    batch, pad = left_padded(seqs, lengths)
    cache = KVCache.for_model(model, 3, max(lengths) + steps, pad)
    model(batch, cache=cache)
    rows = [0, 1, 2]
    for step in range(steps):
        if step == 3:  # the longest prompt finishes: the shared padding of the other two is dropped too
            rows = [0, 2]
            cache.select(rows)
            assert cache.pad.tolist() == [2, 0] and cache.length == max(lengths) + 3 - 3
        nxt = torch.stack([seqs[r][lengths[r] + step] for r in rows])[:, None]
        logits = model(nxt, cache=cache)[:, -1]
        for j, r in enumerate(rows):
            assert torch.allclose(logits[j], model(seqs[r][None, :lengths[r] + step + 1])[0, -1], atol=1e-4)


@pytest.mark.parametrize("positions", ["alibi", "rope"])
@torch.no_grad()
def test_prefill_in_chunks_equals_one_forward(positions):
    model = build(positions=positions)
    x = sequences([20], 0)[0][None]
    whole = model(x, cache=KVCache.for_model(model, 1, 20))
    cache = KVCache.for_model(model, 1, 20)
    parts = torch.cat([model(x[:, :7], cache=cache), model(x[:, 7:], cache=cache)], dim=1)
    assert torch.allclose(whole, parts, atol=1e-5)
    assert torch.allclose(whole, model(x), atol=1e-5)


def test_padding_is_masked_and_a_padding_query_sees_itself():
    mask = attention.cache_mask(0, 4, torch.tensor([2, 0]))
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0, 3].tolist() == [False, False, True, True]  # real query: real keys only
    assert mask[0, 0, 0].tolist() == [True, False, False, False]  # padding query: itself, so softmax is finite
    assert mask[1, 0, 2].tolist() == [True, True, True, False]  # causal
    step = attention.cache_mask(4, 5, torch.tensor([2, 0]))  # one decode step at slot 4
    assert step.shape == (2, 1, 1, 5) and step[0, 0, 0].tolist() == [False, False, True, True, True]


def test_alibi_cache_mask_is_slope_times_distance():
    slopes = torch.tensor([0.5, 0.25])
    bias = attention.cache_mask(3, 4, torch.tensor([1]), slopes)
    assert bias.shape == (1, 2, 1, 4)
    assert bias[0, 0, 0, 0] == float("-inf")
    assert bias[0, :, 0, 1:].tolist() == [[-1.0, -0.5, 0.0], [-0.5, -0.25, 0.0]]


def test_padding_changes_nothing_but_is_really_masked():
    model = build(positions="rope")
    x = sequences([6], 0)[0][None]
    with torch.no_grad():
        plain = model(x, cache=KVCache.for_model(model, 1, 6))[0, -1]
        padded_input = torch.cat([torch.full((1, 3), 5), x], dim=1)
        padded = model(padded_input, cache=KVCache.for_model(model, 1, 9, pad=[3]))[0, -1]
        unmasked = model(padded_input, cache=KVCache.for_model(model, 1, 9, pad=[0]))[0, -1]
    assert torch.allclose(plain, padded, atol=1e-5)
    assert not torch.allclose(plain, unmasked, atol=1e-3)  # the same tokens read as real ones do change it


def test_last_only_is_the_last_position():
    model = build()
    x = sequences([12, 12], 0)
    x = torch.stack(x)
    with torch.no_grad():
        # the head runs on one position instead of twelve: another matmul shape, so another kernel may round
        # the last bits differently (seen on AVX-512 CPUs); the values agree far inside 1e-5
        assert torch.allclose(model(x, last_only=True), model(x)[:, -1:], rtol=0, atol=1e-5)
        last = model(x, cache=KVCache.for_model(model, 2, 12), last_only=True)
    assert last.shape == (2, 1, SMALL["vocab_size"])
    assert torch.allclose(last, model(x)[:, -1:], atol=1e-5)


def test_cache_misuse_raises():
    model = build()
    x = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="slots"):
        model(x, cache=KVCache.for_model(model, 2, 4))
    with pytest.raises(ValueError, match="rows"):
        model(x, cache=KVCache.for_model(model, 3, 8))
    with pytest.raises(ValueError, match="doc_ids"):
        model(x, torch.zeros_like(x), cache=KVCache.for_model(model, 2, 8))


def test_cache_holds_only_kv_heads():
    cache = KVCache.for_model(build(kv_heads=2), batch=3, max_len=10)
    assert len(cache.k) == SMALL["n_layers"]
    assert cache.k[0].shape == cache.v[1].shape == (3, 2, 10, SMALL["d_model"] // SMALL["n_heads"])
