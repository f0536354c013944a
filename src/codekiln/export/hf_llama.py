"""Read a Hugging Face Llama-family checkpoint as our ModelConfig and weights (`codekiln import hf` writes them).

`load_llama(directory)` reads a `save_pretrained` directory (config.json plus model.safetensors, or a
sharded model.safetensors.index.json and its shards) and returns our ModelConfig and a state dict that
`Transformer(cfg).load_state_dict(state)` takes as is (strict). Tensor names map as:

    model.embed_tokens.weight                         -> embed.weight
    model.layers.{i}.input_layernorm.weight           -> blocks.{i}.attn_norm.weight
    model.layers.{i}.self_attn.{q,k,v,o}_proj.*       -> blocks.{i}.attn.{q,k,v,o}_proj.*
    model.layers.{i}.post_attention_layernorm.weight  -> blocks.{i}.mlp_norm.weight
    model.layers.{i}.mlp.{gate,up,down}_proj.*        -> blocks.{i}.mlp.{gate,up,down}_proj.*
    model.norm.weight                                 -> norm.weight
    lm_head.weight (ignored when tied)                -> lm_head.weight (the embedding when tied)

q and k copy over unchanged: our RoPE uses the same half-split (rotate_half) layout as HF Llama.

Only model_type "llama", "mistral" with `sliding_window: null` and "qwen2" without a sliding window are
read; other look-alikes are refused rather than guessed at. Our one `bias` flag puts a bias on every
linear but the LM head; a model with biases on some linears only (Qwen2's q/k/v, Llama's attention_bias
without mlp_bias) is expressed exactly by zero biases on the others (adding zero changes nothing); those
then train like any bias. Anything our model would compute differently is refused with a one-line
UserError naming the config field: RoPE scaling (linear, dynamic, yarn, llama3, ...), an activation
other than SiLU, a head_dim other than hidden_size / num_attention_heads, a sliding window.
Weights are read with safetensors only, never by unpickling; tensors keep the checkpoint's dtype
(load_state_dict casts them into the model's).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from codekiln.errors import UserError
from codekiln.model import ModelConfig, Transformer

SUPPORTED = ("llama", "mistral", "qwen2")
SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"

# Hugging Face's class defaults (LlamaConfig, MistralConfig) for fields a config.json may leave out.
_DEFAULTS = {
    "llama": dict(max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu",
                  tie_word_embeddings=False, num_key_value_heads=None, sliding_window=None, initializer_range=0.02),
    "mistral": dict(max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu",
                    tie_word_embeddings=False, num_key_value_heads=8, sliding_window=4096, initializer_range=0.02),
    "qwen2": dict(max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu",
                  tie_word_embeddings=False, num_key_value_heads=None, sliding_window=None, initializer_range=0.02),
}
ATTENTION, MLP = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

_TOP_NAMES = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn": "self_attn", "mlp_norm": "post_attention_layernorm",
                "mlp": "mlp"}


def config_from_llama(hf: dict) -> ModelConfig:
    """Our ModelConfig for a Llama/Mistral config.json dict; a UserError for anything not representable exactly."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise UserError(f"model_type {model_type!r} is not supported; only {', '.join(SUPPORTED)} checkpoints "
                        "can be imported")
    missing = [k for k in _REQUIRED if hf.get(k) is None]
    if missing:
        raise UserError(f"config.json has no {missing[0]}")
    get = {**_DEFAULTS[model_type], **hf}.get
    heads, d_model = hf["num_attention_heads"], hf["hidden_size"]

    if get("hidden_act") not in ("silu", "swish"):
        raise UserError(f"hidden_act {get('hidden_act')!r} is not supported (our SwiGLU MLP uses silu)")
    head_dim = get("head_dim")
    if head_dim is not None and head_dim * heads != d_model:
        raise UserError(f"head_dim {head_dim} is not hidden_size / num_attention_heads = {d_model} / {heads}; "
                        "our attention derives the head width from d_model")
    # Qwen2 keeps a sliding_window value that only use_sliding_window switches on.
    window = get("sliding_window") if model_type != "qwen2" or get("use_sliding_window") else None
    if window is not None:
        field = "use_sliding_window" if model_type == "qwen2" else "sliding_window"
        raise UserError(f"{field} (a sliding window of {window}) is not supported (our attention is full causal)")
    bias = bool(source_biases(hf))
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        kv_heads=get("num_key_value_heads") or heads,
        context=get("max_position_embeddings"),
        positions="rope",
        rope_theta=float(_rope_theta(hf, get("rope_theta"))),
        norm="rmsnorm",
        norm_eps=float(get("rms_norm_eps")),
        mlp="swiglu",
        ffn_hidden=hf["intermediate_size"],
        bias=bias,
        tie_embeddings=bool(get("tie_word_embeddings")),
        init_std=float(get("initializer_range")),
    )


def source_biases(hf: dict) -> set[str]:
    """The linears (q_proj, ..., down_proj) that have a bias in a Llama/Mistral/Qwen2 config."""
    if hf.get("model_type") == "qwen2":  # Qwen2's attention has q/k/v biases and an o_proj without
        return {"q_proj", "k_proj", "v_proj"}
    if hf.get("model_type") == "mistral":
        return set()
    return ({*ATTENTION} if hf.get("attention_bias") else set()) | ({*MLP} if hf.get("mlp_bias") else set())


