"""LoRA fine-tuning: low-rank adapters added to a built Transformer, everything else frozen.

Applied after the model is built and its weights loaded, like the other wrappers of codekiln.train (the
model itself knows nothing of it). Every target linear becomes a LoRALinear that keeps the base `weight`
and `bias` under their names and adds `lora_A` and `lora_B`; with `rows_from` the embedding (and the LM
head) get the new vocabulary rows as a separate trainable `new_rows`. So `model.state_dict()` is the raw
LoRA state dict codekiln.adapters documents: the base's keys unchanged plus the adapter tensors, which a
checkpoint stores as is (the tied head once, as always) and `load_state_dict(strict=True)` takes back.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from codekiln.adapters import LoraSpec
from codekiln.errors import UserError


class LoRALinear(nn.Module):
    """A frozen linear plus scale * B @ A: `weight @ x + bias + scale * B @ (A @ x)`; B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, generator: torch.Generator):
        super().__init__()
        self.in_features, self.out_features, self.scale = base.in_features, base.out_features, scale
        self.weight = base.weight  # the same Parameter: no copy, and the same state-dict key
        self.weight.requires_grad_(False)
        self.bias = base.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)
        a = torch.empty(rank, self.in_features)
        # PyTorch's nn.Linear init, as the LoRA paper's code and PEFT use for A: uniform, bound 1 / sqrt(in)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(a.to(device=self.weight.device, dtype=self.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=self.weight.device,
                                               dtype=self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.lora_A.shape[0]}"


class NewRowsEmbedding(nn.Module):
    """An embedding whose rows >= rows_from come from the trainable `new_rows` and the rest from the frozen `weight`."""

    def __init__(self, base: nn.Embedding, rows_from: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rows_from = base.num_embeddings, base.embedding_dim, rows_from
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.new_rows = nn.Parameter(base.weight.detach()[rows_from:].clone())

    def full_weight(self) -> torch.Tensor:
        """The [vocab, d] matrix in use: frozen rows, then the new ones."""
        return torch.cat([self.weight[: self.rows_from], self.new_rows])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.full_weight())


class NewRowsHead(nn.Module):
    """The LM head over the same split: an untied head has its own frozen `weight` and trainable `new_rows`;
    a tied one keeps `weight` (the embedding's Parameter, so the state dict is unchanged) and multiplies by
    the embedding's full matrix, so head and embedding train the same new rows."""

    def __init__(self, base: nn.Linear, rows_from: int, tied_to: NewRowsEmbedding | None):
        super().__init__()
        self.in_features, self.out_features, self.rows_from = base.in_features, base.out_features, rows_from
        self.weight = base.weight
        self.weight.requires_grad_(False)
        # A plain tuple, not a submodule: the embedding's parameters stay registered once, under embed.
        self._tied_to = (tied_to,) if tied_to is not None else ()
        if tied_to is None:
            self.new_rows = nn.Parameter(base.weight.detach()[rows_from:].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tied_to:
            return F.linear(x, self._tied_to[0].full_weight())
        return F.linear(x, torch.cat([self.weight[: self.rows_from], self.new_rows]))


def apply_lora(model: nn.Module, spec: LoraSpec, seed: int) -> None:
    """Adapt a Transformer in place: LoRALinear for every target linear, new vocabulary rows when
    spec.rows_from is set, every other parameter frozen. Each A is drawn in module order from one
    generator seeded by `seed`, so the same seed gives the same adapters."""
    cfg = model.cfg
    if spec.rows_from is not None and not 0 <= spec.rows_from < cfg.vocab_size:
        raise UserError(f"lora: rows_from {spec.rows_from} must be below the vocabulary size {cfg.vocab_size}")
    if any(isinstance(m, (LoRALinear, NewRowsEmbedding, NewRowsHead)) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    adapted = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in spec.targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, spec.rank, spec.scale, generator))
                adapted += 1
    if adapted == 0:
        raise UserError(f"lora: the model has none of the target layers {', '.join(spec.targets)}")
    if spec.rows_from is not None:
        tied = cfg.tie_embeddings
        model.embed = NewRowsEmbedding(model.embed, spec.rows_from)
        model.lm_head = NewRowsHead(model.lm_head, spec.rows_from, model.embed if tied else None)


def trainable_parameters(model: nn.Module) -> int:
    """Parameters the optimizer updates (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
