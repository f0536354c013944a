"""Running the steps (steps.py) over a stream of RawDocs, and counting what each did.

`DocumentProcessor` runs the per-document steps in order; for each kept document it also computes
the corpus steps' keys (content hash, LSH band keys, contamination flag), which the corpus-wide pass
(dedup, then decontamination) decides on. Every executor runs this same code, and counts with `Stats`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from codekiln.config import DataConfig
from codekiln.data.dedup import KEEP
from codekiln.data.document import RawDoc, document_id
from codekiln.data.pii import redact
from codekiln.data import steps as _steps
from codekiln.data.steps import STAGES, STATUS_REASON, Doc, Hygiene, Step, decode_plain, language_of

__all__ = ["STAGES", "Stats", "Outcome", "DocumentProcessor", "corpus_stage_stats"]


class Stats:
    """Per-stage docs/bytes in and out, drop counts per reason and language, PII counts."""

    def __init__(self) -> None:
        self.stages = {s: {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "dropped": {}} for s in _steps.stage_names()}
        self.dropped: dict[str, list[int]] = {}
        self.dropped_by_language: dict[str, dict[str, int]] = {}
        self.pii: dict[str, int] = {}
        self.licenses_dropped: dict[str, list[int]] = {}  # by the license stage: license -> [docs, bytes]
        self.damaged: list[dict] = []  # what each damaged part of a source lost (readers' RawDoc.damage)
        self.seconds: dict[str, float] = {}  # wall time per stage (benchmarks; never in report.json)

    def passed(self, stage: str, bytes_in: int, bytes_out: int | None = None, docs: int = 1) -> None:
        """Count documents through a stage (bytes are their total)."""
        s = self.stages[stage]
        s["docs_in"] += docs
        s["docs_out"] += docs
        s["bytes_in"] += bytes_in
        s["bytes_out"] += bytes_in if bytes_out is None else bytes_out

    def drop(self, stage: str, reason: str, nbytes: int, lang: str | None, docs: int = 1) -> None:
        """Count documents dropped by a stage (docs > 1 for paths skipped unread)."""
        s = self.stages[stage]
        s["docs_in"] += docs
        s["bytes_in"] += nbytes
        s["dropped"][reason] = s["dropped"].get(reason, 0) + docs
        d = self.dropped.setdefault(reason, [0, 0])
        d[0] += docs
        d[1] += nbytes
        by_lang = self.dropped_by_language.setdefault(lang or "unknown", {})
        by_lang[reason] = by_lang.get(reason, 0) + docs

    def to_dict(self) -> dict:
        """A JSON-able form, for task stats files."""
        return {"stages": self.stages, "dropped": self.dropped,
                "dropped_by_language": self.dropped_by_language, "pii": self.pii, "licenses_dropped": self.licenses_dropped,
                "damaged": self.damaged,
                "seconds": self.seconds}

    def merge(self, other: dict) -> None:
        """Add another Stats' to_dict() into this one."""
        for name, s in other["stages"].items():
            mine = self.stages[name]
            for k in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
                mine[k] += s[k]
            for reason, n in s["dropped"].items():
                mine["dropped"][reason] = mine["dropped"].get(reason, 0) + n
        for reason, (docs, nbytes) in other["dropped"].items():
            d = self.dropped.setdefault(reason, [0, 0])
            d[0] += docs
            d[1] += nbytes
        for lang, reasons in other["dropped_by_language"].items():
            mine = self.dropped_by_language.setdefault(lang, {})
            for reason, n in reasons.items():
                mine[reason] = mine.get(reason, 0) + n
        for kind, n in other["pii"].items():
            self.pii[kind] = self.pii.get(kind, 0) + n
        for lic, (docs, nbytes) in other.get("licenses_dropped", {}).items():
            d = self.licenses_dropped.setdefault(lic, [0, 0])
            d[0] += docs
            d[1] += nbytes
        self.damaged.extend(other.get("damaged", []))
        for stage, sec in other.get("seconds", {}).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + sec


@dataclass
class Outcome:
    """A processed document: kept (reason None) or dropped with a reason."""

    record: dict
    reason: str | None = None
    extra: dict = field(default_factory=dict)


