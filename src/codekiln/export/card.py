"""The model card: the README.md that `codekiln export hf` writes into every export, in the Hugging Face format.

YAML front matter (license, languages, datasets, library, pipeline, and a model-index with the measured
figures), then what a user of the model needs to know: where its data came from and under which
licenses, what the corpus filters removed, the tokenizer, the architecture and parameter count, the
training tokens and compute, the evaluation results, a fine-tune's base and its before/after figures,
and what the model is for and not for.

Every figure is read from the outputs of the stages that made the model, through their on-disk
contracts (ARCHITECTURE.md): the run directory (config.yaml, metrics.jsonl, summary.json, finetune.json,
the checkpoint's config.json), the token shards' meta.json (whose fingerprint names the corpus), the
corpus's report.json and manifest.json, the tokenizer directory (training.json, stats.json), an
import's import.json, and the eval/summary.json of a `codekiln run` folder. An input that is absent or
unreadable is said to be "not recorded", never guessed and never an error: an imported model or an
export of an export still gets a card. `model_card` only reads; the export writes the text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from codekiln import __version__
from codekiln.checkpoint import is_export, model_config, tokenizer_dir
from codekiln.model import flops_per_token, param_count
from codekiln.tokenizer import FIM_TOKENS, IMPORT_KEY, SPECIAL_TOKENS

NOT_RECORDED = "not recorded"
# Hugging Face's license identifiers (hf.co/docs/hub/repositories-licenses) for the SPDX ids that code
# corpora carry; any other id, or a mix of ids, makes the card's license `other`.
HF_LICENSES = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "isc", "bsl-1.0",
               "cc0-1.0", "unlicense", "zlib", "postgresql", "ncsa", "afl-3.0", "ecl-2.0", "artistic-2.0",
               "mpl-2.0", "ms-pl", "osl-3.0", "epl-2.0", "wtfpl", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0",
               "agpl-3.0", "cc-by-4.0", "cc-by-sa-4.0"}
# Published HumanEval pass@1 of small code models (REFERENCE.md), printed beside ours for scale.
PUBLISHED_PASS_AT_1 = [("CodeParrot-small (110M)", 0.038), ("SantaCoder (1.1B)", 0.18),
                       ("replit-code-v1-3b (2.7B)", 0.219)]
TOP = 15  # rows of the language and license tables; the rest are summed in one line


def model_card(ckpt_path, export_summary: dict) -> str:
    """README.md for the export of the model at ckpt_path (a checkpoint or export directory, as resolved)."""
    return render(card_inputs(ckpt_path), export_summary)


# ---------------------------------------------------------------------------------------------- inputs


def _json(path) -> dict | None:
    """A JSON object file, or None when it is absent or not a JSON object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _yaml(path) -> dict | None:
    try:
        value = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return value if isinstance(value, dict) else None


def _jsonl(path) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(value, dict):
            records.append(value)
    return records


def _existing(*paths) -> Path | None:
    return next((Path(p) for p in paths if p is not None and Path(p).exists()), None)


def card_inputs(ckpt_path) -> dict:
    """Everything the card says, read from the stage outputs around a checkpoint or export directory."""
    ckpt = Path(ckpt_path)
    export = is_export(ckpt)
    run = None if export else ckpt.parent.parent  # run/checkpoints/step-N
    folder = run.parent if run is not None and run.name in ("run", "finetune") else None  # `codekiln run` layout
    record = {} if export else _json(ckpt / "config.json") or {}
    config = _yaml(run / "config.yaml") if run else None
    train = (config or {}).get("train") or {}
    step = record.get("step")
    metrics = [r for r in _jsonl(run / "metrics.jsonl") if step is None or r.get("step", 0) <= step] if run else []

    shards = []
    for data in train.get("data") or []:
        meta = _json(Path(data) / "meta.json")
        if meta is not None:
            shards.append(meta)
    if not shards and folder is not None and (meta := _json(folder / "tokens" / "meta.json")):
        shards.append(meta)
    corpora, seen = [], set()
    for meta in shards:
        where = (meta.get("fingerprint") or {}).get("corpus")
        path = _existing(where, folder / "corpus" if folder else None)
        if path is not None and path.resolve() not in seen and (report := _json(path / "report.json")):
            seen.add(path.resolve())
            corpora.append({"path": path, "report": report, "manifest": _json(path / "manifest.json") or {}})

    tok = tokenizer_dir(ckpt)
    stats_file = _existing(tok / "stats.json",
                           Path(train["tokenizer"]) / "stats.json" if train.get("tokenizer") else None,
                           folder / "tokenizer" / "stats.json" if folder else None)
    tok_config = _json(tok / "tokenizer_config.json") or {}
    finetune = _json(run / "finetune.json") if run else None
    base_import = None
    if finetune and finetune.get("base"):
        base_import = _json(Path(finetune["base"]).parent.parent / "import.json")
    return {
        "ckpt": ckpt, "export": export, "run": run, "model": model_config(ckpt), "record": record,
        "config": config, "summary": _json(run / "summary.json") if run else None, "metrics": metrics,
        "shards": shards, "corpora": corpora, "finetune": finetune, "base_import": base_import,
        "import": _json(run / "import.json") if run else None,
        "imported_from": (tok_config.get(IMPORT_KEY) or {}).get("imported_from"),
        "tokenizer": _tokenizer_facts(tok, tok_config), "tokenizer_training": _json(tok / "training.json"),
        "tokenizer_stats": _json(stats_file) if stats_file else None,
        "eval": _json(folder / "eval" / "summary.json") if folder is not None and run.name == "run" else None,
    }


