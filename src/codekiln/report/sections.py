"""The report's model sections: tokenizer compression, training curves, evaluation, and the fine-tune."""

from __future__ import annotations

import re
from pathlib import Path

from codekiln.report import svg
from codekiln.report.html import (Html, code, join, facts, note, not_run, num, pct, rate, row, seconds, short, size,
                                  table, tag)
from codekiln.report.inputs import RunFolder

# Published HumanEval pass@1 of small open code models: shown beside this run's figure as context, never as a
# comparable run (other data, other sizes, other sampling).
ANCHORS = [("CodeParrot-small", "110M", 0.038), ("SantaCoder", "1.1B", 0.18), ("replit-code-v1-3b", "2.7B", 0.219)]
CURVE_LANGUAGES = 4  # languages drawn on the bits-per-byte curve beside the overall figure
ACCENT, REFERENCE_GREY = "#2563eb", "#9aa5b1"


# --- tokenizer ---

def render_tokenizer(folder: RunFolder) -> Html:
    """Bytes per token against the references, and the token shards."""
    info = folder.json("tokenizer/training.json")
    meta = folder.json("tokens/meta.json")
    stats = folder.json("tokenizer/stats.json")
    if not folder.exists("tokenizer") and meta is None:
        return not_run("tokenizer/ is missing: no tokenizer was trained")
    out = []
    if isinstance(info, dict):
        out.append(facts([("algorithm", str(info.get("algorithm", "")).upper()),
                          ("vocabulary", num(info.get("vocab_size"))),
                          ("trained on", f"{num(info.get('docs'))} documents, {num(info.get('chars'))} characters"),
                          ("held out", f"{pct(info.get('holdout_fraction'))} of repositories, for the measurement "
                                       "below")]))
    out.append(_compression(stats))
    out.append(_shards(meta))
    return join(out)


def _compression(stats) -> Html:
    if not isinstance(stats, dict) or not isinstance(stats.get("tokenizers"), dict):
        return not_run("compression: tokenizer/stats.json is missing "
                       "(`codekiln tokenizer stats --compare cl100k_base --json tokenizer/stats.json`)")
    toks = stats["tokenizers"]
    names = list(toks)
    chart = svg.bar_chart(names, [svg.Series("bytes per token", [], [toks[n].get("bytes_per_token") for n in names])],
                          title="bytes per token on held-out code (higher: fewer tokens)",
                          value_format=lambda v: f"{v:.2f}",
                          colors=[ACCENT if i == 0 else REFERENCE_GREY for i in range(len(names))], width=560)
    first = toks[names[0]].get("languages") or {}
    langs = sorted(first, key=lambda lang: -first[lang].get("bytes", 0))[:10]
    rows = [[lang, size(first[lang].get("bytes"))]
            + [rate(((toks[n].get("languages") or {}).get(lang) or {}).get("bytes_per_token"), 2) for n in names]
            for lang in langs]
    rows.append([tag("strong", "all"), tag("strong", size(stats.get("bytes")))]
                + [tag("strong", rate(toks[n].get("bytes_per_token"), 2)) for n in names])
    rows.append(["encode speed", ""] + [f"{num(toks[n].get('mb_per_s'), 1)} MB/s" for n in names])
    ours, refs = toks[names[0]].get("bytes_per_token"), names[1:]
    lines = []
    for ref in refs:
        theirs = toks[ref].get("bytes_per_token")
        if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
            lines.append(f"{names[0]} packs {ours / theirs:.2f}× the bytes per token of {ref}")
    return join([chart, note("; ".join(lines) + ".") if lines else None,
                 table(["language", "held-out bytes", *names], rows, numeric=range(1, len(names) + 2),
                       caption=f"bytes per token, {num(stats.get('documents'))} held-out documents"),
                 note("A larger vocabulary trained on more languages (cl100k_base: 100k tokens) packs more bytes "
                      "into a token; a code tokenizer earns its place on code.")])


def _shards(meta) -> Html:
    if not isinstance(meta, dict):
        return not_run("token shards: tokens/meta.json is missing")
    rows = []
    for name, s in (meta.get("splits") or {}).items():
        s = s or {}
        bpt = s["bytes"] / s["tokens"] if s.get("tokens") and s.get("bytes") else None
        rows.append([name, num(s.get("docs")), num(s.get("tokens")), size(s.get("bytes")), rate(bpt, 2)])
    return join([tag("h3", "Token shards"), table(["split", "documents", "tokens", "text", "bytes/token"], rows,
                                                  numeric=(1, 2, 3, 4), caption=f"{meta.get('dtype', '')} shards")])


