"""Inline SVG charts for the report, drawn here: line charts, horizontal bar charts, and the corpus funnel.

No plotting library and no script: each chart is a few dozen SVG elements with its numbers in `<title>`
tooltips, sized by a viewBox so that it scales with the page and stays sharp when printed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codekiln.report.html import Html, esc

PALETTE = ["#2563eb", "#ea580c", "#059669", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#64748b"]
MUTED = "#9aa5b1"
INK = "#1f2933"
GRID = "#e6e9ee"
CHAR_W = 6.6  # width of one character of the 12 px labels, for layout (system fonts vary a little)
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif"'


@dataclass
class Series:
    """One line of a line chart (or one group of bars): its label, points and colour."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str | None = None
    dashed: bool = False


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about `count` of them (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (m * mag) <= count)
    start = math.floor(lo / step + 1e-9) * step
    ticks, v = [], start
    while v < hi - 1e-9 * step:
        ticks.append(v)
        v = start + len(ticks) * step
    ticks.append(v)
    return [round(t, 12) for t in ticks]


def tick_label(v: float) -> str:
    """A short axis label: 1.5, 20k, 1.2M."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}B"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:.6g}"


def _text(x: float, y: float, s, anchor: str = "start", size: int = 12, color: str = INK, weight: str = "normal",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}" '
            f'font-weight="{weight}"{extra}>{esc(s)}</text>')


def _svg(width: int, height: int, body: list[str], label: str) -> Html:
    return Html(f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" {FONT}>'
                f"<title>{esc(label)}</title>{''.join(body)}</svg>")


def _legend(items: list[tuple[str, str, bool]], x0: float, y: float, right: float,
            kind: str = "line") -> tuple[list[str], float]:
    """Legend entries laid out left to right, wrapping at `right`; returns the elements and the y below them."""
    out, x = [], x0
    for label, color, dashed in items:
        w = 22 + len(label) * CHAR_W + 14
        if x + w > right and x > x0:
            x, y = x0, y + 16
        if kind == "line":
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" stroke="{color}" '
                       f'stroke-width="2.5"{dash}/>')
        else:
            out.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" rx="2" fill="{color}"/>')
        out.append(_text(x + 21, y, label, size=12))
        x += w
    return out, y + 10


def line_chart(series: list[Series], *, title: str, xlabel: str, ylabel: str, width: int = 520, height: int = 300,
               y_from_zero: bool = False, y_format: Callable[[float], str] = tick_label) -> Html | None:
    """A line chart of the series (points with a missing y are left out); None when no series has a point."""
    kept = []
    for s in series:
        pts = [(x, y) for x, y in zip(s.xs, s.ys) if _finite(x) and _finite(y)]
        if pts:
            kept.append(Series(s.label, [p[0] for p in pts], [p[1] for p in pts], s.color, s.dashed))
    series = kept
    if not series:
        return None
    for i, s in enumerate(series):
        s.color = s.color or PALETTE[i % len(PALETTE)]
    left, right, bottom = 58, width - 14, height - 40
    body = [_text(left, 16, title, size=13, weight="600")]
    legend, top = _legend([(s.label, s.color, s.dashed) for s in series], left, 34, right)
    body += legend
    top += 6
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(0.0 if y_from_zero else min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x):
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y):
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in yt:
        body.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{right}" y2="{py(t):.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 6, py(t) + 4, y_format(t), anchor="end", size=11, color="#5f6b7a"))
    for t in xt:
        body.append(f'<line x1="{px(t):.1f}" y1="{bottom}" x2="{px(t):.1f}" y2="{bottom + 4}" stroke="{MUTED}"/>')
        body.append(_text(px(t), bottom + 16, tick_label(t), anchor="middle", size=11, color="#5f6b7a"))
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{MUTED}"/>')
    body.append(_text((left + right) / 2, height - 6, xlabel, anchor="middle", size=12, color="#5f6b7a"))
    body.append(_text(14, (top + bottom) / 2, ylabel, anchor="middle", size=12, color="#5f6b7a",
                      extra=f' transform="rotate(-90 14 {(top + bottom) / 2:.1f})"'))
    for s in series:
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(s.xs, s.ys))
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        body.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2" '
                    f'stroke-linejoin="round"{dash}/>')
        if len(s.xs) <= 40:
            for x, y in zip(s.xs, s.ys):
                body.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.8" fill="{s.color}">'
                            f"<title>{esc(f'{s.label}: {tick_label(x)} → {y:.4g}')}</title></circle>")
    return _svg(width, height, body, title)


def bar_chart(labels: list[str], series: list[Series], *, title: str, unit: str = "",
              value_format: Callable[[float], str] = lambda v: f"{v:.3g}", width: int = 640,
              colors: list[str] | None = None, caption_right: str = "",
              tick_format: Callable[[float], str] = tick_label) -> Html | None:
    """Horizontal bars: one row per label, one bar per series in it (a series' ys align with labels; None
    leaves a gap). `colors` colours a single series' bars row by row. None when there is no value."""
    values = [y for s in series for y in s.ys if _finite(y)]
    if not labels or not values:
        return None
    for i, s in enumerate(series):
        s.color = s.color or PALETTE[i % len(PALETTE)]
    label_w = min(230, 12 + max(len(str(lb)) for lb in labels) * CHAR_W)
    value_w = 12 + max(len(value_format(v)) for v in values) * CHAR_W
    left, right = label_w, width - value_w
    body = [_text(0, 16, title, size=13, weight="600")]
    if caption_right:
        body.append(_text(width, 16, caption_right, anchor="end", size=11, color="#5f6b7a"))
    y = 34
    if len(series) > 1:
        legend, y = _legend([(s.label, s.color, False) for s in series], 0, 38, width, kind="box")
        body += legend
        y += 8
    bar_h, gap = 14, 10
    scale_max = max(max(values), 0) or 1.0
    ticks = nice_ticks(0.0, scale_max)
    top = y

    def px(v):
        return left + max(v, 0) / ticks[-1] * (right - left)

    row_h = bar_h * len(series) + gap
    bottom = top + row_h * len(labels)
    for t in ticks:
        body.append(f'<line x1="{px(t):.1f}" y1="{top - 4}" x2="{px(t):.1f}" y2="{bottom - gap + 4}" stroke="{GRID}"/>')
        body.append(_text(px(t), bottom + 10, tick_format(t), anchor="middle", size=10, color="#5f6b7a"))
    for r, label in enumerate(labels):
        ry = top + r * row_h
        body.append(_text(label_w - 10, ry + bar_h * len(series) / 2 + 4, label, anchor="end", size=12))
        for k, s in enumerate(series):
            v = s.ys[r] if r < len(s.ys) else None
            by = ry + k * bar_h
            if not _finite(v):
                body.append(_text(left + 4, by + bar_h - 3, "–", size=11, color=MUTED))
                continue
            color = colors[r] if colors and len(series) == 1 else s.color
            w = max(px(v) - left, 1.0)
            body.append(f'<rect x="{left}" y="{by + 1:.1f}" width="{w:.1f}" height="{bar_h - 2}" rx="2" fill="{color}">'
                        f"<title>{esc(f'{label}, {s.label}: {value_format(v)}{unit}')}</title></rect>")
            body.append(_text(left + w + 5, by + bar_h - 3, value_format(v) + unit, size=11, color="#3e4a59"))
    height = int(bottom + 18)
    return _svg(width, height, body, title)


