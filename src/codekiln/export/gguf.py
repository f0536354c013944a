"""`codekiln export gguf`: a codekiln model as one GGUF file that llama.cpp runs with the same numbers.

The llama.cpp architecture is the one whose graph computes our function:

    positions  norm       mlp      llama.cpp arch   notes
    rope       rmsnorm    swiglu   llama            q/k rows permuted to llama.cpp's interleaved RoPE
    alibi      layernorm  gelu     mpt              fused [q; k; v], clip_qkv as clamp_kqv
    rope       layernorm  gelu     gptneox          fused [q; k; v], zero biases where we have none
    alibi      rmsnorm    swiglu   refact           ALiBi bias max fixed at 8, no biases

All four keep grouped-query attention natively (head_count_kv), so nothing is repeated. llama.cpp's
GELU (mpt, gptneox) is the tanh approximation read from a float16 table, ours the exact erf form: the
difference is measured in tests/export/test_export_gguf.py and stated in docs/export.md; llama.cpp has
no graph of these families with the erf form to offer instead.

The tokenizer becomes llama.cpp's byte-level BPE vocabulary ("gpt2": tokens, merges, special tokens
as CONTROL) with the FIM ids under the keys llama.cpp's /infill reads. Token ids in, logits out are
exact; text in depends on the pre-tokenizer: llama.cpp splits text with one of its fixed list
(`tokenizer.ggml.pre`). A tokenizer trained with `pretokenizer: llama-cpp-compatible` is reproduced
exactly (llama.cpp's "qwen2" split); codekiln's default code split is not, which the summary says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from codekiln import __version__
from codekiln.errors import UserError
from codekiln.files import fsync_dir, fsync_file
from codekiln.tokenizer import IMPORT_KEY, tokenizer_hash

TYPES = ("f32", "f16", "q8_0")
EOT = "<|endoftext|>"
# llama.cpp's metadata key suffix -> our special token (tokenizer.ggml.<key>_token_id).
FIM_KEYS = {"fim_pre": "<|fim_prefix|>", "fim_suf": "<|fim_suffix|>", "fim_mid": "<|fim_middle|>",
            "fim_pad": "<|fim_pad|>", "fim_rep": "<|repo_name|>", "fim_sep": "<|file_sep|>"}
# Our pre-tokenizer variant (codekiln.tokenizer.pretokenizers()) -> the llama.cpp pre-tokenizer that
# splits text exactly as it does. The default code split has no equal in llama.cpp's list; "qwen2" is the
# nearest (one leading non-letter before a word, single digits), so text through llama.cpp differs from
# ours at times while token ids in give the same logits.
LLAMA_CPP_PRE = {"llama-cpp-compatible": "qwen2"}
FALLBACK_PRE = "qwen2"


def _gguf():
    """The gguf package (the `export` extra), or a UserError saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise UserError("codekiln export gguf needs the gguf package: pip install 'codekiln[export]'") from None
    return gguf


def arch(cfg) -> str:
    """The llama.cpp architecture that computes exactly our function; a UserError naming what it cannot run."""
    family = (cfg.positions, cfg.norm, cfg.mlp)
    if cfg.clip_qkv is not None and cfg.clip_qkv <= 0:  # llama.cpp clamps only to a positive bound
        raise UserError(f"clip_qkv {cfg.clip_qkv} cannot run in llama.cpp (it clamps q, k, v to a positive bound)")
    if family == ("rope", "rmsnorm", "swiglu"):
        name = "llama"
    elif family == ("alibi", "layernorm", "gelu"):
        return "mpt"  # llama.cpp's MPT reads clamp_kqv, max_alibi_bias, ffn length, biases and GQA from the file
    elif family == ("rope", "layernorm", "gelu"):
        name = "gptneox"
    elif family == ("alibi", "rmsnorm", "swiglu"):
        name = "refact"
        if cfg.bias:
            raise UserError("bias true with ALiBi + rmsnorm + swiglu cannot run in llama.cpp "
                            "(its refact architecture ignores output and MLP biases)")
        if cfg.alibi_bias_max != 8.0:
            raise UserError(f"alibi_bias_max {cfg.alibi_bias_max} with rmsnorm + swiglu cannot run in llama.cpp "
                            "(its refact architecture fixes the ALiBi bias max at 8)")
    else:
        raise UserError(f"positions {cfg.positions} with norm {cfg.norm} and mlp {cfg.mlp} has no llama.cpp "
                        "architecture codekiln exports to (RoPE with rmsnorm + swiglu is llama, with layernorm "
                        "+ gelu gptneox; ALiBi with layernorm + gelu is mpt, with rmsnorm + swiglu refact)")
    if cfg.clip_qkv is not None:
        raise UserError(f"clip_qkv {cfg.clip_qkv} with {name}'s shape cannot run in llama.cpp "
                        f"(its {name} architecture does not read clamp_kqv)")
    return name


