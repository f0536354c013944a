"""LoRA adapters as data: the spec a fine-tuning run records, and the merge every consumer of its checkpoint needs.

A neutral module at the bottom (shared seam, ARCHITECTURE.md): the trainer (codekiln.train.lora) adds the
adapters to a model, checkpoint reading (codekiln.checkpoint) merges them back into plain weights so every
consumer sees an ordinary Transformer, and export (codekiln.export.peft) writes them alone. It holds no
nn.Module and no I/O.

A LoRA checkpoint's model.safetensors is the raw state dict of the adapted model. Next to every base
tensor, under its usual name, a target linear `P` (e.g. `blocks.3.attn.q_proj`) holds

    P.lora_A   [rank, in_features]    P.lora_B   [out_features, rank]

and the layer computes `P.weight @ x + scale * P.lora_B @ (P.lora_A @ x)` with `scale = alpha / rank`.
With `rows_from` set, the vocabulary rows `>= rows_from` (tokens added for the fine-tuning) train in full:

    embed.new_rows     [vocab_size - rows_from, d_model]   replace embed.weight[rows_from:]
    lm_head.new_rows   the same for an untied LM head (a tied head reads the embedding's rows)

while `embed.weight[rows_from:]` (and `lm_head.weight[rows_from:]`) keep their stale initial values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codekiln.errors import UserError

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_A, LORA_B, NEW_ROWS = "lora_A", "lora_B", "new_rows"  # tensor name suffixes (see the module docstring)
RECORD_METADATA = ("base",)  # keys a checkpoint's "lora" record may hold beside the spec (the base model's path)


@dataclass(frozen=True)
class LoraSpec:
    """Which linears get low-rank adapters, their rank and alpha, and from which row the vocabulary is new."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = TARGETS
    rows_from: int | None = None  # embedding rows >= rows_from are new tokens, trained in full

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))

        def whole(v):
            return isinstance(v, int) and not isinstance(v, bool)

        number = isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
        known = len(self.targets) > 0 and set(self.targets) <= set(TARGETS) and len(set(self.targets)) == len(
            self.targets)
        checks = [
            (whole(self.rank) and self.rank > 0, f"rank must be a positive integer, not {self.rank!r}"),
            (number and math.isfinite(self.alpha) and self.alpha > 0,
             f"alpha must be a positive number, not {self.alpha!r}"),
            (known, f"targets must be distinct names among {', '.join(TARGETS)}, not {list(self.targets)}"),
            (self.rows_from is None or whole(self.rows_from) and self.rows_from >= 0,
             f"rows_from must be a non-negative integer or null, not {self.rows_from!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"lora: {message}")

    @property
    def scale(self) -> float:
        """The factor on B @ A: alpha / rank (the LoRA paper's)."""
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        """Plain dict for a checkpoint's config.json "lora" record."""
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets), "rows_from": self.rows_from}

    @classmethod
    def from_dict(cls, d) -> "LoraSpec":
        """The inverse of to_dict (the record's metadata keys, such as "base", ignored); a bad record is a UserError."""
        if not isinstance(d, dict):
            raise UserError(f"lora: the record must be an object, not {type(d).__name__}")
        fields = ("rank", "alpha", "targets", "rows_from")
        unknown = sorted(set(d) - set(fields) - set(RECORD_METADATA))
        if unknown:
            raise UserError(f"lora: unknown key {unknown[0]!r} in the record")
        if "rank" not in d or "alpha" not in d:
            raise UserError("lora: the record needs rank and alpha")
        targets = d.get("targets", list(TARGETS))
        if not isinstance(targets, (list, tuple)):
            raise UserError(f"lora: targets must be a list of names, not {targets!r}")
        return cls(rank=d["rank"], alpha=d["alpha"], targets=tuple(targets), rows_from=d.get("rows_from"))


def is_adapter_tensor(name: str) -> bool:
    """True for a LoRA factor or a block of new vocabulary rows (what a fine-tune trains)."""
    return name.rsplit(".", 1)[-1] in (LORA_A, LORA_B, NEW_ROWS)


