"""Generation speed: codekiln's KV-cached batched greedy decoding against peers that compute the same thing.

Like is compared with like, at the precision codekiln generates in (read from the model's weights):
  RoPE   the `tiny` shape with RoPE, RMSNorm, SwiGLU and GQA, random weights. Stock transformers
         `LlamaForCausalLM` is the same network, so it is loaded with the very same tensors (checked:
         equal logits within a stated tolerance) and is this model's peer:
           kv-cache       codekiln.infer.generate (left-padded batch, preallocated KV cache, SDPA with a mask)
           transformers   LlamaForCausalLM.generate (SDPA, its default dynamic cache)
           no-cache       codekiln's model recomputing the whole sequence every step (LM head on the last
                          position only)
  ALiBi  the same shape with ALiBi, codekiln's default positions. No stock transformers class computes
         this network (MPT has ALiBi but LayerNorm, a GELU MLP and no GQA), so its only baseline is
         its own no-cache decoding:
           kv-cache alibi, no-cache alibi
Throughput is generated tokens per second over the batch, prefill included. Rounds interleave the rows
so a change in machine load hits all of them; each figure is the median of --repeats rounds with
[min-max], ratios are ratios of medians. The single-stream line gives milliseconds per token at batch 1
(RoPE model against transformers). The agreement lines check that each pair picks the same greedy tokens.

    python benchmarks/generate.py [--batch 8] [--prompt 64] [--new 128] [--single-new 64] [--repeats 3]
    python benchmarks/generate.py --quick     # smoke test: batch 2, 8-token prompts, 8 new tokens, 1 round
"""

from __future__ import annotations

import torch

torch.set_flush_denormal(True)  # first: OpenMP workers copy the FP mode of the thread that creates them

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

from codekiln.infer import generate  # noqa: E402
from codekiln.model import Transformer, preset  # noqa: E402

# Different kernels (fused SDPA against our masked path, other matmul shapes) round differently;
# logits of the same weights agree to this absolute tolerance in fp32.
LOGIT_TOLERANCE = 1e-3


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


def llama_name(ours_name: str) -> str:
    """transformers' Llama parameter name of one of codekiln's (the layout docs/export documents)."""
    top = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "lm_head.weight": "lm_head.weight"}
    if ours_name in top:
        return top[ours_name]
    m = re.fullmatch(r"blocks\.(\d+)\.(attn_norm|attn|mlp_norm|mlp)\.(.+)", ours_name)
    if m is None:
        raise KeyError(f"no Llama name for {ours_name}")
    part = {"attn_norm": "input_layernorm", "attn": "self_attn", "mlp_norm": "post_attention_layernorm"}
    return f"model.layers.{m[1]}.{part.get(m[2], m[2])}.{m[3]}"


def llama_like(model):
    """Stock transformers LlamaForCausalLM of the same shape holding the same weights, in the same dtype."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        attn_implementation="sdpa"))
    state = {llama_name(k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or not set(missing) <= {"lm_head.weight"}:  # lm_head: tied to the embedding
        sys.exit(f"the Llama twin does not hold the same weights: missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).dtype).eval()


@torch.inference_mode()
def same_logits(model, hf, prompts) -> float:
    """Largest absolute logit difference between codekiln's model and its Llama twin on the prompts."""
    x = torch.tensor(prompts)
    return (model(x) - hf(x).logits).abs().max().item()


@torch.inference_mode()
def transformers_generate(hf, prompts, new):
    """Token ids [B, new] from LlamaForCausalLM.generate, forced to write exactly `new` tokens."""
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
        args.batch, args.prompt, args.new, args.single_new, args.repeats = 2, 8, 8, 4, 1
    check_repeats(ap, args.repeats)

    torch.manual_seed(0)
    shape = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
    model = Transformer(preset("tiny", **shape)).eval()
    alibi = Transformer(preset("tiny", **{**shape, "positions": "alibi"})).eval()
    hf = llama_like(model)
    cfg = model.cfg
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(7, cfg.vocab_size, (args.batch, args.prompt), generator=g).tolist()
    print(f"tiny preset ({cfg.d_model} wide, {cfg.n_layers} layers, {cfg.n_heads} heads / {cfg.kv_heads} kv, "
          f"vocab {cfg.vocab_size}), {dtype} weights in every row, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    diff = same_logits(model, hf, prompts)
    print(f"batch {args.batch}, prompt {args.prompt} tokens, {args.new} new tokens, greedy; median [min-max] of "
          f"{args.repeats} round(s); Llama twin's logits within {diff:.1e} of codekiln's RoPE model")
    if diff > LOGIT_TOLERANCE:
        sys.exit(f"the Llama twin computes another function (logits differ by {diff:.2e} > {LOGIT_TOLERANCE})")

    rows = {  # name: (function, model, baseline row for the first ratio column)
        "kv-cache rope": (ours, model, "no-cache rope"),
        "transformers": (transformers_generate, hf, "no-cache rope"),
        "no-cache rope": (no_cache, model, "no-cache rope"),
        "kv-cache alibi": (ours, alibi, "no-cache alibi"),
        "no-cache alibi": (no_cache, alibi, "no-cache alibi"),
    }
    for fn, m, _ in rows.values():
        fn(m, prompts[:2], 4)  # warm-up: first-call allocations and dispatch

    seconds = {name: [] for name in rows}
    tokens = {}
    for _ in range(args.repeats):
        for name, (fn, m, _) in rows.items():
            tokens[name], s = timed(fn, m, prompts, args.new)
            seconds[name].append(s)
    rate = {name: [args.batch * args.new / s for s in v] for name, v in seconds.items()}

    print(f"{'':16}{'tokens/s median [min-max]':>27}{'ms/step':>9}{'vs no-cache':>13}{'vs transformers':>17}")
    for name, (_, _, base) in rows.items():
        vs_hf = f"{ratio(rate[name], rate['transformers']):.2f}x" if "rope" in name or name == "transformers" else "-"
        print(f"{name:16}{spread(rate[name]):>27}{1000 * median(seconds[name]) / args.new:9.2f}"
              f"{ratio(rate[name], rate[base]):12.2f}x{vs_hf:>17}")

    def agree(a, b):
        return 100 * (tokens[a] == tokens[b]).float().mean().item()

    print(f"greedy tokens equal: kv-cache rope to no-cache {agree('kv-cache rope', 'no-cache rope'):.1f}%, "
          f"to transformers {agree('kv-cache rope', 'transformers'):.1f}%; "
          f"kv-cache alibi to no-cache {agree('kv-cache alibi', 'no-cache alibi'):.1f}%")

    one = prompts[:1]
    single = {"codekiln": [], "transformers": []}
    for _ in range(args.repeats):
        single["codekiln"].append(1000 * timed(ours, model, one, args.single_new)[1] / args.single_new)
        single["transformers"].append(1000 * timed(transformers_generate, hf, one, args.single_new)[1] / args.single_new)
    print(f"single stream, RoPE ({args.prompt}-token prompt, {args.single_new} new tokens): "
          f"codekiln {spread(single['codekiln'], '.2f')} ms/token, "
          f"transformers {spread(single['transformers'], '.2f')} ms/token "
          f"(codekiln {ratio(single['transformers'], single['codekiln']):.2f}x as fast)")


if __name__ == "__main__":
    main()
