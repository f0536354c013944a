"""Generation speed: codekiln's KV-cached batched greedy decoding against peers that compute the same thing.

Like is compared with like, at the precision codekiln generates in (read from the model's weights).
Each codekiln model has a stock transformers twin holding the very same tensors, converted through
codekiln.hf_layout (the seam `codekiln export hf` writes through), and checked to give the same logits
within a stated relative tolerance:
  RoPE   the `tiny` shape with RoPE, RMSNorm, SwiGLU and GQA; its twin is LlamaForCausalLM (SDPA).
  ALiBi  the `tiny` shape with ALiBi, LayerNorm and GELU (codekiln's default family) with one key/value
         head per query head; its twin is MptForCausalLM (transformers' own MPT attention). MPT has no
         grouped-query attention, so a GQA model's twin would carry repeated key/value heads, a bigger
         model; with as many key/value heads as query heads both hold exactly the same weights.
Rows, for each model:
  kv-cache       codekiln.infer.generate (left-padded batch, preallocated KV cache, SDPA with a mask)
  transformers   the twin's generate (its default dynamic cache)
  no-cache       codekiln's model recomputing the whole sequence every step (LM head on the last position only)
Throughput is generated tokens per second over the batch, prefill included. Rounds interleave the rows
so a change in machine load hits all of them; each figure is the median of --repeats rounds with
[min-max], ratios are ratios of medians. The single-stream lines give milliseconds per token at batch 1.
The agreement lines check that each pair picks the same greedy tokens.

    python benchmarks/generate.py [--batch 8] [--prompt 64] [--new 128] [--single-new 64] [--repeats 3]
    python benchmarks/generate.py --quick     # smoke test: batch 2, 8-token prompts, 8 new tokens, 1 round
"""

from __future__ import annotations

import torch

torch.set_flush_denormal(True)  # first: OpenMP workers copy the FP mode of the thread that creates them

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

from codekiln.hf_layout import hf_config, layout, to_hf  # noqa: E402
from codekiln.infer import generate  # noqa: E402
from codekiln.model import Transformer, preset  # noqa: E402

# Different kernels (fused SDPA against a masked path, other matmul shapes) round differently: the
# twins' logits agree with codekiln's to this fraction of the largest logit in fp32.
LOGIT_TOLERANCE = 1e-4


class NoText:
    """A tokenizer stand-in: prompts are token ids, no stop strings, no end token, so text is never needed."""

    special_ids: dict = {}

    def decode(self, ids):
        return ""


def ours(model, prompts, new):
    """Token ids [B, new] from codekiln's generate."""
    out = generate(model, NoText(), prompts, max_new_tokens=new, eos=False)
    return torch.tensor([c.token_ids for c in out])


