"""Grow a model's vocabulary: new embedding (and LM head) rows for tokens added to its tokenizer.

A pure function on a state dict and its ModelConfig, so the trainer can grow an imported model right
after reading it (codekiln.tokenizer.extend adds the tokens themselves).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from codekiln.errors import UserError
from codekiln.model.config import ModelConfig

ROW_MULTIPLE = 64  # the trainer keeps the model's vocabulary a multiple of 64 (fast matmuls): so does growing it


def add_rows(state: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int,
             tokens_before: int | None = None) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """The state dict and config with room for `vocab` tokens: 64 * ceil(vocab / 64) rows, never fewer than now.

    Rows from `tokens_before` to the end are set to the mean of the rows before it, in `embed.weight`
    and, when untied, `lm_head.weight`; rows below it are kept bit for bit. `tokens_before` is the
    tokenizer's size before the tokens were added; by default every existing row holds a token (so a
    model that fits `vocab` already comes back unchanged). Pass it for a model whose rows beyond its
    tokenizer are padding: the new tokens take those rows, and they are reset too.

    So a new token starts as an average token: its output logit is the mean of the old logits, which by
    Jensen's inequality gives it no more probability than an average old token, and the model's
    distribution over the old tokens barely moves. Randomly initialised rows can instead have a large
    dot product with the hidden state and take over the softmax, so the first fine-tuning steps spend
    themselves undoing that. This is the practice John Hewitt's note on initialising new word
    embeddings argues for, and what transformers' resize_token_embeddings does by default (there as the
    centre of a sampled distribution; here the mean itself, so the result is deterministic).

    A tied state dict may hold lm_head.weight as the same tensor as embed.weight or not hold it at all
    (a checkpoint file); it comes back the same way. Other tensors are returned as they are.
    """
    if tokens_before is not None and not 0 < tokens_before <= min(vocab, cfg.vocab_size):
        raise UserError(f"tokens_before {tokens_before} is not within the model's {cfg.vocab_size} rows and the new "
                         f"vocab {vocab}: rows are added, never removed")
    if tokens_before is None:
        tokens_before = cfg.vocab_size
    rows = max(cfg.vocab_size, ROW_MULTIPLE * math.ceil(vocab / ROW_MULTIPLE))
    if rows == tokens_before:  # every row is a token the model has: nothing to add
        return dict(state), cfg
    tied_in_state = cfg.tie_embeddings and "lm_head.weight" in state
    out = dict(state)
    out["embed.weight"] = _grown(state["embed.weight"], rows, tokens_before)
    if tied_in_state:
        out["lm_head.weight"] = out["embed.weight"]
    elif not cfg.tie_embeddings:
        out["lm_head.weight"] = _grown(state["lm_head.weight"], rows, tokens_before)
    return out, dataclasses.replace(cfg, vocab_size=rows)


def _grown(weight: torch.Tensor, rows: int, tokens_before: int) -> torch.Tensor:
    """weight with `rows` rows: the first tokens_before kept, every later one their mean (in float64, then cast)."""
    if weight.shape[0] < tokens_before:
        raise UserError(f"a weight of {weight.shape[0]} rows has fewer than tokens_before {tokens_before}")
    mean = weight[:tokens_before].detach().double().mean(dim=0).to(weight.dtype)
    grown = weight.new_empty((rows, *weight.shape[1:]))
    grown[:] = mean
    grown[:tokens_before] = weight[:tokens_before].detach()
    return grown
