"""The decoder-only transformer: embeddings, blocks of (norm, attention, norm, MLP), a final norm, the LM head.

A plain nn.Module that knows nothing of training or parallelism (those are applied by codekiln.train),
nor of generation: `model(ids, cache=KVCache(...))` runs the next tokens of a batch against cached keys
and values, and codekiln.infer decides what those tokens are.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from codekiln.model import attention
from codekiln.model.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (Llama)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    """The configured norm."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


def rope_tables(head_dim: int, t: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [T, head_dim] in the half-split layout Hugging Face Llama checkpoints use."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(t, device=device, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, D] by position."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class KVCache:
    """Preallocated keys and values of every layer, [B, kv_heads, max_len, head_dim] each (GQA caches kv heads only).

    Rows are left-padded: row b's first `pad[b]` slots hold padding that no query attends to, and its
    RoPE positions count from 0 at its first real token. Every forward appends the same number of
    slots to all rows, so one `length` describes the whole batch.
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, pad=None, device=None,
                 dtype: torch.dtype = torch.float32):
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.pad = (torch.zeros(batch, dtype=torch.long, device=device) if pad is None
                    else torch.as_tensor(pad, dtype=torch.long, device=device))
        if self.pad.shape != (batch,):
            raise ValueError(f"pad must hold one length per row ({batch}), not {tuple(self.pad.shape)}")
        self.max_len = max_len
        self.length = 0  # slots filled, padding included
        self.rope = rope_tables(cfg.head_dim, max_len, cfg.rope_theta, device) if cfg.positions == "rope" else None

    @classmethod
    def for_model(cls, model: "Transformer", batch: int, max_len: int, pad=None) -> "KVCache":
        """A cache on the model's device, in its dtype."""
        w = model.embed.weight
        return cls(model.cfg, batch, max_len, pad, device=w.device, dtype=w.dtype)

    @property
    def batch(self) -> int:
        """Rows in the cache."""
        return self.pad.shape[0]

    def select(self, rows) -> None:
        """Keep only these rows (finished sequences leave the batch), dropping padding they all share."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.pad.device)
        pad = self.pad.index_select(0, rows)
        drop = int(pad.min()) if rows.numel() else 0  # slots of padding in every kept row: never attended
        self.k = [k.index_select(0, rows)[:, :, drop:] for k in self.k]
        self.v = [v.index_select(0, rows)[:, :, drop:] for v in self.v]
        # Positions are slot - pad and both move by `drop`, so positions, ALiBi distances and the RoPE table hold.
        self.pad, self.length, self.max_len = pad - drop, self.length - drop, self.max_len - drop

    # The cache protocol `Transformer` drives (SlotCache in codekiln.infer implements it too).
    def prepare(self, batch: int, t: int, slopes: torch.Tensor | None, dtype: torch.dtype):
        """(positions [B, T], mask) for the next t tokens of every row: see attention.cache_mask."""
        start, end = self.length, self.length + t
        if batch != self.batch:
            raise ValueError(f"the cache holds {self.batch} rows, the input {batch}")
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} slots; {end} are needed")
        pos = (torch.arange(start, end, device=self.pad.device)[None] - self.pad[:, None]).clamp(min=0)
        return pos, attention.cache_mask(start, end, self.pad, slopes, dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this layer's new keys and values; (keys, values) of every filled slot to attend over."""
        start, end = self.length, self.length + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, t: int) -> None:
        """Mark the t tokens of the last forward as filled."""
        self.length += t


class LayerKV(NamedTuple):
    """One layer's view of a cached forward: the cache, the layer's index in it, and the shared mask."""

    cache: "KVCache"
    layer: int
    mask: torch.Tensor


