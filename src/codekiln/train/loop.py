"""`codekiln train`: the loop, top to bottom. One process on a CPU or a GPU; many through torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from codekiln.checkpoint import is_export, latest, read_model_tensors, resolve, tokenizer_dir
from codekiln.checkpoint import model_config as saved_model_config
from codekiln.config import Config, config_to_yaml
from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes
from codekiln.model import ModelConfig, Transformer, flops_per_token, preset
from codekiln.progress import console
from codekiln.token_shards import ShardSet, check_tokenizer
from codekiln.tokenizer import load as load_tokenizer
from codekiln.tokenizer import tokenizer_hash
from codekiln.train import checkpoint, metrics, parallel
from codekiln.train.data import TrainStream, mixture, plan_table
from codekiln.train.optim import build_optimizer
from codekiln.train.schedule import lr_at
from codekiln.validation import ValSet, doc_ids, token_bytes, validate

# Keys that may change between a run and its resumption without changing what it computes.
# The stability knobs are among them, so a run stopped by a loss spike can resume with a lower LR.
RESUMABLE_KEYS = {"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "wandb_project", "threads",
                  "out", "data", "tokenizer", "lr", "warmup_steps", "spike_factor", "grad_clip", "eval_tokens",
                  "compile", "activation_checkpointing", "peak_tflops"}


# What `codekiln finetune` (codekiln.finetune, above this package) keeps in its run directory besides the run.
FINETUNE_NAMES = ("data", "finetune.json", "finetune.md")


class TrainingStopped(Exception):
    """Training hit NaN/inf or a loss spike; the last good checkpoint is kept."""


def _semantic(cfg: dict) -> dict:
    """The parts of a config that decide what training computes (data paths are checked by content)."""
    train = {k: v for k, v in cfg["train"].items() if k not in RESUMABLE_KEYS}
    return {"seed": cfg["seed"], "model": cfg["model"], "train": train}


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            found = _first_difference(a[k], b[k], f"{prefix}{k}.")
            if found:
                return found
        elif a.get(k) != b.get(k):
            return f"{prefix}{k} ({a.get(k)!r} then, {b.get(k)!r} now)"
    return ""


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AMX or AVX512-BF16); otherwise bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def choose_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on GPUs that have it and on CPUs with native bf16 (measured 4x slower on CPUs without)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def model_config(cfg: Config, vocab_size: int) -> ModelConfig:
    """The preset with the config's overrides; the vocabulary padded to a multiple of 64 for fast matmuls."""
    fields = cfg.model.model_dump(exclude={"preset"})
    return preset(cfg.model.preset, vocab_size=64 * math.ceil(vocab_size / 64), **fields)


def _is_hugging_face_dir(path: Path) -> bool:
    """True for a directory whose config.json is a Hugging Face model config rather than a codekiln checkpoint's
    (an export of ours is one too, but its codekiln.json makes it ours)."""
    if is_export(path):
        return False
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "model" not in cfg and ("model_type" in cfg or "architectures" in cfg)


def _init_weights(source: str, vocab_size: int, attn_impl: str | None, tok_sha: str) -> tuple[ModelConfig, dict]:
    """Continued pretraining: config and weights of a codekiln run or checkpoint trained with the same tokenizer."""
    # A foreign model's token ids mean other strings than ours: its weights are usable only together with
    # its own tokenizer, which is what an import (not a bare init_from) has to convert.
    if _is_hugging_face_dir(Path(source)):
        raise UserError(f"train.init_from {source} is a Hugging Face model directory; init_from takes a codekiln run "
                        f"or checkpoint: run `codekiln import hf {source} --out DIR`, then use DIR as train.init_from "
                        "and DIR/tokenizer as train.tokenizer")
    ckpt = resolve(source)
    source_tok = tokenizer_dir(ckpt)
    if (source_tok / "tokenizer.json").is_file() and tokenizer_hash(source_tok) != tok_sha:
        raise UserError(f"train.init_from {source} was trained with another tokenizer than train.tokenizer")
    mcfg = saved_model_config(ckpt)
    state = read_model_tensors(ckpt / "model.safetensors", mcfg)
    if mcfg.vocab_size < vocab_size:
        raise UserError(f"train.init_from {source} has a vocabulary of {mcfg.vocab_size}, smaller than the "
                        f"tokenizer's {vocab_size}")
    if attn_impl:
        mcfg = ModelConfig.from_dict({**mcfg.to_dict(), "attn_impl": attn_impl})
    return mcfg, state