# --- training ---

def _val_x(train: list[dict], val: list[dict]) -> list[float | None]:
    """Each validation record's position in tokens, from the training record of its step (step 0: 0)."""
    at = {0: 0, **{r["step"]: r["tokens"] for r in train if isinstance(r.get("tokens"), (int, float))}}
    return [at.get(r.get("step")) for r in val]


def curves(records: list[dict], title_prefix: str = "") -> list[Html]:
    """Loss, bits-per-byte, throughput and MFU charts from metrics.jsonl records (only those with data)."""
    train = [r for r in records if "loss" in r and isinstance(r.get("step"), int)]
    val = [r for r in records if "val_loss" in r and isinstance(r.get("step"), int)]
    tx = [r.get("tokens") for r in train]
    vx = _val_x(train, val)
    charts = [svg.line_chart([svg.Series("train loss", tx, [r.get("loss") for r in train]),
                              svg.Series("validation loss", vx, [r.get("val_loss") for r in val], dashed=True)],
                             title=f"{title_prefix}loss", xlabel="tokens", ylabel="nats per token")]
    by_lang: dict[str, int] = {}
    for r in val:
        for lang in r.get("val_bpb_by_lang") or {}:
            by_lang[lang] = by_lang.get(lang, 0) + 1
    langs = sorted(by_lang, key=lambda lang: (-by_lang[lang], lang))[:CURVE_LANGUAGES]
    bpb = [svg.Series("all", vx, [r.get("val_bpb") for r in val], color="#1f2933")]
    bpb += [svg.Series(lang, vx, [(r.get("val_bpb_by_lang") or {}).get(lang) for r in val], dashed=True)
            for lang in langs]
    charts.append(svg.line_chart(bpb, title=f"{title_prefix}validation bits per byte", xlabel="tokens",
                                 ylabel="bits per byte"))
    steps = [r["step"] for r in train]
    charts.append(svg.line_chart([svg.Series("tokens/s", steps, [r.get("tokens_per_s") for r in train])],
                                 title=f"{title_prefix}throughput", xlabel="step", ylabel="tokens per second",
                                 y_from_zero=True))
    mfu = [r.get("mfu") * 100 if isinstance(r.get("mfu"), (int, float)) else None for r in train]
    charts.append(svg.line_chart([svg.Series("MFU", steps, mfu, color="#059669")],
                                 title=f"{title_prefix}model FLOPs utilisation", xlabel="step", ylabel="% of peak",
                                 y_from_zero=True, y_format=lambda v: f"{v:g}%"))
    return [c for c in charts if c is not None]


def _epochs(epochs) -> str | None:
    """Passes over the data: one figure, or one per language (as training reports it), largest first."""
    if isinstance(epochs, dict):
        top = sorted(((k, v) for k, v in epochs.items() if isinstance(v, (int, float))), key=lambda kv: -kv[1])
        return ", ".join(f"{k} {v:.2f}" for k, v in top[:4]) + (f" and {len(top) - 4} more" if len(top) > 4 else "")
    return rate(epochs, 2) if isinstance(epochs, (int, float)) else None


def render_training(folder: RunFolder) -> Html:
    """The run's summary and curves."""
    records = folder.metrics("run")
    summary = folder.json("run/summary.json")
    if not records and summary is None:
        return not_run("run/ has no metrics.jsonl: the model was not trained")
    out = []
    if isinstance(summary, dict):
        mem = summary.get("memory_mb") or {}
        out.append(facts([
            ("steps", num(summary.get("steps"))), ("tokens", num(summary.get("tokens"))),
            ("epochs", _epochs(summary.get("epochs"))), ("time", seconds(summary.get("elapsed_s"))),
            ("final loss", rate(summary.get("loss"), 4)),
            ("final validation", f"loss {rate(summary.get('val_loss'), 4)}, "
                                 f"{rate(summary.get('val_bpb'), 4)} bits per byte" if "val_bpb" in summary else None),
            ("trainable parameters", short(summary.get("trainable_parameters"))),
            ("peak memory", f"{num(mem.get('peak_mb'))} MB" if isinstance(mem, dict) and mem.get("peak_mb") else None),
        ]))
    else:
        out.append(note("run/summary.json is missing: training did not finish (the curves so far are below)."))
    train = [r for r in records or [] if "tokens_per_s" in r]
    if train:
        tps = [r["tokens_per_s"] for r in train if isinstance(r["tokens_per_s"], (int, float))]
        mfus = [r["mfu"] for r in train if isinstance(r.get("mfu"), (int, float))]
        out.append(note(f"Throughput: median {num(sorted(tps)[len(tps) // 2])} tokens/s"
                        + (f"; MFU median {pct(sorted(mfus)[len(mfus) // 2])} of the device's peak (on a CPU, the "
                           "peak of a measured matmul)" if mfus else "; MFU not measured") + "."))
    charts = curves(records or [])
    if charts:
        out.append(tag("div", *(tag("figure", c) for c in charts), cls="charts"))
    return join(out)


