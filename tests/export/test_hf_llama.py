"""Importing Hugging Face Llama/Mistral checkpoints: same logits as transformers, clear refusals otherwise."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from codekiln.errors import UserError
from codekiln.export.hf_llama import config_from_llama, is_hf_llama_dir, load_llama
from codekiln.model.transformer import Transformer

torch.set_flush_denormal(True)

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)


def _randomize(model):
    """Random values everywhere, norms and biases included, so a swapped or dropped tensor changes the logits."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model


def _save(tmp_path, config_cls=transformers.LlamaConfig, model_cls=transformers.LlamaForCausalLM,
          max_shard_size=None, **overrides):
    """A random tiny HF model saved as safetensors under tmp_path; returns the HF model (eval, float32)."""
    torch.manual_seed(0)
    hf_cfg = config_cls(**{**TINY, **overrides})
    hf_cfg._attn_implementation = "eager"
    model = _randomize(model_cls(hf_cfg)).float().eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(tmp_path, safe_serialization=True, **kwargs)
    return model


def _assert_same_logits(hf_model, directory):
    cfg, state = load_llama(directory)
    ours = Transformer(cfg).eval()
    ours.load_state_dict(state, strict=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = hf_model(ids).logits
        got = ours(ids)
    assert want.abs().max() > 0.1  # the comparison is not of two near-zero tensors
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    return cfg


def test_mha_untied(tmp_path):
    hf = _save(tmp_path, tie_word_embeddings=False)
    cfg = _assert_same_logits(hf, tmp_path)
    assert (cfg.kv_heads, cfg.tie_embeddings, cfg.positions, cfg.mlp) == (4, False, "rope", "swiglu")
    assert cfg.ffn_hidden == 48
    assert cfg.context == 64 and cfg.norm_eps == hf.config.rms_norm_eps


def test_gqa_tied(tmp_path):
    hf = _save(tmp_path, num_key_value_heads=2, tie_word_embeddings=True)
    cfg, state = load_llama(tmp_path)
    assert cfg.kv_heads == 2 and cfg.tie_embeddings
    assert state["lm_head.weight"] is state["embed.weight"]
    _assert_same_logits(hf, tmp_path)


def test_rope_theta_500k(tmp_path):
    hf = _save(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    assert _assert_same_logits(hf, tmp_path).rope_theta == 500000.0


def test_attention_and_mlp_bias(tmp_path):
    hf = _save(tmp_path, attention_bias=True, mlp_bias=True)
    assert _assert_same_logits(hf, tmp_path).bias


def test_attention_bias_without_mlp_bias(tmp_path):
    hf = _save(tmp_path, attention_bias=True, mlp_bias=False)
    cfg, state = load_llama(tmp_path)
    assert cfg.bias and not state["blocks.0.mlp.up_proj.bias"].any()  # zero biases: the same function
    _assert_same_logits(hf, tmp_path)


def test_qwen2_qkv_biases(tmp_path):
    hf = _save(tmp_path, transformers.Qwen2Config, transformers.Qwen2ForCausalLM, num_key_value_heads=2,
               tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    cfg, state = load_llama(tmp_path)
    assert cfg.bias and cfg.rope_theta == 1e6 and state["blocks.1.attn.k_proj.bias"].abs().sum() > 0
    assert not state["blocks.1.attn.o_proj.bias"].any() and not state["blocks.1.mlp.down_proj.bias"].any()
    _assert_same_logits(hf, tmp_path)


def test_mistral_without_sliding_window(tmp_path):
    hf = _save(tmp_path, transformers.MistralConfig, transformers.MistralForCausalLM,
               num_key_value_heads=2, sliding_window=None)
    _assert_same_logits(hf, tmp_path)


def test_sharded_checkpoint(tmp_path):
    hf = _save(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    _assert_same_logits(hf, tmp_path)


def test_is_hf_llama_dir(tmp_path):
    assert not is_hf_llama_dir(tmp_path / "absent")
    _save(tmp_path / "llama")
    assert is_hf_llama_dir(tmp_path / "llama")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "gpt2" / "model.safetensors").write_bytes((tmp_path / "llama" / "model.safetensors").read_bytes())
    assert not is_hf_llama_dir(tmp_path / "gpt2")


def _llama_dict(**overrides):
    return transformers.LlamaConfig(**{**TINY, **overrides}).to_dict()


@pytest.mark.parametrize("hf, field", [
    (_llama_dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "rope_parameters"),
    ({**_llama_dict(), "rope_parameters": None, "rope_theta": 10000.0,
      "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({**_llama_dict(), "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0}},
     "llama3"),
    (_llama_dict(hidden_act="gelu"), "hidden_act"),
    (_llama_dict(head_dim=16), "head_dim"),
    (transformers.MistralConfig(**TINY).to_dict(), "sliding_window"),
    ({**_llama_dict(), "model_type": "gemma"}, "model_type"),
    (transformers.Qwen2Config(**TINY, use_sliding_window=True, sliding_window=16).to_dict(), "use_sliding_window"),
    ({k: v for k, v in _llama_dict().items() if k != "intermediate_size"}, "intermediate_size"),
])
def test_config_refusals_name_the_field(hf, field):
    with pytest.raises(UserError, match=field):
        config_from_llama(hf)


def test_old_style_config_with_top_level_rope_theta():
    hf = {**_llama_dict(), "rope_parameters": None, "rope_scaling": None, "rope_theta": 250000.0}
    assert config_from_llama(hf).rope_theta == 250000.0


def test_load_refusals(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_llama(tmp_path / "absent")
    with pytest.raises(UserError, match="config.json"):
        load_llama(tmp_path)

    scaled = tmp_path / "scaled"
    transformers.LlamaConfig(**TINY, rope_scaling={"rope_type": "linear", "factor": 2.0}).save_pretrained(scaled)
    with pytest.raises(UserError, match="'linear'"):
        load_llama(scaled)

    gpt2 = tmp_path / "gpt2"
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4).save_pretrained(gpt2)
    with pytest.raises(UserError, match="'gpt2'"):
        load_llama(gpt2)

    pickled = tmp_path / "pickled"
    transformers.LlamaConfig(**TINY).save_pretrained(pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UserError, match="pytorch_model.bin"):
        load_llama(pickled)


def test_missing_unexpected_and_misshapen_tensors(tmp_path):
    _save(tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(weights)

    save_file({k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}, weights,
              metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
        load_llama(tmp_path)

    save_file({**tensors, "model.layers.2.mlp.up_proj.weight": torch.zeros(48, 32)}, weights,
              metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"unexpected tensor model\.layers\.2\.mlp\.up_proj\.weight"):
        load_llama(tmp_path)

    save_file(tensors, weights, metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    with pytest.raises(UserError, match=r"gate_proj\.weight has shape \[48, 32\]"):
        load_llama(tmp_path)
