"""report.json for a corpus build, and the summary table printed at the end of it."""

from __future__ import annotations

from rich.table import Table

from codekiln.config import DataConfig
from codekiln.data.stages import Stats
from codekiln.data.steps import stage_enabled, stage_names

def _sorted(d: dict) -> dict:
    return {k: d[k] for k in sorted(d)}


def build_report(stats: Stats, cfg: DataConfig, languages: dict, licenses: dict, dedup: dict) -> dict:
    """The report.json contract: stages in order, drops, kept languages and licenses, PII, totals."""
    stages = []
    prev_docs = prev_bytes = None
    for name in stage_names():
        s = stats.stages[name]
        enabled = stage_enabled(name, cfg)
        if not enabled:
            # A disabled stage passes everything through; show that rather than zeros.
            s = {"docs_in": prev_docs, "docs_out": prev_docs, "bytes_in": prev_bytes, "bytes_out": prev_bytes,
                 "dropped": {}}
        stages.append({"name": name, "enabled": enabled, "docs_in": s["docs_in"], "docs_out": s["docs_out"],
                       "bytes_in": s["bytes_in"], "bytes_out": s["bytes_out"], "dropped": _sorted(s["dropped"])})
        prev_docs, prev_bytes = s["docs_out"], s["bytes_out"]
    docs_out = sum(v["docs"] for v in languages.values())
    bytes_out = sum(v["bytes"] for v in languages.values())
    return {
        "stages": stages,
        "dropped": {r: {"docs": d, "bytes": b} for r, (d, b) in sorted(stats.dropped.items())},
        "dropped_by_language": {lang: _sorted(r) for lang, r in sorted(stats.dropped_by_language.items())},
        "languages": _sorted(languages),
        "licenses": _sorted(licenses),
        "licenses_dropped": {lic: {"docs": d, "bytes": b} for lic, (d, b) in sorted(stats.licenses_dropped.items())},
        "pii": {kind: stats.pii.get(kind, 0) for kind in ("email", "ip", "secret")},
        # Each damaged part of a source (counted in dropped.unreadable) and what it lost, null where unknown.
        "damaged": sorted(stats.damaged, key=lambda d: (d["what"], d["error"])),
        "dedup": dedup,
        "totals": {"docs_in": stages[0]["docs_in"], "docs_out": docs_out,
                   "bytes_in": stages[0]["bytes_in"], "bytes_out": bytes_out},
    }


def advice(report: dict) -> str | None:
    """The line a build ends with when it kept nothing because the code has no license, else None."""
    unknown = report.get("licenses_dropped", {}).get("unknown", {}).get("docs", 0)
    if report["totals"]["docs_out"] or not unknown:
        return None
    return (f"no document was kept: {unknown:,} have no license (no LICENSE file or license metadata); "
            "to include your own unlicensed code, pass data.license.allow_unknown=true "
            "(or add a LICENSE file at the top of the repository)")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def summary_table(report: dict) -> Table:
    """Per-stage docs and MB in/out with the drop reasons."""
    t = Table(title="corpus build", title_justify="left")
    for col, justify in (("stage", "left"), ("docs in", "right"), ("docs out", "right"), ("MB in", "right"),
                         ("MB out", "right"), ("dropped", "left")):
        t.add_column(col, justify=justify)
    for s in report["stages"]:
        dropped = ", ".join(f"{r} {n:,}" for r, n in sorted(s["dropped"].items(), key=lambda x: -x[1]))
        name = s["name"] if s["enabled"] else f"{s['name']} (off)"
        t.add_row(name, f"{s['docs_in']:,}", f"{s['docs_out']:,}", _mb(s["bytes_in"]), _mb(s["bytes_out"]), dropped)
    tot = report["totals"]
    t.add_row("total", f"{tot['docs_in']:,}", f"{tot['docs_out']:,}", _mb(tot["bytes_in"]), _mb(tot["bytes_out"]),
              "PII redacted: " + ", ".join(f"{k} {v:,}" for k, v in report["pii"].items()), style="bold")
    damaged = report.get("damaged", [])
    if damaged:
        # Damage must not pass unnoticed in a long read stage: say how much, and where the list is.
        rows = sum(d["rows"] for d in damaged if d["rows"] is not None)
        unknown = sum(1 for d in damaged if d["rows"] is None)
        t.caption = (f"damaged sources: {len(damaged):,} parts lost ({rows:,} rows"
                     + (f" + {unknown:,} of unknown size" if unknown else "") + "); see `damaged` in report.json")
        t.caption_justify = "left"
    return t