@torch.inference_mode()
def no_cache(model, prompts, new):
    """Greedy decoding that runs the whole sequence through the model at every step."""
    x = torch.tensor(prompts)
    for _ in range(new):
        x = torch.cat([x, model(x, last_only=True)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[:, len(prompts[0]):]


def twin(model):
    """The stock transformers model that holds the same tensors as `model`, in the same dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM

    lay = layout(model.cfg)
    if lay.repeat_kv != 1:
        sys.exit(f"{lay.architecture} would need repeated key/value heads: not the same weights")
    spec = hf_config(model.cfg, 0, "float32")
    kwargs = {"attn_implementation": "sdpa"} if lay.model_type == "llama" else {}
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec), **kwargs)
    missing, unexpected = hf.load_state_dict(to_hf(model.state_dict(), model.cfg), strict=False)
    if unexpected or not set(missing) <= {"lm_head.weight"}:  # lm_head: tied to the embedding
        sys.exit(f"the {lay.architecture} twin does not hold the same weights: missing {missing}, "
                 f"unexpected {unexpected}")
    return hf.to(next(model.parameters()).dtype).eval()


@torch.inference_mode()
def logit_gap(model, hf, prompts) -> float:
    """Largest logit difference between a codekiln model and its twin, relative to the largest logit."""
    x = torch.tensor(prompts)
    ours_logits = model(x)
    return ((ours_logits - hf(x).logits).abs().max() / ours_logits.abs().max()).item()


@torch.inference_mode()
def transformers_generate(hf, prompts, new):
    """Token ids [B, new] from a transformers model's generate, forced to write exactly `new` tokens."""
    x = torch.tensor(prompts)
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, x.shape[1]:]


def timed(fn, *args):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--single-new", type=int, default=64, help="new tokens for the batch-1 latency rows")
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 2, 8-token prompts, 8 new tokens, 1 round")
    add_repeats(ap)
    args = ap.parse_args()
    if args.quick:
        args.batch, args.prompt, args.new, args.single_new = 2, 8, 8, 4
    check_repeats(ap, args)

    torch.manual_seed(0)
    rope = Transformer(preset("tiny", positions="rope", norm="rmsnorm", mlp="swiglu")).eval()
    heads = rope.cfg.n_heads
    alibi = Transformer(preset("tiny", positions="alibi", norm="layernorm", mlp="gelu", kv_heads=heads)).eval()
    twins = {"rope": twin(rope), "alibi": twin(alibi)}
    dtype = str(next(rope.parameters()).dtype).removeprefix("torch.")
    cfg = rope.cfg
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(7, cfg.vocab_size, (args.batch, args.prompt), generator=g).tolist()
    print(f"tiny preset ({cfg.d_model} wide, {cfg.n_layers} layers, vocab {cfg.vocab_size}), {dtype} weights in "
          f"every row, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  rope:  RoPE, RMSNorm, SwiGLU, {heads} heads / {cfg.kv_heads} kv; twin "
          f"{type(twins['rope']).__name__}")
    print(f"  alibi: ALiBi, LayerNorm, GELU, {heads} heads / {alibi.cfg.kv_heads} kv; twin "
          f"{type(twins['alibi']).__name__}")
    for name, model in (("rope", rope), ("alibi", alibi)):
        gap = logit_gap(model, twins[name], prompts)
        print(f"  {name} twin's logits within {gap:.1e} of codekiln's (relative to the largest logit)")
        if gap > LOGIT_TOLERANCE:
            sys.exit(f"the {name} twin computes another function ({gap:.2e} > {LOGIT_TOLERANCE})")
    print(f"batch {args.batch}, prompt {args.prompt} tokens, {args.new} new tokens, greedy; median [min-max] of "
          f"{args.repeats} round(s)")

    rows = {}  # name: (function, model, no-cache row of the same model, twin row of the same weights)
    for name, model in (("rope", rope), ("alibi", alibi)):
        rows[f"kv-cache {name}"] = (ours, model, f"no-cache {name}", f"transformers {name}")
        rows[f"transformers {name}"] = (transformers_generate, twins[name], f"no-cache {name}", f"transformers {name}")
        rows[f"no-cache {name}"] = (no_cache, model, f"no-cache {name}", f"transformers {name}")
    for fn, m, _, _ in rows.values():
        fn(m, prompts[:2], 4)  # warm-up: first-call allocations and dispatch

    seconds = {name: [] for name in rows}
    tokens = {}
    for _ in range(args.repeats):
        for name, (fn, m, _, _) in rows.items():
            tokens[name], s = timed(fn, m, prompts, args.new)
            seconds[name].append(s)
    rate = {name: [args.batch * args.new / s for s in v] for name, v in seconds.items()}

    print(f"{'':20}{'tokens/s median [min-max]':>27}{'ms/step':>9}{'vs no-cache':>13}{'vs transformers':>17}")
    for name, (_, _, base, peer) in rows.items():
        print(f"{name:20}{spread(rate[name]):>27}{1000 * median(seconds[name]) / args.new:9.2f}"
              f"{ratio(rate[name], rate[base]):12.2f}x{ratio(rate[name], rate[peer]):16.2f}x")

    def agree(a, b):
        return 100 * (tokens[a] == tokens[b]).float().mean().item()

    for name in ("rope", "alibi"):
        print(f"greedy tokens equal, {name}: kv-cache to no-cache {agree(f'kv-cache {name}', f'no-cache {name}'):.1f}%, "
              f"to transformers {agree(f'kv-cache {name}', f'transformers {name}'):.1f}%")

    one = prompts[:1]
    for name, model in (("rope", rope), ("alibi", alibi)):
        single = {"codekiln": [], "transformers": []}
        for _ in range(args.repeats):
            single["codekiln"].append(1000 * timed(ours, model, one, args.single_new)[1] / args.single_new)
            single["transformers"].append(
                1000 * timed(transformers_generate, twins[name], one, args.single_new)[1] / args.single_new)
        print(f"single stream, {name} ({args.prompt}-token prompt, {args.single_new} new tokens): "
              f"codekiln {spread(single['codekiln'], '.2f')} ms/token, "
              f"{type(twins[name]).__name__} {spread(single['transformers'], '.2f')} ms/token "
              f"(codekiln {ratio(single['transformers'], single['codekiln']):.2f}x as fast)")


if __name__ == "__main__":
    main()
