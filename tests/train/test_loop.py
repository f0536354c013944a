"""The training loop end to end on a micro model: learning, run directory, checkpoints, exact resume
after kill -9, refusals, divergence stops, continued pretraining, plots and codekiln.load."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from micro_config import MICRO

import codekiln
from codekiln.cli import main
from codekiln.config import load_config
from codekiln.errors import UserError
from codekiln.model import flops_per_token
from codekiln.train import metrics
from codekiln.train.loop import TrainingStopped, train


def _cfg(shards, out, *extra):
    tok, data = shards
    return load_config(None, [*MICRO, f"train.data=[{data}]", f"train.tokenizer={tok}", f"train.out={out}", *extra])


def _records(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _curve(run):
    """Everything a record computes, without wall-clock figures."""
    drop = {"tokens_per_s", "mfu", "elapsed_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in _records(run)]


def test_micro_model_learns_and_writes_a_run_directory(shards, tmp_path, monkeypatch):
    # MFU divides by the CPU's measured matmul peak, which depends on the kernels and on what else the
    # machine runs; a fixed peak makes the figure a pure function of the logged throughput
    monkeypatch.setattr(metrics, "measure_cpu_peak", lambda dtype: 1e9)
    run = tmp_path / "run"
    summary = train(_cfg(shards, run, "train.max_steps=60", "train.log_every=5", "train.eval_every=30",
                         "train.checkpoint_every=20", "train.keep_checkpoints=2"), quiet=True)
    recs = _records(run)
    train_recs = [r for r in recs if "loss" in r]
    val_recs = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in train_recs] == list(range(5, 61, 5))
    assert [r["step"] for r in val_recs] == [0, 30, 60]
    for r in train_recs:
        assert set(r) == {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "elapsed_s"}
        assert r["tokens"] == r["step"] * 4 * 64 and r["tokens_per_s"] > 0
    assert train_recs[-1]["loss"] < train_recs[0]["loss"] - 1.5
    assert val_recs[-1]["val_loss"] < val_recs[0]["val_loss"]
    assert set(val_recs[-1]["val_bpb_by_lang"]) <= {"Python", "JavaScript"} and val_recs[-1]["val_bpb"] > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-40", "step-60"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-60"
    ckpt = run / "checkpoints" / "step-60"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "config.json", "optimizer.pt", "trainer.json"}
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "config.yaml").is_file()
    assert {p.name for p in (run / "plots").iterdir()} == {"loss.png", "bits_per_byte.png", "throughput.png"}
    if importlib.util.find_spec("tensorboard") is not None:  # an optional extra (see test_metrics.py)
        assert list((run / "tensorboard").iterdir())
    assert summary["steps"] == 60 and summary["val_bpb"] == val_recs[-1]["val_bpb"]

    model, tok = codekiln.load(run)
    assert not model.training
    fpt = flops_per_token(model.cfg, 64)
    assert [r["mfu"] for r in train_recs] == pytest.approx([r["tokens_per_s"] * fpt / 1e9 for r in train_recs],
                                                          rel=1e-3)
    ids = torch.tensor([tok.encode("def f(x):\n    return x\n")])
    assert model(ids).shape == (1, ids.shape[1], model.cfg.vocab_size)
    again, _ = codekiln.load(ckpt)
    assert torch.equal(again(ids), model(ids))

    # finished: running it again resumes at the end and does no more steps
    train(_cfg(shards, run, "train.max_steps=60", "train.log_every=5", "train.eval_every=30",
               "train.checkpoint_every=20", "train.keep_checkpoints=2"), quiet=True)
    assert len(_records(run)) == len(recs) + 0


def _cli(shards, run, *extra):
    tok, data = shards
    return [sys.executable, "-m", "codekiln", "train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run),
            "--quiet", *MICRO, *extra]


def test_killed_and_resumed_run_reproduces_the_loss_curve_bit_for_bit(shards, tmp_path):
    args = ["train.max_steps=40", "train.log_every=3", "train.eval_every=10", "train.checkpoint_every=8"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    whole = tmp_path / "whole"
    subprocess.run(_cli(shards, whole, *args), check=True, env=env, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli(shards, cut, *args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = cut / "checkpoints" / "step-16" / "trainer.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never reached its second checkpoint"
    done_before = max(r["step"] for r in _records(cut))
    assert done_before < 40, "the run finished before it was killed"
    subprocess.run(_cli(shards, cut, *args), check=True, env=env, capture_output=True)
    assert _curve(cut) == _curve(whole)
    a = (whole / "checkpoints" / "step-40" / "model.safetensors").read_bytes()
    assert a == (cut / "checkpoints" / "step-40" / "model.safetensors").read_bytes()


def test_resume_refuses_another_config_and_restart_starts_over(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2"), quiet=True)
    with pytest.raises(UserError, match=r"train.fim_rate \(0.5 then, 0.9 now\)"):
        train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2", "train.fim_rate=0.9"), quiet=True)
    tok, data = shards
    code = main(["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run), "--quiet", *MICRO,
                 "train.max_steps=4", "train.fim_rate=0.9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--restart" in err
    code = main(["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run), "--quiet", "--restart",
                 *MICRO, "train.max_steps=4", "train.lr=1e-3", "train.checkpoint_every=2"])
    assert code == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-2", "step-4"]
    assert [r["lr"] for r in _records(run) if "lr" in r][-1] < 1e-3


def test_divergence_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _cfg(shards, run, "train.max_steps=50", "train.checkpoint_every=1", "train.warmup_steps=0",
               "train.lr=2.0", "train.schedule=constant", "train.grad_clip=0")
    with pytest.raises(TrainingStopped, match="last good checkpoint is .*step-") as err:
        train(cfg, quiet=True)
    step = int(str(err.value).split(":")[0].split()[1])
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{step - 1}"
    tok, data = shards
    code = main(["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "r2"), "--quiet",
                 *MICRO, "train.max_steps=50", "train.checkpoint_every=1", "train.warmup_steps=0", "train.lr=2.0",
                 "train.schedule=constant", "train.grad_clip=0"])
    assert code == 1 and "training stopped" in capsys.readouterr().err


def test_continued_pretraining_starts_from_the_checkpoint(shards, tmp_path):
    base = tmp_path / "base"
    train(_cfg(shards, base, "train.max_steps=40", "train.log_every=1"), quiet=True)
    base_loss = [r["loss"] for r in _records(base) if "loss" in r]
    cont = tmp_path / "cont"
    train(_cfg(shards, cont, "train.max_steps=10", "train.log_every=1", f"train.init_from={base}",
               "train.warmup_steps=5", "train.lr=1e-3"), quiet=True)
    recs = [r for r in _records(cont) if "loss" in r]
    assert recs[0]["loss"] < base_loss[0] - 1.0  # it did not start from scratch
    assert [r["lr"] for r in recs[:5]] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])  # re-warmed to the new peak


def test_continued_pretraining_from_an_export(shards, tmp_path):
    import torch

    import codekiln
    from codekiln.export.hf import export_hf

    base = tmp_path / "base"
    train(_cfg(shards, base, "train.max_steps=4"), quiet=True)
    export_hf(base, tmp_path / "hf")  # a stock HF directory that carries codekiln.json: ours, not foreign
    cont = tmp_path / "cont"
    train(_cfg(shards, cont, "train.max_steps=1", f"train.init_from={tmp_path / 'hf'}", "train.lr=1e-9",
               "train.warmup_steps=0", "train.schedule=constant", "train.weight_decay=0"), quiet=True)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():  # one step at lr 1e-9 moves no weight visibly: the run started from the export
        torch.testing.assert_close(codekiln.load(cont)[0](ids), codekiln.load(base)[0](ids), atol=1e-4, rtol=0)


def test_init_from_refuses_a_hugging_face_model_directory(shards, tmp_path, capsys):
    """Llama's token ids mean other strings than ours: init_from takes codekiln runs and checkpoints only."""
    from safetensors.torch import save_file

    from codekiln.export.hf_llama import hf_name
    from codekiln.model import ModelConfig, Transformer

    mcfg = ModelConfig(vocab_size=384, d_model=32, n_layers=2, n_heads=4, kv_heads=2, context=64, positions="rope",
                       norm="rmsnorm", mlp="swiglu", ffn_hidden=64, tie_embeddings=False)
    llama = tmp_path / "llama"
    llama.mkdir()
    save_file({hf_name(k): v.contiguous() for k, v in Transformer(mcfg).state_dict().items()},
              str(llama / "model.safetensors"))
    (llama / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 384, "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64}))
    tok, data = shards
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(run), "--quiet", *MICRO,
                 "train.max_steps=1", f"train.init_from={llama}"]) == 2
    err = capsys.readouterr().err
    assert "Hugging Face model directory" in err and "codekiln import hf" in err and "train.init_from" in err
    assert err.count("\n") == 1, err
    assert not (run / "checkpoints").exists()


