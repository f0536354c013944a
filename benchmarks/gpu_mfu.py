"""MFU of the 125m and 350m presets at sequence 2048 on one GPU, and ALiBi (Flex / flash-attn) against
RoPE (SDPA's flash kernel) on the same shapes, in the same run.

The goal on an H100 is at least 45% MFU (LLM Foundry reports about 42% for MPT-1B on H100). Each
configuration trains a few steps with the trainer's pieces (bf16 autocast, LionW, optional compile)
on random tokens; MFU uses the trainer's FLOPs-per-token formula and peak table (docs/training.md).

    python benchmarks/gpu_mfu.py [--presets 125m,350m] [--seq 2048] [--batch 8] [--steps 10] [--compile]

On a CPU it runs too (for a smoke test of the script: `--presets tiny --seq 128 --batch 2 --steps 2`),
with SDPA for both position schemes, since FlexAttention has no CPU backward pass.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from codekiln.model import Transformer, flops_per_token, preset
from codekiln.train.loop import choose_precision
from codekiln.train.metrics import device_peak
from codekiln.train.optim import build_optimizer


def run(name: str, positions: str, seq: int, batch: int, steps: int, compile: bool, device: torch.device) -> dict:
    """tokens/s and MFU of one preset and position scheme."""
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

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    tps = batch * seq * steps / (time.perf_counter() - start)
    peak, source = device_peak(device, dtype, None)
    from codekiln.model.attention import choose

    used = choose(impl, positions == "alibi", device, False)
    return {"preset": name, "positions": positions, "attention": used, "tokens_per_s": tps,
            "mfu": tps * flops_per_token(cfg, seq) / peak if peak else float("nan"), "peak": source,
            "dtype": str(dtype).removeprefix("torch.")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125m,350m")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, seq {args.seq}, batch {args.batch}, {args.steps} timed steps"
          + (", compiled blocks" if args.compile else ""))
    print(f"{'preset':8s} {'positions':9s} {'attention':9s} {'dtype':8s} {'tokens/s':>10s} {'MFU':>7s}  vs RoPE")
    for p in args.presets.split(","):
        rows = [run(p, pos, args.seq, args.batch, args.steps, args.compile, device) for pos in ("rope", "alibi")]
        for r in rows:
            print(f"{r['preset']:8s} {r['positions']:9s} {r['attention']:9s} {r['dtype']:8s} "
                  f"{r['tokens_per_s']:10.0f} {r['mfu']:7.1%}  {r['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x")
    print(f"peak: {rows[0]['peak']}")


if __name__ == "__main__":
    main()
