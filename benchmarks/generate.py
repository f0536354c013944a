"""Generation speed: codekiln's KV-cached batched greedy decoding against two baselines in the same run.

Rows (all greedy, fp32, random weights of the `tiny` preset shape with RoPE, RMSNorm, SwiGLU and GQA):
  kv-cache       codekiln.infer.generate (left-padded batch, preallocated KV cache, SDPA with a mask)
  kv-cache alibi the same with ALiBi (the default positions), for reference
  no-cache       the same model recomputing the whole sequence every step (LM head on the last position only)
  transformers   stock `LlamaForCausalLM.generate` (SDPA, its default dynamic cache) holding the same weights
Throughput is generated tokens per second over the batch (prefill included; the fastest of --repeats
runs); the single-stream line gives milliseconds per token at batch 1. The agreement line checks that
the three pick the same greedy tokens.

    python benchmarks/generate.py [--batch 8] [--prompt 64] [--new 128] [--repeats 3]
"""

from __future__ import annotations

import torch

torch.set_flush_denormal(True)  # first: OpenMP workers copy the FP mode of the thread that creates them

import argparse  # noqa: E402
import time  # noqa: E402

from codekiln.export.hf_llama import hf_name  # noqa: E402
from codekiln.infer import generate  # noqa: E402
from codekiln.model import Transformer, preset  # noqa: E402


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


def llama_like(model):
    """Stock transformers LlamaForCausalLM of the same shape holding the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        attn_implementation="sdpa"))
    state = {hf_name(k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head: tied
    return hf.eval()


@torch.inference_mode()
def transformers_generate(hf, prompts, new):
    """Token ids [B, new] from LlamaForCausalLM.generate, forced to write exactly `new` tokens."""
    x = torch.tensor(prompts)
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, x.shape[1]:]


def timed(fn, *args, repeats=1):
    """(result, seconds) of the fastest of `repeats` calls (this machine's other load only slows a run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--single-new", type=int, default=64, help="new tokens for the batch-1 latency rows")
    ap.add_argument("--repeats", type=int, default=3, help="runs per row; the fastest counts")
    args = ap.parse_args()

    torch.manual_seed(0)
    shape = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
    model = Transformer(preset("tiny", **shape)).eval()
    alibi = Transformer(preset("tiny", **{**shape, "positions": "alibi"})).eval()
    hf = llama_like(model)
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(7, cfg.vocab_size, (args.batch, args.prompt), generator=g).tolist()
    print(f"tiny preset ({cfg.d_model} wide, {cfg.n_layers} layers, {cfg.n_heads} heads / {cfg.kv_heads} kv, "
          f"vocab {cfg.vocab_size}), fp32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch {args.batch}, prompt {args.prompt} tokens, {args.new} new tokens, greedy")

    for fn, m in ((ours, model), (ours, alibi), (no_cache, model), (transformers_generate, hf)):
        fn(m, prompts[:2], 4)  # warm-up: first-call allocations and dispatch

    runs = {}
    r = args.repeats
    runs["kv-cache"] = timed(ours, model, prompts, args.new, repeats=r)
    runs["kv-cache alibi"] = timed(ours, alibi, prompts, args.new, repeats=r)
    runs["no-cache"] = timed(no_cache, model, prompts, args.new, repeats=r)
    runs["transformers"] = timed(transformers_generate, hf, prompts, args.new, repeats=r)
    tokens = args.batch * args.new
    base, hf_s = runs["no-cache"][1], runs["transformers"][1]
    print(f"{'':16}{'tokens/s':>10}{'ms/step':>10}{'vs no-cache':>13}{'vs transformers':>17}")
    for name, (_, seconds) in runs.items():
        print(f"{name:16}{tokens / seconds:10.0f}{1000 * seconds / args.new:10.2f}"
              f"{base / seconds:12.2f}x{hf_s / seconds:16.2f}x")
    same = (runs["kv-cache"][0] == runs["transformers"][0]).float().mean().item()
    exact = (runs["kv-cache"][0] == runs["no-cache"][0]).float().mean().item()
    print(f"greedy tokens equal to no-cache: {100 * exact:.1f}%, to transformers: {100 * same:.1f}%")

    one = prompts[:1]
    _, ours_s = timed(ours, model, one, args.single_new, repeats=r)
    _, hf1_s = timed(transformers_generate, hf, one, args.single_new, repeats=r)
    print(f"single stream ({args.prompt}-token prompt, {args.single_new} new tokens): "
          f"codekiln {1000 * ours_s / args.single_new:.2f} ms/token, "
          f"transformers {1000 * hf1_s / args.single_new:.2f} ms/token ({hf1_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()
