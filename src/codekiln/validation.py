"""Validation: cross-entropy and bits per byte, overall and per language, on a fixed set of sequences.

A neutral module (shared seam): the trainer's periodic validation and `codekiln eval bpb` both run
`validate` on a `ValSet`, so the figure a run logs is the figure `eval bpb` reproduces from the run
directory. It knows nothing of torchrun: the trainer passes its rank, world size and an all-reduce.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from codekiln.token_shards import ShardSet


def token_bytes(tok) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens): every char of a byte-level token is a byte."""
    specials = set(tok.special_ids.values())
    out = np.zeros(tok.vocab_size, dtype=np.int64)
    for i in range(tok.vocab_size):
        if i not in specials:
            piece = tok._hf.id_to_token(i)
            out[i] = len(piece) if piece is not None else 0
    return out


class ValSet:
    """Fixed validation sequences: val documents in a fixed shuffled order up to a token budget, packed."""

    def __init__(self, sets: list[ShardSet], seq_len: int, max_tokens: int, tok_bytes: np.ndarray):
        ids, langs = [], []
        names = sorted({lang for s in sets for lang in s.index["val"]["lang"].tolist()})
        self.languages = names
        code = {n: i for i, n in enumerate(names)}
        for s in sets:  # each directory gets an equal part of the budget, so every one is measured
            budget = (max_tokens + 1) // len(sets)
            ix = s.index["val"]
            # a fixed shuffle, so a budget smaller than the split still samples every part of it
            for i in np.random.default_rng(0).permutation(len(ix["tokens"])).tolist():
                if budget <= 0:
                    break
                d = s.doc("val", i)[:budget]
                ids.append(d)
                langs.append(np.full(d.size, code[ix["lang"][i]], dtype=np.int64))
                budget -= d.size
        stream = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        lang = np.concatenate(langs) if langs else np.zeros(0, np.int64)
        n = max(0, (stream.size - 1) // seq_len)
        self.inputs = stream[: n * seq_len].reshape(n, seq_len)
        self.targets = stream[1: n * seq_len + 1].reshape(n, seq_len)
        self.target_lang = lang[1: n * seq_len + 1].reshape(n, seq_len)
        self.target_bytes = tok_bytes[self.targets] if n else np.zeros((0, seq_len), np.int64)

    def __len__(self) -> int:
        return len(self.inputs)


def bits_per_byte(nats: float, nbytes: int) -> float:
    """Cross-entropy summed in nats over text of nbytes bytes -> bits per UTF-8 byte."""
    return nats / math.log(2) / nbytes if nbytes else float("nan")


def validate(model, val: ValSet, batch_size: int, device, autocast=contextlib.nullcontext, *, rank: int = 0,
             world: int = 1, all_reduce_sum: Callable[[list[float]], list[float]] | None = None,
             doc_mask: bool = False, eot: int = 0, detail: bool = False) -> dict:
    """Validation loss and bits per byte, overall and per language, summed over every rank's share."""
    was_training = model.training
    model.eval()
    n_lang = len(val.languages)
    sums = np.zeros(3 + 2 * n_lang)  # nats, tokens, bytes, then nats and bytes per language
    # Every rank runs the same number of forward passes (FSDP2 all-gathers in each); a rank short of rows
    # repeats row 0 with weight 0.
    per_rank = -(-len(val) // world)
    rows = list(range(rank, len(val), world))
    rows += [-1] * (per_rank - len(rows))
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i: i + batch_size]
            idx = [max(r, 0) for r in chunk]
            weight = np.repeat([1.0 if r >= 0 else 0.0 for r in chunk], val.inputs.shape[1])
            x = torch.from_numpy(val.inputs[idx]).to(device)
            y = torch.from_numpy(val.targets[idx]).to(device)
            with autocast():
                logits = model(x, doc_ids(x, eot) if doc_mask else None)
            nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").double().cpu().numpy()
            nats = nats * weight
            nbytes, lang = val.target_bytes[idx].ravel() * weight, val.target_lang[idx].ravel()
            sums[0] += nats.sum()
            sums[1] += weight.sum()
            sums[2] += nbytes.sum()
            sums[3: 3 + n_lang] += np.bincount(lang, weights=nats, minlength=n_lang)
            sums[3 + n_lang:] += np.bincount(lang, weights=nbytes, minlength=n_lang)
    model.train(was_training)
    if all_reduce_sum is not None:
        sums = np.asarray(all_reduce_sum(sums.tolist()))
    by_lang = {name: round(bits_per_byte(sums[3 + k], sums[3 + n_lang + k]), 5)
               for k, name in enumerate(val.languages) if sums[3 + n_lang + k] > 0}
    out = {"val_loss": round(sums[0] / max(1, sums[1]), 5), "val_bpb": round(bits_per_byte(sums[0], sums[2]), 5),
           "val_bpb_by_lang": by_lang}
    if detail:
        out["tokens"], out["bytes"] = int(sums[1]), int(sums[2])
        out["bytes_by_lang"] = {name: int(sums[3 + n_lang + k]) for k, name in enumerate(val.languages)
                                if sums[3 + n_lang + k] > 0}
    return out


def doc_ids(x: torch.Tensor, eot: int) -> torch.Tensor:
    """Document number of each position: the count of <|endoftext|> before it (the EOT ends its document)."""
    ends = (x == eot).int()
    return torch.cumsum(ends, dim=1) - ends