def test_bad_input_is_one_line(shards, tmp_path, capsys):
    tok, data = shards
    cases = [
        (["train", "--tokenizer", str(tok), "--out", str(tmp_path / "a"), "train.max_steps=1"], "train.data is not set"),
        (["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "b")], "max_steps"),
        (["train", "--data", str(tmp_path), "--tokenizer", str(tok), "--out", str(tmp_path / "c"), "train.max_steps=1"],
         "meta.json"),
        (["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "d"), "train.max_steps=1",
          "model.n_heads=3"], "n_heads"),
        (["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "e"), "train.max_steps=1",
          "train.seq_len=100000"], "exceeds the model's context"),
        (["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "f"), "train.max_steps=1",
          "train.optimizer=sgd"], "train.optimizer"),
        (["train", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "g"), "train.max_steps=1",
          "model.attn_impl=flex"], "GPUs only"),
        (["plot", str(tmp_path)], "metrics.jsonl"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_plot_command(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(shards, run, "train.max_steps=6", "train.log_every=2", "train.eval_every=3"), quiet=True)
    for p in (run / "plots").iterdir():
        p.unlink()
    assert main(["plot", str(run)]) == 0
    out = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in out) == ["bits_per_byte.png", "loss.png", "throughput.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out)


def test_bf16_autocast_on_cpu(shards, tmp_path):
    run = tmp_path / "run"
    train(_cfg(shards, run, "train.max_steps=4", "train.log_every=1", "train.precision=bf16"), quiet=True)
    losses = [r["loss"] for r in _records(run) if "loss" in r]
    assert len(losses) == 4 and all(0 < x < 10 for x in losses)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["train.compile=true"], ["model.attn_impl=reference", "train.doc_mask=true"],
                                   ["train.activation_checkpointing=true", "train.grad_accum=2"]])
def test_compile_flex_and_checkpointing_train_the_same_model(shards, tmp_path, extra):
    base, other = tmp_path / "base", tmp_path / "other"
    common = ["train.max_steps=6", "train.log_every=1", "train.lr=1e-3", "train.optimizer=adamw"]  # no sign() flips
    doc = [e for e in extra if e.startswith("train.doc_mask")]
    accum = ["train.grad_accum=2"] if "train.grad_accum=2" in extra else []
    train(_cfg(shards, base, *common, *doc, *accum), quiet=True)
    train(_cfg(shards, other, *common, *extra), quiet=True)
    a = [r["loss"] for r in _records(base) if "loss" in r]
    b = [r["loss"] for r in _records(other) if "loss" in r]
    assert b == pytest.approx(a, rel=2e-3, abs=2e-3)


def test_stability_knobs_may_change_on_resume(shards, tmp_path):
    run = tmp_path / "run"
    train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"), quiet=True)
    train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1", "train.lr=1e-3",
               "train.spike_factor=5", "train.grad_clip=0.5"), quiet=True)  # finished: accepted, nothing to do
    assert [r["step"] for r in _records(run) if "loss" in r] == [1, 2, 3, 4]