def adapter_tensors(state: dict[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    """Only the trained tensors of a raw LoRA state dict: every lora_A, lora_B and new_rows."""
    _check(state, spec)
    return {name: value for name, value in state.items() if is_adapter_tensor(name)}


def adapter_bytes(state: dict[str, torch.Tensor], spec: LoraSpec) -> int:
    """Bytes the trained tensors take at their stored dtype (the size of the adapter alone)."""
    return sum(t.numel() * t.element_size() for t in adapter_tensors(state, spec).values())


def merged_state(state: dict[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    """A raw LoRA state dict -> the plain Transformer state dict that computes the same function.

    Each adapted weight becomes W + scale * B @ A, summed in float32 and cast back to W's dtype; the new
    rows are written into embed.weight (and an untied lm_head.weight). A tied `lm_head.weight` entry, if
    present, ends up the same tensor as the merged embed.weight. The input is left unchanged.
    """
    _check(state, spec)
    tied = _tied(state)
    out = {name: value for name, value in state.items() if not is_adapter_tensor(name)}
    for name, a in state.items():
        if not name.endswith("." + LORA_A):
            continue
        prefix = name[: -len(LORA_A) - 1]
        w, b = state[f"{prefix}.weight"], state[f"{prefix}.{LORA_B}"]
        delta = b.to(device=w.device, dtype=torch.float32) @ a.to(device=w.device, dtype=torch.float32)
        out[f"{prefix}.weight"] = (w.float() + spec.scale * delta).to(w.dtype)
    for owner in ("embed", "lm_head"):
        rows = state.get(f"{owner}.{NEW_ROWS}")
        if rows is not None:
            w = state[f"{owner}.weight"]
            out[f"{owner}.weight"] = torch.cat([w[: spec.rows_from], rows.to(device=w.device, dtype=w.dtype)])
    if tied:
        out["lm_head.weight"] = out["embed.weight"]
    return out


def _tied(state: dict[str, torch.Tensor]) -> bool:
    """Whether the state's lm_head.weight is the embedding itself (a tied head: the same storage, not a copy)."""
    head, embed = state.get("lm_head.weight"), state.get("embed.weight")
    if head is None or embed is None:
        return False
    return head is embed or (head.device == embed.device and head.shape == embed.shape
                             and head.data_ptr() == embed.data_ptr() != 0)


def _check(state: dict[str, torch.Tensor], spec: LoraSpec) -> None:
    """A UserError naming the first tensor that does not fit the spec (a mismatched or damaged checkpoint)."""
    adapted = 0
    for name, value in state.items():
        suffix = name.rsplit(".", 1)[-1]
        if suffix not in (LORA_A, LORA_B):
            continue
        prefix = name[: -len(suffix) - 1]
        other = f"{prefix}.{LORA_B if suffix == LORA_A else LORA_A}"
        weight = state.get(f"{prefix}.weight")
        if prefix.rsplit(".", 1)[-1] not in spec.targets:
            raise UserError(f"lora: checkpoint tensor {name} adapts a layer outside the recorded targets")
        if weight is None or other not in state:
            raise UserError(f"lora: checkpoint tensor {name} lacks its {'weight' if weight is None else other}")
        out_features, in_features = weight.shape
        want = (spec.rank, in_features) if suffix == LORA_A else (out_features, spec.rank)
        if tuple(value.shape) != want:
            raise UserError(f"lora: checkpoint tensor {name} has shape {tuple(value.shape)}, not {want} "
                            f"(rank {spec.rank})")
        adapted += suffix == LORA_A
    if adapted == 0:
        raise UserError("lora: the checkpoint records LoRA but holds no lora_A/lora_B tensors")
    for owner in ("embed", "lm_head"):
        rows = state.get(f"{owner}.{NEW_ROWS}")
        if rows is None:
            continue
        weight = state.get(f"{owner}.weight")
        if spec.rows_from is None or weight is None:
            raise UserError(f"lora: checkpoint tensor {owner}.{NEW_ROWS} does not fit the record "
                            f"(rows_from {spec.rows_from}, {owner}.weight {'absent' if weight is None else 'present'})")
        want = (weight.shape[0] - spec.rows_from, weight.shape[1])
        if tuple(rows.shape) != want:
            raise UserError(f"lora: checkpoint tensor {owner}.{NEW_ROWS} has shape {tuple(rows.shape)}, not {want}")
    if spec.rows_from is None:
        return
    untied = "lm_head.weight" in state and not _tied(state)
    for owner in ("embed", "lm_head") if untied else ("embed",):
        if f"{owner}.{NEW_ROWS}" not in state:
            raise UserError(f"lora: the record has rows_from {spec.rows_from} but the checkpoint holds no "
                            f"{owner}.{NEW_ROWS}")