def _tokenizer_facts(directory: Path, tok_config: dict) -> dict | None:
    """Vocabulary size, special tokens, and the model's own spelling of codekiln's special tokens (`roles`: an
    imported vocabulary names them its own way, e.g. `<fim_middle>`), from the tokenizer files themselves."""
    spec = _json(directory / "tokenizer.json")
    if spec is None:
        return None
    vocab = (spec.get("model") or {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))  # BPE: a dict; Unigram: a list
    added = spec.get("added_tokens") or []
    ids += [t["id"] for t in added if isinstance(t.get("id"), int)]
    contents = [t.get("content") for t in added]
    mapping = (tok_config.get(IMPORT_KEY) or {}).get("special_tokens")
    roles = mapping if isinstance(mapping, dict) else {t: t for t in SPECIAL_TOKENS}
    return {"vocab_size": 1 + max(ids) if ids else 0,
            "special": [c for t, c in zip(added, contents) if t.get("special") or c in SPECIAL_TOKENS],
            "roles": {name: token for name, token in roles.items() if token in contents}}


def _has_fim(inputs: dict) -> bool:
    roles = (inputs["tokenizer"] or {}).get("roles") or {}
    return all(name in roles for name in FIM_TOKENS)


# -------------------------------------------------------------------------------------------- summaries


def license_ids(expression: str) -> set[str]:
    """The license ids of an SPDX expression (`A AND (B OR C WITH exception)` -> {A, B, C})."""
    words = [w for w in re.split(r"[\s()]+", expression or "") if w]
    ids, skip = set(), False
    for word in words:
        if skip:
            skip = False
        elif word.upper() == "WITH":
            skip = True  # the next word is an exception to the license before it, not a license
        elif word.upper() not in ("AND", "OR"):
            ids.add(word)
    return ids


def _hf_id(spdx: str) -> str | None:
    """Hugging Face's identifier for an SPDX license id, when it has one."""
    hf = re.sub(r"-(only|or-later)$", "", spdx.lower().removesuffix("+"))
    return hf if hf in HF_LICENSES else None


def _merged(corpora: list[dict], key: str) -> dict[str, dict]:
    """{name: {docs, bytes}} of report[key] summed over the corpora, largest first."""
    total: dict[str, dict] = {}
    for c in corpora:
        for name, v in (c["report"].get(key) or {}).items():
            t = total.setdefault(name, {"docs": 0, "bytes": 0})
            t["docs"] += v.get("docs", 0)
            t["bytes"] += v.get("bytes", 0)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1]["bytes"], kv[0])))


def _sources(corpora: list[dict]) -> list[str]:
    """The corpus sources as the manifest names them; local paths by their last component, URIs whole."""
    out = []
    for c in corpora:
        for spec in (c["manifest"].get("fingerprint") or {}).get("sources") or []:
            kind, sep, where = str(spec).partition(":")
            if sep and "://" not in spec:
                spec = f"{kind} {Path(where).name or where}"
            elif sep:
                spec = f"{kind} {where}"
            if spec not in out:
                out.append(spec)
    return out


GENERIC = ("run", "export", "hf", "import", "finetune")  # stage folders of a `codekiln run` folder