class Attention(nn.Module):
    """Grouped-query causal self-attention with ALiBi or RoPE."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.d_model, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=cfg.bias)
        self.k_proj = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.bias)
        self.v_proj = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=cfg.bias)

    def forward(self, x, rope=None, slopes=None, doc_ids=None, impl="sdpa", kv: LayerKV | None = None):
        b, t, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(b, t, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        if cfg.clip_qkv is not None:
            q, k, v = (z.clamp(-cfg.clip_qkv, cfg.clip_qkv) for z in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:  # append to the cache, attend over everything in it
            keys, values = kv.cache.update(kv.layer, k, v)
            attend = attention.masked_reference if impl == "reference" else attention.masked_sdpa
            y = attend(q, keys, values, kv.mask)
        else:
            y = attention.IMPLS[impl](q, k, v, slopes=slopes, doc_ids=doc_ids)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, cfg.n_heads * cfg.head_dim))


class MLP(nn.Module):
    """GELU (MPT/GPT) or SwiGLU (Llama) feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.hidden, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm residual block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, slopes=None, doc_ids=None, impl="sdpa", kv: LayerKV | None = None):
        x = x + self.attn(self.attn_norm(x), rope, slopes, doc_ids, impl, kv)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """`model(input_ids[, doc_ids])` -> logits [batch, time, vocab].

    With `cache=KVCache(...)`, input_ids are the next tokens of every row: their keys and values are
    appended to the cache and they attend to all of it. `last_only` computes the LM head for the last
    position only (what generation needs).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if torch.empty(0).is_meta:  # built to be loaded into: skip nn.Embedding's init, whose normal_ on the meta
            # device imports torch's reference ops (1-2 s of a server's cold start); real builds keep their RNG use
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, _weight=torch.empty(cfg.vocab_size, cfg.d_model))
        else:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.register_buffer("alibi_slopes", attention.alibi_slopes(cfg.n_heads, cfg.alibi_bias_max),
                             persistent=False)
        self.attn_impl = cfg.attn_impl  # resolved on first forward from the device; settable
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self):
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 * n_layers) (GPT-2)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 2:
                scale = 1 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1
                nn.init.normal_(p, 0.0, std * scale)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.ones_(p)
        self.init_buffers()

    def init_buffers(self):
        """(Re)compute the non-persistent ALiBi slopes on the parameters' device (after a meta-device build)."""
        slopes = attention.alibi_slopes(self.cfg.n_heads, self.cfg.alibi_bias_max)
        self.register_buffer("alibi_slopes", slopes.to(self.embed.weight.device), persistent=False)

    def forward(self, input_ids: torch.Tensor, doc_ids: torch.Tensor | None = None, *,
                cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        if cache is not None:
            if doc_ids is not None:
                raise ValueError("doc_ids (packed training documents) and a KV cache do not go together")
            return self._forward_cached(input_ids, cache, last_only)
        t = input_ids.shape[1]
        impl = attention.choose(self.attn_impl, self.cfg.positions == "alibi", input_ids.device, doc_ids is not None)
        rope = slopes = None
        if self.cfg.positions == "rope":
            rope = rope_tables(self.cfg.head_dim, t, self.cfg.rope_theta, input_ids.device)
        else:
            slopes = self.alibi_slopes
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, rope, slopes, doc_ids, impl)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def _forward_cached(self, input_ids: torch.Tensor, cache, last_only: bool) -> torch.Tensor:
        """The incremental forward: input_ids [B, T] are the next tokens of every row of the cache.

        `cache` follows the protocol of KVCache: prepare(B, T, slopes, dtype) gives each new token's
        position and the attention mask, update(layer, k, v) stores a layer's keys and values and returns
        what to attend over, advance(T) marks them filled.
        """
        b, t = input_ids.shape
        # Every path but the reference takes SDPA with an explicit mask here (flash-attn and Flex have no padding mask).
        impl = "reference" if self.attn_impl == "reference" else "sdpa"
        x = self.embed(input_ids)
        slopes = self.alibi_slopes if self.cfg.positions == "alibi" else None
        pos, mask = cache.prepare(b, t, slopes, x.dtype)
        rope = None
        if self.cfg.positions == "rope":
            cos, sin = cache.rope
            rope = cos[pos][:, None], sin[pos][:, None]  # [B, 1, T, head_dim]: each row its own positions
        for i, block in enumerate(self.blocks):
            x = block(x, rope, slopes, None, impl, LayerKV(cache, i, mask))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))