# --- evaluation ---

def render_evaluation(folder: RunFolder) -> Html:
    """Bits per byte per language, infilling, parse rate, HumanEval beside the anchors, completions."""
    ev = folder.json("eval/summary.json")
    if not isinstance(ev, dict):
        return not_run("eval/summary.json is missing: the model was not evaluated")
    skipped = ev.get("skipped") if isinstance(ev.get("skipped"), dict) else {}
    return join([_bpb(ev.get("bpb")), _infill(ev.get("infill"), ev.get("parse_rate"), skipped),
                 _humaneval(ev.get("humaneval"), _anchors(ev.get("published")), skipped),
                 _completions(ev.get("completions"), ev.get("bpb"))])


def _anchors(published) -> list[tuple[str, str, float]]:
    """(model, parameters, pass@1) of the published figures eval/summary.json carries, else ANCHORS."""
    found = []
    for entry in published if isinstance(published, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("humaneval_pass_at_1"), (int, float)):
            name, params = re.fullmatch(r"(.*?)(?: \(([^()]*)\))?", str(entry.get("model", "?"))).groups()
            found.append((name, params or "–", entry["humaneval_pass_at_1"]))
    return found or ANCHORS


def _other_models(bpb: dict) -> list[tuple[str, dict]]:
    """(column label, entry) of the reference and fine-tuned models measured beside this one."""
    out = []
    for key, label in (("reference", "reference"), ("finetuned", "fine-tuned")):
        entry = bpb.get(key)
        if isinstance(entry, dict):
            out.append((f"{entry.get('name') or key} ({label})", entry))
    return out


def _bpb(bpb) -> Html:
    head = tag("h3", "Held-out bits per byte")
    if not isinstance(bpb, dict) or not isinstance(bpb.get("model"), dict):
        return join([head, not_run("bits per byte: not measured")])
    cols = [("this model", bpb["model"]), ("untrained", bpb.get("untrained")), *_other_models(bpb)]
    cols = [(name, entry) for name, entry in cols if isinstance(entry, dict)]
    langs: list[str] = []
    for _, entry in cols:
        for lang in entry.get("val_bpb_by_lang") or {}:
            if lang not in langs:
                langs.append(lang)
    model_by = bpb["model"].get("val_bpb_by_lang") or {}
    langs.sort(key=lambda lang: (lang not in model_by, lang))
    labels = ["all", *langs]

    def value(entry, lang):
        return entry.get("val_bpb") if lang == "all" else (entry.get("val_bpb_by_lang") or {}).get(lang)

    colors = {"this model": ACCENT, "untrained": "#cbd2d9"}
    extra = iter(["#ea580c", "#059669"])
    chart = svg.bar_chart(labels[:13], [svg.Series(name, [], [value(e, lang) for lang in labels[:13]],
                                                   color=colors.get(name) or next(extra))
                                        for name, e in cols],
                          title="bits per byte on held-out code (lower is better)", value_format=lambda v: f"{v:.3f}")
    rows = [[tag("strong", lang) if lang == "all" else lang, *(rate(value(e, lang)) for _, e in cols)]
            for lang in labels]
    measured = f" ({size(bpb['bytes'])} of this run's validation split)" if isinstance(bpb.get("bytes"), int) else ""
    return join([head, chart, table(["language", *(name for name, _ in cols)], rows, numeric=range(1, len(cols) + 1)),
                 note(f"The same held-out bytes for every model{measured}, so tokenizers of any size compare "
                      "fairly. The untrained model is this architecture at initialisation: what learning bought.")])