def _name(inputs: dict) -> str:
    """The model's name: its run's directory (or the run folder's, for a stage folder such as runs/NAME/run), or
    the directory exported from; not the export's own, so exports of one model to two places are identical."""
    path = inputs["run"] or inputs["ckpt"]
    return path.parent.name if path.name in GENERIC and path.parent.name else path.name


def _shown(path: Path) -> str:
    """A model directory as the card names it: `NAME/run` for a stage folder, else its own name."""
    path = path.parent.parent if path.parent.name == "checkpoints" else path
    return f"{path.parent.name}/{path.name}" if path.name in GENERIC and path.parent.name else path.name


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _human(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}" if n / scale < 100 else f"{n / scale:.0f}{suffix}"
    return f"{n:g}"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _val(records: list[dict]) -> tuple[dict | None, dict | None]:
    """The first (untrained, step 0) and the last validation record."""
    vals = [r for r in records if "val_bpb" in r]
    return (vals[0], vals[-1]) if vals else (None, None)


def _train_facts(inputs: dict) -> dict:
    """Steps, tokens, parameters and compute of the exported weights."""
    cfg, record, summary = inputs["model"], inputs["record"], inputs["summary"] or {}
    train = (inputs["config"] or {}).get("train") or {}
    steps, tokens = record.get("step"), record.get("tokens")
    if steps is None and summary:
        steps, tokens = summary.get("steps"), summary.get("tokens")
    seq_len = train.get("seq_len") or cfg.context
    rates = [r for r in inputs["metrics"] if "tokens_per_s" in r]
    facts = {"steps": steps, "tokens": tokens, "params": param_count(cfg), "seq_len": seq_len,
             "tokens_per_s": sum(r["tokens_per_s"] for r in rates) / len(rates) if rates else None,
             "mfu": None, "elapsed_s": None, "processes": None}
    mfus = [r["mfu"] for r in rates if isinstance(r.get("mfu"), (int, float))]
    facts["mfu"] = sum(mfus) / len(mfus) if mfus else None
    if summary.get("steps") == steps:  # the summary describes these weights (not a later state of the run)
        facts["elapsed_s"] = summary.get("elapsed_s")
        facts["epochs"] = summary.get("epochs")
        facts["trainable"] = summary.get("trainable_parameters")
        facts["hardware"] = summary.get("hardware") or summary.get("device")
    per_step = (train.get("batch_size") or 0) * (train.get("grad_accum") or 1) * seq_len
    if steps and tokens and per_step and tokens % (steps * per_step) == 0:
        facts["processes"] = tokens // (steps * per_step)
    if tokens:
        facts["flops_6nd"] = 6.0 * facts["params"] * tokens
        facts["flops_trainer"] = flops_per_token(cfg, seq_len) * tokens
    return facts


# ----------------------------------------------------------------------------------------------- render


def front_matter(inputs: dict) -> dict:
    """The card's YAML metadata (Hugging Face model card keys, in their usual order)."""
    corpora = inputs["corpora"]
    licenses = _merged(corpora, "licenses")
    ids = set().union(*(license_ids(e) for e in licenses)) if licenses else set()
    known = {i for i in ids if i.lower() not in ("unknown", "none", "noassertion")}
    meta: dict = {}
    hf = _hf_id(next(iter(known))) if len(known) == 1 and known == ids else None
    meta["license"] = hf or "other"
    if known:
        meta["training_data_licenses"] = sorted(known)
    languages = [lang for lang in _merged(corpora, "languages") if lang != "unknown"]
    meta["language"] = ["code"]
    if languages:
        meta["programming_language"] = languages
    tags = ["code", "codekiln"]
    if _has_fim(inputs):
        tags.append("fill-in-the-middle")
    if inputs["finetune"]:
        tags.append("fine-tuned")
    if (inputs["record"] or {}).get("lora"):
        tags.append("lora")
    meta["tags"] = tags
    sources = _sources(corpora)
    if sources:
        meta["datasets"] = [f"built by codekiln from {', '.join(sources)}"]
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    results = _model_index_results(inputs)
    if results:
        meta["model-index"] = [{"name": _name(inputs), "results": results}]
    return meta


