"""MFU of the 125m and 350m presets at sequence 2048 on one GPU, and ALiBi (Flex / flash-attn) against
RoPE (SDPA's flash kernel) on the same shapes, in the same run.

The goal on an H100 is at least 45% MFU (LLM Foundry reports about 42% for MPT-1B on H100). Each
configuration trains a few steps with the trainer's pieces (bf16 autocast, LionW, optional compile)
on random tokens; MFU uses the trainer's FLOPs-per-token formula and peak table (docs/training.md).

Each configuration warms up (3 steps, compilation included), then times --repeats windows of --steps
steps in the same process (a fresh process per window would recompile every time); each figure is the
median of the windows with [min-max], and "vs RoPE" is a ratio of medians.

    python benchmarks/gpu_mfu.py [--presets 125m,350m] [--seq 2048] [--batch 8] [--steps 10] [--repeats 3] [--compile]

On a CPU it runs too (for a smoke test of the script: `--quick`, i.e. `--presets tiny --seq 128 --batch 2
--steps 2 --repeats 1`), with SDPA for both position schemes, since FlexAttention has no CPU backward pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

from codekiln.model import Transformer, flops_per_token, preset  # noqa: E402
from codekiln.train.loop import choose_precision  # noqa: E402
from codekiln.train.metrics import device_peak  # noqa: E402
from codekiln.train.optim import build_optimizer  # noqa: E402


def run(name: str, positions: str, seq: int, batch: int, steps: int, repeats: int, compile: bool,
        device: torch.device) -> dict:
    """tokens/s of each timed window and MFU (of the median) of one preset and position scheme."""
    cfg = preset(name, positions=positions, context=max(seq, preset(name).context))
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    if compile:
        for block in model.blocks:
            block.compile()
    impl = model.attn_impl if device.type == "cuda" else "sdpa"
    model.attn_impl = impl
    opt = build_optimizer(model, "lionw", 1e-4, 3e-5)
    dtype = choose_precision("auto", device)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    tps = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        tps.append(batch * seq * steps / (time.perf_counter() - start))
    peak, source = device_peak(device, dtype, None)
    from codekiln.model.attention import choose

    used = choose(impl, positions == "alibi", device, False)
    return {"preset": name, "positions": positions, "attention": used, "tokens_per_s": tps,
            "mfu": median(tps) * flops_per_token(cfg, seq) / peak if peak else float("nan"), "peak": source,
            "dtype": str(dtype).removeprefix("torch.")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125m,350m")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: --presets tiny --seq 128 --batch 2 --steps 2 "
                                                         "--repeats 1")
    add_repeats(ap)
    args = ap.parse_args()
    if args.quick:
        args.presets, args.seq, args.batch, args.steps = "tiny", 128, 2, 2
    check_repeats(ap, args)
    torch.set_flush_denormal(True)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, seq {args.seq}, batch {args.batch}, median [min-max] of "
          f"{args.repeats} window(s) of {args.steps} timed steps" + (", compiled blocks" if args.compile else ""))
    print(f"{'preset':8s} {'positions':9s} {'attention':9s} {'dtype':8s} {'tokens/s median [min-max]':>30s} "
          f"{'MFU':>7s}  vs RoPE")
    for p in args.presets.split(","):
        rows = [run(p, pos, args.seq, args.batch, args.steps, args.repeats, args.compile, device)
                for pos in ("rope", "alibi")]
        for r in rows:
            print(f"{r['preset']:8s} {r['positions']:9s} {r['attention']:9s} {r['dtype']:8s} "
                  f"{spread(r['tokens_per_s']):>30s} {r['mfu']:7.1%}  "
                  f"{ratio(r['tokens_per_s'], rows[0]['tokens_per_s']):.2f}x")
    print(f"peak: {rows[0]['peak']}")


if __name__ == "__main__":
    main()
