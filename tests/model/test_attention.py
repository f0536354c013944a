"""Attention: ALiBi slopes and bias, the reference against a naive loop, the fast paths against the reference."""

import math

import pytest
import torch

from codekiln.model import attention


def naive_attention(q, k, v, slopes=None, doc_ids=None):
    """One query at a time, straight from the definition (float64)."""
    b_, h_, t_, d_ = q.shape
    group = h_ // k.shape[1]
    out = torch.zeros(b_, h_, t_, d_, dtype=torch.float64)
    for b in range(b_):
        for h in range(h_):
            kv = h // group
            for i in range(t_):
                keys = [j for j in range(i + 1) if doc_ids is None or doc_ids[b, j] == doc_ids[b, i]]
                scores = torch.stack([(q[b, h, i].double() @ k[b, kv, j].double()) / math.sqrt(d_) for j in keys])
                if slopes is not None:
                    scores = scores + torch.tensor([float(slopes[h]) * (j - i) for j in keys], dtype=torch.float64)
                w = torch.softmax(scores, dim=0)
                out[b, h, i] = sum(w[n] * v[b, kv, j].double() for n, j in enumerate(keys))
    return out


def qkv(b=2, h=4, kv=2, t=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, t, d, generator=g), torch.randn(b, kv, t, d, generator=g),
            torch.randn(b, kv, t, d, generator=g))


DOCS = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
                     [3, 3, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7]])


# --- ALiBi ---

def test_alibi_slopes_power_of_two_heads():
    assert torch.allclose(attention.alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    assert torch.allclose(attention.alibi_slopes(4), torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256]))


def test_alibi_slopes_non_power_of_two_heads_follow_mpt():
    n = 32
    m = [i * 8 / n for i in range(1, n + 1)]
    s = [2.0 ** -x for x in m]
    expected = torch.tensor((s[1::2] + s[::2])[:24])
    got = attention.alibi_slopes(24)
    assert got.shape == (24,)
    assert torch.allclose(got, expected)
    assert got[0] == 2.0 ** -0.5 and got[16] == 2.0 ** -0.25


def test_alibi_bias_max_changes_the_geometric_rate():
    expected = torch.tensor([2.0 ** -(4 * i) for i in range(1, 5)])
    assert torch.allclose(attention.alibi_slopes(4, bias_max=16.0), expected)


def test_alibi_bias_is_slope_times_key_minus_query():
    slopes = torch.tensor([0.5, 0.125, 2.0])
    bias = attention.alibi_bias(slopes, 5)
    assert bias.shape == (3, 5, 5)
    for h in range(3):
        for i in range(5):
            for j in range(5):
                assert bias[h, i, j].item() == pytest.approx(float(slopes[h]) * (j - i))


# --- reference and fast paths ---

@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("docs", [False, True])
@pytest.mark.parametrize("kv", [4, 2, 1])
def test_reference_matches_naive_loop(alibi, docs, kv):
    q, k, v = qkv(kv=kv)
    slopes = attention.alibi_slopes(4) * 8 if alibi else None  # large slopes so a wrong sign or offset shows
    doc_ids = DOCS if docs else None
    got = attention.reference(q, k, v, slopes, doc_ids)
    assert got.dtype == q.dtype
    assert torch.allclose(got.double(), naive_attention(q, k, v, slopes, doc_ids), atol=1e-5)


def test_doc_masking_changes_the_result():
    q, k, v = qkv()
    assert not torch.allclose(attention.reference(q, k, v), attention.reference(q, k, v, doc_ids=DOCS))


@pytest.mark.parametrize("alibi, docs, kv", [
    (False, False, 4), (False, False, 2), (False, False, 1),
    (True, False, 4), (True, False, 2),
    (False, True, 4), (False, True, 2),
    (True, True, 4), (True, True, 1),
])
def test_sdpa_matches_reference(alibi, docs, kv):
    q, k, v = qkv(kv=kv, t=20)
    slopes = attention.alibi_slopes(4) if alibi else None
    doc_ids = torch.tensor([[0] * 7 + [1] * 13, [2] * 3 + [4] * 9 + [9] * 8]) if docs else None
    got = attention.sdpa(q, k, v, slopes, doc_ids)
    assert got.shape == q.shape
    assert torch.allclose(got, attention.reference(q, k, v, slopes, doc_ids), atol=1e-5)


def test_flex_matches_reference():
    # One shape, reused, so the CPU compile of FlexAttention happens once per mask kind.
    q, k, v = qkv(b=2, h=4, kv=2, t=32, d=16)
    slopes = attention.alibi_slopes(4)
    doc_ids = torch.tensor([[0] * 10 + [1] * 22, [0] * 5 + [1] * 7 + [2] * 20])
    assert torch.allclose(attention.flex(q, k, v, slopes, doc_ids),
                          attention.reference(q, k, v, slopes, doc_ids), atol=1e-4)
    other_docs = torch.tensor([[0] * 20 + [1] * 12, [0] * 2 + [1] * 30])  # a new mask must not reuse the old one
    assert torch.allclose(attention.flex(q, k, v, slopes, other_docs),
                          attention.reference(q, k, v, slopes, other_docs), atol=1e-4)
    # The path auto takes for ALiBi on a GPU without flash-attn: causal block mask only.
    assert torch.allclose(attention.flex(q, k, v, slopes), attention.reference(q, k, v, slopes), atol=1e-4)


def test_flash_matches_reference():
    pytest.importorskip("flash_attn", reason="flash-attn is not installed")
    if not torch.cuda.is_available():
        pytest.skip("flash-attn needs a CUDA device")
    q, k, v = (z.cuda().to(torch.bfloat16) for z in qkv(t=64, d=64))
    slopes = attention.alibi_slopes(4)
    for s in (None, slopes):
        assert torch.allclose(attention.flash(q, k, v, s).float(), attention.reference(q, k, v, s).float(), atol=2e-2)
    with pytest.raises(ValueError):
        attention.flash(q, k, v, slopes, DOCS.cuda())


# --- choosing an implementation ---

def test_choose_auto_on_cpu_is_sdpa():
    cpu = torch.device("cpu")
    for alibi in (False, True):
        for doc_mask in (False, True):
            assert attention.choose("auto", alibi, cpu, doc_mask) == "sdpa"


def test_choose_auto_on_cuda(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(attention, "flash_available", lambda: False)
    assert attention.choose("auto", True, cuda, False) == "flex"
    assert attention.choose("auto", True, cuda, True) == "flex"
    assert attention.choose("auto", False, cuda, False) == "sdpa"
    assert attention.choose("auto", False, cuda, True) == "flex"
    monkeypatch.setattr(attention, "flash_available", lambda: True)
    assert attention.choose("auto", True, cuda, False) == "flash"
    assert attention.choose("auto", True, cuda, True) == "flex"  # flash-attn takes no document mask
    assert attention.choose("auto", False, cuda, False) == "sdpa"


def test_choose_auto_on_cuda_without_flash_attn_installed():
    if attention.flash_available():
        pytest.skip("flash-attn is installed here")
    assert attention.choose("auto", True, torch.device("cuda"), False) == "flex"


@pytest.mark.parametrize("impl", ["reference", "sdpa", "flex", "flash"])
def test_choose_returns_an_explicit_impl_unchanged(impl):
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert attention.choose(impl, True, device, True) == impl
