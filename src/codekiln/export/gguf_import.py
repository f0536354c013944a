"""Read a llama.cpp GGUF file (Llama family) as our ModelConfig, weights and tokenizer (`codekiln import gguf`).

Weights: f32, f16, bf16 and every quantized type the `gguf` package can dequantize (q8_0, q4_0, q4_1
tested) become float32; the model is then the dequantized one, which llama.cpp approximates with
quantized dot products. Tensor names map as:

    token_embd.weight                -> embed.weight
    blk.{i}.attn_norm.weight         -> blocks.{i}.attn_norm.weight
    blk.{i}.attn_{q,k,v}.{weight,bias} -> blocks.{i}.attn.{q,k,v}_proj.*
    blk.{i}.attn_output.*            -> blocks.{i}.attn.o_proj.*
    blk.{i}.ffn_norm.weight          -> blocks.{i}.mlp_norm.weight
    blk.{i}.ffn_{gate,up,down}.*     -> blocks.{i}.mlp.{gate,up,down}_proj.*
    output_norm.weight               -> norm.weight
    output.weight (absent: tied)     -> lm_head.weight

llama.cpp's `llama` architecture rotates adjacent pairs, so convert_hf_to_gguf stores q and k with the
rows of each head permuted; we undo that to get the half-split (rotate_half) layout our RoPE uses.
`qwen2` rotates halves already (NEOX) and is read unpermuted; its q/k/v biases come with zero biases
on the other linears (the same function, see hf_llama).

Tokenizer: byte-level BPE vocabularies (`tokenizer.ggml.model` gpt2) become a Hugging Face tokenizers
BPE with the GGUF's tokens, merges and the pre-tokenizer llama.cpp picks for `tokenizer.ggml.pre`
(its regexes, llama-vocab.cpp); control tokens are special added tokens and user-defined ones plain
added tokens, as llama.cpp matches them. SentencePiece vocabularies (`llama`) are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codekiln.errors import UserError
from codekiln.model import ModelConfig, Transformer

ARCHITECTURES = ("llama", "qwen2")
# The GPT-2 split (the same pattern as tokenizers' ByteLevel use_regex=True).
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> (the regexes llama.cpp applies in turn, its ignore_merges); llama-vocab.cpp.
PRE_TOKENIZERS = {
    **dict.fromkeys(("gpt-2", "mpt", "olmo", "phi-2", "jais"), ((GPT2,), False)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "codeshell", "exaone", "minerva-7b"),
                    ((r"\p{N}", GPT2), False)),
    **dict.fromkeys(("llama-bpe", "llama3", "llama-v3", "falcon3"), ((LLAMA3,), True)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), ((QWEN2,), False)),
}
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
_LAYER = {"attn_norm": "attn_norm", "attn_q": "attn.q_proj", "attn_k": "attn.k_proj", "attn_v": "attn.v_proj",
          "attn_output": "attn.o_proj", "ffn_norm": "mlp_norm", "ffn_gate": "mlp.gate_proj",
          "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def open_gguf(path: Path):
    """A gguf.GGUFReader on the file; UserErrors for a missing package, file, or a file that is not GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError("codekiln import gguf needs the gguf package: pip install 'codekiln[export]'") from None
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(path)
    except (ValueError, OSError, IndexError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UserError(f"{path} is not a readable GGUF file: {reason}") from None


def metadata(reader) -> dict:
    """Every metadata key -> its value (arrays as lists)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def _short(x) -> float:
    """A float32 metadata value as the shortest decimal that reads back the same (1e-05, not 9.9999997e-06)."""
    return float(str(np.float32(x)))


def config_from_gguf(meta: dict) -> tuple[ModelConfig, set[str]]:
    """Our ModelConfig for GGUF metadata and the set of linears with a bias; a UserError for what differs."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UserError(f"general.architecture {arch!r} is not supported; only {', '.join(ARCHITECTURES)} "
                        "GGUF files can be imported")

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    for key in ("embedding_length", "block_count", "feed_forward_length", "attention.head_count"):
        if get(key) is None:
            raise UserError(f"the GGUF metadata has no {arch}.{key}")
    d_model, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = d_model // heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if get(key) is not None and int(get(key)) != head_dim:
            raise UserError(f"{arch}.{key} {get(key)} is not embedding_length / head_count = {head_dim} "
                            "(our RoPE rotates the whole head, whose width is d_model / n_heads)")
    scaling = get("rope.scaling.type")
    if scaling not in (None, "none") or get("rope.scaling.factor") not in (None, 1.0):
        raise UserError(f"{arch}.rope.scaling.type {scaling!r} is not supported (our RoPE has no scaling)")
    if get("attention.sliding_window"):
        raise UserError(f"{arch}.attention.sliding_window {get('attention.sliding_window')} is not supported "
                        "(our attention is full causal)")
    if get("expert_count"):
        raise UserError(f"{arch}.expert_count {get('expert_count')}: mixture-of-experts models are not supported")
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    if not vocab:
        raise UserError(f"the GGUF metadata has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
    cfg = ModelConfig(
        vocab_size=int(vocab), d_model=d_model, n_layers=int(get("block_count")), n_heads=heads,
        kv_heads=int(get("attention.head_count_kv") or heads), context=int(get("context_length", 2048)),
        positions="rope", rope_theta=_short(get("rope.freq_base", 10000.0)), norm="rmsnorm",
        norm_eps=_short(get("attention.layer_norm_rms_epsilon", 1e-5)), mlp="swiglu",
        ffn_hidden=int(get("feed_forward_length")), bias=False, tie_embeddings=True)
    return cfg, set()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of convert_hf_to_gguf's LlamaModel.permute: llama.cpp's paired rows back to rotate_half's."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(tensor, path: Path) -> np.ndarray:
    """A GGUF tensor as float32 in numpy (rows, columns) order."""
    from gguf import GGMLQuantizationType, quants

    kind = tensor.tensor_type
    if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.array(tensor.data, dtype=np.float32)  # a copy: the reader maps the file read-only
    try:
        return quants.dequantize(tensor.data, kind).astype(np.float32, copy=False)
    except NotImplementedError:
        raise UserError(f"{path}: tensor {tensor.name} has type {kind.name}, which the gguf package cannot "
                        "dequantize") from None


def load_gguf(path, progress: bool = False) -> tuple[ModelConfig, dict[str, torch.Tensor], dict, list[str]]:
    """Our config, a strict-loadable float32 state dict, the metadata and the tensor types of a GGUF file."""
    from codekiln.progress import count_progress

    path = Path(path)
    reader = open_gguf(path)
    meta = metadata(reader)
    try:
        cfg, _ = config_from_gguf(meta)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    tensors = {t.name: t for t in reader.tensors}
    ours = {}
    for name in tensors:
        parts = name.split(".")
        if name == "token_embd.weight":
            ours[name] = "embed.weight"
        elif name == "output_norm.weight":
            ours[name] = "norm.weight"
        elif name == "output.weight":
            ours[name] = "lm_head.weight"
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER and parts[3] in ("weight", "bias"):
            ours[name] = f"blocks.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"
        elif name.endswith("rope_freqs.weight"):
            raise UserError(f"{path}: {name} (per-dimension RoPE frequencies, llama3-style scaling) is not supported")
        else:
            raise UserError(f"{path}: unexpected tensor {name} for a {cfg.n_layers}-layer "
                            f"{meta['general.architecture']} model")
    biased = {ours[n].split(".")[-2] for n in tensors if n.endswith(".bias")}
    meta["biased"] = biased
    tied = "output.weight" not in tensors
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "bias": bool(biased), "tie_embeddings": tied})
    with torch.device("meta"):  # the names and shapes our model expects, without allocating it
        expected = {k: tuple(v.shape) for k, v in Transformer(cfg).state_dict().items()}
    optional = {k for k in expected if k.endswith(".bias")} | ({"lm_head.weight"} if tied else set())
    missing = [k for k in expected if k not in ours.values() and k not in optional]
    if missing:
        raise UserError(f"{path}: no tensor for {missing[0]} ({len(missing)} in all)")
    state = {}
    permute = meta["general.architecture"] == "llama"
    with count_progress("dequantizing", len(tensors), enabled=progress) as advance:
        for name, tensor in tensors.items():
            key = ours[name]
            if key not in expected:
                raise UserError(f"{path}: unexpected tensor {name} for a {cfg.n_layers}-layer model")
            w = _dequantize(tensor, path)
            if w.shape != expected[key]:
                raise UserError(f"{path}: tensor {name} has shape {list(w.shape)} but the metadata implies "
                                f"{list(expected[key])}")
            if permute and key.split(".")[-2] in ("q_proj", "k_proj"):
                w = _unpermute(w, cfg.n_heads if key.split(".")[-2] == "q_proj" else cfg.kv_heads)
            state[key] = torch.from_numpy(np.ascontiguousarray(w))
            advance(1)
    for key, shape in expected.items():  # biases the file has no tensor for: zero (the same function)
        if key.endswith(".bias") and key not in state:
            state[key] = torch.zeros(shape)
    if tied:
        state["lm_head.weight"] = state["embed.weight"]
    return cfg, state, meta, sorted({t.tensor_type.name.lower() for t in tensors.values()})


