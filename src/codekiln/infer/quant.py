"""int8 inference: the model's linear layers swapped for dynamic int8 ones after it is built.

    model, tok = codekiln.load(run_dir)
    quantize_int8(model)            # in place; returns the same model, eval-only from then on

Each `nn.Linear` becomes an `Int8Linear`: its weight rounded once to int8 per output channel
(symmetric, an fp32 scale per row), and at every call each input row rounded to int8 with its own
scale (dynamic, per token). The product runs in integers (`torch._int_mm`, oneDNN's VNNI/AMX kernels
on x86), exact in int32, and is rescaled to floats once. Weight-only int8 was measured first:
`torch._weight_int8pack_mm` has a vectorized CPU kernel only for bfloat16 activations, and for fp32
ones it was 10x slower than fp32 `F.linear`; dequantizing the weight at every call is slower than fp32
too (it reads the int8 weight and writes and reads an fp32 copy).

The model itself (`codekiln.model`) knows nothing of this, as with compilation or FSDP2 in training.
The embedding lookup stays fp32; with tied embeddings the LM head gets its own int8 copy of the matrix.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

QMAX = 127  # symmetric range [-127, 127]: -128 is never used, so negating a value never overflows
TRAINING_REFUSAL = ("an int8-quantized model is for inference only: train or fine-tune the fp32 model "
                    "and quantize it afterwards")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [M, K], fp32 scale [M, 1]) with x ~= q * scale, symmetric per row (an all-zero row gives zeros)."""
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-30) / QMAX
    return torch.round(x / scale).clamp_(-QMAX, QMAX).to(torch.int8), scale


@functools.cache
def int_mm_exact() -> bool:
    """True when this CPU's `torch._int_mm` gives exact int32 sums, extreme values included.

    oneDNN's int8 kernels on x86 CPUs without VNNI add pairs of u8 x s8 products in int16, which can
    saturate; where that happens the layers use the float fallback instead of wrong numbers.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-QMAX, QMAX + 1, (8, 256), generator=g, dtype=torch.int8)
    a[0], a[1] = QMAX, -QMAX
    b = torch.randint(-QMAX, QMAX + 1, (256, 24), generator=g, dtype=torch.int8)
    b[:, 0], b[:, 1] = QMAX, -QMAX
    try:
        got = torch._int_mm(a, b)
    except (AttributeError, NotImplementedError, RuntimeError):  # a private op: a build may lack it
        return False
    return torch.equal(got.long(), a.long() @ b.long())


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W held as int8 per output channel and x quantized per row at each call.

    Buffers only (`weight` int8 [out, in], `scale` fp32 [out], optional fp32 `bias`), so nothing in it
    trains; `train()` and inputs that require gradients are refused with TRAINING_REFUSAL.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """The int8 layer of an fp32 (or bf16) linear layer: weight rounded per output channel."""
        q, scale = quantize_rows(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(q, scale.squeeze(1), bias)

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight this layer computes with (int8 times its row's scale)."""
        return self.weight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(TRAINING_REFUSAL)
        shape = x.shape
        xq, xs = quantize_rows(x.reshape(-1, self.in_features))
        if x.device.type == "cpu" and int_mm_exact():
            y = torch._int_mm(xq, self.weight.t()).float()
        else:  # the same arithmetic in floats: other devices, and CPUs whose int8 kernels saturate
            y = F.linear(xq.float(), self.weight.float())
        y.mul_(xs).mul_(self.scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def train(self, mode: bool = True):
        """Only eval mode exists: an int8 layer has no gradients to train with."""
        if mode:
            raise RuntimeError(TRAINING_REFUSAL)
        return super().train(False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8(model: nn.Module, *, head: bool = True) -> nn.Module:
    """Swap every nn.Linear of `model` for an Int8Linear, in place (the LM head too unless head=False); returns it.

    The model is put in eval mode and its remaining parameters (embedding, norms) stop requiring
    gradients: from here on it is an inference model. Layers already int8 are left as they are, so a
    second call changes nothing.
    """
    model.eval()
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or (not head and name == "lm_head"):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int8Linear.from_linear(module).to(module.weight.device))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def is_quantized(model: nn.Module) -> bool:
    """True when any layer of the model is int8."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