def _permute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """q or k rows (weight or bias) from our half-split RoPE layout to llama.cpp's interleaved pairs.

    llama.cpp's llama graph rotates adjacent pairs (x0, x1), (x2, x3), ...; ours (Hugging Face's)
    rotates (x_i, x_{i + d/2}). Reordering each head's rows so that row 2i is our row i and row 2i+1
    our row i + d/2 makes the two rotations the same function (convert_hf_to_gguf.py's permute).
    """
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """Our state dict -> llama.cpp's tensors (GGUF names from the gguf package), in float32."""
    gguf = _gguf()
    t = gguf.MODEL_TENSOR
    name = gguf.TENSOR_NAMES
    a = arch(cfg)
    state = {k: v.detach().float() for k, v in state.items()}
    out = {f"{name[t.TOKEN_EMBD]}.weight": state["embed.weight"],
           f"{name[t.OUTPUT_NORM]}.weight": state["norm.weight"]}
    if "norm.bias" in state:
        out[f"{name[t.OUTPUT_NORM]}.bias"] = state["norm.bias"]
    elif a == "gptneox":  # llama.cpp's GPT-NeoX requires every bias: zeros add nothing
        out[f"{name[t.OUTPUT_NORM]}.bias"] = torch.zeros(cfg.d_model)
    if not cfg.tie_embeddings or a == "gptneox":  # GPT-NeoX requires its own output tensor
        out[f"{name[t.OUTPUT]}.weight"] = state["lm_head.weight"]
    kvd = cfg.kv_heads * cfg.head_dim
    zero = {"q_proj": cfg.d_model, "k_proj": kvd, "v_proj": kvd, "o_proj": cfg.d_model,
            "up_proj": cfg.hidden, "down_proj": cfg.d_model, "attn_norm": cfg.d_model, "mlp_norm": cfg.d_model}
    for i in range(cfg.n_layers):
        def ours(part, kind, i=i):
            key = f"blocks.{i}.{part}.{kind}"
            if key not in state and kind == "bias" and a == "gptneox":
                return torch.zeros(zero[part.split(".")[-1]])
            return state.get(key)

        def theirs(tensor, kind, i=i):
            return f"{name[tensor].format(bid=i)}.{kind}"

        plain = {"attn_norm": t.ATTN_NORM, "mlp_norm": t.FFN_NORM, "attn.o_proj": t.ATTN_OUT,
                 "mlp.up_proj": t.FFN_UP, "mlp.down_proj": t.FFN_DOWN, "mlp.gate_proj": t.FFN_GATE}
        for part, tensor in plain.items():
            for kind in ("weight", "bias"):
                value = ours(part, kind) if part != "mlp.gate_proj" or cfg.mlp == "swiglu" else None
                if value is not None:
                    out[theirs(tensor, kind)] = value
        for kind in ("weight", "bias"):
            q, k, v = (ours(f"attn.{p}", kind) for p in ("q_proj", "k_proj", "v_proj"))
            if q is None:
                continue
            if a == "llama":
                out[theirs(t.ATTN_Q, kind)] = _permute_rope(q, cfg.n_heads)
                out[theirs(t.ATTN_K, kind)] = _permute_rope(k, cfg.kv_heads)
                out[theirs(t.ATTN_V, kind)] = v
            elif a == "refact":  # separate q, k, v; ALiBi has no rotation to permute for
                out[theirs(t.ATTN_Q, kind)], out[theirs(t.ATTN_K, kind)], out[theirs(t.ATTN_V, kind)] = q, k, v
            else:  # mpt and gptneox read one fused [q; k; v] with n_head_kv key/value heads
                out[theirs(t.ATTN_QKV, kind)] = torch.cat([q, k, v])
    return out


