"""`codekiln eval bpb`: held-out bits per byte per language, the tokenizer-independent measure.

Bits per byte = summed cross-entropy in nats / ln 2 / UTF-8 bytes of the text predicted, so models
with different tokenizers compare fairly. The text is the `val` split of token shards made with the
model's own tokenizer (checked by hash). The validation set and its arithmetic are the trainer's own
(codekiln.validation), so a run's last logged figure is reproduced from its directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from codekiln.errors import UserError


def evaluate_bpb(model, tok, shard_dirs: list[str | Path], *, seq_len: int | None = None,
                 max_tokens: int | None = None, batch_size: int = 8) -> dict:
    """Bits per byte of the model on the val splits: overall, per language, with token and byte counts."""
    from codekiln.token_shards import ShardSet, check_tokenizer
    from codekiln.tokenizer import tokenizer_hash
    from codekiln.validation import ValSet, token_bytes, validate

    torch.set_flush_denormal(True)
    sets = [ShardSet(p) for p in shard_dirs]
    check_tokenizer(sets, tokenizer_hash(tok.directory), "the model's")
    seq_len = seq_len or model.cfg.context
    if seq_len > model.cfg.context:
        raise UserError(f"--seq-len {seq_len} exceeds the model's context {model.cfg.context}")
    budget = max_tokens or sum(s.meta["splits"]["val"]["tokens"] for s in sets)
    val = ValSet(sets, seq_len, budget, token_bytes(tok))
    if len(val) == 0:
        raise UserError(f"the val splits of {', '.join(str(s.path) for s in sets)} hold no sequence of "
                        f"{seq_len + 1} tokens")
    device = next(model.parameters()).device
    out = validate(model, val, batch_size, device, eot=tok.eot_id, detail=True)
    out["bits_per_token"] = round(out["val_loss"] / math.log(2), 5)
    out["seq_len"], out["sequences"] = seq_len, len(val)
    return out


def bpb_table(result: dict, model: str):
    """The table `codekiln eval bpb` prints: bytes and bits per byte per language, then overall."""
    from rich.table import Table

    table = Table(title=f"bits per byte: {model}", show_edge=False)
    for col in ("language", "bytes", "bits/byte"):
        table.add_column(col, justify="left" if col == "language" else "right")
    for lang, bpb in sorted(result["val_bpb_by_lang"].items()):
        table.add_row(lang, f"{result['bytes_by_lang'][lang]:,}", f"{bpb:.4f}")
    table.add_row("all", f"{result['bytes']:,}", f"{result['val_bpb']:.4f}")
    return table
