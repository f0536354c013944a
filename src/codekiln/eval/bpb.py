"""`codekiln eval bpb`: held-out bits per byte per language, the tokenizer-independent measure.

Bits per byte = summed cross-entropy in nats / ln 2 / UTF-8 bytes of the text predicted, so models
with different tokenizers compare fairly. The text is the `val` split of token shards made with the
model's own tokenizer (checked by hash). The validation set and its arithmetic are the trainer's own
(codekiln.validation), so a run's last logged figure is reproduced from its directory.
"""

from __future__ import annotations

import contextlib
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


MAX_WINDOW = 2048  # longest window texts_bpb scores in by default (see there)


def texts_bpb(model, tok, texts: list[str], langs: list[str], *, window: int | None = None,
              stride: int | None = None, batch_tokens: int | None = None, autocast=contextlib.nullcontext,
              progress=None) -> dict:
    """Bits per byte of a model on raw texts, each encoded with the model's own tokenizer: overall and per language.

    The measure that compares models with different tokenizers on the same bytes: the nats of every token of
    every text, summed, over the texts' UTF-8 bytes. Each text is scored on its own, from its first token
    (predicted after the tokenizer's end token, the document separator it was trained with); a longer text
    is scored in windows of `window` tokens (default the model's context, at most MAX_WINDOW: a window's
    logits are window x vocabulary floats, and code gains little from more context) that advance by
    `stride` tokens (default half the window), each scoring only the tokens no earlier one scored, so every
    token is scored once, with at least window - stride tokens before it once the text is that long.
    `autocast` is a context-manager factory the forward passes run under (the trainer's validation takes
    the same); `progress`, when given, is called with the number of tokens each batch scored.
    """
    import numpy as np
    import torch.nn.functional as F

    from codekiln.validation import bits_per_byte

    if len(texts) != len(langs):
        raise ValueError(f"{len(texts)} texts for {len(langs)} languages")
    width = window or min(model.cfg.context, MAX_WINDOW)
    if not 2 <= width <= model.cfg.context:
        raise ValueError(f"window must be in [2, {model.cfg.context}] (the model's context), not {width}")
    stride = stride or max(1, width // 2)
    if not 1 <= stride <= width - 1:
        raise ValueError(f"stride must be in [1, {width - 1}] for a window of {width}, not {stride}")
    # Logits of one batch are tokens x vocabulary floats: about 128 MB, and at least one full window.
    batch_tokens = batch_tokens or max(width, (1 << 25) // model.cfg.vocab_size)
    eot = tok.eot_id
    encoded = tok.encode_batch(list(texts)) if texts else []
    # A window: (text, its first token in the text's sequence [eot] + ids, its end, the first position scored).
    windows = []
    for d, ids in enumerate(encoded):
        n = len(ids) + 1
        end = min(width, n)
        windows.append((d, 0, end, 0))
        while end < n:
            new_end = min(end + stride, n)
            start = max(0, new_end - width)
            windows.append((d, start, new_end, end - 1 - start))  # position p predicts token start + p + 1
            end = new_end
    seqs = [[eot] + ids for ids in encoded]
    windows = [w for w in windows if w[2] - w[1] > 1]  # an empty text has nothing to score
    windows.sort(key=lambda w: (-(w[2] - w[1]), w[0], w[1]))  # similar lengths together: little padding

    doc_nats = np.zeros(len(encoded))
    scored = 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        i = 0
        while i < len(windows):
            longest = windows[i][2] - windows[i][1]
            chunk = windows[i: i + max(1, batch_tokens // longest)]
            i += len(chunk)
            x = torch.zeros(len(chunk), longest, dtype=torch.long)
            rows, cols, targets, owners = [], [], [], []
            for r, (d, start, end, first) in enumerate(chunk):
                seq = seqs[d][start:end]
                x[r, :len(seq)] = torch.tensor(seq)
                k = len(seq) - 1 - first
                rows += [r] * k
                cols += range(first, len(seq) - 1)
                targets += seq[first + 1:]
                owners += [d] * k
            with autocast():
                logits = model(x.to(device))
            picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)].float()
            nats = F.cross_entropy(picked, torch.tensor(targets, device=device), reduction="none")
            np.add.at(doc_nats, np.asarray(owners), nats.double().cpu().numpy())
            scored += len(targets)
            if progress is not None:
                progress(len(targets))
    model.train(was_training)

    doc_bytes = np.asarray([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    names = sorted(set(langs))
    by_lang, bytes_by_lang = {}, {}
    for name in names:
        mask = np.asarray([lang == name for lang in langs], dtype=bool)
        if doc_bytes[mask].sum() > 0:
            by_lang[name] = round(bits_per_byte(float(doc_nats[mask].sum()), int(doc_bytes[mask].sum())), 5)
            bytes_by_lang[name] = int(doc_bytes[mask].sum())
    return {"val_bpb": round(bits_per_byte(float(doc_nats.sum()), int(doc_bytes.sum())), 5),
            "val_bpb_by_lang": by_lang, "bytes": int(doc_bytes.sum()), "bytes_by_lang": bytes_by_lang,
            "tokens": scored}