def _infill(infill, parse_rate, skipped: dict) -> Html:
    out = [tag("h3", "Infilling and parse rate")]
    if isinstance(infill, dict) and infill:
        rows = [[kind.replace("_", "-"), num((v or {}).get("tasks")), pct((v or {}).get("exact_match")),
                 pct((v or {}).get("pass_at_1"))] for kind, v in infill.items() if isinstance(v, dict)]
        out.append(table(["span", "tasks", "exact match", "pass@1 (tests run)"], rows, numeric=(1, 2, 3)))
    else:
        out.append(not_run(f"infilling: {skipped.get('infill') or 'not evaluated'}"))
    if isinstance(parse_rate, (int, float)):
        out.append(tag("p", tag("strong", pct(parse_rate)), " of the model's HumanEval programs parse."))
    else:
        out.append(not_run(f"parse rate: {skipped.get('humaneval') or 'not measured'}"))
    return join(out)


def _humaneval(he, anchors: list[tuple[str, str, float]], skipped: dict) -> Html:
    out = [tag("h3", "HumanEval")]
    ours = (he.get("pass_at_k") or {}).get("1") if isinstance(he, dict) else None
    measured = isinstance(ours, (int, float))
    labels = (["this model"] if measured else []) + [f"{n} ({p}, published)" for n, p, _ in anchors]
    values = ([ours] if measured else []) + [v for _, _, v in anchors]
    colors = ([ACCENT] if measured else []) + [REFERENCE_GREY] * len(anchors)
    chart = svg.bar_chart(labels, [svg.Series("pass@1", [], values)], title="HumanEval pass@1",
                          value_format=lambda v: f"{100 * v:.1f}%", colors=colors, width=600,
                          caption_right="grey: published figures", tick_format=lambda v: f"{100 * v:g}%")
    rows = []
    if measured:
        rows.append(["this model", "this run", pct(ours),
                     f"{num(he.get('tasks_evaluated'))} tasks, {num(he.get('samples'))} samples"])
    else:
        out.append(not_run(f"HumanEval: {skipped.get('humaneval') or 'not evaluated'}"))
    rows += [row([name, params, pct(v), "published figure"], numeric=(2,), cls="anchor") for name, params, v in anchors]
    out.append(chart)
    out.append(table(["model", "parameters", "pass@1", "source"], rows, numeric=(2,)))
    others = {k: v for k, v in (he.get("pass_at_k") or {}).items() if k != "1"} if isinstance(he, dict) else {}
    if others:
        ordered = sorted(others.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0)
        out.append(note("This model: " + ", ".join(f"pass@{k} {pct(v)}" for k, v in ordered) + "."))
    out.append(note("The published figures are other models' own reports (other data, sizes and sampling), shown "
                    "for scale; they are not runs comparable with this one."))
    return join(out)


def _completion(prompt: str, text) -> Html:
    """The prompt (dimmed) and what the model wrote after it, as one block of code."""
    text = str(text or "")
    return tag("pre", tag("code", tag("span", prompt, cls="prompt"), text or tag("em", " (nothing)", cls="prompt")))


def _completions(completions, bpb) -> Html:
    head = tag("h3", "Completions")
    items = [c for c in completions or [] if isinstance(c, dict)]
    if not items:
        return join([head, not_run("completions: none recorded")])
    # The suite completes with the fine-tune when there is one, else with the reference (eval/suite.py).
    others = _other_models(bpb) if isinstance(bpb, dict) else []
    with_ref = any(c.get("reference_model") is not None for c in items)
    headers = ["this model"] + ([others[-1][0] if others else "other model"] if with_ref else [])
    rows = [[_completion(str(c.get("prompt", "")), c.get("model"))]
            + ([_completion(str(c.get("prompt", "")), c.get("reference_model"))] if with_ref else [])
            for c in items]
    return join([head, table(headers, rows, cls="completions"),
                 note("Greedy completions, the prompt dimmed: each model continues the same text, and its answer is "
                      "cut where the code ends.")])


# --- fine-tune ---

