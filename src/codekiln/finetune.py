"""`codekiln finetune`: a model of your own code. Any model codekiln loads, trained further on a team's
repositories (in full or with LoRA adapters), and measured on files of theirs it never saw.

The stages, each resumed when a rerun finds it finished (everything lives in the run directory):

1. `data/corpus`: the same corpus stages as pretraining over the given code. The license filter is off
   unless `finetune.licenses` is set: it is the team's own code, which they may train on whatever it says.
2. The base model's own tokenizer, never a new one. A base without FIM or repository tokens (an imported
   SmolLM2, for one) gets them added (`data/base`: the tokenizer with the new special tokens and the
   checkpoint with new embedding rows; codekiln.tokenizer.extend, codekiln.model.resize), so it can learn
   to fill in the middle.
3. `data/tokens`: held out by file within each repository, training files in the editors'
   repository-level layout (codekiln.tokenizer.repo_level).
4. The training run itself, in this directory: continued pretraining with the recipe Replit reported
   for its users' code (a learning rate warmed back up to a peak below the base's, a linear cooldown, a
   few epochs), FIM at the base's rate, optionally a replay share of the base's own shards, optionally
   LoRA (`train.lora_rank`). The checkpoints record `repo_level_fim` so clients send repository context.
5. Before and after on the held-out files: bits per byte (the same validation sequences), infilling
   exact match, and five function bodies side by side: `finetune.json` and `finetune.md`.

This module sits on top with cli.py and pipeline.py: it drives the stages through their public APIs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from codekiln.config import Config
from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json
from codekiln.progress import console

FIM_RATE_DEFAULT = 0.5


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def _base_run_config(ckpt: Path) -> dict:
    """The config.yaml of the run a base checkpoint belongs to ({} for an import or export)."""
    path = ckpt.parent.parent / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _build_corpus(cfg: Config, data: Path, quiet: bool) -> Path:
    from codekiln.data.build import CorpusBuild

    config = cfg.model_copy(deep=True)
    if not cfg.finetune.licenses:
        config.data.license.enabled = False
    try:
        build = CorpusBuild(list(cfg.finetune.code), data / "corpus", config, progress=not quiet)
        result = build.run()
    except UserError as exc:
        if "--overwrite" in str(exc):  # data build's advice names a flag finetune does not have
            raise UserError(f"{cfg.finetune.out} was fine-tuned on other code or corpus settings; use a new --out") from None
        raise
    tot = result.report["totals"]
    _say(quiet, f"corpus: kept {tot['docs_out']:,} of {tot['docs_in']:,} files ({tot['bytes_out'] / 1e6:,.2f} MB)"
         + (" (already built)" if result.already_complete else ""))
    if tot["docs_out"] == 0:
        raise UserError(f"no file of {', '.join(cfg.finetune.code)} survived the corpus filters "
                        f"(see {data / 'corpus' / 'report.json'})")
    return data / "corpus"


def _prepare_base(base: Path, data: Path, need: list[str], quiet: bool) -> tuple[Path, Path, dict]:
    """(init_from, tokenizer dir, added-token record): the base as is, or a copy with the missing special
    tokens added to its tokenizer and as new embedding rows (written once, atomically)."""
    from codekiln.checkpoint import model_config, read_model_tensors, tokenizer_dir
    from codekiln.tokenizer.extend import add_special_tokens, missing_special_tokens

    tok_dir = tokenizer_dir(base)
    missing = [name for name in missing_special_tokens(tok_dir) if name in need]
    if not missing:
        return base, tok_dir, {}
    prepared = data / "base"
    record_path = prepared / "checkpoints" / "step-0" / "config.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text()).get("added_tokens", {})
        if record.get("names") == missing and record.get("source") == str(base):
            return prepared, prepared / "tokenizer", record
    import shutil

    import torch
    from safetensors.torch import save_file

    from codekiln.model.resize import add_rows

    tmp = data / ".base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints" / "step-0").mkdir(parents=True)
    added = add_special_tokens(tok_dir, tmp / "tokenizer", missing)
    cfg = model_config(base)
    state, new_cfg = add_rows(read_model_tensors(base / "model.safetensors", cfg), cfg, added["vocab_after"],
                              tokens_before=added["vocab_before"])
    if new_cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "checkpoints" / "step-0" / "model.safetensors"),
              metadata={"format": "pt"})
    from codekiln import __version__

    record = {"source": str(base), "names": missing, "ids": added["added"], "rows_from": added["vocab_before"]}
    (tmp / "checkpoints" / "step-0" / "config.json").write_text(json.dumps(
        {"codekiln_version": __version__, "model": new_cfg.to_dict(), "step": 0, "tokens": 0,
         "added_tokens": record}, indent=2) + "\n")
    (tmp / "checkpoints" / "latest").write_text("step-0\n")
    del state
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    shutil.rmtree(prepared, ignore_errors=True)
    tmp.rename(prepared)
    ids = sorted(added["added"].values())
    _say(quiet, f"base: added {', '.join(missing)} to its tokenizer and embeddings"
         + (f" (ids {ids[0]}-{ids[-1]})" if ids else "") + "; the model learns them here")
    return prepared, prepared / "tokenizer", record


def _train_config(cfg: Config, base_cfg: dict, init_from: Path, tok_dir: Path, tokens: Path, run: Path,
                  meta: dict, lora: int | None) -> Config:
    """The training section a fine-tune runs with: the recipe's defaults wherever train.* was not set."""
    from codekiln.checkpoint import model_config, resolve

    f, t = cfg.finetune, cfg.train
    given = t.model_fields_set
    new = cfg.model_copy(deep=True)
    nt = new.train
    data = [str(tokens)]
    weights = None
    if f.replay > 0 and init_from != Path(f.base) and (init_from / "checkpoints").is_dir() and \
            json.loads((init_from / "checkpoints" / "step-0" / "config.json").read_text()).get("added_tokens"):
        raise UserError("finetune.replay needs the base's own tokenizer, and this fine-tune adds tokens to it (the "
                        "base has no FIM tokens): set finetune.replay to 0")
    if f.replay > 0:
        replay = list(f.replay_data) or list((base_cfg.get("train") or {}).get("data") or [])
        if not replay:
            raise UserError("finetune.replay needs the base's token shards: set finetune.replay_data (the base is not "
                            "a codekiln run whose config names them)")
        data += replay
        weights = [1 - f.replay] + [f.replay / len(replay)] * len(replay)
    nt.data, nt.data_weights, nt.tokenizer, nt.out, nt.init_from = data, weights, str(tok_dir), str(run), str(init_from)
    if lora is not None:
        nt.lora_rank = lora
    mcfg = model_config(resolve(init_from))
    seq_len = t.seq_len or mcfg.context
    if "seq_len" not in given:
        nt.seq_len = seq_len
    base_train = base_cfg.get("train") or {}
    if "lr" not in given:
        nt.lr = float(base_train.get("lr", t.lr)) * f.lr_ratio
        if "lr" not in base_train:
            console.print(f"note: the base records no learning rate (an import or export): training at "
                          f"{nt.lr:.1e} (train.lr x finetune.lr_ratio); set train.lr for it", markup=False,
                          soft_wrap=True)
    if "fim_rate" not in given:
        nt.fim_rate = float(base_train.get("fim_rate", FIM_RATE_DEFAULT))
    if "schedule" not in given:
        nt.schedule = "linear"
    if "min_lr_ratio" not in given:
        nt.min_lr_ratio = 0.0
    batch_tokens = t.batch_size * t.grad_accum * seq_len
    if not t.max_steps and not t.max_tokens:
        train_tokens = meta["splits"]["train"]["tokens"]
        nt.max_steps = max(1, math.ceil(f.epochs * train_tokens / ((1 - f.replay) * batch_tokens)))
    steps = nt.max_steps or math.ceil(nt.max_tokens / batch_tokens)
    if "warmup_steps" not in given:
        nt.warmup_steps = max(1, round(0.05 * steps))
    if "eval_every" not in given:
        nt.eval_every = max(1, steps // 4)
    if "checkpoint_every" not in given:
        nt.checkpoint_every = max(1, steps // 4)
    if "eval_tokens" not in given:  # every held-out token, so before and after measure the same whole set
        nt.eval_tokens = max(seq_len + 1, min(meta["splits"]["val"]["tokens"], 4_000_000))
    if "spike_factor" not in given:
        nt.spike_factor = 0.0  # a new data distribution: the first epochs' loss is not the base's running mean
    return new


def _heldout_bpb(model_path: Path, tokens: Path, cfg: Config) -> dict:
    """Bits per byte of a model on the held-out files (the validation sequences the trainer measures)."""
    import torch

    from codekiln.loading import load
    from codekiln.token_shards import ShardSet
    from codekiln.validation import ValSet, token_bytes, validate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load(model_path, device=device)
    t = cfg.train
    val = ValSet([ShardSet(tokens)], t.seq_len, t.eval_tokens, token_bytes(tok))
    with torch.inference_mode():
        return validate(model, val, t.batch_size, torch.device(device))


def _evaluate(model_path: Path, files: list[dict], context: list[dict], cfg: Config,
              tokens: Path, quiet: bool, label: str) -> dict:
    from codekiln.checkpoint import repo_level_fim, resolve
    from codekiln.eval import heldout
    from codekiln.loading import load

    f = cfg.finetune
    ckpt = resolve(model_path)
    _say(quiet, f"evaluating {label} on {len(files)} held-out files")
    result = {"model": str(model_path), **_heldout_bpb(ckpt, tokens, cfg)}
    tasks = heldout.make_tasks(files, seed=cfg.seed, per_kind=f.eval_tasks)
    bodies = heldout.function_bodies(files, n=f.eval_bodies, seed=cfg.seed)
    import torch

    model, tok = load(ckpt, device="cuda" if torch.cuda.is_available() else "cpu")
    result.update(heldout.evaluate(model, tok, tasks, bodies, repo_level=repo_level_fim(ckpt), context_files=context,
                                   max_new_tokens=f.eval_max_new_tokens, batch_size=8,
                                   context=cfg.train.seq_len))  # both models at the length the fine-tune trains
    return result


def finetune(cfg: Config, *, restart: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) a fine-tune as configured in cfg.finetune; returns finetune.json's content."""
    import torch

    from codekiln.checkpoint import resolve
    from codekiln.tokenizer import FIM_TOKENS
    from codekiln.tokenizer.repo_level import held_out_files, tokenize_repo_level
    from codekiln.train.loop import train

    torch.set_flush_denormal(True)
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("codekiln finetune runs in one process (one GPU or the CPU); for many GPUs, run its stages "
                        "by hand and train with torchrun (docs/finetune.md)")
    f = cfg.finetune
    for key in ("base", "out"):
        if not getattr(f, key):
            raise UserError(f"finetune.{key} is not set (--{key} or finetune.{key}=...)")
    if not f.code:
        raise UserError("no code to fine-tune on: give --code DIR (a repository or a directory of them)")
    base = resolve(f.base)
    run = Path(f.out)
    data = run / "data"
    data.mkdir(parents=True, exist_ok=True)
    base_cfg = _base_run_config(base)

    corpus = _build_corpus(cfg, data, quiet)
    need = [*FIM_TOKENS, "<|fim_pad|>"] + (["<|repo_name|>", "<|file_sep|>"] if f.repo_level_fim else [])
    init_from, tok_dir, added = _prepare_base(base, data, need, quiet)

    from codekiln.checkpoint import model_config

    seq_len = cfg.train.seq_len or model_config(resolve(init_from)).context
    tokens = data / "tokens"
    meta = tokenize_repo_level(corpus, tok_dir, tokens, holdout_fraction=f.holdout_fraction, seed=cfg.seed,
                               repo_context=f.repo_context if f.repo_level_fim else 0.0,
                               doc_tokens=max(64, seq_len // 2), progress=not quiet)
    split = meta["splits"]
    if split["val"]["tokens"] <= seq_len:
        raise UserError(f"the held-out files hold {split['val']['tokens']} tokens, fewer than one sequence of "
                        f"{seq_len + 1}: raise finetune.holdout_fraction or lower train.seq_len")
    _say(quiet, f"files: {split['train']['docs']:,} for training ({split['train']['tokens']:,} tokens), "
         f"{split['val']['docs']:,} held out ({split['val']['tokens']:,} tokens)")
    tcfg = _train_config(cfg, base_cfg, init_from, tok_dir, tokens, run, meta, None)

    files = held_out_files(corpus, f.holdout_fraction, cfg.seed)
    held = {(x["repo"], x["path"]) for x in files}
    from codekiln.tokenizer.train import corpus_rows

    context = [{"repo": repo or "", "path": path or doc_id, "lang": lang, "content": content}  # training files only
               for doc_id, content, path, repo, lang in corpus_rows(corpus, ["id", "content", "path", "repo", "lang"])
               if (repo or "", path or doc_id) not in held]

    # The base's figures are computed once per held-out set and evaluation settings (anything else: again).
    key = {"base": str(base), "tokens": meta["fingerprint"], "seq_len": tcfg.train.seq_len,
           "eval_tokens": tcfg.train.eval_tokens, "seed": cfg.seed,
           "eval": {k: getattr(f, k) for k in ("eval_tasks", "eval_bodies", "eval_max_new_tokens")}}
    before_path = data / "before.json"
    before = json.loads(before_path.read_text()) if before_path.is_file() else None
    if before is None or before.get("key") != key:
        before = {**_evaluate(base, files, context, tcfg, tokens, quiet, "the base model"), "key": key}
        atomic_write_json(before_path, before)

    summary = train(tcfg, restart=restart, quiet=quiet)
    after = _evaluate(run, files, context, tcfg, tokens, quiet, "the fine-tuned model")
    from codekiln.eval.heldout import render_markdown

    result = {"base": str(base), "run": str(run), "added_tokens": added, "lora_rank": tcfg.train.lora_rank,
              "repo_level_fim": f.repo_level_fim, "files": {"train": split["train"]["docs"], "held_out": split["val"]["docs"]},
              "tokens": {"train": split["train"]["tokens"], "held_out": split["val"]["tokens"]},
              "train": {k: summary.get(k) for k in ("steps", "tokens", "epochs", "elapsed_s", "trainable_parameters",
                                                   "memory_mb")},
              "tokens_per_s": _mean_tokens_per_s(run),
              "before": before, "after": after}
    atomic_write_json(run / "finetune.json", result)
    atomic_write_bytes(run / "finetune.md", _markdown(result, render_markdown(before, after)).encode())
    return result


def _mean_tokens_per_s(run: Path) -> float | None:
    from codekiln.train import metrics

    rates = [r["tokens_per_s"] for r in metrics.read(run) if r.get("tokens_per_s")]
    return round(sum(rates) / len(rates), 1) if rates else None


def _markdown(result: dict, comparison: str) -> str:
    b, a = result["before"], result["after"]
    lines = [f"# Fine-tune of {result['base']}", "",
             f"{result['files']['train']} training files, {result['files']['held_out']} held out "
             f"({result['tokens']['held_out']:,} tokens); "
             + (f"LoRA rank {result['lora_rank']}" if result["lora_rank"] else "full fine-tuning")
             + (f"; added tokens {', '.join(result['added_tokens']['names'])}" if result["added_tokens"] else ""), "",
             "| held-out files | before | after |", "| --- | --- | --- |",
             f"| bits per byte | {b['val_bpb']:.4f} | {a['val_bpb']:.4f} |"]
    return "\n".join(lines) + "\n\n" + comparison


def summary_table(result: dict):
    """The table `codekiln finetune` ends with."""
    from rich.table import Table

    b, a = result["before"], result["after"]
    table = Table(title="codekiln finetune", show_header=True, show_edge=False)
    for col in ("held-out files", "before", "after"):
        table.add_column(col, justify="left" if col == "held-out files" else "right")
    table.add_row("bits per byte", f"{b['val_bpb']:.4f}", f"{a['val_bpb']:.4f}")
    def rate(value) -> str:
        return "–" if value is None else f"{value:.3f}"

    for kind, value in (a.get("exact_match") or {}).items():
        if value is None and (b.get("exact_match") or {}).get(kind) is None:
            continue  # no task of this kind (finetune.eval_tasks=0)
        table.add_row(f"infill exact match, {kind.replace('_', '-')}",
                      f"{rate((b.get('exact_match') or {}).get(kind))} ({b.get('prompt_style')})",
                      f"{rate(value)} ({a.get('prompt_style')})")
    tr = result["train"]
    table.add_row("steps, time", "", f"{tr['steps']}, {tr['elapsed_s']:.0f} s")
    table.add_row("tokens/s (training)", "", f"{result['tokens_per_s'] or 0:,.0f}")
    table.add_row("trainable parameters", "", f"{tr['trainable_parameters']:,}")
    table.add_row("memory added by training", "", f"{tr['memory_mb']['added_mb']:,.0f} MB")
    table.add_row("run directory", "", result["run"])
    table.add_row("report", "", str(Path(result["run"]) / "finetune.md"))
    return table
