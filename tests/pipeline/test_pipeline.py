"""`codekiln run`: the stages in order in one folder, skipped when unchanged, re-run when affected, resumed when
interrupted, and a failing stage named in one line with its log."""

import json
import shutil

import pytest
import yaml

from codekiln import pipeline
from codekiln.cli import main
from codekiln.config import load_config

pytestmark = pytest.mark.slow

MODULES = ["textwrap", "shlex", "fnmatch", "glob", "bisect", "heapq", "colorsys", "keyword", "string", "queue",
           "sched", "graphlib", "numbers", "operator", "stat", "statistics"]


@pytest.fixture(scope="module")
def config(tmp_path_factory, stdlib_repos):
    """A config file whose sources are 16 one-module repositories, a 512-token vocabulary and a micro model."""
    root = tmp_path_factory.mktemp("pipeline")
    stdlib_repos(root / "repos", MODULES)
    cfg = {"seed": 0, "data": {"sources": [str(root / "repos")], "workers": 1},
           "tokenizer": {"vocab_size": 512, "holdout_fraction": 0.25},
           "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "kv_heads": 2, "context": 128},
           "train": {"batch_size": 4, "seq_len": 64, "warmup_steps": 2, "lr": 3e-3, "eval_tokens": 2048, "threads": 1,
                     "max_steps": 4, "eval_every": 4, "checkpoint_every": 2},
           "run": {"val_fraction": 0.25, "eval": False, "export": ["hf"], "tokenizer_compare": []}}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _record(out):
    return {s["name"]: s for s in json.loads((out / "pipeline.json").read_text())["stages"]}


def test_runs_every_stage_then_skips_what_is_unchanged_and_reruns_what_an_edit_affects(config, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    stages = _record(out)
    assert [n for n, s in stages.items() if s["status"] == "done"] == ["corpus", "tokenizer", "tokens", "train",
                                                                       "export"]
    for folder in ("corpus", "tokenizer", "tokens", "run", "export"):
        assert (out / folder / "stage.json").is_file()
    assert (out / "export" / "hf" / "config.json").is_file() and (out / "run" / "checkpoints" / "latest").is_file()
    assert (out / "corpus" / "removed").is_dir() and (out / "tokenizer" / "stats.json").is_file()
    assert (out / "logs" / "train.log").stat().st_size > 0
    mtime = (out / "run" / "stage.json").stat().st_mtime_ns

    # the same command again: nothing runs
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert {s["status"] for s in _record(out).values()} == {"skipped"}
    assert (out / "run" / "stage.json").stat().st_mtime_ns == mtime

    # a watched-only key changes nothing; the learning rate re-runs training and what reads it
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--plan", "train.log_every=1"]) == 0
    assert "run " not in capsys.readouterr().out.replace("codekiln run", "")
    rows = {r["name"]: r for r in pipeline.plan(load_config(config, ["train.lr=1e-3"]), out)}
    assert [n for n, r in rows.items() if r["action"] == "run"] == ["train", "export"]
    assert rows["train"]["reason"] == "its config section changed"
    assert rows["export"]["reason"] == "an upstream stage changed"
    assert main(["run", str(config), "--out", str(out), "--quiet", "train.lr=1e-3"]) == 0
    stages = _record(out)
    assert stages["corpus"]["status"] == "skipped" and stages["train"]["status"] == "done"
    assert yaml.safe_load((out / "run" / "config.yaml").read_text())["train"]["lr"] == 1e-3

    # --force reruns a stage and those after it; --until stops
    rows = {r["name"]: r["action"] for r in pipeline.plan(load_config(config, ["train.lr=1e-3"]), out,
                                                          force=["tokens"], until="train")}
    assert rows == {"corpus": "skip", "tokenizer": "skip", "tokens": "run", "train": "run", "import": "off",
                    "finetune": "off", "eval": "off", "export": "off"}


def test_an_interrupted_stage_resumes_and_a_failing_stage_is_one_line(config, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--until", "tokens"]) == 0
    # as if training had been killed after its first checkpoint: the folder and the running record remain
    cfg = load_config(config)
    hashes = pipeline.stage_hashes(cfg)
    record = json.loads((out / "pipeline.json").read_text())
    record["running"] = {"train": hashes["train"]}
    (out / "pipeline.json").write_text(json.dumps(record))
    (out / "run").mkdir()
    rows = {r["name"]: r for r in pipeline.plan(cfg, out)}
    assert rows["train"]["action"] == "resume"
    shutil.rmtree(out / "run")
    assert {r["name"]: r["action"] for r in pipeline.plan(cfg, out)}["train"] == "run"

    capsys.readouterr()
    code = main(["run", str(config), "--out", str(out), "--quiet", "train.seq_len=4096"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "stage train failed" in err and "logs/train.log" in err
    assert _record(out)["train"]["status"] == "failed" and _record(out)["tokens"]["status"] == "skipped"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--until", "nowhere"]) == 2


def test_a_reference_is_imported_fine_tuned_on_the_training_split_and_measured_on_the_same_bytes(config, tmp_path):
    """run.reference (here a tiny Llama-shaped export standing in for SmolLM2) is imported; its fine-tune sees
    only the token shards' training split; eval measures model, reference and fine-tune on the same bytes."""
    from codekiln.tokenizer.train import is_held_out, split_key, corpus_rows

    ref_out = tmp_path / "ref"
    assert main(["run", str(config), "--out", str(ref_out), "--quiet", "--until", "train", "model.positions=rope",
                 "model.norm=rmsnorm", "model.mlp=swiglu"]) == 0
    assert main(["export", "hf", "--model", str(ref_out / "run"), "--out", str(tmp_path / "ref-hf")]) == 0
    out = tmp_path / "with-ref"
    args = ["run", str(config), "--out", str(out), "--quiet", f"run.reference={tmp_path / 'ref-hf'}",
            "run.finetune_reference=true", "run.eval=true", "run.humaneval=false", "run.infill=false",
            'run.prompts=["def add(a, b):"]', "run.export=[]",
            'run.finetune_train={"max_steps": 3, "batch_size": 4, "seq_len": 64, "lr": 1e-3, "threads": 1, '
            '"eval_tokens": 2048}',
            "finetune.eval_tasks=1", "finetune.eval_bodies=1", "finetune.eval_max_new_tokens=8",
            "finetune.holdout_fraction=0.3"]
    assert main(args) == 0
    stages = _record(out)
    assert stages["import"]["status"] == "done" and stages["finetune"]["status"] == "done"
    # the fine-tune's documents: the training split of the run's shards, never a held-out repository
    cfg = load_config(config)
    held = {doc_id for doc_id, repo in corpus_rows(out / "corpus", ["id", "repo"])
            if is_held_out(split_key(repo, doc_id), cfg.run.val_fraction, cfg.seed)}
    import pyarrow.parquet as pq

    seen = {doc_id for part in sorted((out / "finetune" / "data" / "source").glob("*.parquet"))
            for doc_id in pq.read_table(part, columns=["id"]).column("id").to_pylist()}
    assert held and seen and not held & seen
    summary = json.loads((out / "eval" / "summary.json").read_text())
    bpb = summary["bpb"]
    assert bpb["reference"]["val_bpb"] > 0 and bpb["finetuned"]["val_bpb"] > 0
    assert summary["completions"][0]["reference_model"] is not None
    assert "SmolLM2" not in json.dumps(bpb)  # named after the reference given, not a default
