"""The report's first and last sections: what was run (config summary, pipeline stages) and what came out
(the exported files and how to use them)."""

from __future__ import annotations

import shlex

from codekiln.report.html import Html, badge, code, join, facts, note, not_run, num, seconds, short, size, table, tag
from codekiln.report.inputs import RunFolder

PARTS = ("corpus", "tokenizer", "tokens", "run", "eval", "export", "import", "finetune")
PROMPT = "def fibonacci(n):"


def model_summary(folder: RunFolder, cfg: dict) -> str | None:
    """'tiny preset, 11.3M parameters (...): d_model 256, ...' from the trained checkpoint, else the config."""
    from codekiln.errors import UserError
    from codekiln.model import param_count, preset

    section = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    name = section.get("preset")
    found = folder.model("run")
    if found is not None:
        mcfg = found[0]
    elif name:
        vocab = ((folder.json("tokens/meta.json") or {}).get("vocab_size")
                 or (cfg.get("tokenizer") or {}).get("vocab_size"))
        overrides = {k: v for k, v in section.items() if k != "preset" and v is not None}
        try:
            mcfg = preset(name, **overrides, **({"vocab_size": vocab} if vocab else {}))
        except (UserError, TypeError):
            return f"{name} preset"
    else:
        return None
    shape = (f"d_model {mcfg.d_model}, {mcfg.n_layers} layers, {mcfg.n_heads} heads"
             + (f" ({mcfg.kv_heads} key/value)" if mcfg.kv_heads != mcfg.n_heads else "")
             + f", context {mcfg.context:,}, {mcfg.positions.replace('alibi', 'ALiBi').replace('rope', 'RoPE')}, "
             f"{mcfg.norm}, {mcfg.mlp}, vocabulary {mcfg.vocab_size:,}")
    return (f"{name + ' preset, ' if name else ''}{short(param_count(mcfg))} parameters "
            f"({short(param_count(mcfg, embeddings=False))} without embeddings): {shape}")


def _training_plan(cfg: dict, summary: dict | None) -> str | None:
    t = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    parts = []
    if t.get("max_tokens"):
        parts.append(f"budget {short(t['max_tokens'])} tokens")
    elif t.get("max_steps"):
        seq = t.get("seq_len") or (cfg.get("model") or {}).get("context")
        per_step = (t.get("batch_size") or 0) * (t.get("grad_accum") or 1) * (seq or 0)
        parts.append(f"{t['max_steps']:,} steps × {t.get('batch_size')} sequences"
                     + (f" × {t['grad_accum']} accumulated" if (t.get("grad_accum") or 1) > 1 else "")
                     + (f" × {seq} tokens = {short(t['max_steps'] * per_step)} tokens per process" if seq else ""))
    if t.get("optimizer"):
        parts.append(f"{t['optimizer']}, peak LR {t.get('lr')}, {t.get('schedule')} schedule")
    if summary and isinstance(summary.get("tokens"), (int, float)):
        parts.append(f"trained {short(summary['tokens'])} tokens in {seconds(summary.get('elapsed_s'))}")
    return "; ".join(parts) or None


def imported_model(folder: RunFolder) -> str | None:
    """What import/ holds: architecture, parameters, where it came from."""
    record = folder.json("import/import.json")
    if not isinstance(record, dict):
        return None
    from codekiln.errors import UserError
    from codekiln.model import ModelConfig, param_count

    try:
        params = short(param_count(ModelConfig.from_dict(record["model"])))
    except (UserError, KeyError, TypeError):
        params = "–"
    source = str(record.get("source") or "?").rstrip("/").rsplit("/", 1)[-1]
    return (f"{source} ({record.get('architecture', '?')}, {params} parameters, from {record.get('kind', '?')}) "
            "in import/")


