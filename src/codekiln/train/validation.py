"""Validation: cross-entropy and bits per byte, overall and per language (training and `codekiln eval bpb`)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from codekiln.train import parallel
from codekiln.train.data import ValSet, bits_per_byte


def validate(model, val: ValSet, batch_size: int, device, autocast=contextlib.nullcontext, d: parallel.Dist | None = None,
             doc_mask: bool = False, eot: int = 0, detail: bool = False) -> dict:
    """Validation loss and bits per byte, overall and per language, summed over every rank's share."""
    d = d or parallel.Dist(device=torch.device(device))
    was_training = model.training
    model.eval()
    n_lang = len(val.languages)
    sums = np.zeros(3 + 2 * n_lang)  # nats, tokens, bytes, then nats and bytes per language
    # Every rank runs the same number of forward passes (FSDP2 all-gathers in each); a rank short of rows
    # repeats row 0 with weight 0.
    per_rank = -(-len(val) // d.world)
    rows = list(range(d.rank, len(val), d.world))
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
    sums = np.asarray(parallel.all_reduce_sum(sums.tolist(), d))
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
