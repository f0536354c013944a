"""Small HTML building blocks for the report: escaping by default, tables, notes, number formats, the page.

Every string that reaches the page goes through `esc` unless it is an `Html` value, which only these
helpers and the chart module make; so text from a corpus, a config or a model is always escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence


class Html(str):
    """Text that is already HTML (built here from escaped parts)."""

    def __add__(self, other):
        return Html(str.__add__(self, esc(other)))


def esc(value) -> Html:
    """value as HTML: Html passes through, anything else is escaped text."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable, sep: str = "") -> Html:
    """The parts escaped and joined."""
    return Html(sep.join(esc(p) for p in parts))


def tag(name: str, *children, cls: str | None = None, **attrs) -> Html:
    """<name attrs>children</name>, attribute values and children escaped (`cls` is the class attribute)."""
    if cls:
        attrs = {"class": cls, **attrs}
    attr = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Html(f"<{name}{attr}>{join(children)}</{name}>")


def prose(text) -> Html:
    """Text with `backticked` spans set as inline code (Html passes through)."""
    if isinstance(text, Html) or "`" not in str(text):
        return esc(text)
    parts = str(text).split("`")
    return join(tag("code", p) if i % 2 else p for i, p in enumerate(parts))


def note(text, cls: str = "note") -> Html:
    """One line of muted text (`backticks` mark code)."""
    return tag("p", prose(text), cls=cls)


def not_run(what: str) -> Html:
    """The one line a section shows when its part of the run folder is missing."""
    return tag("p", tag("span", "not run", cls="badge skipped"), " ", prose(what), cls="note not-run")


def code(text: str, cls: str | None = None) -> Html:
    """A preformatted block."""
    return tag("pre", tag("code", text), cls=cls)


def table(headers: Sequence, rows: Iterable[Sequence], numeric: Iterable[int] = (), cls: str | None = None,
          caption=None) -> Html:
    """A table in a horizontally scrolling wrapper; columns in `numeric` are right-aligned. A row is a list of
    cells or a ready `<tr>` (Html, from `row`)."""
    numeric = set(numeric)
    head = tag("tr", *(tag("th", h, cls="num" if i in numeric else None) for i, h in enumerate(headers)))
    body = [r if isinstance(r, Html) else row(r, numeric) for r in rows]
    parts = ([tag("caption", caption)] if caption is not None else []) + [tag("thead", head), tag("tbody", *body)]
    return tag("div", tag("table", *parts, cls=cls), cls="table-wrap")


def row(cells: Sequence, numeric: Iterable[int] = (), cls: str | None = None) -> Html:
    """One table row; cells in `numeric` columns right-aligned."""
    numeric = set(numeric)
    return tag("tr", *(tag("td", c, cls="num" if i in numeric else None) for i, c in enumerate(cells)), cls=cls)


def facts(items: Iterable[tuple[str, object]]) -> Html:
    """A definition list of (label, value) pairs, skipping empty values."""
    return tag("dl", *(Html(tag("dt", k) + tag("dd", v)) for k, v in items if v not in (None, "")), cls="facts")


def badge(status: str) -> Html:
    """A coloured status word: done, skipped, failed."""
    return tag("span", status, cls=f"badge {status if status in ('done', 'skipped', 'failed') else 'other'}")


def plural(n: int, word: str) -> str:
    """'1 document', '2 documents' (thousands separated)."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def num(value, digits: int = 0) -> str:
    """A number with thousands separators, or an en dash for a missing value."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def short(value: float | None) -> str:
    """A count in k / M / B (11.3M), or an en dash."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:g}"


def size(n: float | None) -> str:
    """Bytes in decimal units (2.74 GB), or an en dash."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "–"
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage, or an en dash."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x):
        return "–"
    return f"{100 * x:.{digits}f}%"