def _metadata(w, gguf, cfg, a: str, file_type: int) -> None:
    """The architecture's hyperparameters under llama.cpp's keys."""
    w.add_context_length(cfg.context)
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if a in ("llama", "refact"):
        w.add_layer_norm_rms_eps(cfg.norm_eps)
    else:
        w.add_layer_norm_eps(cfg.norm_eps)
    if a in ("llama", "gptneox"):
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
    if a == "gptneox":
        w.add_parallel_residual(False)
    if a == "mpt":
        w.add_max_alibi_bias(cfg.alibi_bias_max)
        if cfg.clip_qkv is not None:
            w.add_clamp_kqv(cfg.clip_qkv)


def tokenizer_variant(directory) -> str | None:
    """The pre-tokenizer variant a tokenizer directory was trained with (PRETOKENIZERS), or None if foreign."""
    from codekiln.tokenizer import pretokenizers

    try:
        spec = json.loads((Path(directory) / "tokenizer.json").read_text(encoding="utf-8"))
        steps = spec["pre_tokenizer"]["pretokenizers"]
        pattern = steps[0]["pattern"]["Regex"]
        byte_level = steps[1]["type"] == "ByteLevel" and not steps[1].get("use_regex", True)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if len(steps) != 2 or not byte_level or spec.get("normalizer") is not None:
        return None
    return next((variant for variant, p in pretokenizers().items() if p == pattern), None)