def tokenizer_from_gguf(meta: dict, path: Path) -> tuple[str, dict]:
    """tokenizer.json text for the GGUF's vocabulary, and the facts the tokenizer directory records."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise UserError(f"{path}: tokenizer.ggml.model {kind!r} is not supported; only byte-level BPE (gpt2) "
                        "vocabularies are converted")
    if pre not in PRE_TOKENIZERS:
        raise UserError(f"{path}: tokenizer.ggml.pre {pre!r} is not supported "
                        f"(known: {', '.join(sorted(PRE_TOKENIZERS))})")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if len(set(tokens)) != len(tokens):
        raise UserError(f"{path}: tokenizer.ggml.tokens holds the same token twice; its ids would be ambiguous")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    regexes, ignore_merges = PRE_TOKENIZERS[pre]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               ignore_merges=ignore_merges))
    if regexes == (GPT2,):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control tokens are matched in a prompt only by the ecosystem's default (special); llama.cpp always
    # matches user-defined ones, so they are plain added tokens.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    facts = {"bos_token": token("bos_token_id"), "eos_token": token("eos_token_id"),
             "unk_token": token("unknown_token_id"), "pad_token": token("padding_token_id"),
             "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
             "special": [t for t, k in zip(tokens, types) if k == CONTROL],
             # llama.cpp's /infill reads these; a model that has them knows FIM.
             "fim": {name: token(f"fim_{key}_token_id") for name, key in (
                 ("<|fim_prefix|>", "pre"), ("<|fim_suffix|>", "suf"), ("<|fim_middle|>", "mid"),
                 ("<|fim_pad|>", "pad"), ("<|repo_name|>", "rep"), ("<|file_sep|>", "sep"))},
             "chat_template": meta.get("tokenizer.chat_template"), "pre": pre}
    if facts["eos_token"] is None:
        raise UserError(f"{path}: the GGUF metadata names no end token (tokenizer.ggml.eos_token_id)")
    return tok.to_str(), facts


def write_dequantized(source, dest) -> None:
    """A copy of a GGUF file with every tensor stored as f32: llama.cpp's reference for what an import computes."""
    from gguf import GGMLQuantizationType, GGUFWriter

    source = Path(source)
    reader = open_gguf(source)
    writer = GGUFWriter(str(dest), reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        if name == "general.file_type":
            writer.add_file_type(int(GGMLQuantizationType.F32))
            continue
        sub = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, _dequantize(tensor, source))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