def _rope_theta(hf: dict, default_theta: float) -> float:
    """RoPE base from `rope_parameters` (transformers 5) or top-level `rope_theta`; any scaling is refused."""
    params = hf.get("rope_parameters") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise UserError("rope_parameters per layer type are not supported (one RoPE for every layer)")
    for field, spec in (("rope_parameters", params), ("rope_scaling", hf.get("rope_scaling") or {})):
        kind = spec.get("rope_type", spec.get("type"))
        if kind not in (None, "default"):
            raise UserError(f"{field} type {kind!r} is not supported (our RoPE has no scaling)")
    factor = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if factor not in (None, 1, 1.0):
        raise UserError(f"partial_rotary_factor {factor} is not supported (our RoPE rotates the whole head)")
    return params.get("rope_theta", default_theta)


def hf_name(ours: str) -> str:
    """The Hugging Face Llama name of one of our parameter names."""
    if ours in _TOP_NAMES:
        return _TOP_NAMES[ours]
    m = re.fullmatch(r"blocks\.(\d+)\.(attn_norm|attn|mlp_norm|mlp)\.(.+)", ours)
    if m is None:
        raise KeyError(f"no Hugging Face name for {ours}")
    return f"model.layers.{m[1]}.{_LAYER_NAMES[m[2]]}.{m[3]}"


def is_hf_llama_dir(directory) -> bool:
    """True for a directory with a llama, mistral or qwen2 config.json and safetensors weights."""
    d = Path(directory)
    try:
        hf = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(hf, dict) and hf.get("model_type") in SUPPORTED
            and ((d / SINGLE).is_file() or (d / INDEX).is_file()))


def _read_config(directory: Path) -> dict:
    """config.json as a dict; a UserError when the directory or the file is missing or not JSON."""
    if not directory.is_dir():
        raise UserError(f"Hugging Face checkpoint not found: {directory} is not a directory")
    path = directory / "config.json"
    if not path.is_file():
        raise UserError(f"{directory} has no config.json; it is not a Hugging Face checkpoint directory")
    try:
        hf = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(hf, dict):
        raise UserError(f"{path} must hold a JSON object")
    return hf


def _tensor_files(directory: Path) -> dict[str, Path]:
    """Every tensor name in the checkpoint -> the safetensors file that holds it (read from the files' headers)."""
    if (directory / SINGLE).is_file():
        files = [directory / SINGLE]
    elif (directory / INDEX).is_file():
        try:
            weight_map = json.loads((directory / INDEX).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{directory / INDEX} is not a safetensors index (no weight_map)") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        absent = [f for f in files if not f.is_file()]
        if absent:
            raise UserError(f"{directory / INDEX} names shard {absent[0].name}, which is missing")
    else:
        pickled = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (directory / n).exists()]
        hint = f" (it holds {pickled[0]}, a pickle: re-save with safe_serialization=True)" if pickled else ""
        raise UserError(f"{directory} has no {SINGLE} or {INDEX}; only safetensors checkpoints are read{hint}")
    names = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as fh:
                names.update(dict.fromkeys(fh.keys(), path))
        except SafetensorError as exc:
            raise UserError(f"{path} is not a valid safetensors file: {exc}") from None
    return names


def load_llama(directory) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Our config and a strict-loadable state dict from a Hugging Face Llama/Mistral safetensors checkpoint."""
    directory = Path(directory)
    hf = _read_config(directory)
    try:
        cfg = config_from_llama(hf)
    except UserError as exc:
        raise UserError(f"{directory / 'config.json'}: {exc}") from None
    files = _tensor_files(directory)

    with torch.device("meta"):  # the names and shapes our model expects, without allocating it
        expected = {k: v.shape for k, v in Transformer(cfg).state_dict().items()}
    biased = source_biases(hf)
    # A bias the source has no tensor for (our one flag puts one on every linear) is zero: the same function.
    zeros = {ours for ours in expected if ours.endswith(".bias") and ours.split(".")[-2] not in biased}
    source = {ours: hf_name(ours) for ours in expected if ours not in zeros}
    if cfg.tie_embeddings:  # HF ties lm_head to the embedding and ignores a stored lm_head.weight
        source["lm_head.weight"] = "model.embed_tokens.weight"
    wanted = set(source.values())

    def ignored(name):
        return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")

    unexpected = sorted(n for n in files if n not in wanted and not ignored(n))
    if unexpected:
        raise UserError(f"{directory}: unexpected tensor {unexpected[0]} for a {cfg.n_layers}-layer "
                        f"{hf['model_type']} model ({len(unexpected)} in all)")
    missing = [n for n in source.values() if n not in files]
    if missing:
        raise UserError(f"{directory}: missing tensor {missing[0]} ({len(missing)} in all)")

    by_file = defaultdict(list)
    for name in wanted:
        by_file[files[name]].append(name)
    tensors = {}
    for path, names in sorted(by_file.items()):
        with safe_open(path, framework="pt") as fh:
            tensors.update((name, fh.get_tensor(name)) for name in names)

    state = {}
    for ours, name in source.items():
        t = tensors[name]
        if t.shape != expected[ours]:
            raise UserError(f"{directory}: tensor {name} has shape {list(t.shape)} but config.json implies "
                            f"{list(expected[ours])}")
        state[ours] = t
    for ours in sorted(zeros):
        state[ours] = torch.zeros(expected[ours], dtype=state["embed.weight"].dtype)
    return cfg, state