def render_overview(folder: RunFolder) -> Html:
    """Config summary and the pipeline's stages."""
    cfg = folder.yaml("config.yaml")
    if cfg is None:
        cfg = folder.yaml("run/config.yaml") or {}
        source = "run/config.yaml" if cfg else None
    else:
        source = "config.yaml"
    corpus = (folder.json("corpus/report.json") or {}).get("totals") or {}
    meta = folder.json("tokens/meta.json") or {}
    tok_cfg = cfg.get("tokenizer") if isinstance(cfg.get("tokenizer"), dict) else {}
    splits = meta.get("splits") or {}
    items = [
        ("model", model_summary(folder, cfg)),
        ("training", _training_plan(cfg, folder.json("run/summary.json"))),
        ("corpus", f"{num(corpus['docs_out'])} documents, {size(corpus.get('bytes_out'))}"
         if "docs_out" in corpus else None),
        ("tokenizer", f"{str(tok_cfg.get('algorithm', 'bpe')).upper()}, "
                      f"{num(meta.get('vocab_size') or tok_cfg.get('vocab_size'))} tokens"
         if tok_cfg or meta else None),
        ("token shards", ", ".join(f"{name} {short((s or {}).get('tokens'))} tokens" for name, s in splits.items())
         or None),
        ("imported model", imported_model(folder)),
        ("seed", cfg.get("seed")),
        ("config", tag("code", source) if source else "no config.yaml"),
    ]
    out = [facts(items), tag("h3", "Pipeline")]
    pipeline = folder.json("pipeline.json")
    stages = (pipeline or {}).get("stages") if isinstance(pipeline, dict) else None
    if not stages:
        present = [p for p in PARTS if folder.exists(p)]
        out.append(not_run("pipeline.json is missing: no record of the stages. Parts present: "
                           + (", ".join(f"{p}/" for p in present) or "none") + "."))
        return join(out)
    stages = [s for s in stages if isinstance(s, dict)]
    rows = [[s.get("name", "?"), badge(str(s.get("status", "?"))),
             "–" if s.get("status") == "skipped" else seconds(s.get("elapsed_s")),
             s.get("reason") or "", s.get("note") or ""] for s in stages]
    # A stage the record says was running, with no entry of its own: the run stopped inside it.
    listed = {s.get("name") for s in stages}
    running = pipeline.get("running") if isinstance(pipeline.get("running"), dict) else {}
    rows += [[name, badge("interrupted"), "–", "the run stopped during this stage; the same command resumes it", ""]
             for name in running if name not in listed]
    total = sum(s.get("elapsed_s") or 0 for s in stages if isinstance(s.get("elapsed_s"), (int, float)))
    rows.append([tag("strong", "total"), "", tag("strong", seconds(total)), "", ""])
    out.append(table(["stage", "status", "time", "why", "result"], rows, numeric=(2,)))
    when = [f"{k} {pipeline[k]}" for k in ("started", "finished") if pipeline.get(k)]
    if when:
        out.append(note("; ".join(when)))
    return join(out)


def render_exports(folder: RunFolder) -> Html:
    """The exported files with their sizes, and how to use each."""
    files = folder.files("export")
    if not files:
        return not_run("export/ is missing: the model was not exported")
    root = folder.path / "export"
    total = sum(n for _, n in files)
    out = [table(["file", "size"], [[tag("code", f"export/{name}"), size(n)] for name, n in files]
                 + [[tag("strong", "total"), tag("strong", size(total))]], numeric=(1,))]
    hf, gguf = root / "hf", root / "model.gguf"
    if (hf / "README.md").is_file():
        out.append(note("The model card (Hugging Face format) is export/hf/README.md; it travels with the directory."))
    uses = []
    served = hf if (hf / "config.json").is_file() else folder.path / "run"
    uses += [tag("h4", "Serve it to your editor (OpenAI-compatible HTTP, LSP, playground)"),
             code(f"codekiln serve --model {shlex.quote(str(served))}\n"
                  f"codekiln complete --model {shlex.quote(str(served))} {shlex.quote(PROMPT)}")]
    if (hf / "config.json").is_file():
        path = repr(str(hf))
        uses += [tag("h4", "With Hugging Face transformers (no trust_remote_code)"),
                 code("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                      f"tok = AutoTokenizer.from_pretrained({path})\n"
                      f"model = AutoModelForCausalLM.from_pretrained({path})\n"
                      f"ids = tok({PROMPT!r}, return_tensors=\"pt\").input_ids\n"
                      "out = model.generate(ids, max_new_tokens=48, do_sample=False)\n"
                      "print(tok.decode(out[0]))")]
    if gguf.is_file():
        q = shlex.quote(str(gguf))
        uses += [tag("h4", "With llama.cpp (completion and fill-in-the-middle)"),
                 code(f"llama-server -m {q} --port 8080\n"
                      "curl http://localhost:8080/completion "
                      "-d '{\"prompt\": \"def fibonacci(n):\", \"n_predict\": 48}'\n"
                      "curl http://localhost:8080/infill -d '{\"input_prefix\": \"def area(r):\\n    return \", "
                      "\"input_suffix\": \"\\n\", \"n_predict\": 16}'")]
    if not (hf / "config.json").is_file() and not gguf.is_file():
        uses.append(note("Neither export/hf/ nor export/model.gguf is here."))
    out += [tag("h3", "How to use it"), *uses]
    return join(out)
