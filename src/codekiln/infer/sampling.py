"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p.

Every row draws from its own `torch.Generator`, one uniform number per step, so a row's samples
depend only on its seed and its own logits, never on which other rows share the batch.
"""

from __future__ import annotations

import numpy as np
import torch


def row_seed(seed: int, row: int) -> int:
    """A well-mixed 64-bit seed for one row, so seed s row 1 and seed s+1 row 0 do not repeat each other."""
    return int(np.random.SeedSequence([seed, row]).generate_state(2, dtype=np.uint32).view(np.uint64)[0])


def generators(seed: int | list[int] | None, rows: int) -> list[torch.Generator]:
    """One CPU generator per row: `seed` mixed with the row index, a seed per row, or fresh entropy."""
    if seed is None:
        return [_fresh() for _ in range(rows)]
    if isinstance(seed, (int, np.integer)):
        return [torch.Generator().manual_seed(row_seed(seed, i)) for i in range(rows)]
    if len(seed) != rows:
        raise ValueError(f"{len(seed)} seeds for {rows} prompts")
    return [torch.Generator().manual_seed(row_seed(int(s), 0)) for s in seed]


def _fresh() -> torch.Generator:
    """A generator seeded from the operating system's entropy."""
    g = torch.Generator()
    g.seed()
    return g


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Probabilities [B, V] after keeping the top_k most likely tokens and the smallest set with mass >= top_p."""
    logits = logits.float()
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens; the most likely always stays
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return probs


def sample(logits: torch.Tensor, gens: list[torch.Generator], temperature: float = 0.0, top_k: int = 0,
           top_p: float = 1.0) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]; temperature 0 is greedy (argmax)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p)
    # Inverse-CDF sampling with one uniform per row from that row's generator.
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens]).to(probs.device)
    cdf = probs.double().cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return picked.clamp(max=probs.shape[-1] - 1)
