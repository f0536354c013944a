"""KV-cache slots for continuous batching: each sequence owns a slot that holds its own length.

`SlotCache` preallocates `slots` rows of keys and values per layer, [slots, kv_heads, context, head_dim].
Unlike `KVCache` (one length for a left-padded batch), every slot starts at position 0 and has its own
length, so sequences join and leave the running batch between decode steps. The running batch always
occupies slots 0..B-1, so a decode step reads a view of the buffers, never a gathered copy: a sequence
that leaves swaps places with the last running one (a copy of two rows, once, not at every step).

Slots that hold no running sequence keep what they computed (their `tokens`), so a later prompt that
shares a prefix with one of them starts from those keys and values instead of recomputing them (prefix
reuse, as llama.cpp's server does per slot). Memory is bounded by the slot count.

The cache follows the protocol `Transformer` drives (prepare, update, advance); `decode()` and
`prefill()` choose which rows the next forward covers.
"""

from __future__ import annotations

import torch

from codekiln.model import attention
from codekiln.model.transformer import rope_tables


class SlotCache:
    """Keys and values of `slots` sequences of up to `context` tokens each, with per-slot lengths."""

    def __init__(self, cfg, slots: int, context: int, device=None, dtype: torch.dtype = torch.float32):
        shape = (slots, cfg.kv_heads, context, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.slots, self.max_len = slots, context
        self.lengths = [0] * slots  # tokens whose keys and values slot s holds
        self.tokens: list[list[int]] = [[] for _ in range(slots)]  # those tokens, for prefix reuse
        self.rope = rope_tables(cfg.head_dim, context, cfg.rope_theta, device) if cfg.positions == "rope" else None
        self.device = device
        self._rows: tuple[int, int] = (0, 0)  # the slots [first, last) the next forward covers
        self._starts: torch.Tensor | None = None  # decode: each row's write position [B]
        self._start = 0  # prefill: the one row's first new position

    @classmethod
    def for_model(cls, model, slots: int, context: int) -> "SlotCache":
        """A cache on the model's device, in its dtype."""
        w = model.embed.weight
        return cls(model.cfg, slots, context, device=w.device, dtype=w.dtype)

    def bytes(self) -> int:
        """Memory the buffers hold."""
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    # Which rows the next forward covers.
    def decode(self, batch: int) -> None:
        """The next forward is one token for each of slots 0..batch-1, appended at their own lengths."""
        self._rows = (0, batch)
        self._starts = torch.tensor(self.lengths[:batch], dtype=torch.long, device=self.device)

    def prefill(self, slot: int) -> None:
        """The next forward is T tokens of slot `slot` alone, appended at its length."""
        self._rows = (slot, slot + 1)
        self._starts = None
        self._start = self.lengths[slot]

    # The protocol Transformer drives.
    def prepare(self, batch: int, t: int, slopes: torch.Tensor | None, dtype: torch.dtype):
        """(positions [B, T], mask) of the next forward: each row attends to its own filled slots and itself."""
        first, last = self._rows
        if batch != last - first:
            raise ValueError(f"the next forward covers {last - first} rows, the input {batch}")
        if self._starts is not None:  # decode: one token per row, each at its own position
            if t != 1:
                raise ValueError("a decode step takes one token per row")
            pos = self._starts[:, None]
            if int(pos.max()) >= self.max_len:
                raise ValueError(f"a slot holds {self.max_len} tokens; no room for another")
            span = int(pos.max()) + 1
            keys = torch.arange(span, device=pos.device)
            allowed = (keys[None, :] <= pos)[:, None, None, :]  # [B, 1, 1, S]
            if slopes is None:
                return pos, allowed
            dist = (keys[None, :] - pos).to(torch.float32)  # [B, S]
            bias = slopes.to(pos.device, torch.float32)[None, :, None, None] * dist[:, None, None, :]
            return pos, bias.masked_fill(~allowed, float("-inf")).to(dtype)
        start = self._start
        if start + t > self.max_len:
            raise ValueError(f"a slot holds {self.max_len} tokens; {start + t} are needed")
        pos = torch.arange(start, start + t, device=self.device)[None]
        pad = torch.zeros(1, dtype=torch.long, device=self.device)
        return pos, attention.cache_mask(start, start + t, pad, slopes, dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's new keys and values; the (keys, values) the forward's rows attend over."""
        first, last = self._rows
        kb, vb = self.k[layer], self.v[layer]
        if self._starts is not None:
            rows = torch.arange(last - first, device=k.device)
            kb[rows, :, self._starts] = k[:, :, 0]
            vb[rows, :, self._starts] = v[:, :, 0]
            span = int(self._starts.max()) + 1
            return kb[:last, :, :span], vb[:last, :, :span]
        end = self._start + k.shape[2]
        kb[first:last, :, self._start:end] = k
        vb[first:last, :, self._start:end] = v
        return kb[first:last, :, :end], vb[first:last, :, :end]

    def advance(self, t: int) -> None:
        """Count the forward's tokens as held (the caller records which tokens they were)."""
        first, last = self._rows
        for s in range(first, last):
            self.lengths[s] += t
        if self._starts is not None:
            self._starts = None

    # Slot bookkeeping.
    def swap(self, a: int, b: int) -> None:
        """Exchange the contents of slots a and b (only their filled parts are copied)."""
        if a == b:
            return
        n = max(self.lengths[a], self.lengths[b])
        if n:
            idx = torch.tensor([a, b], device=self.device)
            rev = torch.tensor([b, a], device=self.device)
            for buf in (*self.k, *self.v):
                buf[idx, :, :n] = buf[rev, :, :n]
        self.lengths[a], self.lengths[b] = self.lengths[b], self.lengths[a]
        self.tokens[a], self.tokens[b] = self.tokens[b], self.tokens[a]

    def truncate(self, slot: int, n: int) -> None:
        """Keep the first n tokens of a slot (its later entries are overwritten by the next prefill)."""
        self.lengths[slot] = min(self.lengths[slot], n)
        del self.tokens[slot][n:]


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (a binary search over list-slice comparisons,
    which run in C: a few microseconds for thousands of tokens)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo] holds, a[:hi + 1] != b[:hi + 1] does not
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