def render_finetune(folder: RunFolder) -> Html:
    """Before and after on the held-out files, and the function bodies side by side."""
    ft = folder.json("finetune/finetune.json")
    if not isinstance(ft, dict):
        what = "it did not finish" if folder.exists("finetune") else "no fine-tune in this run"
        return not_run(f"finetune/finetune.json is missing: {what}")
    before, after = ft.get("before") or {}, ft.get("after") or {}
    tr, files, tokens = ft.get("train") or {}, ft.get("files") or {}, ft.get("tokens") or {}
    base = str(ft.get("base") or "?")
    imported = folder.path / "import"
    if imported.is_dir() and Path(base).resolve() == imported.resolve():
        from codekiln.report.overview import imported_model

        base = imported_model(folder) or base
    out = [facts([
        ("base model", base),
        ("method", f"LoRA rank {ft['lora_rank']}" if ft.get("lora_rank") else "full fine-tuning"),
        ("held-out files", f"{num(files.get('held_out'))} of "
                           f"{num((files.get('train') or 0) + (files.get('held_out') or 0))} "
                           f"({num(tokens.get('held_out'))} tokens)"),
        ("training", f"{num(tr.get('steps'))} steps, {short(tr.get('tokens'))} tokens, "
                     f"{rate(tr.get('epochs'), 2)} epochs, {seconds(tr.get('elapsed_s'))}"
                     + (f", {num(ft.get('tokens_per_s'))} tokens/s" if ft.get("tokens_per_s") else "")),
        ("trainable parameters", short(tr.get("trainable_parameters"))),
        ("added tokens", ", ".join((ft.get("added_tokens") or {}).get("names") or []) or None)])]
    rows = [["bits per byte (lower is better)", rate(before.get("val_bpb"), 4), rate(after.get("val_bpb"), 4),
             _change(before.get("val_bpb"), after.get("val_bpb"), 4)]]
    kinds = list(dict.fromkeys([*(before.get("exact_match") or {}), *(after.get("exact_match") or {})]))
    for kind in kinds:
        b, a = (before.get("exact_match") or {}).get(kind), (after.get("exact_match") or {}).get(kind)
        n = (after.get("tasks") or {}).get(kind)
        rows.append([f"infill exact match, {kind.replace('_', '-')}" + (f" ({n} tasks)" if n else ""),
                     pct(b), pct(a), _change(b, a, 3, percent=True)])
    charts = [svg.bar_chart(["bits per byte"], [svg.Series("before", [], [before.get("val_bpb")], color=REFERENCE_GREY),
                                                svg.Series("after", [], [after.get("val_bpb")], color=ACCENT)],
                            title="held-out bits per byte", value_format=lambda v: f"{v:.3f}", width=420),
              svg.bar_chart([k.replace("_", "-") for k in kinds],
                            [svg.Series("before", [], [(before.get("exact_match") or {}).get(k) for k in kinds],
                                        color=REFERENCE_GREY),
                             svg.Series("after", [], [(after.get("exact_match") or {}).get(k) for k in kinds],
                                        color=ACCENT)],
                            title="held-out infill exact match", value_format=lambda v: f"{100 * v:.0f}%", width=420,
                            tick_format=lambda v: f"{100 * v:g}%")]
    out.append(tag("div", *(tag("figure", c) for c in charts if c is not None), cls="charts"))
    out.append(table(["held-out files", "before", "after", "change"], rows, numeric=(1, 2, 3)))
    styles = (before.get("prompt_style"), after.get("prompt_style"))
    if any(styles):
        out.append(note(f"Prompt style: before {styles[0] or '–'}, after {styles[1] or '–'} (repo_fim: other files "
                        "of "
                        "the repository, then fill-in-the-middle; prefix: the base cannot fill in, so it continues the "
                        "text before the hole, as it would in an editor)."))
    out.append(_bodies(before.get("bodies") or [], after.get("bodies") or []))
    return join(out)


def _change(b, a, digits: int, percent: bool = False) -> str:
    if not all(isinstance(v, (int, float)) for v in (a, b)):
        return "–"
    d = a - b
    return f"{100 * d:+.1f} points" if percent else f"{d:+.{digits}f}"


def _bodies(before: list, after: list) -> Html:
    if not before and not after:
        return Html()
    out = [tag("h3", "Function bodies, side by side"),
           note("Each held-out function's signature and docstring were the prompt; the models wrote the body.")]
    for i, (b, a) in enumerate(zip(before, after), 1):
        if not isinstance(b, dict) or not isinstance(a, dict):
            continue
        where = "/".join(x for x in (b.get("repo"), b.get("path")) if x)
        cols = [("reference", b.get("reference")), ("before", b.get("completion")), ("after", a.get("completion"))]
        out.append(tag("div", tag("h4", f"{i}. ", tag("code", b.get("name", "?")), f" in {where}"),
                       code(str(b.get("prompt_tail") or "")),
                       tag("div", *(tag("div", tag("h5", label), code(str(text)) if str(text or "").strip()
                                        else note("(nothing)")) for label, text in cols), cls="side"),
                       cls="body"))
    return join(out)
