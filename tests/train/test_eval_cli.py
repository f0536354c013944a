"""The stage-4 commands end to end on a micro model trained here: complete, eval humaneval / infill / execute."""

import json

import pytest
from micro_config import MICRO

from codekiln.cli import main
from codekiln.config import load_config
from codekiln.eval.humaneval import canonical_samples, load_problems, write_samples
from codekiln.train.loop import train


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    tok_dir, data = shards
    out = tmp_path_factory.mktemp("eval-run") / "run"
    # a 1024 context: HumanEval prompts take several hundred tokens of this 384-token vocabulary
    train(load_config(None, [*MICRO, "model.context=1024", f"train.data=[{data}]", f"train.tokenizer={tok_dir}",
                             f"train.out={out}", "train.max_steps=10"]), quiet=True)
    return out


def test_complete_prints_a_completion(run, capsys):
    assert main(["complete", "--model", str(run), "def add(a, b):\n", "--max-new-tokens", "8", "--raw"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert main(["complete", "--model", str(run), "def f(x):\n    ", "--suffix", "\n    return y\n",
                 "--max-new-tokens", "8"]) == 0
    assert main(["complete", "--model", str(run)]) == 2
    assert "give a prompt" in capsys.readouterr().err


def test_humaneval_generates_executes_and_reports(run, tmp_path, capsys):
    out = tmp_path / "he"
    code = main(["eval", "humaneval", "--model", str(run), "--n", "2", "--k", "1,2", "--limit", "3",
                 "--max-new-tokens", "16", "--out", str(out), "--quiet", "--allow-code-execution"])
    assert code == 0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2 + ["HumanEval/2"] * 2
    results = json.loads((out / "results.json").read_text())
    assert results["tasks_evaluated"] == 3 and results["samples"] == 6 and set(results["pass_at_k"]) == {"1", "2"}
    assert len(results["missing_tasks"]) == 161 and (out / "results.md").is_file()
    # refused before any generation without the flag
    assert main(["eval", "humaneval", "--model", str(run), "--limit", "1", "--out", str(tmp_path / "no")]) == 2
    assert "--allow-code-execution" in capsys.readouterr().err and not (tmp_path / "no").exists()
    # the config key allows it too
    assert main(["eval", "humaneval", "--model", str(run), "--n", "1", "--limit", "1", "--max-new-tokens", "4",
                 "--out", str(tmp_path / "cfg"), "--quiet", "eval.allow_code_execution=true"]) == 0


def test_execute_scores_canonical_solutions(tmp_path, capsys):
    samples = tmp_path / "canonical.jsonl"
    write_samples(samples, canonical_samples(load_problems()))
    assert main(["eval", "execute", "--samples", str(samples), "--k", "1", "--allow-code-execution"]) == 0
    results = json.loads((tmp_path / "canonical_results" / "results.json").read_text())
    assert results["pass_at_k"] == {"1": 1.0} and results["tasks_evaluated"] == 164


def test_infill_runs_and_reports(run, tmp_path):
    out = tmp_path / "infill"
    assert main(["eval", "infill", "--model", str(run), "--limit", "4", "--max-new-tokens", "8", "--out", str(out),
                 "--quiet", "--allow-code-execution"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == 4 and 0 <= results["pass_at_1"] <= 1
    assert all("middle" in r for r in results["per_task"].values())
