"""The evaluation stage of `codekiln run`: what a small model can honestly show, in one summary.json.

`run_suite` measures a trained model (and, when given, a reference model and a fine-tune of it) and writes
`summary.json`, which the run report and the model card read:

- bits per byte on held-out text, per language. Models with different tokenizers are compared on the same
  bytes: the val documents `codekiln eval bpb` measures (ValSet's order and token budget) are decoded to
  text, and every model scores exactly those texts with its own tokenizer (`codekiln.eval.bpb.texts_bpb`),
  the trained model included, so the figures side by side cover the same bytes. The untrained model's
  figure is the trainer's own step-0 validation from the run's metrics.jsonl: the same documents when
  bpb_tokens equals the run's train.eval_tokens (ValSet takes them in the same order), scored in the
  trainer's packed sequences rather than document by document (the trained model's figure on both was
  measured within 0.01 bits/byte on the demo run).
- HumanEval pass@1 from one greedy completion per problem, executed in the sandbox, beside published
  small-model scores (`PUBLISHED`), and the share of prompt + completion programs that parse.
- single-line infilling on HumanEval's canonical solutions (exact match and pass@1), each middle cut to
  its first line, since one line is what the task hides.
- the given prompts completed greedily by the model and by the fine-tune (or the reference), cut to
  complete lines as an editor would show them.

Execution needs a sandbox: with `sandbox=None`, or when no sandbox works here, HumanEval and infilling
are skipped and `skipped` says why. Every part prints one line as it ends.
"""

from __future__ import annotations

import ast
import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from codekiln.errors import UserError

# Published HumanEval pass@1 (greedy or pass@1 estimates from each model's paper or model card), for scale.
PUBLISHED = [{"model": "CodeParrot-small (110M)", "humaneval_pass_at_1": 0.038},
             {"model": "SantaCoder (1.1B)", "humaneval_pass_at_1": 0.18},
             {"model": "replit-code-v1-3b (2.7B)", "humaneval_pass_at_1": 0.219}]
COMPLETION_TOKENS = 48  # new tokens per demo completion: a few lines
BATCH_SIZE = 32  # prompts generated together