def test_resume_refuses_other_data_and_a_run_without_checkpoint_starts_clean(shards, tmp_path):
    from codekiln.tokenizer.shards import tokenize_corpus

    tok, data = shards
    run = tmp_path / "run"
    train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"), quiet=True)
    other = tmp_path / "other"
    tokenize_corpus(data.parent / "corpus", tok, other, val_fraction=0.3, seed=0)
    with pytest.raises(UserError, match="another training data"):
        train(load_config(None, [*MICRO, f"train.data=[{other}]", f"train.tokenizer={tok}", f"train.out={run}",
                                 "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"]), quiet=True)
    # an attempt that died before its first checkpoint leaves metrics; the next attempt starts clean
    import shutil
    shutil.rmtree(run / "checkpoints")
    train(_cfg(shards, run, "train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1"), quiet=True)
    assert [r["step"] for r in _records(run) if "loss" in r] == [1, 2, 3, 4]


def test_restart_never_deletes_what_it_did_not_write(shards, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text("mine\n")
    with pytest.raises(UserError, match="not a run directory"):
        train(_cfg(shards, tmp_path, "train.max_steps=2"), restart=True, quiet=True)
    assert (tmp_path / "checkpoints").is_dir() and (tmp_path / "metrics.jsonl").read_text() == "mine\n"


def test_no_validation_data_is_a_clear_error(shards, tmp_path):
    with pytest.raises(UserError, match="no validation sequence"):
        train(_cfg(shards, tmp_path / "run", "train.max_steps=2", "train.eval_tokens=10"), quiet=True)
