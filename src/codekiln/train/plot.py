"""`codekiln plot RUN`: loss, bits/byte and throughput curves from metrics.jsonl to PNG files in RUN/plots."""

from __future__ import annotations

import os
from pathlib import Path

from codekiln.errors import UserError
from codekiln.train.metrics import read


def _figure(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, list, list]]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [s for s in series if s[1]]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, xs, ys in series:
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_run(run: str | Path) -> list[Path]:
    """Render the run's curves; returns the PNG paths written."""
    run = Path(run)
    records = read(run)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    if not train and not val:
        raise UserError(f"{run}/metrics.jsonl holds no training or validation records yet")
    out = run / "plots"
    out.mkdir(exist_ok=True)
    tokens_m = lambda rs: [r["tokens"] / 1e6 for r in rs]  # noqa: E731
    val_tokens = {0: 0.0, **{r["step"]: r["tokens"] / 1e6 for r in train}}
    val_x = [val_tokens.get(r["step"], float(r["step"])) for r in val]
    xlabel_val = "tokens (M)" if all(r["step"] in val_tokens for r in val) else "step"
    loss_series = [("train loss", tokens_m(train), [r["loss"] for r in train]),
                   ("val loss", val_x if xlabel_val == "tokens (M)" else [], [r["val_loss"] for r in val])]
    langs = sorted({lang for r in val for lang in r.get("val_bpb_by_lang", {})})
    bpb_series = [("all", val_x, [r["val_bpb"] for r in val])]
    for lang in langs:
        pts = [(x, r["val_bpb_by_lang"][lang]) for x, r in zip(val_x, val) if lang in r.get("val_bpb_by_lang", {})]
        bpb_series.append((lang, [p[0] for p in pts], [p[1] for p in pts]))
    written = [
        _figure(out / "loss.png", "loss", "tokens (M)", "cross-entropy (nats/token)", loss_series),
        _figure(out / "bits_per_byte.png", "validation bits per byte", xlabel_val, "bits/byte", bpb_series),
        _figure(out / "throughput.png", "throughput", "step", "tokens/s",
                [("tokens/s", [r["step"] for r in train], [r["tokens_per_s"] for r in train])]),
    ]
    return [p for p in written if p is not None]