def _model_index_results(inputs: dict) -> list[dict]:
    """model-index results: held-out bits per byte, HumanEval pass@1 and infilling, where measured."""
    task = {"type": "text-generation", "name": "Code completion"}
    results = []
    heldout = {"type": "codekiln-heldout", "name": "held-out repositories of the training corpus",
               "split": "validation"}
    _, last = _val(inputs["metrics"])
    ev = inputs["eval"] or {}
    model_bpb = ((ev.get("bpb") or {}).get("model") or {}).get("val_bpb")
    if isinstance(model_bpb, (int, float)) or last and not inputs["finetune"]:  # a fine-tune's: below
        value = model_bpb if isinstance(model_bpb, (int, float)) else last["val_bpb"]
        results.append({"task": task, "dataset": heldout,
                        "metrics": [{"type": "bits_per_byte", "name": "bits per byte", "value": round(value, 4)}]})
    ft = inputs["finetune"]
    if ft and isinstance((ft.get("after") or {}).get("val_bpb"), (int, float)):
        metrics = [{"type": "bits_per_byte", "name": "bits per byte", "value": round(ft["after"]["val_bpb"], 4)}]
        for kind, rate in ((ft["after"].get("exact_match") or {}).items()):
            metrics.append({"type": "exact_match", "name": f"infilling exact match, {kind.replace('_', '-')}",
                            "value": round(rate, 4)})
        results.append({"task": task, "dataset": {"type": "codekiln-finetune-heldout",
                                                  "name": "held-out files of the fine-tuning code", "split": "test"},
                        "metrics": metrics})
    pass1 = ((ev.get("humaneval") or {}).get("pass_at_k") or {}).get("1")
    if isinstance(pass1, (int, float)):
        results.append({"task": task, "dataset": {"type": "openai_humaneval", "name": "HumanEval"},
                        "metrics": [{"type": "pass@1", "name": "pass@1", "value": round(pass1, 4)}]})
    infill = ev.get("infill") or {}
    metrics = [{"type": key, "name": key.replace("_", " "), "value": round(infill[key], 4)}
               for key in ("pass_at_1", "exact_match") if isinstance(infill.get(key), (int, float))]
    if metrics:
        for m in metrics:
            m["type"] = "pass@1" if m["type"] == "pass_at_1" else m["type"]
        results.append({"task": task, "dataset": {"type": "openai_humaneval", "name": "HumanEval infilling"},
                        "metrics": metrics})
    return results


def render(inputs: dict, summary: dict) -> str:
    """The card's text: front matter, then one section per subject."""
    meta = yaml.safe_dump(front_matter(inputs), sort_keys=False, allow_unicode=True, width=1000)
    sections = [_intro(inputs, summary), _data(inputs), _filters(inputs), _tokenizer(inputs),
                _architecture(inputs, summary), _training(inputs), _evaluation(inputs)]
    if inputs["finetune"]:
        sections.append(_finetune(inputs))
    sections.append(_limitations(inputs))
    return f"---\n{meta}---\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _origin(inputs: dict) -> str:
    if inputs["finetune"]:
        return f"fine-tuned with `codekiln finetune` from {_base(inputs)}"
    if inputs["imported_from"] and not (inputs["record"] or {}).get("tokens"):
        return f"imported with `codekiln import` from `{inputs['imported_from']}`"
    if ((inputs["config"] or {}).get("train") or {}).get("init_from"):
        return "trained with codekiln, continuing from an earlier model (`train.init_from`)"
    return "trained from scratch with codekiln" if inputs["run"] else "exported by codekiln"


def _base(inputs: dict) -> str:
    ft = inputs["finetune"]
    imported = (inputs["base_import"] or {}).get("source")
    return f"`{_shown(Path(ft.get('base') or ''))}`" + (f" (imported from `{Path(imported).name}`)" if imported else "")


def _intro(inputs: dict, summary: dict) -> str:
    name = _name(inputs)
    params = param_count(inputs["model"])
    arch = summary.get("architecture", NOT_RECORDED)
    lines = [f"# {name}", "",
             f"A {_human(params)}-parameter code completion model, {_origin(inputs)}, written by codekiln "
             f"{__version__}. It loads in stock `transformers` as `{arch}`, without remote code:", "",
             "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             "# this directory, or the Hub repository it is uploaded to",
             f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
             f'model = AutoModelForCausalLM.from_pretrained("{name}")',
             'ids = tokenizer("def fibonacci(n):", return_tensors="pt").input_ids',
             "print(tokenizer.decode(model.generate(ids, max_new_tokens=48)[0]))", "```"]
    if _has_fim(inputs):
        roles = inputs["tokenizer"]["roles"]
        end = roles.get("<|endoftext|>", "<|endoftext|>")
        lines += ["", f"Fill-in-the-middle prompt (the model writes the middle, then `{end}`): "
                      f"`{roles['<|fim_prefix|>']}{{code before}}{roles['<|fim_suffix|>']}{{code after}}"
                      f"{roles['<|fim_middle|>']}`."]
    return "\n".join(lines)