def _vocabulary(w, gguf, tokenizer, vocab_size: int) -> dict:
    """The BPE vocabulary, merges, special and FIM ids under llama.cpp's keys; what was written."""
    path = Path(tokenizer.directory) / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
        if model.get("type") != "BPE":
            raise UserError(f"{path} is a {model.get('type')} tokenizer: llama.cpp reads codekiln's vocabulary "
                            "as byte-level BPE only (train it with algorithm bpe)")
        vocab, merges = model["vocab"], model["merges"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path} cannot be read as a tokenizer") from None
    tokens = {i: tok for tok, i in vocab.items()}
    special = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
    tokens.update(special)
    if len(tokens) > vocab_size or sorted(tokens) != list(range(len(tokens))):
        raise UserError(f"{path} has {len(tokens)} tokens with ids that do not fill 0..{len(tokens) - 1} "
                        f"within the model's vocab_size {vocab_size}")
    names, types = [], []
    for i in range(vocab_size):  # rows of the embedding beyond the tokenizer: unused padding, as convert does
        names.append(tokens.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.CONTROL if i in special else
                     gguf.TokenType.NORMAL if i in tokens else gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    variant = tokenizer_variant(tokenizer.directory)
    pre = LLAMA_CPP_PRE.get(variant, FALLBACK_PRE)
    imported_pre = _imported_pre(tokenizer.directory)
    if imported_pre:  # a model imported from a GGUF file: the split llama.cpp already ran it with
        variant, pre = f"imported ({imported_pre})", imported_pre
    w.add_tokenizer_pre(pre)
    w.add_token_list(names)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    ids = tokenizer.special_ids
    w.add_bos_token_id(ids[EOT])  # codekiln trains without a BOS; add_bos_token false keeps it out of prompts
    w.add_eos_token_id(ids[EOT])
    w.add_pad_token_id(ids[EOT])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for key, token in FIM_KEYS.items():
        if token in ids:  # an imported model without FIM tokens (SmolLM2) has no infill ids to name
            w.add_uint32(f"tokenizer.ggml.{key}_token_id", ids[token])
    return {"pre": pre, "variant": variant, "exact_text": variant in LLAMA_CPP_PRE or bool(imported_pre)}


def _imported_pre(directory) -> str | None:
    """The llama.cpp pre-tokenizer an imported GGUF model's tokenizer recorded, if any."""
    try:
        config = json.loads((Path(directory) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pre = (config.get(IMPORT_KEY) or {}).get("llama_cpp_pre")
    return pre if isinstance(pre, str) else None


def _encode(gguf, name: str, value: torch.Tensor, type_: str):
    """One tensor as (numpy data, GGML type): norms and biases stay f32, matrices take the asked type."""
    q = gguf.GGMLQuantizationType
    data = value.numpy().astype(np.float32)
    if type_ == "f32" or data.ndim == 1:
        return data, q.F32
    if type_ == "f16":
        if np.abs(data).max() > np.finfo(np.float16).max:
            raise UserError(f"{name} has weights beyond float16's range; export with --type f32")
        return data.astype(np.float16), q.F16
    if data.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0]:  # rows that are not whole blocks: f16, as convert does
        return data.astype(np.float16), q.F16
    return gguf.quants.quantize(data, q.Q8_0), q.Q8_0


def export_gguf(model_path, out_file, type: str = "f16") -> dict:  # noqa: A002 - the CLI's --type
    """Write the model at model_path (run, checkpoint or export directory) to one GGUF file; returns a summary."""
    from codekiln import load
    from codekiln.checkpoint import model_config, resolve

    if type not in TYPES:
        raise UserError(f"--type must be one of {', '.join(TYPES)}, not {type!r}")
    gguf = _gguf()
    out = Path(out_file)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give the GGUF file's path")
    arch(model_config(resolve(model_path)))  # refuse what llama.cpp cannot run before reading the weights
    model, tokenizer = load(model_path)
    cfg = model.cfg
    a = arch(cfg)
    tensors = gguf_tensors(model.state_dict(), cfg)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[type]
    encoded = {name: _encode(gguf, name, value, type) for name, value in tensors.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), a)
        w.add_name(out.stem)
        w.add_string("codekiln.version", __version__)
        w.add_string("codekiln.model", json.dumps(cfg.to_dict(), sort_keys=True))
        w.add_string("codekiln.tokenizer_hash", tokenizer_hash(tokenizer.directory))
        _metadata(w, gguf, cfg, a, file_type)
        vocab = _vocabulary(w, gguf, tokenizer, cfg.vocab_size)
        for name, (data, qtype) in encoded.items():
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        fsync_file(tmp)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    counts: dict[str, int] = {}
    for _, qtype in encoded.values():
        counts[qtype.name.lower()] = counts.get(qtype.name.lower(), 0) + 1
    return {"out": str(out), "arch": a, "type": type, "bytes": out.stat().st_size,
            "parameters": sum(v.numel() for v in tensors.values()), "tensor_types": counts,
            "n_heads": cfg.n_heads, "kv_heads": cfg.kv_heads, "pre": vocab["pre"], "exact_text": vocab["exact_text"],
            "notes": _notes(cfg, a, vocab)}


def _notes(cfg, a: str, vocab: dict) -> list[str]:
    """What a user should know about running the file in llama.cpp."""
    notes = []
    if a in ("mpt", "gptneox"):
        notes.append(f"llama.cpp's {a} GELU is the tanh approximation (a float16 table), codekiln's the exact "
                     "erf form: logits differ slightly (docs/export.md gives the measured size)")
    if not vocab["exact_text"]:
        notes.append(f"llama.cpp splits text with its '{vocab['pre']}' pre-tokenizer, not this tokenizer's: "
                     "text it tokenizes itself can get other token ids than codekiln's (token ids sent in give "
                     "the same logits); train the tokenizer with pretokenizer llama-cpp-compatible for exact text")
    return notes


def summary_table(summary: dict):
    """The table `codekiln export gguf` prints: architecture, type, parameters, heads, pre-tokenizer, file."""
    from rich.table import Table

    table = Table(title="codekiln export gguf", show_header=False, show_edge=False)
    table.add_row("llama.cpp architecture", summary["arch"])
    table.add_row("type", summary["type"] + " (" + ", ".join(f"{n} {k}" for k, n in
                                                             sorted(summary["tensor_types"].items())) + " tensors)")
    table.add_row("stored parameters", f"{summary['parameters']:,}")
    table.add_row("heads / kv heads", f"{summary['n_heads']} / {summary['kv_heads']}")
    table.add_row("pre-tokenizer", f"{summary['pre']} ({'exact' if summary['exact_text'] else 'not exact'} "
                                   "for text)")
    size = f"{summary['bytes'] / 1e6:,.1f} MB" if summary["bytes"] >= 1e6 else f"{summary['bytes']:,} bytes"
    table.add_row("file", f"{summary['out']} ({size})")
    return table
