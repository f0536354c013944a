"""Training throughput of the `tiny` preset against a nanoGPT-style PyTorch loop of the same shape.

The reference every ratio is taken against is a nanoGPT-style loop: a plain GPT (learned positions,
LayerNorm, GELU MLP, biases, torch.optim.AdamW with its defaults) that already flushes denormals and
uses SDPA attention, eager, at the same precision as the row it is compared with. Two slower plain rows
(denormals left slow; flushed but with minGPT's explicit softmax attention) show what those two
choices alone are worth; they are context, not the baseline.

Precision is detected, never assumed: codekiln's `train.precision=auto` is asked what it picks on this
machine. Where it picks bf16 (a CPU with AMX or AVX512-BF16, or a GPU), the table also holds the
nanoGPT-style loop under bf16 autocast and codekiln with `train.precision=fp32`, so that every
codekiln row has a peer at its own precision.

Every row trains on the same random token batches; each run of each row is a fresh process (OpenMP
workers copy the floating-point mode of the thread that creates them, so flushing cannot be switched
within a process), and the rounds interleave the rows so that a change in machine load hits all of
them. Each figure is the median of --repeats runs with [min-max]; ratios are ratios of medians.

    python benchmarks/train_throughput.py [--steps 10] [--batch 8] [--seq 512] [--repeats 3] [--compile]
    python benchmarks/train_throughput.py --quick      # smoke test: 2 steps of 1 x 64 tokens, 1 run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

from codekiln.model import Transformer, flops_per_token, param_count, preset  # noqa: E402
from codekiln.train.loop import choose_precision  # noqa: E402
from codekiln.train.metrics import measure_cpu_peak  # noqa: E402
from codekiln.train.optim import build_optimizer  # noqa: E402


class PlainBlock(nn.Module):
    def __init__(self, d, h, sdpa=False):
        super().__init__()
        self.h, self.sdpa = h, sdpa
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.h)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab, d, layers, heads, context, sdpa=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(PlainBlock(d, heads, sdpa) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def measure(model, opt, batches, dtype: torch.dtype) -> float:
    """tokens/s over the batches after two warm-up steps, under autocast when dtype is not fp32."""
    def step(x, y):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for x, y in batches[:2]:
        step(x, y)
    start = time.perf_counter()
    for x, y in batches[2:]:
        step(x, y)
    return sum(x.numel() for x, _ in batches[2:]) / (time.perf_counter() - start)


# name: (label, reference row for the ratio column). "auto" rows take codekiln's own choice.
ROWS = {
    "plain": ("plain GPT, fp32 eager, AdamW, denormals left slow", "nanogpt"),
    "plain-ftz": ("plain GPT + flushed denormals (minGPT attention)", "nanogpt"),
    "nanogpt": ("nanoGPT-style: + flushed denormals + SDPA (reference)", "nanogpt"),
    "nanogpt-bf16": ("nanoGPT-style + bf16 autocast (reference, bf16)", "nanogpt-bf16"),
    "codekiln-fp32": ("codekiln tiny, LionW, train.precision=fp32", "nanogpt"),
    "codekiln": ("codekiln tiny, the trainer's defaults (LionW, auto: {dtype})", None),
    "codekiln-compile": ("codekiln tiny + torch.compile (train.compile=true, auto)", None),
}


def row_dtype(row: str) -> torch.dtype:
    """The precision a row trains in: codekiln's own choice for the auto rows."""
    if row == "nanogpt-bf16":
        return torch.bfloat16
    if row in ("codekiln", "codekiln-compile"):
        return choose_precision("auto", torch.device("cpu"))
    return torch.float32


