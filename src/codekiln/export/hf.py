"""`codekiln export hf`: a codekiln model as a stock Hugging Face directory (no remote code, the same numbers).

The directory holds config.json and model.safetensors for the stock class that computes our function
(codekiln.hf_layout: Llama, MPT or GPT-NeoX), the tokenizer files, generation_config.json with the
end token, and codekiln.json (the original ModelConfig and the tokenizer hash), from which
`codekiln.load` restores the exact model, grouped-query attention included. It is written whole into
a temporary directory beside --out and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from codekiln import __version__
from codekiln.errors import UserError
from codekiln.export.card import model_card
from codekiln.files import atomic_write_bytes, atomic_write_json, fsync_file, replace_dir
from codekiln.hf_layout import EXPORT_FILE, hf_config, layout, to_hf
from codekiln.tokenizer import SPECIAL_TOKENS, tokenizer_hash

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EOT = "<|endoftext|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export_hf(model_path, out_dir, dtype: str = "float32") -> dict:
    """Write the model at model_path (run, checkpoint or export directory) to out_dir; returns a summary."""
    from codekiln import load
    from codekiln.checkpoint import model_config, repo_level_fim, resolve

    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    out = Path(out_dir)
    _check_target(out)
    layout(model_config(resolve(model_path)))  # refuse what has no stock equivalent before reading the weights
    model, tokenizer = load(model_path)
    cfg = model.cfg
    lay = layout(cfg)
    tensors = {}
    for name, value in to_hf(model.state_dict(), cfg).items():
        tensors[name] = value.to(DTYPES[dtype])
        if not torch.isfinite(tensors[name]).all() and torch.isfinite(value).all():
            raise UserError(f"{name} has weights beyond {dtype}'s range; export as bfloat16 or float32")
    eot_id = tokenizer.special_ids[EOT]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_tokenizer(Path(tokenizer.directory), tmp, tokenizer.imported)
        # Straight to the file (no copy in memory): the directory as a whole is what appears atomically.
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        fsync_file(tmp / "model.safetensors")
        atomic_write_json(tmp / "config.json", hf_config(cfg, eot_id, dtype))
        atomic_write_json(tmp / "generation_config.json",
                          {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id})
        record = {"format": "codekiln-export", "codekiln_version": __version__, "model": cfg.to_dict(),
                  "architecture": lay.architecture, "kv_heads_repeated": lay.repeat_kv, "dtype": dtype,
                  "tokenizer_hash": tokenizer_hash(tmp)}
        if repo_level_fim(resolve(model_path)):  # clients send repository context to this model (docs/finetune.md)
            record["repo_level_fim"] = True
        atomic_write_json(tmp / EXPORT_FILE, record)
        summary = {"out": str(out), "architecture": lay.architecture, "dtype": dtype,
                   "parameters": sum(t.numel() for t in tensors.values()),
                   "kv_heads": cfg.kv_heads, "n_heads": cfg.n_heads, "kv_heads_repeated": lay.repeat_kv,
                   "notes": _notes(cfg, lay)}
        # The model card (export/card.py): data, filters, tokenizer, training, evaluation, from the run's records.
        atomic_write_bytes(tmp / "README.md", model_card(resolve(model_path), summary).encode("utf-8"))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _notes(cfg, lay) -> list[str]:
    """What a user should know about the conversion and the engines that will serve it."""
    notes = []
    if lay.repeat_kv > 1:
        notes.append(f"{lay.architecture} has no grouped-query attention: each of the {cfg.kv_heads} key/value heads "
                     f"is repeated {lay.repeat_kv} times to {cfg.n_heads} heads (the same function; larger k/v "
                     "weights and KV cache in other engines); codekiln.json restores the grouped model in codekiln")
    if lay.model_type == "mpt" and not cfg.tie_embeddings:
        notes.append("vLLM's MPT requires tied embeddings: this untied model runs in transformers, not in vLLM")
    if lay.model_type == "mpt" and cfg.norm_eps != 1e-5:
        notes.append(f"vLLM's MPT uses LayerNorm eps 1e-5, not this model's {cfg.norm_eps:g}: its numbers will differ")
    return notes


def _check_target(out: Path) -> None:
    """--out may be new, empty, or an earlier export (replaced whole); anything else is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise UserError(f"--out {out} is a non-empty directory that is not a codekiln export; "
                        "refusing to overwrite it")


def _write_tokenizer(source: Path, out: Path, imported: bool = False) -> None:
    """The tokenizer files, with every codekiln special token marked special and <|endoftext|> the end token."""
    if imported:  # an imported model's own files: already the contract, with its own special and end tokens
        for name in TOKENIZER_FILES:
            atomic_write_bytes(out / name, (source / name).read_bytes())
        return
    try:
        spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{source / 'tokenizer.json'} cannot be read as a tokenizer") from None
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    missing = [t for t in SPECIAL_TOKENS if t not in added]
    if missing:
        raise UserError(f"{source / 'tokenizer.json'} lacks the special token {missing[0]}")
    raw = (source / "tokenizer.json").read_bytes()
    if not all(added[t].get("special") for t in SPECIAL_TOKENS):  # older tokenizers: mark them, as the hash records
        for t in SPECIAL_TOKENS:
            added[t]["special"] = True
        raw = json.dumps(spec, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(out / "tokenizer.json", raw)
    extra = [t for t in SPECIAL_TOKENS if t != EOT]
    config = {}
    if (source / "tokenizer_config.json").is_file():
        try:
            config = json.loads((source / "tokenizer_config.json").read_text())
        except ValueError:
            raise UserError(f"{source / 'tokenizer_config.json'} is not valid JSON") from None
    config.update({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT,
                   "unk_token": EOT, "pad_token": EOT, "additional_special_tokens": extra,
                   "clean_up_tokenization_spaces": False})
    atomic_write_json(out / "tokenizer_config.json", config)
    atomic_write_json(out / "special_tokens_map.json", {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT,
                                                        "pad_token": EOT, "additional_special_tokens": extra})


def summary_table(summary: dict):
    """The table `codekiln export hf` prints: architecture, dtype, parameters, heads, directory."""
    from rich.table import Table

    table = Table(title="codekiln export hf", show_header=False, show_edge=False)
    table.add_row("architecture", summary["architecture"])
    table.add_row("dtype", summary["dtype"])
    table.add_row("stored parameters", f"{summary['parameters']:,}")
    table.add_row("heads / kv heads", f"{summary['n_heads']} / {summary['kv_heads']}")
    table.add_row("directory", summary["out"])
    return table
