"""Optimizers: decoupled LionW and AdamW, with one weight-decay convention for both.

Weight decay here is the fraction of each matrix removed per step at peak LR: every step does
p *= 1 - (lr_t / lr_peak) * weight_decay, so decay follows the schedule but its size does not depend
on the LR itself. 3e-5 equals AdamW's usual lr 3e-4 x wd 0.1. Because the number means the same thing
for both optimizers, switching between them needs no rescaling of weight_decay.

Lion updates every weight by +-lr (the sign of the momentum), so each step is larger than Adam's at
the same LR: it wants an LR 3-10x lower than AdamW (Chen et al., 2023, "Symbolic Discovery of
Optimization Algorithms"). LionW follows LLM Foundry's DecoupledLionW; it keeps one state tensor
per parameter where AdamW keeps two.

Norm weights and biases are not decayed: shrinking them toward zero has no regularizing effect and
only fights the normalization (see `param_groups`).
"""

from __future__ import annotations

import torch

from codekiln.errors import UserError

OPTIMIZERS = ("lionw", "adamw")


class LionW(torch.optim.Optimizer):
    """Lion with decoupled weight decay scaled by lr_t / initial_lr (LLM Foundry's DecoupledLionW)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, remembering its construction-time LR as `initial_lr` for the decay scale."""
        super().add_param_group(param_group)
        # The base class fills lr from the defaults, so read it back after.
        group = self.param_groups[-1]
        group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; `closure` re-evaluates the loss, as in torch.optim."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LionW does not support sparse gradients")
            exp_avgs = []
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avgs.append(state["exp_avg"])
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            if wd != 0:
                # Decay follows the schedule: at peak LR exactly `wd` of each weight is removed.
                initial_lr = group["initial_lr"]
                scale = lr / initial_lr if initial_lr else 1.0
                torch._foreach_mul_(params, 1.0 - scale * wd)
            # The update interpolates with beta1, but the momentum kept for next step uses beta2:
            # that split is what distinguishes Lion from signed momentum.
            updates = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_add_(params, updates, alpha=-lr)
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)
        return loss


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (matrices, embeddings) and an undecayed one."""
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters(remove_duplicate=False):
        # Tied weights (embedding and head) reach the same tensor by two names; step it once.
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                    betas: tuple[float, float] | None = None, fused: bool | None = None) -> torch.optim.Optimizer:
    """Build the named optimizer ("lionw" or "adamw") over `model` with decoupled weight decay."""
    if lr <= 0:
        raise UserError(f"learning rate must be positive, got {lr}")
    if weight_decay < 0:
        raise UserError(f"weight_decay must be >= 0, got {weight_decay}")
    groups = param_groups(model, weight_decay)
    if name == "lionw":
        # `fused` is AdamW's switch; LionW always uses the multi-tensor (foreach) path.
        opt = LionW(groups, lr=lr, betas=betas or (0.9, 0.99), weight_decay=weight_decay)
    elif name == "adamw":
        # torch's AdamW does p *= 1 - lr_t * wd_group, coupling decay to the LR's size. Setting
        # wd_group = weight_decay / lr makes that p *= 1 - (lr_t / lr) * weight_decay: the same
        # fraction-per-step-at-peak convention LionW uses, so one weight_decay means one thing.
        for group in groups:
            group["weight_decay"] = group["weight_decay"] / lr
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas or (0.9, 0.95), eps=1e-8, fused=fused)
    else:
        raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    for group in opt.param_groups:
        group["initial_lr"] = lr
    return opt