def funnel(rows: list[tuple[str, int, int, bool]], *, width: int = 760) -> Html | None:
    """The corpus funnel: one row per (stage, docs, bytes, enabled), documents on the left and bytes on the
    right, each bar centred and as wide as its share of the first row."""
    if not rows or not rows[0][1]:
        return None
    from codekiln.report.html import short, size

    label_w, gap = 130, 24
    panel = (width - label_w - gap) / 2
    row_h, bar_h, top = 30, 20, 44
    docs0, bytes0 = max(rows[0][1], 1), max(rows[0][2], 1)
    body = [_text(0, 16, "documents and bytes through every stage", size=13, weight="600"),
            _text(label_w + panel / 2, 36, "documents", anchor="middle", size=12, color="#5f6b7a"),
            _text(label_w + panel + gap + panel / 2, 36, "bytes", anchor="middle", size=12, color="#5f6b7a")]
    for i, (name, docs, n_bytes, enabled) in enumerate(rows):
        y = top + i * row_h
        color_d, color_b = ("#2563eb", "#0891b2") if enabled else (MUTED, MUTED)
        body.append(_text(label_w - 10, y + bar_h / 2 + 4, name + ("" if enabled else " (off)"), anchor="end",
                          size=12, color=INK if enabled else MUTED))
        for j, (value, total, color, text) in enumerate(((docs, docs0, color_d, f"{docs:,}"),
                                                        (n_bytes, bytes0, color_b, size(n_bytes)))):
            cx = label_w + j * (panel + gap) + panel / 2
            w = max(panel * min(value / total, 1.0), 2.0)
            tip = esc(f"{name}: {text} ({short(value)})")
            body.append(f'<rect x="{cx - w / 2:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" fill="{color}" '
                        f'opacity="{1.0 - 0.04 * i:.2f}"><title>{tip}</title></rect>')
            if w > len(text) * CHAR_W + 10:
                body.append(_text(cx, y + bar_h / 2 + 4, text, anchor="middle", size=11, color="#ffffff"))
            else:
                body.append(_text(cx + w / 2 + 5, y + bar_h / 2 + 4, text, size=11, color="#3e4a59"))
    return _svg(width, int(top + len(rows) * row_h + 4), body, "documents and bytes through every stage")
