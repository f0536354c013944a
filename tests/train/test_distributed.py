"""The multi-process path: torchrun with 2 CPU processes over gloo, DDP and FSDP2 `fully_shard`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micro_config import MICRO


def _torchrun(shards, run, *extra):
    tok, data = shards
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "codekiln",
           "train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run), "--quiet", *MICRO,
           "train.max_steps=8", "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=4", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _records(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_checkpoint_and_resume(shards, tmp_path, parallel):
    run = tmp_path / parallel
    proc = _torchrun(shards, run, f"train.parallel={parallel}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = _records(run)
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert recs[-1]["step"] == 8 and "val_bpb" in recs[-1]
    assert [r["tokens"] for r in recs if "loss" in r] == [2 * 2 * 4 * 64 * k for k in (1, 2, 3, 4)]  # 2 ranks
    state = json.loads((run / "checkpoints" / "step-8" / "trainer.json").read_text())
    assert state["world"] == 2 and len(state["data"]) == 2 and state["data"][0] != state["data"][1]

    # kill the tail of the run and resume it on 2 processes: the same curve
    shutil.rmtree(run / "checkpoints" / "step-8")
    (run / "checkpoints" / "latest").write_text("step-4\n")
    proc = _torchrun(shards, run, f"train.parallel={parallel}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = _records(run)
    drop = {"tokens_per_s", "mfu", "elapsed_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == \
        [{k: v for k, v in r.items() if k not in drop} for r in recs]


def test_resume_on_another_world_size_is_refused(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert _torchrun(shards, run, "train.parallel=ddp").returncode == 0
    from codekiln.cli import main

    tok, data = shards
    code = main(["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run), "--quiet", *MICRO,
                 "train.max_steps=8", "train.log_every=2", "train.eval_every=4", "train.checkpoint_every=4",
                 "train.parallel=ddp"])
    assert code == 2 and "trained on 2 processes" in capsys.readouterr().err