def _decode_loose(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


class _PlainDecode(Step):
    """Stands in for the hygiene step when it is off: later steps still need the text (counted as nothing)."""

    name, section = "hygiene", "hygiene"

    def process(self, doc: Doc) -> str | None:
        """Decode without checks; a notebook that is not JSON is still `unparsable`."""
        return decode_plain(doc)


class DocumentProcessor:
    """Runs the per-document steps on RawDocs and computes the corpus steps' keys of kept documents."""

    def __init__(self, cfg: DataConfig, keep_removed: bool = False):
        self.cfg = cfg
        self.keep_removed = keep_removed
        self.pii_kinds = tuple(cfg.pii.kinds)
        # (step, whether it counts in the report): a stage that is off does not run, but the text
        # it would have decoded is still needed.
        self.steps: list[tuple[Step, bool]] = []
        for cls in _steps.DOC_STEPS:
            if cls.enabled(cfg):
                self.steps.append((cls(cfg), True))
            elif cls is Hygiene:
                self.steps.append((_PlainDecode(cfg), False))
        self.corpus_steps = [cls(cfg) for cls in _steps.CORPUS_STEPS]
        self.stats = Stats()

    def _record(self, doc: Doc, content: str, nbytes: int) -> dict:
        raw = doc.raw
        return {"id": doc.id, "content": content, "path": raw.path, "repo": raw.repo, "lang": doc.lang,
                "license": raw.license, "source": raw.source, "bytes": nbytes, "stars": raw.stars,
                "cluster_id": None}

    def _tick(self, stage: str) -> None:
        now = time.perf_counter()
        sec = self.stats.seconds
        sec[stage] = sec.get(stage, 0.0) + now - self._clock
        self._clock = now

    def _dropped(self, step: Step, reason: str, doc: Doc, nbytes: int) -> Outcome:
        raw = doc.raw
        self.stats.drop(step.name, reason, nbytes, doc.lang, docs=raw.rows)
        step.count_drop(doc, nbytes, self.stats)
        self._tick(step.name)
        if not self.keep_removed:
            return Outcome({}, reason)
        content = _decode_loose(raw.data) if doc.text is None else doc.text
        if content and self.cfg.pii.enabled:
            content = redact(content, self.pii_kinds)[0]  # removed/ must be as PII-free as data/
        return Outcome(self._record(doc, content, nbytes), reason)

    def process(self, raw: RawDoc) -> Outcome:
        """Run one document through the per-document steps; kept documents carry their corpus keys."""
        st = self.stats
        self._clock = time.perf_counter()
        doc = Doc(raw, document_id(raw.repo, raw.path, raw.data), language_of(raw))
        for step, counted in self.steps:
            bytes_in = doc.size
            reason = step.process(doc)
            if reason is not None:
                return self._dropped(step, reason, doc, bytes_in)
            if counted:
                st.passed(step.name, bytes_in, doc.size)
            self._tick(step.name)
        for kind, n in doc.pii.items():
            st.pii[kind] = st.pii.get(kind, 0) + n
        record = self._record(doc, doc.text, doc.nbytes)
        encoded = doc.text.encode("utf-8", "surrogatepass")
        extra: dict = {}
        for step in self.corpus_steps:
            if step.on or not step.defaults:
                extra.update(step.keys(doc, encoded))
                self._tick(step.name)
            else:
                extra.update(step.defaults)
        return Outcome(record, None, extra)

    def run(self, docs: Iterable[RawDoc]) -> Iterator[Outcome]:
        """Process a stream of documents."""
        for raw in docs:
            yield self.process(raw)


def corpus_stage_stats(rows, cfg: DataConfig) -> Stats:
    """Stats of the corpus steps from (status, lang, docs, bytes) rows over the documents that entered them."""
    stats = Stats()
    for step in _steps.CORPUS_STEPS:
        if not step.enabled(cfg):
            continue
        for status, lang, docs, nbytes in rows:
            if status != KEEP and status < step.code:
                continue  # dropped by an earlier stage
            if status == step.code:
                stats.drop(step.name, STATUS_REASON[step.code], nbytes, lang, docs=docs)
            else:
                stats.passed(step.name, nbytes, docs=docs)
    return stats