def _lora_spec(t, mcfg: ModelConfig):
    """The LoRA adapters train.lora_* asks for (None for full training); new-token rows of a fine-tuning base
    (`added_tokens` in its checkpoint record) train in full beside them."""
    if not t.lora_rank:
        return None
    from codekiln.adapters import LoraSpec

    if not t.init_from:
        raise UserError("train.lora_rank adapts a trained model: set train.init_from (or use codekiln finetune)")
    rows_from = None
    try:
        record = json.loads((resolve(t.init_from) / "config.json").read_text())
        rows_from = (record.get("added_tokens") or {}).get("rows_from")
    except (OSError, ValueError):
        pass
    return LoraSpec(rank=t.lora_rank, alpha=t.lora_alpha or 2.0 * t.lora_rank, targets=tuple(t.lora_targets),
                    rows_from=rows_from)


def _prepare_run(run: Path, cfg: Config, restart: bool, d: parallel.Dist, fingerprint: dict) -> Path | None:
    """Resume, refuse or start over; returns the checkpoint to resume from. Checks run on every rank."""
    is_run = (run / "config.yaml").is_file()
    if run.exists() and not is_run and any(p.name not in (".tokenizer.tmp", *FINETUNE_NAMES) for p in run.iterdir()):
        raise UserError(f"train.out {run} is not empty and is not a run directory; choose another")
    found = checkpoint.resumable(run) if is_run else None
    if found is not None and not restart:
        saved = yaml.safe_load((run / "config.yaml").read_text())
        now = cfg.model_dump(mode="json")
        if _semantic(saved) != _semantic(now):
            raise UserError(f"{run} holds a run with another config: {_first_difference(_semantic(saved), _semantic(now))}; "
                            "use another train.out, or --restart to start over")
        before = checkpoint.load_trainer(found).get("inputs")
        if before is not None and before != fingerprint:
            what = "tokenizer" if before.get("tokenizer") != fingerprint.get("tokenizer") else "training data"
            raise UserError(f"{run} was trained with another {what} than train.{'tokenizer' if what == 'tokenizer' else 'data'}"
                            " now names; use another train.out, or --restart to start over")
        if d.main:
            checkpoint.clean(run, found)
        return found
    if d.main and is_run:  # start over: remove what an earlier attempt of this run wrote, nothing else
        for name in ("checkpoints", "tensorboard", "plots"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in ("metrics.jsonl", "summary.json", "wandb_id"):
            (run / name).unlink(missing_ok=True)
    return None


def _copy_tokenizer(src: Path, run: Path) -> None:
    dst = run / "tokenizer"
    tmp = run / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state().tolist(), "python": list(random.getstate()[1]),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    random.setstate((3, tuple(state["python"]), None))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def train(cfg: Config, restart: bool = False, quiet: bool = False) -> dict:
    """Train (or resume) the run in cfg.train.out; returns the summary."""
    t = cfg.train
    for key in ("data", "tokenizer", "out"):
        if not getattr(t, key):
            raise UserError(f"train.{key} is not set (config file, --{key} or train.{key}=...)")
    if not t.max_steps and not t.max_tokens:
        raise UserError("set train.max_steps or train.max_tokens")
    if t.wandb_project:  # checked on every rank, before any of them waits for another
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("train.wandb_project is set but wandb is not installed (pip install wandb)") from None
    d = parallel.init()
    try:
        summary = _train(cfg, d, restart, quiet)
        # Every rank finishes before any leaves the group: a gloo rank whose peer has already torn its
        # connections down can abort in teardown ("terminate called without an active exception").
        parallel.barrier(d)
        return summary
    finally:
        parallel.shutdown()


def _train(cfg: Config, d: parallel.Dist, restart: bool, quiet: bool) -> dict:
    t, run = cfg.train, Path(cfg.train.out)
    device = d.device
    torch.set_flush_denormal(True)  # denormals made this CPU 7x slower
    if device.type == "cpu":
        torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // d.world))
    tok_dir = Path(t.tokenizer)
    tok = load_tokenizer(tok_dir)
    tok_sha = tokenizer_hash(tok_dir)
    sets = [ShardSet(p) for p in t.data]
    check_tokenizer(sets, tok_sha, tok_dir)
    inputs = {"tokenizer": tok_sha, "data": [{"tokenizer": st.meta["tokenizer_sha256"],
                                              "train": {k: st.meta["splits"]["train"][k] for k in ("tokens", "docs")},
                                              "val": {k: st.meta["splits"]["val"][k] for k in ("tokens", "docs")}}
                                             for st in sets]}
    resume_from = _prepare_run(run, cfg, restart, d, inputs)
    parallel.barrier(d)

    if t.init_from:
        mcfg, init_state = _init_weights(t.init_from, tok.vocab_size, cfg.model.attn_impl, tok_sha)
    else:
        mcfg, init_state = model_config(cfg, tok.vocab_size), None
    if mcfg.attn_impl in ("flex", "flash") and device.type != "cuda":
        raise UserError(f"model.attn_impl={mcfg.attn_impl} trains on GPUs only (FlexAttention has no backward pass "
                        "on CPUs in this torch); use model.attn_impl=auto or sdpa")
    seq_len = t.seq_len or mcfg.context
    if seq_len > mcfg.context:
        raise UserError(f"train.seq_len {seq_len} exceeds the model's context {mcfg.context}")
    batch_tokens = t.batch_size * t.grad_accum * d.world * seq_len
    total_steps = t.max_steps or math.ceil(t.max_tokens / batch_tokens)
    if t.max_steps and t.max_tokens:
        total_steps = min(t.max_steps, math.ceil(t.max_tokens / batch_tokens))
    dtype = choose_precision(t.precision, device)
    mode = parallel.choose_parallel(t.parallel, device)

    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    lora = _lora_spec(t, mcfg)
    if lora is not None:
        from codekiln.train.lora import apply_lora

        apply_lora(model, lora, cfg.seed)
    model.to(device)
    repo_level = any(st.meta.get("fingerprint", {}).get("layout") == "repo_level_fim" and
                     st.meta["fingerprint"].get("repo_context", 0) > 0 for st in sets)
    extra = {"repo_level_fim": True} if t.fim_rate > 0 and repo_level else {}
    if lora is not None:
        extra["lora"] = {**lora.to_dict(), "base": str(Path(t.init_from).resolve())}
    fpt = flops_per_token(mcfg, seq_len)
    peak, peak_source = metrics.device_peak(device, dtype, t.peak_tflops)
    model = parallel.apply(model, d, mode, t.compile, t.activation_checkpointing, dtype)
    optimizer = build_optimizer(parallel.unwrap(model), t.optimizer, t.lr, t.weight_decay, t.betas)
    comps = mixture(sets, t.data_weights, t.language_weights)
    stream = TrainStream(comps, seq_len, t.batch_size, cfg.seed, d.rank, d.world, tok, t.fim_rate, t.fim_spm_rate)
    val = ValSet(sets, seq_len, t.eval_tokens, token_bytes(tok))
    if len(val) == 0:
        raise UserError(f"no validation sequence of {seq_len + 1} tokens: the val splits hold "
                        f"{sum(st.meta['splits']['val']['tokens'] for st in sets)} tokens and train.eval_tokens is "
                        f"{t.eval_tokens} (rerun codekiln data tokenize with a larger --val-fraction, or raise "
                        "train.eval_tokens)")

    step, tokens, elapsed, ema = 0, 0, 0.0, None
    if resume_from is not None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        state = checkpoint.load_trainer(resume_from)
        if state["world"] != d.world:
            raise UserError(f"{run} was trained on {state['world']} processes; resume it on the same number")
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, read_model_tensors(resume_from / "model.safetensors", mcfg, merge=False),
                             options=opts)
        set_optimizer_state_dict(model, optimizer, checkpoint.load_optimizer(resume_from), options=opts)
        stream.load_state_dict(state["data"][d.rank])
        _set_rng_state(state["rng"][d.rank])
        step, tokens, elapsed, ema = state["step"], state["tokens"], state["elapsed_s"], state["loss_ema"]
        if d.main:
            checkpoint.prune_metrics(run, step)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run / "config.yaml", config_to_yaml(cfg).encode())
        _copy_tokenizer(tok_dir, run)
    log = metrics.MetricsLog(run, d.main, t.wandb_project, cfg.model_dump(mode="json"), quiet)

    def autocast():
        if dtype == torch.float32 or mode == "fsdp" and d.world > 1:  # FSDP2's policy casts instead
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    if d.main and not quiet:
        _print_plan(mcfg, comps, total_steps * batch_tokens, seq_len, batch_tokens, total_steps, dtype, mode, d,
                    peak, peak_source, resume_from)
    eot = tok.eot_id

    def evaluate(at_step: int) -> dict:
        return {"step": at_step, **validate(model, val, t.batch_size, device, autocast, rank=d.rank, world=d.world,
                                            all_reduce_sum=lambda xs: parallel.all_reduce_sum(xs, d),
                                            doc_mask=t.doc_mask, eot=eot)}

    model.train()
    last_eval: dict = {}
    loss_value = float("nan")
    progress = _Progress(total_steps, step, enabled=d.main and not quiet)
    if step == 0 and total_steps > 0:  # where the curves start: the untrained (or imported) model
        last_eval = evaluate(0)
        log.write(last_eval)
        progress.log(last_eval)
    window_time, window_tokens = 0.0, 0
    window_loss, window_steps = state["loss_window"] if resume_from is not None else (0.0, 0)
    memory = metrics.Memory()  # resident memory above what the loaded model and data already hold
    wall = time.perf_counter()
    try:
        while step < total_steps:
            step_start = time.perf_counter()
            lr = lr_at(step, peak=t.lr, schedule=t.schedule, warmup_steps=t.warmup_steps, total_steps=total_steps,
                       min_lr_ratio=t.min_lr_ratio, decay_fraction=t.decay_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(t.grad_accum):
                x_np, y_np = stream.next_batch()
                x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
                last = micro == t.grad_accum - 1
                with _no_sync(model, mode, d, last), autocast():
                    logits = model(x, doc_ids(x, eot) if t.doc_mask else None)
                    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                    (loss / t.grad_accum).backward()
                loss_sum += loss.item()
            loss_value = parallel.all_reduce_sum([loss_sum / t.grad_accum], d)[0] / d.world
            window_loss += loss_value
            params = [p for p in model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf")))
            _check(loss_value, grad_norm, ema, step, t, run)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= t.warmup_steps:
                ema = loss_value if ema is None else 0.9 * ema + 0.1 * loss_value
            memory.sample()
            step += 1
            tokens += batch_tokens
            window_tokens += batch_tokens
            window_time += time.perf_counter() - step_start
            window_steps += 1
            progress.update(step, loss_value)
            if step % t.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                elapsed, wall = elapsed + now - wall, now
                tps = window_tokens / max(window_time, 1e-9)  # training steps only, not evals or checkpoints
                # the loss is the mean over the steps since the previous record
                record = {"step": step, "tokens": tokens, "loss": round(window_loss / window_steps, 6), "lr": lr,
                          "grad_norm": round(grad_norm, 6), "tokens_per_s": round(tps, 1),
                          "mfu": round(tps / d.world * fpt / peak, 5) if peak else None, "elapsed_s": round(elapsed, 2)}
                log.write(record)
                progress.log(record)
                window_time, window_tokens, window_loss, window_steps = 0.0, 0, 0.0, 0
            if step % t.eval_every == 0 or step == total_steps:
                last_eval = evaluate(step)
                log.write(last_eval)
                progress.log(last_eval)
            if step % t.checkpoint_every == 0 or step == total_steps:
                now = time.perf_counter()
                elapsed, wall = elapsed + now - wall, now
                _save(run, step, tokens, elapsed, ema, model, optimizer, stream, mcfg, d, t.keep_checkpoints,
                      [window_loss, window_steps], inputs, extra)
    finally:
        progress.close()
        log.close()
        memory_record = memory.record()
    summary = {"steps": step, "tokens": tokens, "epochs": stream.epochs(), "elapsed_s": round(elapsed, 1),
               "run": str(run), "trainable_parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()
                                                                               if p.requires_grad}.values()),
               "memory_mb": memory_record, "hardware": _hardware(device, d.world)}
    if d.main:
        from codekiln.train.plot import plot_run

        records = metrics.read(run)
        last_train = [r for r in records if "loss" in r]
        last_val = [r for r in records if "val_loss" in r]
        summary["loss"] = last_train[-1]["loss"] if last_train else None
        if last_val:
            summary.update({k: v for k, v in last_val[-1].items() if k != "step"})
        losses = [r["loss"] for r in records if "loss" in r]
        bpbs = [r["val_bpb"] for r in records if "val_bpb" in r]
        summary["loss_curve"] = [losses[0], losses[-1]] if losses else []
        summary["val_bpb_curve"] = [bpbs[0], bpbs[-1]] if bpbs else []
        summary["plots"] = [str(p) for p in plot_run(run)]
        atomic_write_bytes(run / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _hardware(device: torch.device, world: int) -> str:
    """What trained the model, for summaries and model cards: "8 x NVIDIA H100 80GB HBM3", "2-core Intel(R) ..."."""
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    name = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{world} x {cores}-core {name}" if world > 1 else f"{cores}-core {name}"


def _no_sync(model, mode: str, d: parallel.Dist, last: bool):
    """Skip gradient synchronisation on all but the last micro-step of an accumulation."""
    if d.world == 1 or last:
        return contextlib.nullcontext()
    if mode == "fsdp":
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def resync():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return resync()
    return model.no_sync()


def _check(loss: float, grad_norm: float, ema: float | None, step: int, t, run: Path) -> None:
    """Stop on NaN/inf or a spike, before the optimizer touches the weights."""
    good = latest(run)
    keep = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
    if not math.isfinite(loss) or not math.isfinite(grad_norm):
        raise TrainingStopped(f"step {step + 1}: loss {loss} and grad norm {grad_norm} are not finite; {keep} "
                              "(lower train.lr or raise train.warmup_steps, then resume)")
    if t.spike_factor and ema is not None and loss > t.spike_factor * ema:
        raise TrainingStopped(f"step {step + 1}: loss {loss:.3f} spiked above {t.spike_factor} x its running mean "
                              f"{ema:.3f}; {keep} (lower train.lr, then resume)")


def _save(run, step, tokens, elapsed, ema, model, optimizer, stream, mcfg, d, keep, window, inputs, extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=opts)
    optim_state = get_optimizer_state_dict(model, optimizer, options=opts)
    data_states = parallel.gather_objects(stream.state_dict(), d)
    rng_states = parallel.gather_objects(_rng_state(), d)
    if d.main:
        trainer = {"step": step, "tokens": tokens, "elapsed_s": elapsed, "loss_ema": ema, "world": d.world,
                   "data": data_states, "rng": rng_states, "loss_window": window, "inputs": inputs}
        checkpoint.save(run, step, model_state, mcfg, optim_state, trainer, keep, extra)
    parallel.barrier(d)


def _print_plan(mcfg, comps, budget, seq_len, batch_tokens, total_steps, dtype, mode, d, peak, peak_source, resume_from):
    from rich.table import Table

    from codekiln.model import param_count

    console.print(f"model: {param_count(mcfg) / 1e6:.1f}M parameters ({param_count(mcfg, False) / 1e6:.1f}M without "
                  f"embeddings), d_model {mcfg.d_model}, {mcfg.n_layers} layers, {mcfg.n_heads} heads / "
                  f"{mcfg.kv_heads} kv, {mcfg.positions}, context {mcfg.context}")
    console.print(f"training: {total_steps} steps x {batch_tokens} tokens (seq {seq_len}) = {budget / 1e6:.2f}M tokens; "
                  f"{d.world} process(es) on {d.device.type}, {str(dtype).removeprefix('torch.')}"
                  + (f", {mode}" if d.world > 1 else "") + (f"; MFU peak: {peak / 1e12:.2f} TFLOP/s, {peak_source}"
                                                            if peak else ""))
    if resume_from is not None:
        console.print(f"resuming from {resume_from}")
    table = Table(title="data mixture", show_edge=False)
    for col in ("component", "share", "unique tokens", "epochs at budget"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for row in plan_table(comps, budget):
        epochs = row["epochs"]
        flag = " (> 4: past the data-constrained sweet spot)" if epochs and epochs > 4 else ""
        table.add_row(row["component"], f"{row['share']:.3f}", f"{row['tokens']:,}", f"{epochs:.2f}{flag}")
    console.print(table)


class _Progress:
    """A rich progress bar on a terminal; log lines otherwise."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled, self.bar, self.task = enabled, None, None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                                TimeRemainingColumn(), console=console)
            self.bar.start()
            self.task = self.bar.add_task("", total=total, completed=done)

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, description=f"loss {loss:.4f}")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        if "val_loss" in record:
            langs = " ".join(f"{k} {v:.3f}" for k, v in sorted(record["val_bpb_by_lang"].items()))
            line = f"step {record['step']}: val loss {record['val_loss']:.4f}, {record['val_bpb']:.4f} bits/byte ({langs})"
        else:
            mfu = f", MFU {record['mfu']:.1%}" if record["mfu"] is not None else ""
            line = (f"step {record['step']}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, grad norm "
                    f"{record['grad_norm']:.3f}, {record['tokens_per_s']:,.0f} tokens/s{mfu}")
        console.print(line, highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def summary_table(summary: dict):
    """The table `codekiln train` ends with: steps, tokens, loss and bits/byte curves, time, paths."""
    from rich.table import Table

    table = Table(title="codekiln train", show_header=False, show_edge=False)
    table.add_row("steps", f"{summary['steps']:,}")
    table.add_row("tokens", f"{summary['tokens']:,}")
    if summary.get("loss_curve"):
        first, last = summary["loss_curve"]
        table.add_row("train loss (first -> last log)", f"{first:.4f} -> {last:.4f}")
    if summary.get("val_bpb_curve"):
        first, last = summary["val_bpb_curve"]
        table.add_row("val bits/byte (first -> last eval)", f"{first:.4f} -> {last:.4f}")
    if "val_loss" in summary:
        table.add_row("final val loss", f"{summary['val_loss']:.4f}")
        for lang, bpb in sorted(summary["val_bpb_by_lang"].items()):
            table.add_row(f"  val bits/byte, {lang}", f"{bpb:.4f}")
    table.add_row("time", f"{summary['elapsed_s']:.0f} s")
    table.add_row("run directory", summary["run"])
    for path in summary.get("plots", []):
        table.add_row("plot", path)
    return table