def _data(inputs: dict) -> str:
    lines = ["## Data sources and licenses", ""]
    corpora = inputs["corpora"]
    if not corpora:
        what = (f"The weights come from `{inputs['imported_from']}`; its training data and licenses are those its "
                "authors published, and codekiln has no record of them." if inputs["imported_from"] else
                "The training corpus is not recorded (its report.json was not found beside the run's token shards).")
        return "\n".join(lines + [what])
    sources = _sources(corpora)
    totals = [c["report"].get("totals") or {} for c in corpora]
    docs_in, docs_out = sum(t.get("docs_in", 0) for t in totals), sum(t.get("docs_out", 0) for t in totals)
    bytes_out = sum(t.get("bytes_out", 0) for t in totals)
    lines.append(f"Built by codekiln's corpus stages from {', '.join(f'`{s}`' for s in sources) or NOT_RECORDED}: "
                 f"{docs_out:,} of {docs_in:,} files kept ({_mb(bytes_out)} MB of code).")
    for title, key in (("Languages", "languages"), ("Licenses (SPDX) of the kept files", "licenses")):
        rows = _merged(corpora, key)
        if not rows:
            continue
        total = sum(v["bytes"] for v in rows.values()) or 1
        lines += ["", f"{title}:", "", "| | files | MB | share |", "| --- | ---: | ---: | ---: |"]
        for name, v in list(rows.items())[:TOP]:
            lines.append(f"| {name} | {v['docs']:,} | {_mb(v['bytes'])} | {100 * v['bytes'] / total:.1f}% |")
        rest = list(rows.values())[TOP:]
        if rest:
            lines.append(f"| {len(rest)} more | {sum(v['docs'] for v in rest):,} | "
                         f"{_mb(sum(v['bytes'] for v in rest))} | {100 * sum(v['bytes'] for v in rest) / total:.1f}% |")
    dropped = _merged(corpora, "licenses_dropped")
    if dropped:
        listed = ", ".join(f"{k} ({v['docs']:,})" for k, v in dropped.items())
        lines += ["", f"Files dropped for their license: {listed}."]
    lines += ["", "The card's `license` is the training data's when it is one license, else `other`; the license "
                  "of the model itself is its publisher's choice. Code under these licenses asks for attribution "
                  "when it is reproduced."]
    return "\n".join(lines)


def _filters(inputs: dict) -> str:
    lines = ["## Filters and what they removed", ""]
    if not inputs["corpora"]:
        return "\n".join(lines + [NOT_RECORDED.capitalize() + "."])
    for c in inputs["corpora"]:
        report = c["report"]
        if len(inputs["corpora"]) > 1:
            lines += [f"Corpus `{c['path'].name}`:", ""]
        lines += ["| stage | files in | files out | removed, by reason |", "| --- | ---: | ---: | --- |"]
        for st in report.get("stages") or []:
            if st.get("enabled") is False:
                lines.append(f"| {st.get('name')} | | | off |")
                continue
            dropped = sorted((st.get("dropped") or {}).items(), key=lambda kv: -kv[1])
            reasons = ", ".join(f"{k} {v:,}" for k, v in dropped) or "–"
            lines.append(f"| {st.get('name')} | {st.get('docs_in', 0):,} | {st.get('docs_out', 0):,} | {reasons} |")
        pii = report.get("pii") or {}
        if pii:
            lines += ["", "Personal data redacted (regular expressions, not a guarantee): "
                      + ", ".join(f"{v:,} {k}" for k, v in sorted(pii.items())) + "."]
        dedup = report.get("dedup") or {}
        if dedup.get("near"):
            lines += ["", f"Near-duplicates: MinHash over {dedup.get('ngram')}-grams, Jaccard threshold "
                          f"{dedup.get('threshold')}, {dedup.get('bands')} bands x {dedup.get('rows')} rows."]
        built_with = ((c["manifest"].get("fingerprint") or {}).get("config") or {}).get("data") or {}
        decontam = built_with.get("decontam") or {}
        if decontam.get("enabled"):
            removed = (report.get("dropped") or {}).get("contaminated", {}).get("docs", 0)
            lines += ["", f"Benchmark decontamination against {', '.join(decontam.get('benchmarks') or [])}: "
                          f"{removed:,} files removed."]
        lines.append("")
    return "\n".join(lines)