def run_suite(model_path, shards, out_dir, *, reference=None, finetuned=None, prompts: list[str],
              humaneval: bool = True, infill: bool = True, sandbox: str | None, max_new_tokens: int = 128,
              bpb_tokens: int = 65536, threads: int | None = None, progress: bool = True,
              limit: int | None = None, prompt_lang: str | None = "Python", precision: str = "auto") -> dict:
    """Evaluate a model (and a reference and its fine-tune, on the same bytes); write out_dir/summary.json.

    model_path: a run, checkpoint or export directory; shards: the token-shard directory (or directories)
    made with its tokenizer, whose val split is measured; reference, finetuned: other models, each a path
    or a (name, path) pair; sandbox: the sandbox mode (`codekiln.eval.sandbox.MODES`), None to execute
    nothing; bpb_tokens: the val budget, in tokens of the model's tokenizer; limit: only the first N
    HumanEval problems (a quick check); prompt_lang: the prompts' language, for cutting completions;
    precision: of the bits-per-byte forward passes, "fp32" or "auto" (bf16 autocast on a CPU that multiplies
    bf16 natively, as training validates: measured 2.7x faster for a 135M model, 3e-4 bits/byte apart).
    """
    import torch

    import codekiln
    from codekiln.progress import console
    from codekiln.token_shards import ShardSet, check_tokenizer
    from codekiln.tokenizer import tokenizer_hash

    shard_dirs = [Path(p) for p in ([shards] if isinstance(shards, (str, Path)) else shards)]
    others = {"reference": _named(reference), "finetuned": _named(finetuned)}
    for what, path in [("model", Path(model_path)), *[(w, Path(x[1])) for w, x in others.items() if x]]:
        if not path.exists():
            raise UserError(f"{what} {path} does not exist")
    for path in shard_dirs:
        if not path.exists():
            raise UserError(f"token shards {path} do not exist")
    if not shard_dirs:
        raise UserError("no token-shard directory given")
    if precision not in ("auto", "fp32"):
        raise UserError(f"precision must be auto or fp32, not {precision!r}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, not {limit}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None

    def say(text: str) -> None:
        if progress:
            console.print(f"eval: {text}", highlight=False, soft_wrap=True)

    with _threads(threads):
        torch.set_flush_denormal(True)
        model, tok = codekiln.load(model_path)
        sets = [ShardSet(p) for p in shard_dirs]
        check_tokenizer(sets, tokenizer_hash(tok.directory), model_path)
        texts, langs = val_texts(sets, tok, bpb_tokens)
        if not texts:
            raise UserError(f"the val split of {', '.join(map(str, shard_dirs))} holds no text")
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        skipped: dict[str, str] = {}

        t0 = time.perf_counter()
        bpb = {"model": _bpb(model, tok, texts, langs, precision, progress)}
        bpb["untrained"] = untrained_bpb(model_path)
        if bpb["untrained"] is None:
            skipped["untrained"] = "the run's metrics.jsonl holds no step-0 validation"
        untrained = f", untrained {bpb['untrained']['val_bpb']:.4f}" if bpb["untrained"] else ""
        say(f"bits per byte {bpb['model']['val_bpb']:.4f} on {nbytes:,} held-out bytes ({len(texts)} documents)"
            f"{untrained} ({time.perf_counter() - t0:.1f} s)")
        completions = {"model": _complete(model, tok, prompts, prompt_lang)}

        # Each other model is loaded once: its bits per byte, and the side-by-side completions from the
        # fine-tune (or the reference when there is no fine-tune).
        side = "finetuned" if others["finetuned"] else "reference"
        for what, named in others.items():
            if named is None:
                bpb[what] = None
                skipped[what] = f"no {what} model given"
                continue
            t0 = time.perf_counter()
            other, other_tok = codekiln.load(named[1])
            bpb[what] = {"name": named[0], **_bpb(other, other_tok, texts, langs, precision, progress)}
            if what == side:
                completions["other"] = _complete(other, other_tok, prompts, prompt_lang)
            del other, other_tok
            say(f"bits per byte of {what} {named[0]}: {bpb[what]['val_bpb']:.4f} on the same bytes "
                f"({time.perf_counter() - t0:.1f} s)")
        bpb["bytes"] = nbytes

        mode, why = _sandbox(sandbox)
        problems = None
        if humaneval or infill:
            from codekiln.eval.humaneval import load_problems

            problems = load_problems()
            if limit:
                problems = dict(list(problems.items())[:limit])
        he = fill = None
        if not humaneval:
            skipped["humaneval"] = "turned off"
        elif mode is None:
            skipped["humaneval"] = why
        else:
            t0 = time.perf_counter()
            he = _humaneval(model, tok, problems, out / "humaneval", mode=mode, max_new_tokens=max_new_tokens,
                            progress=progress)
            say(f"HumanEval pass@1 {he['pass_at_k']['1']:.1%} on {he['tasks_evaluated']} problems, "
                f"{he['parse_rate']:.0%} of programs parse ({time.perf_counter() - t0:.1f} s)")
        if not infill:
            skipped["infill"] = "turned off"
        elif mode is None:
            skipped["infill"] = why
        elif not tok.has_fim:
            skipped["infill"] = "the model's tokenizer has no fill-in-the-middle tokens"
        else:
            t0 = time.perf_counter()
            fill = _infill(model, tok, problems, out / "infill", mode=mode, max_new_tokens=max_new_tokens,
                           progress=progress)
            one = fill["single_line"]
            say(f"single-line infilling: exact match {one['exact_match']:.1%}, pass@1 {one['pass_at_1']:.1%} "
                f"on {one['tasks']} tasks ({time.perf_counter() - t0:.1f} s)")

    summary = {
        "bpb": bpb,
        "humaneval": he,
        "infill": fill,
        "parse_rate": he["parse_rate"] if he else None,
        "published": [dict(p) for p in PUBLISHED],
        "completions": [{"prompt": p, "model": m, "reference_model": o}
                        for p, m, o in zip(prompts, completions["model"],
                                           completions.get("other", [None] * len(prompts)))],
        "skipped": skipped,
    }
    from codekiln.files import atomic_write_json

    atomic_write_json(out / "summary.json", summary)
    return summary


def val_texts(sets, tok, max_tokens: int) -> tuple[list[str], list[str]]:
    """(texts, languages): the val documents ValSet takes for a budget of max_tokens, decoded to text.

    ValSet's own choice (codekiln.validation): each shard directory an equal share of the budget, its
    documents in a fixed shuffled order until the share is spent. Special tokens (the separator, a packed
    repository's markers) are left out of the text; the document the budget cuts ends at its last whole
    line within the budget, so no model is scored on a character cut in two."""
    specials = np.asarray(sorted(set(tok.special_ids.values())))
    texts, langs = [], []
    for s in sets:
        budget = (max_tokens + 1) // len(sets)
        ix = s.index["val"]
        for i in np.random.default_rng(0).permutation(len(ix["tokens"])).tolist():
            if budget <= 0:
                break
            ids = s.doc("val", i)
            cut = ids.size > budget
            ids = ids[:budget]
            budget -= ids.size
            text = tok.decode(ids[~np.isin(ids, specials)].tolist())
            if cut:
                text = text[: text.rfind("\n") + 1]
            if text:
                texts.append(text)
                langs.append(str(ix["lang"][i]))
    return texts, langs


def untrained_bpb(model_path) -> dict | None:
    """The untrained model's bits per byte: the first step-0 validation in the run's metrics.jsonl, or None
    (an export, a checkpoint outside a run, a run that did not start from step 0)."""
    from codekiln.checkpoint import resolve

    ckpt = resolve(model_path)
    if ckpt.parent.name != "checkpoints":
        return None
    path = ckpt.parent.parent / "metrics.jsonl"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(record, dict) and record.get("step") == 0 and "val_bpb" in record:
            return {"val_bpb": record["val_bpb"], "val_bpb_by_lang": record.get("val_bpb_by_lang", {})}
    return None


def parses(program: str) -> bool:
    """Whether a program is valid Python syntax (for the parse rate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences and the like still parse
        try:
            ast.parse(program)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def _named(model) -> tuple[str, Path] | None:
    """(name, path) of another model given as a path or a (name, path) pair; an import is named after its source."""
    if model is None:
        return None
    if isinstance(model, (tuple, list)):
        name, path = model
        return str(name), Path(path)
    path = Path(model)
    try:
        config = json.loads((path / "tokenizer" / "tokenizer_config.json").read_text())
        source = config["codekiln"]["imported_from"].split(":", 1)[1]
        return source.removesuffix(".gguf"), path
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return path.resolve().name, path


def _native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16); emulated bf16 is slower than fp32.
    (The trainer makes the same check for its precision "auto"; eval does not import train.)"""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


@contextlib.contextmanager
def _threads(threads: int | None):
    """torch on `threads` threads inside the block (all it had before when None)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bpb(model, tok, texts, langs, precision: str, progress: bool) -> dict:
    """texts_bpb's overall and per-language figures, with a progress bar over the tokens."""
    import torch

    from codekiln.eval.bpb import texts_bpb
    from codekiln.progress import count_progress

    bf16 = precision == "auto" and next(model.parameters()).device.type == "cpu" and _native_bf16()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    total = sum(len(ids) for ids in tok.encode_batch(texts))
    with count_progress("bits per byte", total, enabled=progress) as advance:
        result = texts_bpb(model, tok, texts, langs, autocast=autocast, progress=advance)
    return {"val_bpb": result["val_bpb"], "val_bpb_by_lang": result["val_bpb_by_lang"]}


def _complete(model, tok, prompts: list[str], lang: str | None) -> list[str]:
    """Each prompt completed greedily, up to COMPLETION_TOKENS, cut to what an editor would show."""
    from codekiln.infer import fit_prompt, for_editor, generate

    if not prompts:
        return []
    fitted = [fit_prompt(tok, p, context=model.cfg.context, max_new_tokens=COMPLETION_TOKENS).ids for p in prompts]
    done = generate(model, tok, fitted, max_new_tokens=COMPLETION_TOKENS)
    return [for_editor(c.text, p, "", lang=lang, truncated=c.finish_reason == "length") for p, c in zip(prompts, done)]


def _sandbox(sandbox: str | None) -> tuple[str | None, str | None]:
    """(mode, None) when model-written code may run here, else (None, why not)."""
    from codekiln.eval.sandbox import resolve_mode

    if sandbox is None:
        return None, "executing model-written code was not allowed (eval.allow_code_execution)"
    try:
        return resolve_mode(sandbox), None
    except UserError as exc:
        return None, str(exc)


def _humaneval(model, tok, problems: dict, out: Path, *, mode: str, max_new_tokens: int, progress: bool) -> dict:
    """One greedy completion per problem, executed in the sandbox: pass@1, and the share that parses."""
    from codekiln.eval.generation import humaneval_samples
    from codekiln.eval.humaneval import execute_file, write_samples
    from codekiln.progress import count_progress

    budget = min(max_new_tokens, model.cfg.context // 2)  # as `eval humaneval`: the prompt keeps half the context
    with count_progress("HumanEval", len(problems), enabled=progress) as advance:
        generated = humaneval_samples(model, tok, problems, n=1, temperature=0.0, max_new_tokens=budget,
                                      batch_size=BATCH_SIZE, progress=advance)
    samples_path = out / "samples.jsonl"
    write_samples(samples_path, generated.items)
    with count_progress("execute", len(generated.items), enabled=progress) as advance:
        result = execute_file(samples_path, None, out, k=(1,), allow_code_execution=True, progress=advance,
                              sandbox=mode, generation=generated.report()).results
    # The program as written, without the tests: does the model write Python?
    parsed = [parses(problems[s["task_id"]]["prompt"] + s["completion"]) for s in generated.items]
    return {"pass_at_k": {str(k): v for k, v in result["pass_at_k"].items()},
            "tasks_evaluated": result["tasks_evaluated"], "samples": result["samples"],
            "parse_rate": sum(parsed) / len(parsed)}


def _infill(model, tok, problems: dict, out: Path, *, mode: str, max_new_tokens: int, progress: bool) -> dict:
    """Single-line infilling on HumanEval's canonical solutions, scored in the sandbox."""
    from codekiln.eval.generation import infill_middles
    from codekiln.eval.infill import make_infill_tasks, score_infill, write_results
    from codekiln.infer import single_line
    from codekiln.progress import count_progress

    tasks = make_infill_tasks(problems, single_line=1, multi_line=0)
    budget = min(max_new_tokens, model.cfg.context // 2)
    with count_progress("infill", len(tasks), enabled=progress) as advance:
        generated = infill_middles(model, tok, tasks, max_new_tokens=budget, batch_size=BATCH_SIZE,
                                   progress=advance)
    middles = [single_line(m) for m in generated.items]  # the task hides one line
    result = score_infill(tasks, middles, allow_code_execution=True, sandbox=mode)
    result["generation"] = {**generated.report(), "middles": "cut to their first line"}
    write_results(out, tasks, middles, result)
    one = result["by_kind"]["single_line"]
    return {"single_line": {"exact_match": one["exact_match"], "pass_at_1": one["pass_at_1"], "tasks": one["tasks"]}}
