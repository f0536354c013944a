"""int8 inference: speed at batch 1 and 8, and the bits-per-byte change, against the fp32 model in the same run.

Rows, for each model:
  fp32          the model as loaded (the baseline)
  int8          codekiln.infer.quant.quantize_int8: every linear layer int8, the LM head included
  int8 no-head  the same with the LM head left fp32 (the embedding lookup is fp32 in both)
Speed is codekiln.infer.generate's greedy decoding (KV cache) in milliseconds per generated token,
prefill included, at batch 1 and batch 8. Rounds interleave the rows so a change in machine load hits
all of them; each figure is the median of --repeats rounds with [min-max], ratios are ratios of
medians (above 1: int8 is faster). Agreement is the share of batch-8 greedy tokens equal to fp32's,
and the largest logit difference on the prompts relative to the largest logit.

Models: random-weight presets (--preset, default tiny and 125m: int8's gain grows with the matmuls'
share of the time) and any model directory codekiln loads (--model, repeatable: a run, a
checkpoints/step-N, an export or an import). With --shards, each --model's bits per byte on those
token shards' val split is measured fp32 against int8 (codekiln.eval.bpb.evaluate_bpb).

    python benchmarks/quantize.py [--preset tiny 125m] [--model RUN --shards TOKENS] [--repeats 3]
    python benchmarks/quantize.py --quick      # smoke test: tiny preset, short prompts, 1 round
    python benchmarks/quantize.py --profile    # also the top operators of one decode, fp32 and int8
"""

from __future__ import annotations

import torch

torch.set_flush_denormal(True)  # first: OpenMP workers copy the FP mode of the thread that creates them

import argparse  # noqa: E402
import copy  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, ratio, spread  # noqa: E402

import codekiln  # noqa: E402
from codekiln.infer import generate  # noqa: E402
from codekiln.infer.quant import int_mm_exact, quantize_int8  # noqa: E402
from codekiln.model import Transformer, param_count, preset  # noqa: E402


class NoText:
    """A tokenizer stand-in: prompts are token ids, no stop strings, no end token, so text is never needed."""

    special_ids: dict = {}

    def decode(self, ids):
        return ""


def variants(model) -> dict:
    """fp32, int8 and int8 without the LM head: the two int8 ones are quantized copies of `model`."""
    return {"fp32": model, "int8": quantize_int8(copy.deepcopy(model)),
            "int8 no-head": quantize_int8(copy.deepcopy(model), head=False)}


