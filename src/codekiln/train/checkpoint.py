"""Writing checkpoints: atomic (written under a temporary name, flushed to disk, renamed, `latest` written
last), the last N kept. Reading them is codekiln.checkpoint's job (a neutral module every consumer uses).

checkpoints/step-N/ holds model.safetensors and config.json (what a consumer needs), optimizer.pt,
and trainer.json (step, tokens, schedule position, every rank's data position and the RNG states).
With FSDP2 the full state is gathered to rank 0 (fine up to a few billion parameters on one host's
memory); larger runs would want torch.distributed.checkpoint's sharded format instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from codekiln import __version__
from codekiln.checkpoint import latest
from codekiln.files import atomic_write_bytes, fsync_dir, fsync_file
from codekiln.model import ModelConfig


CHECKPOINT_FILES = ("model.safetensors", "config.json", "optimizer.pt", "trainer.json")


def checkpoint_dir(run: Path, step: int) -> Path:
    """Where step N's checkpoint lives."""
    return run / "checkpoints" / f"step-{step}"


def resumable(run: Path) -> Path | None:
    """The newest complete checkpoint of a run with the trainer state to resume from, or None."""
    path = latest(run)
    return path if path is not None and (path / "trainer.json").is_file() else None


def model_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A state dict as safetensors wants it: contiguous, the tied LM head stored once (as embed.weight)."""
    out = {k: v.detach().contiguous() for k, v in state.items()}
    if cfg.tie_embeddings:
        out.pop("lm_head.weight", None)
    return out


def save(run: Path, step: int, model_state: dict, cfg: ModelConfig, optim_state: dict, trainer: dict,
         keep: int, extra: dict | None = None) -> Path:
    """Write checkpoint step N atomically and prune all but the newest `keep`; rank 0 only. `extra` joins
    config.json's record (`lora`: the adapters' spec; `repo_level_fim`: trained in the editors' layout)."""
    final = checkpoint_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_tensors(model_state, cfg), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps({"codekiln_version": __version__, "model": cfg.to_dict(),
                                                 "step": step, "tokens": trainer["tokens"], **(extra or {})},
                                                indent=2) + "\n")
    torch.save(optim_state, tmp / "optimizer.pt")
    (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2) + "\n")
    # On disk before `latest` names it: after a power cut, `latest` never points at files the kernel
    # had not yet written (renames can reach the disk before the data they name).
    for name in CHECKPOINT_FILES:
        fsync_file(tmp / name)
    fsync_dir(tmp)
    if final.exists():  # a rerun that reached the same step again: replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    atomic_write_bytes(run / "checkpoints" / "latest", f"{final.name}\n".encode())
    steps = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        if old != step:
            shutil.rmtree(checkpoint_dir(run, old), ignore_errors=True)
    return final


def clean(run: Path, resumed: Path) -> None:
    """Before resuming: drop checkpoints newer than the one resumed and temporaries of killed saves."""
    base = run / "checkpoints"
    step = int(resumed.name.split("-")[1])
    for p in base.iterdir():
        if p.name.startswith(".step-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith("step-") and p.is_dir() and int(p.name.split("-")[1]) > step:
            shutil.rmtree(p, ignore_errors=True)


def load_trainer(path: Path) -> dict:
    """trainer.json of a checkpoint."""
    return json.loads((path / "trainer.json").read_text())


def load_optimizer(path: Path) -> dict:
    """optimizer.pt of a checkpoint (tensors and plain values only: loaded with weights_only)."""
    return torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)


def prune_metrics(run: Path, step: int) -> None:
    """Drop metrics.jsonl records past `step` (logged by a run that died after its last checkpoint)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())
