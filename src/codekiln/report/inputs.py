"""Reading a run folder for the report: every part optional, every malformed file a note, never a crash.

A part that is absent reads as None; a part that is present but cannot be read (truncated JSON, bad
YAML, an unreadable Parquet file) also reads as None and leaves a line in `problems`, which the page
shows in the section that needed it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# A removed document shown as an example: at most this many lines, each cut at this many characters.
EXAMPLE_LINES = 6
EXAMPLE_LINE_CHARS = 100
EXAMPLE_MAX_BYTES = 20_000  # examples are drawn from documents at most this large when a reason has any
SCAN_BATCH = 4096


class RunFolder:
    """The run folder `codekiln run` writes (ARCHITECTURE.md, "Run folder"), read leniently."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.problems: list[str] = []

    def exists(self, rel: str) -> bool:
        """Whether the part rel (a file or a directory) is there."""
        return (self.path / rel).exists()

    def json(self, rel: str):
        """The JSON at rel, or None when absent or unreadable (noted)."""
        path = self.path / rel
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.problems.append(f"{rel}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return None

    def yaml(self, rel: str):
        """The YAML mapping at rel, or None when absent, unreadable or not a mapping (noted)."""
        path = self.path / rel
        if not path.is_file():
            return None
        try:
            value = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            self.problems.append(f"{rel}: {str(exc).splitlines()[0]}")
            return None
        if value is not None and not isinstance(value, dict):
            self.problems.append(f"{rel}: not a mapping")
            return None
        return value or {}

    def metrics(self, run: str) -> list[dict] | None:
        """The records of run/metrics.jsonl in order (a broken line, as a crash can leave, is skipped)."""
        path = self.path / run / "metrics.jsonl"
        if not path.is_file():
            return None
        records = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(f"{run}/metrics.jsonl: {exc}")
            return None
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def model(self, run: str):
        """(ModelConfig, step) of the run-like directory's latest checkpoint, or None."""
        from codekiln.checkpoint import model_config, resolve
        from codekiln.errors import UserError

        if not (self.path / run / "checkpoints").is_dir():
            return None
        try:
            ckpt = resolve(self.path / run)
            info = json.loads((ckpt / "config.json").read_text())
            return model_config(ckpt), info.get("step")
        except (UserError, OSError, ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"{run}: checkpoint config unreadable ({exc})")
            return None

    def files(self, rel: str) -> list[tuple[str, int]]:
        """(path relative to rel, size in bytes) of every file under rel, sorted; [] when absent."""
        root = self.path / rel
        if root.is_file():
            return [(root.name, root.stat().st_size)]
        if not root.is_dir():
            return []
        return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())

    def removed_examples(self, per_reason: int = 2) -> dict[str, list[dict]] | None:
        """Up to per_reason dropped documents per reason from corpus/removed/ (None when it was not kept):
        the first ones in the corpus's order that are at most EXAMPLE_MAX_BYTES (any size when a reason has
        none that small), each {repo, path, lang, bytes, text} with text cut to a few short lines.

        A first pass reads only the small columns, so a corpus of gigabytes costs a scan of its reasons; the
        second reads the content of just the chosen rows."""
        import pyarrow.parquet as pq

        parts = sorted((self.path / "corpus" / "removed").glob("part-*.parquet"))
        if not parts:
            return None
        small: dict[str, list[tuple[int, int]]] = {}
        large: dict[str, list[tuple[int, int]]] = {}
        try:
            for part_no, part in enumerate(parts):
                offset = 0
                for batch in pq.ParquetFile(part).iter_batches(batch_size=SCAN_BATCH, columns=["reason", "bytes"]):
                    reasons, sizes = batch.column(0).to_pylist(), batch.column(1).to_pylist()
                    for i, (reason, size) in enumerate(zip(reasons, sizes)):
                        pick = small if 0 < (size or 0) <= EXAMPLE_MAX_BYTES else large
                        chosen = pick.setdefault(reason or "unknown", [])
                        if len(chosen) < per_reason:
                            chosen.append((part_no, offset + i))
                    offset += len(reasons)
            wanted: dict[int, set[int]] = {}
            picked: dict[str, list[tuple[int, int]]] = {}
            for reason in sorted(set(small) | set(large)):
                rows = (small.get(reason, []) + large.get(reason, []))[:per_reason]
                picked[reason] = rows
                for part_no, row in rows:
                    wanted.setdefault(part_no, set()).add(row)
            found: dict[tuple[int, int], dict] = {}
            for part_no, rows in wanted.items():
                found.update(_read_rows(parts[part_no], part_no, rows))
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
            self.problems.append(f"corpus/removed: {str(exc).splitlines()[0]}")
            return None
        return {reason: [found[key] for key in rows if key in found] for reason, rows in picked.items()}


def _read_rows(part: Path, part_no: int, rows: set[int]) -> dict[tuple[int, int], dict]:
    """The chosen rows of one Parquet part, streamed in batches up to the last of them (a part can be one
    row group of a hundred megabytes; the examples are usually near its start)."""
    import pyarrow.parquet as pq

    out, start, last = {}, 0, max(rows)
    columns = ["repo", "path", "lang", "bytes", "content"]
    for batch in pq.ParquetFile(part).iter_batches(batch_size=256, columns=columns):
        for r in sorted(r for r in rows if start <= r < start + batch.num_rows):
            row = batch.slice(r - start, 1).to_pylist()[0]
            out[(part_no, r)] = {"repo": row["repo"] or "", "path": row["path"] or "", "lang": row["lang"] or "",
                                 "bytes": row["bytes"] or 0, **excerpt(row["content"] or "")}
        start += batch.num_rows
        if start > last:
            break
    return out


def excerpt(text: str) -> dict:
    """{text, more_lines, cut}: the first EXAMPLE_LINES lines, each at most EXAMPLE_LINE_CHARS characters,
    private data redacted as the corpus would have (a file dropped before the PII stage was never redacted),
    control characters shown as U+FFFD."""
    from codekiln.data.pii import redact

    head = text[: EXAMPLE_LINES * (EXAMPLE_LINE_CHARS + 1) * 4]
    head, _ = redact(head)
    lines = head.split("\n")
    total = text.count("\n") + (0 if text.endswith("\n") else 1)
    shown, cut = [], False
    for line in lines[:EXAMPLE_LINES]:
        clean = "".join(c if c.isprintable() or c == "\t" else "\ufffd" for c in line.rstrip("\r"))
        if len(clean) > EXAMPLE_LINE_CHARS:
            clean, cut = clean[:EXAMPLE_LINE_CHARS] + "…", True
        shown.append(clean)
    while shown and not shown[-1].strip():
        shown.pop()
    return {"text": "\n".join(shown), "more_lines": max(0, total - EXAMPLE_LINES), "cut": cut}