def weight_mb(model) -> float:
    """Megabytes of the model's tensors (a tied matrix once), parameters and buffers."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 1e6


def prompts_for(model, tok, batch: int, length: int) -> list[list[int]]:
    """`batch` prompts of `length` tokens: windows of code (textwrap's source) with a tokenizer, else random ids."""
    if tok is not None:
        ids = tok.encode(inspect.getsource(textwrap))
        if len(ids) >= batch * length:
            return [ids[i * length:(i + 1) * length] for i in range(batch)]
    g = torch.Generator().manual_seed(1)
    return torch.randint(7, model.cfg.vocab_size, (batch, length), generator=g).tolist()


def decode(model, prompts, new) -> tuple[torch.Tensor, float]:
    """(greedy token ids [B, new], seconds) of one generate call."""
    start = time.perf_counter()
    out = generate(model, NoText(), prompts, max_new_tokens=new, eos=False)
    return torch.tensor([c.token_ids for c in out]), time.perf_counter() - start


@torch.inference_mode()
def logit_gap(model, other, prompts) -> float:
    """Largest logit difference between two models on the prompts, relative to the largest logit."""
    x = torch.tensor(prompts)
    a = model(x)
    return ((a - other(x)).abs().max() / a.abs().max()).item()


def profile(models: dict, prompts, new: int) -> None:
    """The operators that take the time in one batch-1 decode, for fp32 and int8."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name in ("fp32", "int8"):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            decode(models[name], prompts[:1], new)
        print(f"profile, {name}, batch 1, {new} new tokens:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def bench(label: str, model, tok, args) -> None:
    """Speed and agreement rows of one model (and its bits per byte with --shards and a tokenizer)."""
    cfg = model.cfg
    models = variants(model)
    sizes = ", ".join(f"{name} {weight_mb(m):,.0f} MB" for name, m in models.items())
    print(f"\n{label}: {param_count(cfg) / 1e6:.1f}M parameters ({cfg.d_model} wide, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}); weights {sizes}")
    prompts = prompts_for(model, tok, max(args.batch), args.prompt)
    for m in models.values():
        decode(m, prompts[:2], 2)  # warm-up: first-call allocations and dispatch
    if args.profile:
        profile(models, prompts, args.new)

    ms = {(name, b): [] for name in models for b in args.batch}
    tokens = {}
    for _ in range(args.repeats):
        for b in args.batch:
            for name, m in models.items():
                tokens[name, b], s = decode(m, prompts[:b], args.new)
                ms[name, b].append(1000 * s / args.new)
    print(f"{'':14}" + "".join(f"{f'batch {b}: ms/token median [min-max]':>40}{'speedup':>9}" for b in args.batch))
    for name in models:
        print(f"{name:14}" + "".join(f"{spread(ms[name, b], '.2f'):>40}{ratio(ms['fp32', b], ms[name, b]):8.2f}x"
                                     for b in args.batch))
    b = max(args.batch)
    for name in ("int8", "int8 no-head"):
        same = 100 * (tokens[name, b] == tokens["fp32", b]).float().mean().item()
        print(f"{name}: greedy tokens equal to fp32's {same:.1f}% (batch {b}, {args.new} new); largest logit "
              f"difference {logit_gap(model, models[name], prompts):.2e} of the largest logit")

    if args.shards and tok is not None:
        from codekiln.eval.bpb import evaluate_bpb

        bpb = {name: evaluate_bpb(m, tok, args.shards, seq_len=args.seq_len, max_tokens=args.bpb_tokens,
                                  batch_size=8)["val_bpb"] for name, m in models.items()}
        print(f"bits per byte on {', '.join(args.shards)} (val, {args.bpb_tokens or 'all'} tokens): "
              + ", ".join(f"{name} {v:.5f}" + (f" ({v - bpb['fp32']:+.5f})" if name != "fp32" else "")
                          for name, v in bpb.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", nargs="*", default=None, help="random-weight presets (default: tiny 125m; "
                                                              "none with --model unless given)")
    ap.add_argument("--model", action="append", default=[], help="a model directory codekiln loads (repeatable)")
    ap.add_argument("--shards", nargs="+", help="token-shard directories: bits per byte of each --model")
    ap.add_argument("--bpb-tokens", type=int, default=65536, help="val tokens scored for bits per byte (0: all)")
    ap.add_argument("--seq-len", type=int, help="bits-per-byte sequence length (default: the model's context)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--new", type=int, default=64, help="generated tokens")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true", help="print the top operators of one decode per model")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 8-token prompts, 8 new tokens, "
                                                         "1 round, 4,096 bits-per-byte tokens")
    add_repeats(ap)
    args = ap.parse_args()
    if args.preset is None:
        args.preset = [] if args.model else (["tiny"] if args.quick else ["tiny", "125m"])
    if args.quick:
        args.prompt, args.new, args.bpb_tokens = 8, 8, 4096
    args.bpb_tokens = args.bpb_tokens or None
    if args.shards and not args.model:
        ap.error("--shards measures bits per byte of a --model")
    check_repeats(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, int8 products in "
          f"{'integers (torch._int_mm)' if int_mm_exact() else 'floats (this CPU saturates torch._int_mm)'}")
    print(f"greedy decoding, {args.prompt}-token prompts, {args.new} new tokens, batches {args.batch}; "
          f"median [min-max] of {args.repeats} round(s)")
    for name in args.preset:
        torch.manual_seed(0)
        bench(f"preset {name}, random weights", Transformer(preset(name)).eval(), None, args)
    for path in args.model:
        model, tok = codekiln.load(path)
        bench(str(path), model, tok, args)


if __name__ == "__main__":
    main()
