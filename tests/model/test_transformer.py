"""The whole model: layout, GQA vs MHA, implementations agree, causality, documents, RoPE, clipping, training."""

import math

import pytest
import torch
import torch.nn.functional as F

from codekiln.model import ModelConfig, Transformer, attention
from codekiln.model.transformer import Attention, RMSNorm, apply_rope, rope_tables

SMALL = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, context=64)


def build(seed=0, **options):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**{**SMALL, **options})).eval()


def tokens(b=2, t=24, vocab=97, seed=1):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# --- module layout ---

@pytest.mark.parametrize("norm, cls", [("layernorm", torch.nn.LayerNorm), ("rmsnorm", RMSNorm)])
def test_norm_choice(norm, cls):
    model = build(norm=norm)
    norms = [model.norm] + [m for b in model.blocks for m in (b.attn_norm, b.mlp_norm)]
    assert all(type(m) is cls for m in norms)


def test_rmsnorm_normalises_root_mean_square():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.fill_(2.0)
    y = norm(torch.randn(3, 16) * 7 + 1)
    assert torch.allclose(y.pow(2).mean(-1).sqrt(), torch.full((3,), 2.0), atol=1e-4)


def test_gate_proj_exists_only_for_swiglu():
    swiglu = {n for n, _ in build(mlp="swiglu").named_parameters()}
    gelu = {n for n, _ in build(mlp="gelu").named_parameters()}
    assert "blocks.0.mlp.gate_proj.weight" in swiglu and "blocks.1.mlp.gate_proj.weight" in swiglu
    assert not any("gate_proj" in n for n in gelu)
    assert "blocks.0.mlp.up_proj.weight" in gelu and "blocks.0.mlp.down_proj.weight" in gelu


@pytest.mark.parametrize("options", [dict(), dict(norm="rmsnorm", mlp="swiglu", tie_embeddings=False)])
def test_no_bias_means_no_bias_parameters(options):
    names = [n for n, _ in build(bias=False, **options).named_parameters()]
    assert not [n for n in names if "bias" in n]


def test_bias_true_adds_biases_everywhere_but_the_lm_head():
    model = build(bias=True, mlp="swiglu")
    names = {n for n, _ in model.named_parameters()}
    for part in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                 "mlp.down_proj", "attn_norm", "mlp_norm"):
        assert f"blocks.0.{part}.bias" in names
    assert "norm.bias" in names and "lm_head.bias" not in names
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if n.endswith(".bias"))


