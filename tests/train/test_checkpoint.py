"""Checkpoint writes reach the disk before `latest` names them, and readers see only complete checkpoints."""

import json
import os

import pytest
import torch

from codekiln import checkpoint as reader
from codekiln.errors import UserError
from codekiln.model import ModelConfig, Transformer
from codekiln.train import checkpoint


def _events(monkeypatch):
    """Record every fsync (by the path of its descriptor) and every rename, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.fixture
def small():
    cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, context=16)
    return cfg, Transformer(cfg).state_dict()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name a descriptor's file")
def test_files_and_directories_are_fsynced_before_latest(tmp_path, monkeypatch, small):
    cfg, state = small
    events = _events(monkeypatch)
    run = tmp_path.resolve() / "run"
    checkpoint.save(run, 5, state, cfg, {"state": {}, "param_groups": []}, {"step": 5, "tokens": 80}, keep=2)
    base = run / "checkpoints"
    latest_at = next(i for i, e in enumerate(events) if e == ("replace", str(base / "latest")))
    before = events[:latest_at]
    synced = {os.path.basename(p) for kind, p in before if kind == "fsync"}
    assert set(checkpoint.CHECKPOINT_FILES) <= synced  # every file of the checkpoint, data on disk
    moved = before.index(("replace", str(base / "step-5")))
    assert ("fsync", str(base)) in before[moved:]  # the rename that made step-5 appear is on disk too
    assert any(kind == "fsync" and os.path.basename(p).startswith("latest.tmp") for kind, p in before)
    assert events[latest_at + 1:] and events[latest_at + 1] == ("fsync", str(base))  # and then latest's own rename
    assert reader.resolve(run) == base / "step-5"


def test_a_checkpoint_without_latest_is_not_complete(tmp_path, small):
    cfg, state = small
    run = tmp_path / "run"
    checkpoint.save(run, 2, state, cfg, {"state": {}, "param_groups": []}, {"step": 2, "tokens": 32}, keep=2)
    (run / "checkpoints" / "latest").unlink()
    with pytest.raises(UserError, match="no complete checkpoint"):
        reader.resolve(run)
    ckpt = run / "checkpoints" / "step-2"
    assert reader.resolve(ckpt) == ckpt and reader.model_config(ckpt) == cfg
    loaded = reader.read_model_tensors(ckpt / "model.safetensors", cfg)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # the tied head restored
    assert json.loads((ckpt / "config.json").read_text())["step"] == 2