def rate(x: float | None, digits: int = 3) -> str:
    """A figure to a few decimals, or an en dash."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x):
        return "–"
    return f"{x:.{digits}f}"


def seconds(s: float | None) -> str:
    """A duration: 42 s, 7 min 5 s, 2 h 10 min."""
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "–"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#e3e7ec; --bg:#f6f7f9; --card:#fff; --accent:#2563eb;
  --ok:#15803d; --warn:#b45309; --bad:#b91c1c; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; background:var(--bg); color:var(--ink); line-height:1.5; font-size:15px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { background:#17202c; color:#f3f5f8; padding:28px 24px 20px; }
header.top h1 { margin:0 0 4px; font-size:26px; font-weight:650; letter-spacing:-0.01em; }
header.top p { margin:0; color:#b7c0cc; }
nav { position:sticky; top:0; z-index:1; background:#17202cf2; padding:8px 24px; display:flex; flex-wrap:wrap;
  gap:4px 18px; }
nav a { color:#cfd6df; text-decoration:none; font-size:14px; }
nav a:hover { color:#fff; }
main { max-width:1120px; margin:0 auto; padding:20px 20px 60px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 24px; margin:18px 0; }
h2 { margin:0 0 12px; font-size:20px; font-weight:650; }
h3 { margin:22px 0 8px; font-size:16px; font-weight:620; }
h4 { margin:14px 0 6px; font-size:14px; font-weight:620; }
p { margin:6px 0 10px; }
.note { color:var(--muted); font-size:14px; }
.problem { color:var(--bad); font-size:14px; }
.facts { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:8px 0 14px; }
.facts dt { color:var(--muted); }
.facts dd { margin:0; }
.table-wrap { overflow-x:auto; margin:8px 0 14px; }
table { border-collapse:collapse; font-size:14px; min-width:50%; }
caption { text-align:left; color:var(--muted); font-size:13px; padding-bottom:4px; }
th, td { padding:5px 12px 5px 0; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { font-weight:600; color:var(--muted); border-bottom:2px solid var(--line); white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; padding-left:12px; }
tr.total td { font-weight:600; }
tr.anchor td { color:var(--muted); }
pre { margin:4px 0 8px; padding:8px 10px; background:#f3f5f8; border:1px solid var(--line); border-radius:6px;
  font-size:12.5px; line-height:1.45; white-space:pre-wrap; overflow-wrap:anywhere; max-width:100%; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
p code, li code, td code { background:#f0f2f5; padding:1px 4px; border-radius:4px; font-size:13px; }
td pre { margin:0; }
td pre code, pre code { background:none; padding:0; border-radius:0; font-size:inherit; }
table.completions { width:100%; table-layout:fixed; }
pre .prompt { color:#7b8794; }
.badge { display:inline-block; padding:0 8px; border-radius:9px; font-size:12px; font-weight:600; line-height:18px; }
.badge.done { background:#dcfce7; color:var(--ok); }
.badge.skipped { background:#eef0f3; color:var(--muted); }
.badge.failed { background:#fee2e2; color:var(--bad); }
.badge.other { background:#fef3c7; color:var(--warn); }
.chart { display:block; max-width:100%; height:auto; margin:6px 0 12px; }
.charts { display:flex; flex-wrap:wrap; gap:8px 24px; }
.charts > figure { margin:0; flex:1 1 420px; min-width:0; }
figure figcaption { color:var(--muted); font-size:13px; }
.examples { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:4px 16px; }
.example .where { font-size:12.5px; color:var(--muted); overflow-wrap:anywhere; }
.reason { border-top:1px solid var(--line); padding-top:6px; margin-top:10px; }
.reason h4 { margin:4px 0; }
.side { display:grid; grid-template-columns:repeat(3, minmax(0, 1fr)); gap:10px; }
.side h5 { margin:4px 0; font-size:13px; color:var(--muted); font-weight:600; }
@media (max-width: 760px) { .side { grid-template-columns:1fr; } }
.body { border-top:1px solid var(--line); margin-top:12px; padding-top:6px; }
footer { color:var(--muted); font-size:13px; text-align:center; padding:10px 0 30px; }
@media print { nav { display:none; } section { break-inside:avoid-page; border:none; } body { background:#fff; } }
"""

# The page loads nothing: no scripts, styles and images only from inside the file.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def page(title: str, subtitle, nav: Sequence[tuple[str, str]], sections: Sequence[Html], footer) -> str:
    """The whole self-contained document."""
    links = tag("nav", *(tag("a", label, href=f"#{ident}") for ident, label in nav))
    return ("<!DOCTYPE html>\n" + tag(
        "html",
        tag("head", Html('<meta charset="utf-8">'),
            Html(f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'),
            Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            tag("title", title), Html(f"<style>{CSS}</style>")),
        tag("body", tag("header", tag("h1", title), tag("p", subtitle), cls="top"), links,
            tag("main", *sections), tag("footer", footer)),
        lang="en") + "\n")