def test_tied_embeddings_share_storage():
    tied = build(tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed.weight
    untied = build(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed.weight
    assert untied.lm_head.weight.data_ptr() != untied.embed.weight.data_ptr()
    assert not torch.equal(untied.lm_head.weight, untied.embed.weight)


def test_init_scales_residual_projections():
    model = build(d_model=256, n_heads=4, n_layers=8, vocab_size=512)
    std = lambda n: dict(model.named_parameters())[n].std().item()  # noqa: E731
    assert std("blocks.0.attn.q_proj.weight") == pytest.approx(0.02, rel=0.05)
    assert std("blocks.0.attn.o_proj.weight") == pytest.approx(0.02 / 4, rel=0.05)
    assert std("blocks.0.mlp.down_proj.weight") == pytest.approx(0.02 / 4, rel=0.05)


def test_built_on_meta_then_materialised_gets_correct_slopes():
    cfg = ModelConfig(**SMALL)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.reset_parameters()
    assert torch.equal(model.alibi_slopes, attention.alibi_slopes(4))
    assert torch.isfinite(model(tokens())).all()


# --- GQA ---

@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_kv_heads_equal_to_heads_is_multi_head(positions):
    x = tokens()
    a = build(seed=3, positions=positions, kv_heads=None)
    b = build(seed=3, positions=positions, kv_heads=4)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("positions", ["alibi", "rope"])
@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_gqa_equals_mha_with_kv_weights_repeated_per_group(positions, impl):
    gqa = build(seed=4, positions=positions, kv_heads=2, attn_impl=impl)
    mha = build(seed=5, positions=positions, kv_heads=None, attn_impl=impl)
    group, hd = 2, SMALL["d_model"] // SMALL["n_heads"]
    state = {}
    for name, p in gqa.state_dict().items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            p = p.view(2, hd, -1).repeat_interleave(group, dim=0).reshape(4 * hd, -1)
        state[name] = p
    mha.load_state_dict(state)
    x = tokens()
    assert not torch.allclose(gqa(x), build(seed=5, positions=positions)(x))  # the copy is what makes them agree
    assert torch.allclose(gqa(x), mha(x), atol=1e-5)


# --- implementations agree on the whole model ---

@pytest.mark.parametrize("positions", ["alibi", "rope"])
@pytest.mark.parametrize("kv_heads", [None, 2])
@pytest.mark.parametrize("docs", [False, True])
def test_sdpa_model_equals_reference_model(positions, kv_heads, docs):
    model = build(positions=positions, kv_heads=kv_heads, mlp="swiglu", norm="rmsnorm")
    x = tokens()
    doc_ids = torch.tensor([[0] * 9 + [1] * 15, [0] * 3 + [1] * 20 + [2]]) if docs else None
    model.attn_impl = "sdpa"
    fast = model(x, doc_ids)
    model.attn_impl = "reference"
    slow = model(x, doc_ids)
    assert fast.shape == (2, 24, SMALL["vocab_size"])
    assert torch.allclose(fast, slow, atol=1e-5)


def test_attn_impl_from_config_is_used(monkeypatch):
    model = build(attn_impl="reference")
    calls = []
    monkeypatch.setitem(attention.IMPLS, "reference", lambda *a, **k: calls.append(1) or attention.reference(*a, **k))
    model(tokens())
    assert len(calls) == SMALL["n_layers"]


# --- causality and documents ---

@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_future_tokens_do_not_change_earlier_logits(positions):
    model = build(positions=positions)
    x = tokens(b=1, t=20)
    y = x.clone()
    y[0, 12] = (x[0, 12] + 1) % SMALL["vocab_size"]
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


@pytest.mark.parametrize("positions", ["alibi", "rope"])
@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_a_packed_document_sees_only_itself(positions, impl):
    model = build(positions=positions, attn_impl=impl)
    x = tokens(b=1, t=30)
    doc_ids = torch.tensor([[0] * 11 + [1] * 19])
    packed = model(x, doc_ids)
    alone_first = model(x[:, :11])
    alone_second = model(x[:, 11:])
    assert torch.allclose(packed[:, :11], alone_first, atol=1e-5)
    assert torch.allclose(packed[:, 11:], alone_second, atol=1e-4)
    assert not torch.allclose(model(x)[:, 11:], alone_second, atol=1e-3)  # without doc_ids it sees the first


# --- RoPE ---

def test_rope_at_position_zero_is_identity():
    cos, sin = rope_tables(16, 5, 10000.0)
    assert cos.shape == sin.shape == (5, 16)
    assert torch.equal(cos[0], torch.ones(16)) and torch.equal(sin[0], torch.zeros(16))
    x = torch.randn(2, 3, 1, 16)
    assert torch.equal(apply_rope(x, cos[:1], sin[:1]), x)


def test_rope_preserves_norms():
    cos, sin = rope_tables(32, 50, 10000.0)
    x = torch.randn(2, 3, 50, 32)
    y = apply_rope(x, cos, sin)
    assert not torch.allclose(x, y)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4)


def test_rope_is_the_half_split_complex_rotation():
    d, t, theta = 8, 7, 500.0
    cos, sin = rope_tables(d, t, theta)
    x = torch.randn(1, 2, t, d, dtype=torch.float64)
    z = torch.complex(x[..., : d // 2], x[..., d // 2:])
    angle = torch.arange(t, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotated = z * torch.polar(torch.ones_like(angle), angle)
    expected = torch.cat([rotated.real, rotated.imag], dim=-1)
    assert torch.allclose(apply_rope(x.float(), cos, sin).double(), expected, atol=1e-5)


def test_rope_scores_depend_only_on_the_offset():
    cos, sin = rope_tables(16, 40, 10000.0)
    q, k = torch.randn(16), torch.randn(16)
    rot = lambda v, p: apply_rope(v.view(1, 1, 1, 16), cos[p:p + 1], sin[p:p + 1]).flatten()  # noqa: E731
    assert rot(q, 9) @ rot(k, 4) == pytest.approx((rot(q, 30) @ rot(k, 25)).item(), abs=1e-4)
    assert rot(q, 9) @ rot(k, 4) != pytest.approx((rot(q, 9) @ rot(k, 8)).item(), abs=1e-4)


# --- clip_qkv ---

def test_clip_qkv_clamps_q_k_v(monkeypatch):
    seen = {}

    def spy(q, k, v, slopes=None, doc_ids=None):
        seen.update(q=q, k=k, v=v)
        return attention.reference(q, k, v, slopes, doc_ids)

    monkeypatch.setitem(attention.IMPLS, "spy", spy)
    x = torch.randn(2, 10, 32)
    outputs = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        attn = Attention(ModelConfig(**SMALL, kv_heads=2, clip_qkv=clip))
        outputs[clip] = attn(x, impl="spy")
        largest = max(seen[n].abs().max().item() for n in "qkv")
        if clip is None:
            assert largest > 1e-2
        else:
            assert largest == pytest.approx(clip)  # saturated at the bound, never past it
            assert all(torch.equal(seen[n], seen[n].clamp(-clip, clip)) for n in "qkv")
    assert not torch.allclose(outputs[None], outputs[1e-3], atol=1e-4)


def test_clip_qkv_changes_model_output():
    x = tokens()
    assert not torch.allclose(build(seed=2)(x), build(seed=2, clip_qkv=1e-3)(x), atol=1e-4)
    assert torch.equal(build(seed=2)(x), build(seed=2, clip_qkv=1e6)(x))  # a loose clip changes nothing


# --- training ---

@pytest.fixture
def one_thread():
    # A model this small gains nothing from threads, and spinning OpenMP workers slow it tenfold on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_one_batch(one_thread):
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    vocab = 256
    model = Transformer(ModelConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, kv_heads=2, context=32))
    batch = torch.randint(0, vocab, (4, 33), generator=torch.Generator().manual_seed(0))
    x, y = batch[:, :-1], batch[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss():
        return F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))

    first = loss().item()
    assert abs(first - math.log(vocab)) < 0.2  # an untrained model is near-uniform
    for _ in range(150):
        opt.zero_grad()
        l_ = loss()
        l_.backward()
        opt.step()
    assert loss().item() < 0.5