def _tokenizer(inputs: dict) -> str:
    lines = ["## Tokenizer", ""]
    tok, training = inputs["tokenizer"], inputs["tokenizer_training"] or {}
    if tok is None:
        return "\n".join(lines + [NOT_RECORDED.capitalize() + "."])
    if inputs["imported_from"]:
        lines.append(f"The vocabulary of `{inputs['imported_from']}`, converted by `codekiln import`: "
                     f"{tok['vocab_size']:,} tokens.")
    else:
        algorithm = training.get("algorithm")
        how = (f"byte-level {'BPE' if algorithm == 'bpe' else algorithm}"
               f", `{training.get('pretokenizer', 'codekiln')}` pre-tokenizer, trained on "
               f"{training.get('chars', 0) / 1e6:,.1f} M characters of its corpus" if training else "byte-level")
        lines.append(f"{tok['vocab_size']:,} tokens ({how}).")
    rows = inputs["model"].vocab_size
    if rows != tok["vocab_size"]:
        why = "" if inputs["imported_from"] else " (the vocabulary rounded up to a multiple of 64)"
        lines.append(f"The model has {rows:,} embedding rows{why}.")
    if tok["special"]:
        lines += ["", "Special tokens: " + ", ".join(f"`{t}`" for t in tok["special"]) + "."]
    stats = (inputs["tokenizer_stats"] or {}).get("tokenizers") or {}
    if stats:
        ours = stats.get("codekiln") or next(iter(stats.values()))
        others = [f"{name} {v['bytes_per_token']:.2f}" for name, v in stats.items() if v is not ours]
        lines += ["", f"Compression on held-out code: {ours['bytes_per_token']:.2f} bytes per token"
                  + (f" (reference tokenizers on the same text: {', '.join(others)})" if others else "") + "."]
    else:
        lines += ["", f"Compression: {NOT_RECORDED} (`codekiln tokenizer stats`)."]
    return "\n".join(lines)


def _architecture(inputs: dict, summary: dict) -> str:
    cfg = inputs["model"]
    params = param_count(cfg)
    attention = ("multi-head" if cfg.kv_heads == cfg.n_heads else "multi-query" if cfg.kv_heads == 1
                 else "grouped-query")
    lines = ["## Architecture", "", "| | |", "| --- | --- |",
             f"| stock class | `{summary.get('architecture', NOT_RECORDED)}` |",
             f"| parameters | {params:,} ({_human(params)}; {param_count(cfg, embeddings=False):,} "
             "without the embedding) |"]
    stored = summary.get("parameters")
    if stored and stored != params:
        lines.append(f"| stored in this export | {stored:,} (the layout of the stock class) |")
    lines += [f"| layers, d_model | {cfg.n_layers}, {cfg.d_model} |",
              f"| attention | {cfg.n_heads} heads, {cfg.kv_heads} key/value heads ({attention}) |",
              f"| positions | {'ALiBi' if cfg.positions == 'alibi' else f'RoPE (theta {cfg.rope_theta:g})'} |",
              f"| context | {cfg.context:,} tokens |",
              f"| norm, MLP | {cfg.norm}, {cfg.mlp} ({cfg.hidden:,} hidden) |",
              f"| embeddings | {cfg.vocab_size:,} rows, "
              f"{'tied to' if cfg.tie_embeddings else 'separate from'} the LM head |",
              f"| dtype | {summary.get('dtype', NOT_RECORDED)} |"]
    notes = summary.get("notes") or []
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _training(inputs: dict) -> str:
    lines = ["## Training", ""]
    f = _train_facts(inputs)
    train = (inputs["config"] or {}).get("train") or {}
    if not f["tokens"]:
        what = (f"Not trained by codekiln: the weights were imported from `{inputs['imported_from']}`."
                if inputs["imported_from"] else f"Training tokens and compute: {NOT_RECORDED}.")
        return "\n".join(lines + [what])
    lines += ["| | |", "| --- | --- |", f"| steps | {f['steps']:,} |",
              f"| tokens | {f['tokens']:,} ({_human(f['tokens'])}; {f['tokens'] / f['params']:.1f} per parameter) |"]
    if f.get("epochs"):
        epochs = f["epochs"]
        epochs = ", ".join(f"{k} {v:.3g}" for k, v in epochs.items()) if isinstance(epochs, dict) else epochs
        lines.append(f"| epochs over the data | {epochs} |")
    if train:
        batch = f"{train.get('batch_size')} sequences x {train.get('grad_accum', 1)} accumulation"
        batch += f" x {_plural(f['processes'], 'process')}" if f["processes"] else ""
        lines += [f"| batch | {batch} x {f['seq_len']:,} tokens |",
                  f"| optimizer | {train.get('optimizer')}, peak LR {train.get('lr')}, {train.get('schedule')} "
                  f"schedule, {_plural(train.get('warmup_steps') or 0, 'warmup step')}, weight decay "
                  f"{train.get('weight_decay')} |",
                  f"| fill-in-the-middle rate | {train.get('fim_rate')} |",
                  f"| precision | {train.get('precision')} |"]
    if f.get("trainable") and f["trainable"] != f["params"]:
        lines.append(f"| trainable parameters | {f['trainable']:,} |")
    lora = " (an upper bound: LoRA's frozen weights get no gradient)" if inputs["record"].get("lora") else ""
    wall = _duration(f["elapsed_s"]) if f["elapsed_s"] is not None else NOT_RECORDED
    speed = f"{f['tokens_per_s']:,.0f} tokens/s" if f["tokens_per_s"] else NOT_RECORDED
    speed += f", MFU {100 * f['mfu']:.1f}%" if f["mfu"] else ""
    lines += [f"| compute | {f['flops_6nd']:.2e} FLOPs (6 x parameters x tokens){lora}; "
              f"{f['flops_trainer']:.2e} by the trainer's count (matmul weights and attention) |",
              f"| wall time | {wall} |", f"| throughput | {speed} |",
              f"| hardware | {f.get('hardware') or NOT_RECORDED} |"]
    return "\n".join(lines)


