"""Reading checkpoints (ARCHITECTURE.md, run directory): find a run's latest checkpoint, its model config,
its weights and its tokenizer.

A neutral module (shared seam): `codekiln.load`, the trainer's `init_from` and resume all read through
it; writing checkpoints is the trainer's job (codekiln.train.checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from codekiln.errors import UserError


def latest(run: Path) -> Path | None:
    """The newest complete checkpoint of a run (what checkpoints/latest names), or None."""
    marker = Path(run) / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    path = Path(run) / "checkpoints" / marker.read_text().strip()
    return path if is_checkpoint(path) else None


def is_export(path: Path) -> bool:
    """True for a directory written by `codekiln export hf` (its codekiln.json restores our model)."""
    from codekiln.hf_layout import is_export as has_export_record

    return has_export_record(path)


def is_checkpoint(path: Path) -> bool:
    """True for a checkpoints/step-N directory."""
    path = Path(path)
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        return False
    try:
        return "model" in json.loads((path / "config.json").read_text())
    except json.JSONDecodeError:
        return False


def resolve(path: str | Path) -> Path:
    """A run directory (its latest checkpoint) or a checkpoint directory -> the checkpoint directory."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist")
    if (p / "checkpoints").is_dir():
        found = latest(p)
        if found is None:
            raise UserError(f"run {p} has no complete checkpoint yet")
        return found
    if is_checkpoint(p) or is_export(p):
        return p
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        raise UserError(f"{p} is a Hugging Face model without codekiln.json, not a codekiln export; "
                        "bring it in with `codekiln import hf`")
    raise UserError(f"{p} is neither a run directory, a checkpoint directory nor an exported directory")


def model_config(ckpt: Path):
    """The ModelConfig a checkpoint (or an export, through its codekiln.json) was saved with."""
    from codekiln.model import ModelConfig

    if is_export(ckpt):
        from codekiln.hf_layout import export_model_config

        return export_model_config(ckpt)
    return ModelConfig.from_dict(json.loads((Path(ckpt) / "config.json").read_text())["model"])


def lora_record(ckpt: Path) -> dict | None:
    """The "lora" record of a checkpoint's config.json (a LoRA fine-tune's spec and base), or None."""
    path = Path(ckpt) / "config.json"
    if is_export(ckpt) or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON") from None
    return record.get("lora") if isinstance(record, dict) else None


def lora_spec(ckpt: Path):
    """The LoraSpec a checkpoint was trained with (codekiln.adapters), or None for a plain model."""
    from codekiln.adapters import LoraSpec

    record = lora_record(ckpt)
    return None if record is None else LoraSpec.from_dict(record)


def read_model_tensors(path: Path, cfg, merge: bool = True) -> dict:
    """model.safetensors as a full state dict (the tied LM head restored); an export's stock tensors mapped back.

    A LoRA fine-tune's checkpoint (a "lora" record in its config.json) is merged into plain weights, so every
    consumer sees an ordinary Transformer; merge=False gives its raw adapter state (what resuming it needs).
    """
    from safetensors.torch import load_file

    ckpt = Path(path).parent
    if is_export(ckpt):
        from codekiln.hf_layout import read_export_tensors

        return read_export_tensors(ckpt, cfg)
    state = load_file(str(path))
    if cfg.tie_embeddings and "embed.weight" in state:
        state["lm_head.weight"] = state["embed.weight"]
    spec = lora_spec(ckpt) if merge else None
    if spec is not None:
        from codekiln.adapters import merged_state

        state = merged_state(state, spec)
    return state


def tokenizer_dir(ckpt: Path) -> Path:
    """The tokenizer directory of the run a checkpoint belongs to (run/tokenizer beside run/checkpoints);
    an export holds its tokenizer files itself."""
    if is_export(ckpt):
        return Path(ckpt)
    return Path(ckpt).parent.parent / "tokenizer"


def repo_level_fim(ckpt: Path) -> bool:
    """Whether the model was trained on repository-level FIM (other files of the repository behind
    `<|file_sep|>` tokens, then the current file as FIM): the `"repo_level_fim": true` record in the
    checkpoint's config.json (or an export's codekiln.json). Clients add other files as repository
    context only then; a model that never saw that layout is prompted with the current file alone."""
    record = Path(ckpt) / ("codekiln.json" if is_export(ckpt) else "config.json")
    try:
        return bool(json.loads(record.read_text()).get("repo_level_fim", False))
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
