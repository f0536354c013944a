"""A codekiln model as a stock Hugging Face architecture, both ways: which class, its config.json, its tensors.

A shared seam (ARCHITECTURE.md): `codekiln export hf` writes through it and checkpoint reading
(`codekiln.load` on an exported directory) reads back through it, so the names live in one place.

    positions  norm       mlp            stock class          kv heads
    rope       rmsnorm    swiglu         LlamaForCausalLM     native grouped-query attention
    alibi      layernorm  gelu, 4 x d    MptForCausalLM       repeated to n_heads (MPT has no GQA)
    rope       layernorm  gelu           GPTNeoXForCausalLM   repeated to n_heads (GPT-NeoX has no GQA)

Each computes exactly our function: the same RoPE half-split (rotate_half) layout as Llama and
GPT-NeoX, MPT's ALiBi slopes and its exact (erf) GELU, bias-free LayerNorm in MPT, q/k/v clamping
as MPT's `clip_qkv`. Repeating a key/value head for every query head of its group is what grouped-
query attention computes, so the MHA model is the same function with more weights. GPT-NeoX always
has biases in every linear and norm and its own LM head (embed_out) in its canonical form, which some
engines assume: without our `bias` the biases are written as zeros (adding zero is exact), and a tied
embedding is written twice.
Anything without an exact equivalent is refused with a UserError that names the option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from codekiln.errors import UserError
from codekiln.model import ModelConfig

EXPORT_FILE = "codekiln.json"  # beside config.json: the original ModelConfig, so codekiln restores it exactly
ALIBI_BIAS_MAX = 8.0  # transformers' MptModel builds ALiBi with the default bias max, whatever attn_config says


@dataclass(frozen=True)
class Layout:
    """The stock class a model exports as, and how many copies of each key/value head it needs."""

    architecture: str
    model_type: str
    repeat_kv: int  # 1 where the class has grouped-query attention or the model is MHA


def layout(cfg: ModelConfig) -> Layout:
    """The exact stock equivalent of a ModelConfig; a UserError naming the first option that has none."""
    family = (cfg.positions, cfg.norm, cfg.mlp)
    repeat = cfg.n_heads // cfg.kv_heads
    if cfg.clip_qkv is not None and cfg.clip_qkv <= 0:
        raise UserError(f"clip_qkv {cfg.clip_qkv} has no stock equivalent (stock classes clip to a positive bound)")
    if family == ("rope", "rmsnorm", "swiglu"):
        if cfg.clip_qkv is not None:
            raise UserError(f"clip_qkv {cfg.clip_qkv} with RoPE has no stock equivalent "
                            "(Llama does not clip q, k, v)")
        return Layout("LlamaForCausalLM", "llama", 1)
    if family == ("alibi", "layernorm", "gelu"):
        if cfg.bias:
            raise UserError("bias true with ALiBi has no stock equivalent (MPT's linears and norms have no biases)")
        if cfg.hidden != 4 * cfg.d_model:
            raise UserError(f"ffn_hidden {cfg.hidden} with ALiBi has no stock equivalent "
                            f"(MPT's MLP is 4 x d_model = {4 * cfg.d_model})")
        if cfg.alibi_bias_max != ALIBI_BIAS_MAX:
            raise UserError(f"alibi_bias_max {cfg.alibi_bias_max} has no stock equivalent "
                            f"(transformers' MPT always uses {ALIBI_BIAS_MAX:g})")
        return Layout("MptForCausalLM", "mpt", repeat)
    if family == ("rope", "layernorm", "gelu"):
        if cfg.clip_qkv is not None:
            raise UserError(f"clip_qkv {cfg.clip_qkv} with RoPE has no stock equivalent "
                            "(GPT-NeoX does not clip q, k, v)")
        return Layout("GPTNeoXForCausalLM", "gpt_neox", repeat)
    exporters = ("RoPE exports with rmsnorm + swiglu (Llama) or layernorm + gelu (GPT-NeoX), "
                 "ALiBi with layernorm + gelu (MPT)")
    raise UserError(f"positions {cfg.positions} with norm {cfg.norm} and mlp {cfg.mlp} has no stock equivalent "
                    f"({exporters})")


def hf_config(cfg: ModelConfig, eot_id: int, dtype: str) -> dict:
    """config.json for the stock class (fields that every reader of that architecture understands)."""
    lay = layout(cfg)
    common = {"architectures": [lay.architecture], "model_type": lay.model_type, "vocab_size": cfg.vocab_size,
              "tie_word_embeddings": cfg.tie_embeddings and lay.model_type != "gpt_neox",
              "bos_token_id": eot_id, "eos_token_id": eot_id, "torch_dtype": dtype,
              "initializer_range": cfg.init_std, "use_cache": True}
    if lay.model_type == "llama":
        return {**common, "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden,
                "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
                "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
                "max_position_embeddings": cfg.context, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
                "rope_scaling": None, "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": 0.0,
                "pretraining_tp": 1}
    if lay.model_type == "mpt":
        clip = None if cfg.clip_qkv is None else float(cfg.clip_qkv)  # transformers' config fields are typed
        attn = {"attn_type": "multihead_attention", "attn_impl": "torch", "attn_pdrop": 0, "alibi": True,
                "alibi_bias_max": int(ALIBI_BIAS_MAX), "clip_qkv": clip, "softmax_scale": None,
                "qk_ln": False, "prefix_lm": False, "attn_uses_sequence_id": False}
        return {**common, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "n_layers": cfg.n_layers,
                "expansion_ratio": 4, "max_seq_len": cfg.context, "layer_norm_epsilon": cfg.norm_eps,
                "learned_pos_emb": False, "no_bias": True, "norm_type": "low_precision_layernorm",
                "resid_pdrop": 0.0, "emb_pdrop": 0.0, "embedding_fraction": 1.0, "logit_scale": None,
                "attn_config": attn}
    return {**common, "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "hidden_act": "gelu",
            # transformers reads rotary_emb_base, vLLM and SGLang rope_theta: both, equal
            "max_position_embeddings": cfg.context, "layer_norm_eps": cfg.norm_eps, "rotary_pct": 1.0,
            "rotary_emb_base": cfg.rope_theta, "rope_theta": cfg.rope_theta, "use_parallel_residual": False,
            "attention_bias": True, "attention_dropout": 0.0, "hidden_dropout": 0.0}


def _repeat_heads(w: torch.Tensor, cfg, repeat: int) -> torch.Tensor:
    """A k or v projection [kv_heads * hd, ...] with each head repeated for the query heads of its group."""
    heads = w.reshape(cfg.kv_heads, cfg.head_dim, *w.shape[1:])
    return heads.repeat_interleave(repeat, dim=0).reshape(cfg.n_heads * cfg.head_dim, *w.shape[1:])


def _unrepeat_heads(w: torch.Tensor, cfg, repeat: int, name: str) -> torch.Tensor:
    """The inverse of _repeat_heads; a UserError when the copies differ (the weights changed after export)."""
    heads = w.reshape(cfg.kv_heads, repeat, cfg.head_dim, *w.shape[1:])
    if not torch.equal(heads, heads[:, :1].expand_as(heads)):
        raise UserError(f"{name}: the repeated key/value heads differ: the weights were changed after export "
                        f"and are no longer a {cfg.kv_heads}-kv-head model, so codekiln.json no longer describes them")
    return heads[:, 0].reshape(cfg.kv_heads * cfg.head_dim, *w.shape[1:])


def _plain_names(cfg, lay: Layout) -> dict[str, str]:
    """Our name -> the stock name, for every tensor that maps one to one."""
    if lay.model_type == "llama":
        top = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
        layer = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
                 "attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj",
                 "attn.v_proj": "self_attn.v_proj", "attn.o_proj": "self_attn.o_proj",
                 "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.up_proj", "mlp.down_proj": "mlp.down_proj"}
        prefix, lm_head = "model.layers", "lm_head.weight"
    elif lay.model_type == "mpt":
        top = {"embed.weight": "transformer.wte.weight", "norm.weight": "transformer.norm_f.weight"}
        layer = {"attn_norm.weight": "norm_1.weight", "mlp_norm.weight": "norm_2.weight",
                 "attn.o_proj": "attn.out_proj", "mlp.up_proj": "ffn.up_proj", "mlp.down_proj": "ffn.down_proj"}
        prefix, lm_head = "transformer.blocks", "lm_head.weight"
    else:
        top = {"embed.weight": "gpt_neox.embed_in.weight", "norm.weight": "gpt_neox.final_layer_norm.weight",
               "norm.bias": "gpt_neox.final_layer_norm.bias"}
        layer = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
                 "attn.o_proj": "attention.dense", "mlp.up_proj": "mlp.dense_h_to_4h",
                 "mlp.down_proj": "mlp.dense_4h_to_h"}
        prefix, lm_head = "gpt_neox.layers", "embed_out.weight"  # embed_out: the name on the Hub and in vLLM
    zeros = _zero_biases(cfg, lay)
    names = dict(top)
    for i in range(cfg.n_layers):
        for ours, theirs in layer.items():
            if ours.endswith((".weight", ".bias")):
                names[f"blocks.{i}.{ours}"] = f"{prefix}.{i}.{theirs}"
            else:
                for kind in ("weight", "bias"):
                    names[f"blocks.{i}.{ours}.{kind}"] = f"{prefix}.{i}.{theirs}.{kind}"
    if not cfg.bias:  # what remains: GPT-NeoX's always-present biases, written as zeros
        names = {ours: theirs for ours, theirs in names.items()
                 if not ours.endswith(".bias") or ours in zeros}
    if not cfg.tie_embeddings or lay.model_type == "gpt_neox":  # engines' GPT-NeoX always reads its own embed_out
        names["lm_head.weight"] = lm_head
    return names


def _fused_qkv(lay: Layout, i: int) -> str | None:
    """Layer i's fused q/k/v projection in the stock class (no suffix); None where q, k, v are separate."""
    return {"mpt": f"transformer.blocks.{i}.attn.Wqkv",
            "gpt_neox": f"gpt_neox.layers.{i}.attention.query_key_value"}.get(lay.model_type)


