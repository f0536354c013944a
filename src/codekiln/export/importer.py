"""`codekiln import hf|gguf SOURCE --out DIR`: an open model as a codekiln run-like directory.

DIR holds tokenizer/ (the model's own tokenizer, converted to the tokenizer directory contract),
checkpoints/step-0/ (model.safetensors, config.json), checkpoints/latest and import.json (what was
imported, from where); so `train.init_from`, `codekiln.load` and every consumer read only codekiln's
format. Weights are stored as float32 (quantized GGUF weights dequantized).

The tokenizer keeps the model's vocabulary and ids. codekiln's special-token names map to the model's
own tokens in tokenizer_config.json (`codekiln.special_tokens`): `<|endoftext|>` to the model's end
token (for SmolLM2-Instruct `<|im_end|>`), the FIM and repository names to the tokens the GGUF's FIM
metadata names or to the StarCoder spellings (`<fim_prefix>`, `<file_sep>`, `<repo_name>`). A model
without FIM tokens is imported without them: FIM prompts on it are refused (codekiln.tokenizer).

DIR is written whole under a temporary name beside it and renamed into place; an earlier import there
is replaced, any other non-empty directory refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from codekiln import __version__
from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json, fsync_file, replace_dir
from codekiln.model import ModelConfig
from codekiln.tokenizer import FIM_TOKENS, IMPORT_KEY, SPECIAL_TOKENS, load as load_tokenizer, tokenizer_hash

KINDS = ("hf", "gguf")
IMPORT_FILE = "import.json"
# Other spellings of codekiln's special tokens (StarCoder's family, SmolLM's corpus markers).
ALIASES = {"<|fim_prefix|>": ("<fim_prefix>",), "<|fim_middle|>": ("<fim_middle>",),
           "<|fim_suffix|>": ("<fim_suffix>",), "<|fim_pad|>": ("<fim_pad>",), "<|file_sep|>": ("<file_sep>",),
           "<|repo_name|>": ("<repo_name>", "<reponame>")}


def import_model(kind: str, source, out, progress: bool = True) -> dict:
    """Import the HF directory or GGUF file at source into the run-like directory out; returns a summary."""
    if kind not in KINDS:
        raise UserError(f"import kind must be hf or gguf, not {kind!r}")
    source, out = Path(source), Path(out)
    _check_target(out)
    if kind == "hf":
        from codekiln.export.hf_llama import load_llama, source_biases

        cfg, state = load_llama(source)
        tokenizer_json, facts = _hf_tokenizer(source)
        hf = json.loads((source / "config.json").read_text())
        architecture, biased = hf["model_type"], source_biases(hf)
        formats = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    else:
        from codekiln.export.gguf_import import load_gguf, tokenizer_from_gguf

        cfg, state, meta, formats = load_gguf(source, progress)
        tokenizer_json, facts = tokenizer_from_gguf(meta, source)
        architecture = meta["general.architecture"]
        biased = meta["biased"]
    vocab = json.loads(tokenizer_json)
    n_tokens = 1 + max([*vocab["model"]["vocab"].values(), *(t["id"] for t in vocab.get("added_tokens", []))])
    if n_tokens > cfg.vocab_size:
        raise UserError(f"{source}: the tokenizer has {n_tokens} tokens but the model only {cfg.vocab_size} embeddings")
    mapping = special_mapping(facts)
    notes = _notes(cfg, biased, mapping, facts)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_tokenizer(tmp / "tokenizer", tokenizer_json, facts, mapping, cfg, kind, source)
        tok = load_tokenizer(tmp / "tokenizer")  # the contract holds before anything is in place
        _write_checkpoint(tmp / "checkpoints", state, cfg)
        record = {"format": "codekiln-import", "codekiln_version": __version__, "kind": kind,
                  "source": str(source.resolve()), "source_sha256": _sha256(source) if kind == "gguf" else None,
                  "architecture": architecture, "model": cfg.to_dict(), "special_tokens": mapping,
                  "tokenizer_hash": tokenizer_hash(tmp / "tokenizer"), "notes": notes}
        atomic_write_json(tmp / IMPORT_FILE, record)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stored = {k: v for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    return {"out": str(out), "kind": kind, "source": str(source), "architecture": architecture,
            "parameters": sum(v.numel() for v in stored.values()), "n_layers": cfg.n_layers, "d_model": cfg.d_model,
            "n_heads": cfg.n_heads, "kv_heads": cfg.kv_heads, "context": cfg.context, "vocab_size": cfg.vocab_size,
            "tokenizer_size": tok.vocab_size, "tied": cfg.tie_embeddings, "eot_token": mapping["<|endoftext|>"],
            "fim": tok.has_fim, "special_tokens": mapping, "source_formats": formats, "notes": notes}


def summary_table(summary: dict):
    """The table `codekiln import` prints: architecture, shape, tokenizer, FIM, directory."""
    from rich.table import Table

    table = Table(title=f"codekiln import {summary['kind']}", show_header=False, show_edge=False)
    table.add_row("architecture", f"{summary['architecture']} ({', '.join(summary['source_formats'])} weights "
                                  "stored as float32)")
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("layers / d_model", f"{summary['n_layers']} / {summary['d_model']}")
    table.add_row("heads / kv heads", f"{summary['n_heads']} / {summary['kv_heads']}")
    table.add_row("context", f"{summary['context']:,}")
    table.add_row("vocabulary", f"{summary['tokenizer_size']:,} tokens ({summary['vocab_size']:,} embeddings"
                                f"{', tied' if summary['tied'] else ''})")
    table.add_row("end token", summary["eot_token"])
    table.add_row("fill-in-the-middle", "yes" if summary["fim"] else "no (FIM requests are refused)")
    table.add_row("directory", summary["out"])
    return table


def special_mapping(facts: dict) -> dict[str, str]:
    """codekiln special-token name -> the model's token: the end token, and FIM/repository tokens it has."""
    special = set(facts["special"])
    mapping = {"<|endoftext|>": facts["eos_token"]}
    for name in SPECIAL_TOKENS[1:]:
        found = facts["fim"].get(name) or next((t for t in (name, *ALIASES[name]) if t in special), None)
        if found is not None:
            mapping[name] = found
    if not all(name in mapping for name in FIM_TOKENS):  # half a FIM vocabulary is no FIM
        for name in (*FIM_TOKENS, "<|fim_pad|>"):
            mapping.pop(name, None)
    return mapping