def short(dtype: torch.dtype) -> str:
    """fp32, bf16 or fp16: the name train.precision uses."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def run_row(row: str, steps: int, batch: int, seq: int) -> dict:
    """tokens/s and precision of one configuration; called in a fresh process (see main)."""
    cfg = preset("tiny")
    # Flushing must be set before the first parallel op: OpenMP worker threads copy the floating-point
    # mode of the thread that creates them, and torch.set_flush_denormal only changes the calling thread.
    torch.set_flush_denormal(row != "plain")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen),
                torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)) for _ in range(steps + 2)]
    torch.manual_seed(0)
    dtype = row_dtype(row)
    if row.startswith(("plain", "nanogpt")):
        model = PlainGPT(cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, seq,
                         sdpa=row.startswith("nanogpt"))
        tps = measure(model, torch.optim.AdamW(model.parameters(), lr=3e-4), batches, dtype)
    else:
        model = Transformer(cfg)
        if row == "codekiln-compile":
            for block in model.blocks:
                block.compile()
        tps = measure(model, build_optimizer(model, "lionw", 1e-4, 3e-5), batches, dtype)
    return {"tokens_per_s": tps, "dtype": short(dtype)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--compile", action="store_true", help="also measure codekiln with torch.compile")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 steps of 1 x 64 tokens, 1 run")
    add_repeats(ap)
    ap.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.batch, args.seq = 2, 1, 64
    if args.row:
        print(json.dumps(run_row(args.row, args.steps, args.batch, args.seq)))
        return
    check_repeats(ap, args)

    auto = choose_precision("auto", torch.device("cpu"))
    rows = ["plain", "plain-ftz", "nanogpt"]
    if auto != torch.float32:  # equal precision: the reference and codekiln in both precisions
        rows += ["nanogpt-bf16", "codekiln-fp32"]
    rows += ["codekiln"] + (["codekiln-compile"] if args.compile else [])

    results: dict[str, list[float]] = {r: [] for r in rows}
    dtypes = {}
    for _ in range(args.repeats):  # rounds interleave the rows, so a change in machine load hits all of them
        for row in rows:
            out = subprocess.run([sys.executable, __file__, "--row", row, "--steps", str(args.steps), "--batch",
                                  str(args.batch), "--seq", str(args.seq)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"row {row} failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[row].append(r["tokens_per_s"])
            dtypes[row] = r["dtype"]

    cfg = preset("tiny")
    fpt = flops_per_token(cfg, args.seq)
    torch.set_flush_denormal(True)
    used = sorted({dtypes[r] for r in rows})
    names = {short(t): t for t in (torch.float32, torch.bfloat16, torch.float16)}
    peaks = {d: [measure_cpu_peak(names[d]) for _ in range(args.repeats)] for d in used}
    auto_name = short(auto)
    print(f"tiny preset: {param_count(cfg) / 1e6:.1f}M parameters, batch {args.batch} x {args.seq}, "
          f"{args.steps} timed steps, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"codekiln's train.precision=auto picks {auto_name} on this CPU; median [min-max] of {args.repeats} "
          f"run(s), each in a fresh process")
    print("matmul peak (MFU denominator): " + ", ".join(f"{d} {spread([p / 1e9 for p in v])} GFLOP/s"
                                                        for d, v in peaks.items()))
    print(f"{'configuration':62s} {'dtype':>5s} {'tokens/s median [min-max]':>27s} {'MFU':>6s} "
          f"{'vs nanoGPT-style, same precision':>33s}")
    for row in rows:
        label, ref = ROWS[row]
        ref = ref or ("nanogpt" if dtypes[row] == "fp32" else "nanogpt-bf16")
        mfu = median(results[row]) * fpt / median(peaks[dtypes[row]])
        vs = f"{ratio(results[row], results[ref]):.2f}x" if ref in results else "no peer"
        print(f"{label.format(dtype=dtypes[row]):62s} {dtypes[row]:>5s} {spread(results[row]):>27s} {mfu:6.1%} "
              f"{vs:>33s}")
    ref = "nanogpt" if auto == torch.float32 else "nanogpt-bf16"
    line = (f"headline: codekiln with the trainer's defaults ({auto_name}) runs at "
            f"{ratio(results['codekiln'], results[ref]):.2f}x the nanoGPT-style loop in {auto_name}")
    if "codekiln-fp32" in results:
        line += f"; in fp32 against fp32, {ratio(results['codekiln-fp32'], results['nanogpt']):.2f}x"
    print(line)


if __name__ == "__main__":
    main()