def to_hf(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """Our full state dict -> the stock class's tensors, contiguous and each its own storage (as safetensors wants)."""
    lay = layout(cfg)
    names = _plain_names(cfg, lay)
    dtype = state["embed.weight"].dtype
    state = {**{n: torch.zeros(shape, dtype=dtype) for n, shape in _zero_biases(cfg, lay).items()}, **state}
    out = {theirs: state[ours] for ours, theirs in names.items()}
    for i in range(cfg.n_layers):
        fused = _fused_qkv(lay, i)
        if fused is None:
            continue
        for kind in ("weight", "bias"):
            q = state.get(f"blocks.{i}.attn.q_proj.{kind}")
            if q is None:
                continue
            k = _repeat_heads(state[f"blocks.{i}.attn.k_proj.{kind}"], cfg, lay.repeat_kv)
            v = _repeat_heads(state[f"blocks.{i}.attn.v_proj.{kind}"], cfg, lay.repeat_kv)
            if lay.model_type == "mpt":  # [q; k; v], each n_heads * head_dim rows
                out[f"{fused}.{kind}"] = torch.cat([q, k, v])
            else:  # GPT-NeoX interleaves per head: [head, (q, k, v), head_dim]
                per_head = [z.reshape(cfg.n_heads, 1, cfg.head_dim, *z.shape[1:]) for z in (q, k, v)]
                out[f"{fused}.{kind}"] = torch.cat(per_head, dim=1).reshape(3 * cfg.d_model, *q.shape[1:])
    stored, shared = {}, set()
    for name, value in sorted(out.items()):
        value = value.detach().contiguous()
        if value.data_ptr() in shared:  # safetensors stores each tensor once: a tied head written twice is copied
            value = value.clone()
        shared.add(value.data_ptr())
        stored[name] = value
    return stored


def _zero_biases(cfg, lay: Layout) -> dict[str, tuple[int, ...]]:
    """Our names (and shapes) of the biases the stock class has but our model lacks: written as zeros."""
    if lay.model_type != "gpt_neox" or cfg.bias:
        return {}
    d, kvd = cfg.d_model, cfg.kv_heads * cfg.head_dim
    zeros = {"norm.bias": (d,)}
    for i in range(cfg.n_layers):
        zeros.update({f"blocks.{i}.attn.q_proj.bias": (d,), f"blocks.{i}.attn.k_proj.bias": (kvd,),
                      f"blocks.{i}.attn.v_proj.bias": (kvd,), f"blocks.{i}.attn.o_proj.bias": (d,)})
        zeros.update({f"blocks.{i}.attn_norm.bias": (d,), f"blocks.{i}.mlp_norm.bias": (d,),
                      f"blocks.{i}.mlp.up_proj.bias": (cfg.hidden,), f"blocks.{i}.mlp.down_proj.bias": (d,)})
    return zeros


def from_hf(tensors: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """The inverse of to_hf: a state dict `Transformer(cfg).load_state_dict` takes strictly (lm_head included)."""
    lay = layout(cfg)
    names = _plain_names(cfg, lay)

    def take(name):
        if name not in tensors:
            raise UserError(f"exported weights lack tensor {name}")
        return tensors[name]

    zeros = _zero_biases(cfg, lay)
    state = {ours: take(theirs) for ours, theirs in names.items()}
    for i in range(cfg.n_layers):
        fused = _fused_qkv(lay, i)
        if fused is None:
            continue
        for kind in ("weight", "bias") if cfg.bias or zeros else ("weight",):
            w = take(f"{fused}.{kind}")
            if lay.model_type == "mpt":
                q, k, v = w.chunk(3)
            else:
                q, k, v = w.reshape(cfg.n_heads, 3, cfg.head_dim, *w.shape[1:]).unbind(1)
                q, k, v = (z.reshape(cfg.d_model, *w.shape[1:]) for z in (q, k, v))
            state[f"blocks.{i}.attn.q_proj.{kind}"] = q
            state[f"blocks.{i}.attn.k_proj.{kind}"] = _unrepeat_heads(k, cfg, lay.repeat_kv, f"{fused}.{kind}")
            state[f"blocks.{i}.attn.v_proj.{kind}"] = _unrepeat_heads(v, cfg, lay.repeat_kv, f"{fused}.{kind}")
    for name in zeros:
        if torch.count_nonzero(state.pop(name)):
            raise UserError(f"the exported bias for {name} is not zero (our model has none): the weights were "
                            "changed after export, so codekiln.json no longer describes them")
    if cfg.tie_embeddings:
        if not torch.equal(state.get("lm_head.weight", state["embed.weight"]), state["embed.weight"]):
            raise UserError("the exported LM head differs from the embedding (our model ties them): the weights "
                            "were changed after export, so codekiln.json no longer describes them")
        state["lm_head.weight"] = state["embed.weight"]
    return {k: v.contiguous() for k, v in state.items()}


def is_export(path) -> bool:
    """True for a directory written by `codekiln export hf` (config.json, model.safetensors and codekiln.json)."""
    p = Path(path)
    return all((p / name).is_file() for name in ("config.json", "model.safetensors", EXPORT_FILE))


def export_model_config(directory) -> ModelConfig:
    """The original ModelConfig an export recorded in codekiln.json (GQA and every option included)."""
    path = Path(directory) / EXPORT_FILE
    try:
        return ModelConfig.from_dict(json.loads(path.read_text())["model"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a codekiln export record (no model config)") from None


def read_export_tensors(directory, cfg) -> dict[str, torch.Tensor]:
    """An export's model.safetensors as our full state dict, in float32 (the values as exported)."""
    path = Path(directory) / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise UserError(f"{path} is not a valid safetensors file: {exc}") from None
    return {k: v.float() for k, v in from_hf(tensors, cfg).items()}