def _evaluation(inputs: dict) -> str:
    lines = ["## Evaluation", ""]
    first, last = _val(inputs["metrics"])
    ev = inputs["eval"] or {}
    bpb = ev.get("bpb") or {}
    if bpb:
        langs = sorted({lang for v in bpb.values() if isinstance(v, dict) for lang in v.get("val_bpb_by_lang") or {}})
        lines += ["Bits per byte on held-out repositories (lower is better; comparable across tokenizers):", "",
                  "| model | all | " + " | ".join(langs) + " |", "| --- | ---: |" + " ---: |" * len(langs)]
        for who, v in bpb.items():
            if isinstance(v, dict) and isinstance(v.get("val_bpb"), (int, float)):
                by = v.get("val_bpb_by_lang") or {}
                label = v.get("name") or ("this model" if who == "model" else who)
                lines.append(f"| {label} | {v['val_bpb']:.4f} | "
                             + " | ".join(f"{by[lang]:.4f}" if lang in by else "–" for lang in langs) + " |")
    elif last:
        langs = sorted(set(last.get("val_bpb_by_lang") or {}) | set((first or {}).get("val_bpb_by_lang") or {}))
        held = "held-out files of the fine-tuning code" if inputs["finetune"] else "held-out repositories"
        lines += [f"Bits per byte on the validation split ({held}; lower is better, comparable "
                  "across tokenizers), measured by the trainer:", "",
                  "| model | step | all | " + " | ".join(langs) + " |",
                  "| --- | ---: | ---: |" + " ---: |" * len(langs)]
        scratch = not inputs["finetune"] and not ((inputs["config"] or {}).get("train") or {}).get("init_from")
        for label, r in (("untrained" if scratch else "the starting model", first), ("this model", last)):
            if r is first and (first is last or first.get("step") != 0):
                continue
            by = r.get("val_bpb_by_lang") or {}
            lines.append(f"| {label} | {r['step']:,} | {r['val_bpb']:.4f} | "
                         + " | ".join(f"{by[lang]:.4f}" if lang in by else "–" for lang in langs) + " |")
    else:
        lines.append(f"Held-out bits per byte: {NOT_RECORDED}.")
    pass1 = ((ev.get("humaneval") or {}).get("pass_at_k") or {}).get("1")
    lines.append("")
    if isinstance(pass1, (int, float)):
        anchors = ", ".join(f"{name} {100 * v:.1f}%" for name, v in PUBLISHED_PASS_AT_1)
        lines.append(f"HumanEval pass@1: {100 * pass1:.1f}% (published, for scale: {anchors}).")
    else:
        lines.append(f"HumanEval pass@1: {NOT_RECORDED} (`codekiln eval humaneval`).")
    infill = ev.get("infill") or {}
    if isinstance(infill.get("pass_at_1"), (int, float)) or isinstance(infill.get("exact_match"), (int, float)):
        parts = [f"{k.replace('_', ' ')} {100 * infill[k]:.1f}%" for k in ("pass_at_1", "exact_match")
                 if isinstance(infill.get(k), (int, float))]
        kinds = infill.get("by_kind") or {}
        parts += [f"{kind.replace('_', '-')}: pass@1 {100 * v.get('pass_at_1', 0):.1f}%, exact match "
                  f"{100 * v.get('exact_match', 0):.1f}%" for kind, v in kinds.items() if isinstance(v, dict)]
        lines.append(f"HumanEval infilling: {'; '.join(parts)}.")
    else:
        lines.append(f"HumanEval infilling: {NOT_RECORDED} (`codekiln eval infill`).")
    parse = ev.get("parse_rate")
    if isinstance(parse, (int, float)):
        lines.append(f"Completions that parse: {100 * parse:.1f}%.")
    return "\n".join(lines)