def _notes(cfg: ModelConfig, biased: set[str], mapping: dict, facts: dict) -> list[str]:
    """What a user should know about the imported model."""
    notes = []
    if cfg.bias and len(biased) < 7:
        notes.append(f"biases on {', '.join(sorted(biased)) or 'no linear'} only: the other linears get zero "
                     "biases (the same function), which fine-tuning then trains")
    if not all(name in mapping for name in FIM_TOKENS):
        notes.append("the model has no FIM tokens: `complete --suffix` and infill requests are refused "
                     "until `codekiln finetune` adds them and trains it to fill in the middle")
    if facts.get("add_bos_token"):
        notes.append(f"the model was trained with {facts['bos_token']} at the start of every sequence; "
                     "codekiln's prompts do not add it")
    return notes


def _hf_tokenizer(source: Path) -> tuple[str, dict]:
    """tokenizer.json text and the recorded facts of a Hugging Face model directory's fast tokenizer."""
    from tokenizers import Tokenizer

    path = source / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{source} has no tokenizer.json; only models with a fast (tokenizers) tokenizer are imported")
    text = path.read_text(encoding="utf-8")
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
        raise UserError(f"{path} is not a valid tokenizer: {str(exc).splitlines()[0]}") from None
    config = _json(source / "tokenizer_config.json")
    model_config = _json(source / "config.json")

    def token(key):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value is None and key in ("bos_token", "eos_token", "pad_token"):
            tid = model_config.get(f"{key}_id")
            tid = tid[0] if isinstance(tid, list) and tid else tid
            value = tok.id_to_token(tid) if isinstance(tid, int) else None
        return value if value is not None and tok.token_to_id(value) is not None else None

    facts = {k: token(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    if facts["eos_token"] is None:
        raise UserError(f"{source}: neither tokenizer_config.json nor config.json names an end token in the tokenizer")
    facts.update(add_bos_token=bool(config.get("add_bos_token", False)), fim={},
                 special=[t["content"] for t in json.loads(text).get("added_tokens", []) if t.get("special")],
                 chat_template=config.get("chat_template"))
    return text, facts


def _json(path: Path) -> dict:
    """A JSON object file, {} when absent; a UserError when it is not JSON."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None
    return value if isinstance(value, dict) else {}


def _write_tokenizer(directory: Path, tokenizer_json: str, facts: dict, mapping: dict, cfg: ModelConfig,
                     kind: str, source: Path) -> None:
    """The tokenizer directory contract: tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    directory.mkdir(parents=True)
    atomic_write_bytes(directory / "tokenizer.json", tokenizer_json.encode("utf-8"))
    named = {k: facts[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if facts.get(k)}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **named, "clean_up_tokenization_spaces": False,
              "model_max_length": cfg.context}
    if facts.get("chat_template"):
        config["chat_template"] = facts["chat_template"]
    config[IMPORT_KEY] = {"special_tokens": mapping, "imported_from": f"{kind}:{source.name}",
                          "add_bos_token": bool(facts.get("add_bos_token"))}
    if facts.get("pre"):  # llama.cpp's own name for this split, so `export gguf` can write it back exactly
        config[IMPORT_KEY]["llama_cpp_pre"] = facts["pre"]
    atomic_write_json(directory / "tokenizer_config.json", config)
    atomic_write_json(directory / "special_tokens_map.json", named)


def _write_checkpoint(checkpoints: Path, state: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """checkpoints/step-0 (float32 model.safetensors, config.json) and checkpoints/latest, as training writes them."""
    step = checkpoints / "step-0"
    step.mkdir(parents=True)
    # Stored as a training checkpoint stores them: contiguous float32, the tied LM head once (as embed.weight).
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in sorted(state.items())
               if not (cfg.tie_embeddings and k == "lm_head.weight")}
    save_file(tensors, str(step / "model.safetensors"), metadata={"format": "pt"})
    fsync_file(step / "model.safetensors")
    atomic_write_json(step / "config.json", {"codekiln_version": __version__, "model": cfg.to_dict(), "step": 0,
                                             "tokens": 0})
    atomic_write_bytes(checkpoints / "latest", b"step-0\n")


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_target(out: Path) -> None:
    """--out may be new, empty, or an earlier import (replaced whole); anything else is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if any(out.iterdir()) and not (out / IMPORT_FILE).is_file():
        raise UserError(f"--out {out} is a non-empty directory that is not a codekiln import; refusing to overwrite it")
