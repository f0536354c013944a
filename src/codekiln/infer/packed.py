"""CPU decoding with prepacked weights: the model's linear layers run oneDNN's fp32 matmul on a weight laid
out for it once, instead of the default BLAS call on the plain matrix at every step.

    model, tok = codekiln.load(run_dir)
    pack_linear(model)              # in place; inference only from then on

Why: a decode step multiplies a handful of rows (one per running sequence) by every weight matrix, so it
is bound by reading the weights, and the largest by far is the LM head (vocabulary x d_model: 32 MB in
fp32 for the demo model). Measured on a 2-core AMD EPYC (docs/benchmarks.md), the default fp32 path for
that matrix takes 4-8 ms for 1-8 rows; the same product with the weight prepacked for oneDNN takes 2-4 ms.
The arithmetic stays fp32; only the order of the sums differs, so logits agree with the plain model to
rounding (tests/infer/test_packed.py states the tolerance). Small matrices gain nothing (the call costs
more than the product) and are left as they are.

This is what `torch.compile` does on a CPU when it freezes weights (oneDNN weight prepacking), without a
compile step: serving starts in seconds. The ops are PyTorch's private oneDNN ones, so `pack_linear` checks
that they exist and agree with `F.linear` on this machine, and otherwise leaves the model unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_WEIGHT = 1 << 20  # elements: smaller matrices stay on the default path (the call overhead dominates there)


@functools.cache
def packing_works() -> bool:
    """Whether this PyTorch build has oneDNN's prepacked fp32 linear and it agrees with F.linear here."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(1024, 64, generator=g), torch.randn(1024, generator=g)
        x = torch.randn(3, 5, 64, generator=g)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
    except (AttributeError, NotImplementedError, RuntimeError):
        return False
    return got.shape == (3, 5, 1024) and torch.allclose(got, F.linear(x, w, b), rtol=1e-4, atol=1e-4)


class PackedLinear(nn.Module):
    """`y = x W^T + b` in fp32 through oneDNN with W prepacked; inference only (buffers, no parameters)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        with torch.no_grad():
            self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().float(), None))
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("a packed model is for inference only")
        return torch.ops.mkldnn._linear_pointwise(x.float(), self.weight, self.bias, "none", [], "").to(x.dtype)

    def train(self, mode: bool = True):
        """Only eval mode exists."""
        if mode:
            raise RuntimeError("a packed model is for inference only")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linear(model: nn.Module, min_weight: int = MIN_WEIGHT) -> int:
    """Swap the large fp32 CPU nn.Linear layers of `model` for PackedLinear ones, in place; how many.

    Only layers whose weight holds at least `min_weight` elements (the LM head of any real vocabulary)
    are packed. Nothing changes where packing is unavailable (see packing_works), on other devices, in
    other dtypes, or for layers already quantized.
    """
    if not packing_works():
        return 0
    swaps = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if (type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32
                    and child.weight.numel() >= min_weight):
                swaps.append((parent, name, child))
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    if swaps:
        model.eval()
    return len(swaps)