def _finetune(inputs: dict) -> str:
    ft = inputs["finetune"]
    before, after = ft.get("before") or {}, ft.get("after") or {}
    files, tokens = ft.get("files") or {}, ft.get("tokens") or {}
    how = f"LoRA adapters of rank {ft['lora_rank']}" if ft.get("lora_rank") else "every weight trained"
    base_tokens = (_json(Path(ft.get("base") or "") / "config.json") or {}).get("tokens")
    trained = f", itself trained on {base_tokens:,} tokens" if base_tokens else ""
    lines = ["## Fine-tuning", "",
             f"Base model: {_base(inputs)}{trained}; {how}; "
             + ("repository-level fill-in-the-middle (other files of the repository before the current one)"
                if ft.get("repo_level_fim") else "file-level training") + ".",
             f"{files.get('train', 0):,} training files, {files.get('held_out', 0):,} held out "
             f"({tokens.get('held_out', 0):,} tokens), measured before and after:", "",
             "| held-out files | before | after |", "| --- | ---: | ---: |"]
    if isinstance(before.get("val_bpb"), (int, float)) and isinstance(after.get("val_bpb"), (int, float)):
        lines.append(f"| bits per byte | {before['val_bpb']:.4f} | {after['val_bpb']:.4f} |")
    for kind, rate in (after.get("exact_match") or {}).items():
        was = (before.get("exact_match") or {}).get(kind)
        lines.append(f"| infilling exact match, {kind.replace('_', '-')} | "
                     f"{'–' if was is None else f'{was:.3f}'} | {rate:.3f} |")
    added = (ft.get("added_tokens") or {}).get("names")
    if added:
        lines += ["", f"Tokens added to the base's vocabulary and trained: {', '.join(f'`{t}`' for t in added)}."]
    return "\n".join(lines)


def _limitations(inputs: dict) -> str:
    cfg = inputs["model"]
    languages = [lang for lang in _merged(inputs["corpora"], "languages") if lang != "unknown"]
    use = "code completion and fill-in-the-middle" if _has_fim(inputs) else "code completion"
    lines = ["## Intended use and limitations", "",
             f"- Intended for {use} in an editor or a pipeline, with a person reviewing what it writes."
             + ("" if inputs["imported_from"] else " It is a base model: it continues code; it does not follow "
                "instructions or chat."),
             f"- A {_human(param_count(cfg))}-parameter model with a {cfg.context:,}-token context: it sees only that "
             "much of a file, and its completions are often plausible but wrong, more so the longer they are."]
    if languages:
        top = " and ".join(languages[:3]) if len(languages) < 3 else ", ".join(languages[:2]) + f" and {languages[2]}"
        lines.append(f"- Trained on code only, most of it {top}; other languages and natural-language text are "
                     "weak or absent.")
    lines.append("- Not evaluated for security (it can write vulnerable code), for bias, or on benchmarks other than "
                 "those listed above; figures marked not recorded were not measured.")
    if inputs["corpora"]:
        lines.append("- It can reproduce snippets of its training code verbatim; the licenses above ask for "
                     "attribution when that happens. Personal data was redacted by regular expressions, which miss "
                     "some.")
    if inputs["imported_from"]:
        lines.append(f"- The weights derive from `{inputs['imported_from']}`: its authors' license, data and "
                     "limitations apply as well.")
    return "\n".join(lines)
