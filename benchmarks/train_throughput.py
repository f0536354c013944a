"""Training throughput of the `tiny` preset against a plain fp32 eager PyTorch GPT of the same shape.

Both train on the same random token batches for the same number of steps in this one process; the
ratio is codekiln's tokens/s over the baseline's. The baseline is what one writes first: minGPT-style
attention (explicit softmax over a masked score matrix), learned positions, torch.optim.AdamW with its
defaults, fp32, eager, and PyTorch's default floating-point mode (denormals not flushed). Two more
baseline rows add flushed denormals, then SDPA attention (nanoGPT's choice), to show how much of the
gain each of those alone explains.

    python benchmarks/train_throughput.py [--steps 10] [--batch 8] [--seq 512] [--compile]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from codekiln.model import Transformer, flops_per_token, preset
from codekiln.train.loop import choose_precision
from codekiln.train.metrics import measure_cpu_peak
from codekiln.train.optim import build_optimizer


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


def measure(model, opt, batches, autocast_dtype=None) -> float:
    """tokens/s over the batches after two warm-up steps."""
    def step(x, y):
        ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else torch.autocast("cpu", enabled=False)
        with ctx:
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


ROWS = {
    "baseline": "plain GPT, fp32 eager, AdamW (baseline)",
    "plain-ftz": "plain GPT + flushed denormals",
    "plain-ftz-sdpa": "plain GPT + flushed denormals + SDPA attention (nanoGPT)",
    "codekiln": "codekiln tiny, the trainer's defaults (LionW, {dtype})",
    "codekiln-compile": "codekiln tiny + torch.compile (train.compile=true)",
}


def run_row(row: str, steps: int, batch: int, seq: int) -> float:
    """tokens/s of one configuration; called in a fresh process (see main)."""
    cfg = preset("tiny")
    # Flushing must be set before the first parallel op: OpenMP worker threads copy the floating-point
    # mode of the thread that creates them, and torch.set_flush_denormal only changes the calling thread.
    torch.set_flush_denormal(row != "baseline")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen),
                torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)) for _ in range(steps + 2)]
    torch.manual_seed(0)
    if row.startswith(("baseline", "plain")):
        model = PlainGPT(cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, seq, sdpa=row.endswith("sdpa"))
        return measure(model, torch.optim.AdamW(model.parameters(), lr=3e-4), batches)
    dtype = choose_precision("auto", torch.device("cpu"))
    model = Transformer(cfg)
    if row == "codekiln-compile":
        for block in model.blocks:
            block.compile()
    return measure(model, build_optimizer(model, "lionw", 1e-4, 3e-5), batches,
                   dtype if dtype != torch.float32 else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--compile", action="store_true", help="also measure codekiln with torch.compile")
    ap.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print(run_row(args.row, args.steps, args.batch, args.seq))
        return
    # Every configuration runs in its own process, so none inherits another's thread pool or FP mode.
    rows = [r for r in ROWS if args.compile or r != "codekiln-compile"]
    results = {}
    for row in rows:
        out = subprocess.run([sys.executable, __file__, "--row", row, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--seq", str(args.seq)], capture_output=True, text=True, check=True)
        results[row] = float(out.stdout.strip().splitlines()[-1])
    cfg = preset("tiny")
    fpt = flops_per_token(cfg, args.seq)
    torch.set_flush_denormal(True)
    peak = measure_cpu_peak(torch.float32)
    dtype = str(choose_precision("auto", torch.device("cpu"))).removeprefix("torch.")
    print(f"tiny preset: 11.3M parameters, batch {args.batch} x {args.seq}, {args.steps} timed steps, "
          f"{torch.get_num_threads()} threads; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'configuration':62s} {'tokens/s':>9s} {'MFU':>6s} {'vs baseline':>11s}")
    for row in rows:
        tps = results[row]
        print(f"{ROWS[row].format(dtype=dtype):62s} {tps:9.0f} {tps * fpt / peak:6.1%} {tps / results['baseline']:10.2f}x")


if __name__ == "__main__":
    main()
