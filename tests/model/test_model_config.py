"""Model config: validation, presets, round-trips, parameter and FLOP counts (all on the meta device)."""

import pytest
import torch

from codekiln.errors import UserError
from codekiln.model import PRESETS, ModelConfig, Transformer, flops_per_token, param_count, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_on_meta_with_the_counted_parameters_and_logit_shape(name):
    cfg = preset(name)
    with torch.device("meta"):
        model = Transformer(cfg)
        logits = model(torch.zeros(2, 16, dtype=torch.long))
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    assert logits.shape == (2, 16, cfg.vocab_size)


@pytest.mark.parametrize("options", [
    dict(bias=True),
    dict(norm="rmsnorm", bias=True),
    dict(mlp="swiglu"),
    dict(mlp="swiglu", bias=True, kv_heads=1),
    dict(tie_embeddings=False, kv_heads=2, positions="rope"),
    dict(ffn_hidden=100, norm="rmsnorm"),
])
def test_param_count_matches_the_built_model_for_every_option(options):
    cfg = ModelConfig(vocab_size=1000, d_model=64, n_layers=3, n_heads=4, **options)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    embed = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    assert param_count(cfg, embeddings=False) == param_count(cfg) - embed


def test_replit_v1_3b_has_the_published_shape():
    cfg = preset("replit-v1-3b")
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.kv_heads) == (2560, 32, 32, 32)
    assert (cfg.context, cfg.vocab_size) == (2048, 32768)
    assert cfg.bias is False and cfg.positions == "alibi"
    assert 2.5e9 < param_count(cfg) < 2.8e9
    with torch.device("meta"):
        model = Transformer(cfg)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]


def test_replit_v1_5_3b_has_the_published_shape():
    cfg = preset("replit-v1.5-3b")
    assert (cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.context) == (3072, 24, 8, 4096)
    with torch.device("meta"):
        model = Transformer(cfg)
    k_proj = model.blocks[0].attn.k_proj.weight
    assert k_proj.shape == (8 * 128, 3072)


@pytest.mark.parametrize("options, words", [
    (dict(n_heads=8, kv_heads=3), "kv_heads"),
    (dict(n_heads=4, kv_heads=8), "kv_heads"),
    (dict(n_heads=4, kv_heads=0), "kv_heads"),
    (dict(positions="learned"), "positions"),
    (dict(d_model=100, n_heads=8), "divisible"),
    (dict(norm="batchnorm"), "norm"),
    (dict(mlp="relu"), "mlp"),
    (dict(attn_impl="xformers"), "attn_impl"),
    (dict(d_model=36, n_heads=4, positions="rope"), "RoPE"),
    (dict(n_layers=0), "positive"),
])
def test_invalid_configs_are_user_errors_that_name_the_field(options, words):
    with pytest.raises(UserError, match=words):
        ModelConfig(**options)


def test_kv_heads_none_means_multi_head():
    assert ModelConfig(n_heads=8, d_model=64).kv_heads == 8


@pytest.mark.parametrize("cfg", [ModelConfig(), preset("replit-v1.5-3b", positions="rope", clip_qkv=6.0),
                                 ModelConfig(mlp="swiglu", norm="rmsnorm", ffn_hidden=96, tie_embeddings=False)])
def test_dict_round_trip(cfg):
    d = cfg.to_dict()
    assert "extra" not in d
    assert ModelConfig.from_dict(d) == cfg


def test_unknown_key_in_from_dict_is_a_user_error():
    with pytest.raises(UserError, match="d_modle"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "d_modle": 12})


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="nope"):
        preset("nope")


def test_preset_overrides():
    assert preset("tiny", positions="rope").positions == "rope"
    assert preset("tiny").positions == "alibi"
    with pytest.raises(UserError):
        preset("tiny", kv_heads=3)


def test_hidden_width_rules():
    assert ModelConfig(d_model=256).hidden == 1024
    assert ModelConfig(d_model=256, mlp="swiglu").hidden == 768  # 2/3 * 4 * 256 = 682.7 -> next multiple of 256
    assert ModelConfig(d_model=4096, n_heads=32, mlp="swiglu").hidden == 11008  # Llama-7B
    assert ModelConfig(d_model=256, ffn_hidden=300).hidden == 300


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_flops_per_token_is_6n_matmul_plus_attention(tie, mlp):
    # Hand count: matmul weights only (no norms, no input lookup), LM head included even when tied.
    L, d, h, kv, vocab, hidden, t = 3, 64, 8, 2, 500, 96, 40
    cfg = ModelConfig(vocab_size=vocab, d_model=d, n_layers=L, n_heads=h, kv_heads=kv, context=128,
                      mlp=mlp, ffn_hidden=hidden, tie_embeddings=tie)
    hd = d // h
    attn = d * d + 2 * d * kv * hd + d * d
    ffn = (3 if mlp == "swiglu" else 2) * d * hidden
    n_matmul = L * (attn + ffn) + vocab * d
    assert flops_per_token(cfg, t) == 6 * n_matmul + 12 * L * d * t
    assert flops_per_token(cfg) == 6 * n_matmul + 12 * L * d * 128
