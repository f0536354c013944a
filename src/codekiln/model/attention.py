"""Causal attention: a plain reference and the fast paths that are tested against it.

q is [B, H, T, D]; k and v are [B, KV, T, D] with H a multiple of KV (grouped-query attention).
`doc_ids` ([B, T] int) optionally confines attention to a token's own packed document.
Decoding with a KV cache goes through `cache_mask` and `masked`: queries are the T newest slots of a
left-padded cache, keys all its filled slots, and the mask is explicit (padding keys masked out).
ALiBi never goes through SDPA with a bias on a GPU (that takes the slow math kernel): there it uses
flash-attn's `alibi_slopes` when installed, else FlexAttention with a `score_mod`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def alibi_slopes(n_heads: int, bias_max: float = 8.0) -> torch.Tensor:
    """Per-head ALiBi slopes 2^(-bias_max * i / n) (MPT's rule for head counts that are not powers of two)."""
    n = 2 ** math.ceil(math.log2(n_heads))
    # On the CPU even inside a meta-device build: a meta arange imports torch's reference ops (a slow cold start).
    m = torch.arange(1, n + 1, dtype=torch.float64, device="cpu") * (bias_max / n)
    slopes = 1.0 / torch.pow(2.0, m)
    if n != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes.float()


def alibi_bias(slopes: torch.Tensor, t: int, device=None) -> torch.Tensor:
    """[H, T, T] additive ALiBi bias slope * (key - query); the causal mask is separate."""
    pos = torch.arange(t, device=device, dtype=torch.float32)
    return slopes.to(device)[:, None, None] * (pos[None, None, :] - pos[None, :, None])


def _mask(t: int, doc_ids: torch.Tensor | None, device) -> torch.Tensor:
    """Boolean [B|1, 1, T, T] mask, True where a query may attend to a key."""
    causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None]
    if doc_ids is None:
        return causal
    return causal & (doc_ids[:, None, :, None] == doc_ids[:, None, None, :])


def reference(q, k, v, slopes=None, doc_ids=None):
    """The plain definition, in float32: the fast paths are tested against this."""
    h, kv = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    qf, kf, vf = q.float(), k.float(), v.float()
    scores = qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if slopes is not None:
        scores = scores + alibi_bias(slopes, q.shape[2], q.device)[None]
    scores = scores.masked_fill(~_mask(q.shape[2], doc_ids, q.device), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ vf).to(q.dtype)


def sdpa(q, k, v, slopes=None, doc_ids=None):
    """PyTorch scaled_dot_product_attention: flash/efficient kernels without a bias, masked kernels with one."""
    gqa = q.shape[1] != k.shape[1]
    if slopes is None and doc_ids is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    mask = _mask(q.shape[2], doc_ids, q.device)
    if slopes is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    bias = alibi_bias(slopes, q.shape[2], q.device)[None].masked_fill(~mask, float("-inf")).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=gqa)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=8)
def _causal_block_mask(t: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, t, t, device=device)


def flex(q, k, v, slopes=None, doc_ids=None):
    """FlexAttention (compiled): ALiBi as a score_mod, causal and document masks as a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    t = q.shape[2]
    if doc_ids is None:
        block_mask = _causal_block_mask(t, str(q.device))
    else:
        def doc_causal(b, h, qi, ki):
            return (qi >= ki) & (doc_ids[b, qi] == doc_ids[b, ki])

        block_mask = create_block_mask(doc_causal, q.shape[0], None, t, t, device=str(q.device))
    score_mod = None
    if slopes is not None:
        s = slopes.to(device=q.device, dtype=torch.float32)

        def score_mod(score, b, h, qi, ki):
            return score + s[h] * (ki - qi)

    return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask,
                            enable_gqa=q.shape[1] != k.shape[1])


def flash_available() -> bool:
    """True when the flash-attn package is importable (GPU only)."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def flash(q, k, v, slopes=None, doc_ids=None):
    """flash-attn 2.x (native GQA and `alibi_slopes`); no document masking on this path."""
    from flash_attn import flash_attn_func

    if doc_ids is not None:
        raise ValueError("the flash-attn path does not take a document mask; use flex")
    if q.dtype not in (torch.float16, torch.bfloat16):  # flash-attn computes in 16-bit only
        return flex(q, k, v, slopes, doc_ids)
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
                          alibi_slopes=None if slopes is None else slopes.to(q.device, torch.float32))
    return out.transpose(1, 2)


def cache_mask(start: int, end: int, pad: torch.Tensor, slopes: torch.Tensor | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mask of queries at cache slots [start, end) over keys at slots [0, end), rows left-padded by `pad` [B].

    A query sees the real keys at or before its slot; a padding query sees only itself, so its softmax
    stays finite (nothing reads it). Without slopes: boolean [B, 1, T, S], True where it may attend.
    With ALiBi slopes: additive [B, H, T, S], slope * (key - query) or -inf. Slot differences equal
    position differences within a row, so padding does not change the bias.
    """
    device = pad.device
    q = torch.arange(start, end, device=device)
    k = torch.arange(end, device=device)
    allowed = (k[None, :] <= q[:, None])[None] & (k[None, None, :] >= pad[:, None, None])
    allowed = (allowed | (k[None, :] == q[:, None])[None])[:, None]
    if slopes is None:
        return allowed
    dist = (k[None, :] - q[:, None]).to(torch.float32)
    bias = slopes.to(device=device, dtype=torch.float32)[:, None, None] * dist[None]
    return bias[None].masked_fill(~allowed, float("-inf")).to(dtype)


def masked_reference(q, k, v, mask):
    """The plain definition with an explicit mask (boolean: True attends; float: added), in float32."""
    h, kv = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask.float()
    return (torch.softmax(scores, dim=-1) @ v.float()).to(q.dtype)


def masked_sdpa(q, k, v, mask):
    """scaled_dot_product_attention with an explicit mask: the cached decoding path on every device."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


IMPLS = {"reference": reference, "sdpa": sdpa, "flex": flex, "flash": flash}


def choose(impl: str, alibi: bool, device: torch.device, doc_mask: bool) -> str:
    """Resolve "auto": on a GPU, ALiBi takes flash-attn or Flex and RoPE takes SDPA's flash kernel.

    On a CPU SDPA's fused kernel takes the bias directly and needs no compile step, so it is the default
    there for both (FlexAttention must be compiled to be fast, which costs tens of seconds on a CPU).
    """
    if impl != "auto":
        return impl
    if device.type != "cuda":
        return "sdpa"
    if alibi:
        return "flash" if flash_available() and not doc_mask else "flex"
    return "flex" if doc_mask else "sdpa"
