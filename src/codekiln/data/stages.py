"""The per-document stages, in order, as one processor a worker runs over a stream of RawDocs.

Stages 1-6 (language, license, hygiene, quality, parse, PII) decide or rewrite one document at a
time. For the corpus-wide stages the processor also computes what they need per document: the
content hash (exact dedup), the LSH band keys (near dedup) and the contamination flag
(decontamination, applied after dedup as stage 8). Every executor runs this same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import time
from dataclasses import dataclass, field

import xxhash

from codekiln.config import DataConfig
from codekiln.data.decontam import Decontaminator, load_needles
from codekiln.data.document import RawDoc, document_id
from codekiln.data.languages import LANGUAGES, detect_language, notebook_to_text
from codekiln.data.licenses import PERMISSIVE, license_allowed
from codekiln.data.minhash import LSHParams, MinHasher
from codekiln.data.parse_check import parse_ok
from codekiln.data.pii import redact
from codekiln.data.quality import check_hygiene, check_quality

STAGES = ("read", "language", "license", "hygiene", "quality", "parse", "pii",
          "exact_dedup", "near_dedup", "decontam")
_LANG_BY_LOWER = {name.lower(): name for name in LANGUAGES}


class Stats:
    """Per-stage docs/bytes in and out, drop counts per reason and language, PII counts."""

    def __init__(self) -> None:
        self.stages = {s: {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "dropped": {}} for s in STAGES}
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


class DocumentProcessor:
    """Runs stages 1-6 on RawDocs and prepares the keys of stages 7-8."""

    def __init__(self, cfg: DataConfig, keep_removed: bool = False):
        self.cfg = cfg
        self.keep_removed = keep_removed
        self.allow_langs = set(cfg.language.allow) if cfg.language.allow is not None else None
        self.allow_licenses = frozenset(cfg.license.allow) if cfg.license.allow is not None else PERMISSIVE
        self.parse_langs = set(cfg.parse.languages) if cfg.parse.languages is not None else None
        self.pii_kinds = tuple(cfg.pii.kinds)
        self.lsh = LSHParams.from_config(cfg.dedup)
        self.minhasher = MinHasher(self.lsh) if cfg.dedup.enabled and cfg.dedup.near else None
        self.decontaminator = None
        if cfg.decontam.enabled:
            needles = load_needles(cfg.decontam.benchmarks, cfg.decontam.extra_files, cfg.decontam.min_chars)
            self.decontaminator = Decontaminator(needles)
        self.stats = Stats()

    def _record(self, raw: RawDoc, doc_id: str, content: str, lang: str | None, nbytes: int) -> dict:
        return {"id": doc_id, "content": content, "path": raw.path, "repo": raw.repo, "lang": lang,
                "license": raw.license, "source": raw.source, "bytes": nbytes, "stars": raw.stars,
                "cluster_id": None}

    def _tick(self, stage: str) -> None:
        now = time.perf_counter()
        sec = self.stats.seconds
        sec[stage] = sec.get(stage, 0.0) + now - self._clock
        self._clock = now

    def _dropped(self, stage: str, reason: str, raw: RawDoc, doc_id: str, lang: str | None,
                 nbytes: int, text: str | None = None) -> Outcome:
        self.stats.drop(stage, reason, nbytes, lang, docs=raw.rows)
        if raw.damage is not None:
            self.stats.damaged.append(raw.damage)
        self._tick(stage)
        if not self.keep_removed:
            return Outcome({}, reason)
        content = _decode_loose(raw.data) if text is None else text
        if content and self.cfg.pii.enabled:
            content = redact(content, self.pii_kinds)[0]  # removed/ must be as PII-free as data/
        return Outcome(self._record(raw, doc_id, content, lang, nbytes), reason)

    def language_of(self, raw: RawDoc) -> str | None:
        """Canonical language from the file name, else from the dataset's own language field."""
        lang = detect_language(raw.path)
        if lang is None and raw.lang_hint:
            lang = _LANG_BY_LOWER.get(raw.lang_hint.strip().lower())
        return lang

    def process(self, raw: RawDoc) -> Outcome:
        """Run one document through stages 1-6; kept documents carry their dedup/decontam keys."""
        cfg, st = self.cfg, self.stats
        self._clock = time.perf_counter()
        size = raw.size
        doc_id = document_id(raw.repo, raw.path, raw.data)
        lang = self.language_of(raw)
        if raw.error:
            return self._dropped("read", raw.error, raw, doc_id, lang, size, "")
        st.passed("read", size)
        self._tick("read")

        if cfg.language.enabled:
            if lang is None or (self.allow_langs is not None and lang not in self.allow_langs):
                return self._dropped("language", "language", raw, doc_id, lang, size)
            st.passed("language", size)
            self._tick("language")

        if cfg.license.enabled:
            ok = license_allowed(raw.license, self.allow_licenses)
            if not ok and not (raw.license is None and cfg.license.allow_unknown):
                lost = st.licenses_dropped.setdefault(raw.license or "unknown", [0, 0])
                lost[0] += 1
                lost[1] += size
                return self._dropped("license", "license", raw, doc_id, lang, size)
            st.passed("license", size)
            self._tick("license")

        if cfg.hygiene.enabled:
            if raw.truncated:
                return self._dropped("hygiene", "too_large", raw, doc_id, lang, size, "")
            text, reason = check_hygiene(raw.data, max_bytes=cfg.hygiene.max_bytes)
            if reason is not None:
                return self._dropped("hygiene", reason, raw, doc_id, lang, size, "")
        else:
            text = raw.data.decode("utf-8", errors="replace")
        if lang == "Jupyter Notebook":
            try:
                text = notebook_to_text(text)
            except ValueError:
                return self._dropped("hygiene", "unparsable", raw, doc_id, lang, size, text)
        nbytes = len(text.encode("utf-8", "surrogatepass"))
        if cfg.hygiene.enabled:
            st.passed("hygiene", size, nbytes)
        self._tick("hygiene")

        if cfg.quality.enabled:
            q = cfg.quality
            reason = check_quality(
                text, lang, raw.path, max_line_length=q.max_line_length, max_avg_line_length=q.max_avg_line_length,
                min_alnum_fraction=q.min_alnum_fraction, autogenerated=q.autogenerated, minified=q.minified,
                data_like=q.data_like)
            if reason is not None:
                return self._dropped("quality", reason, raw, doc_id, lang, nbytes, text)
            st.passed("quality", nbytes)
            self._tick("quality")

        if cfg.parse.enabled:
            if self.parse_langs is None or lang in self.parse_langs:
                if parse_ok(text, lang) is False:
                    return self._dropped("parse", "unparsable", raw, doc_id, lang, nbytes, text)
            st.passed("parse", nbytes)
            self._tick("parse")

        if cfg.pii.enabled:
            text, counts = redact(text, self.pii_kinds)
            for kind, n in counts.items():
                if n:
                    st.pii[kind] = st.pii.get(kind, 0) + n
            before, nbytes = nbytes, len(text.encode("utf-8", "surrogatepass"))
            st.passed("pii", before, nbytes)
            self._tick("pii")

        record = self._record(raw, doc_id, text, lang, nbytes)
        encoded = text.encode("utf-8", "surrogatepass")
        extra = {"content_hash": xxhash.xxh3_128_digest(encoded), "bands": None, "contaminated": False,
                 "permissive": license_allowed(raw.license, PERMISSIVE)}
        self._tick("exact_dedup")
        if self.minhasher is not None:
            sig = self.minhasher.signature(text)
            if sig is not None:
                extra["bands"] = self.minhasher.band_keys(sig)
            self._tick("near_dedup")
        if self.decontaminator is not None:
            extra["contaminated"] = self.decontaminator.contaminated(text)
            self._tick("decontam")
        return Outcome(record, None, extra)

    def run(self, docs: Iterable[RawDoc]) -> Iterator[Outcome]:
        """Process a stream of documents."""
        for raw in docs:
            yield self.process(raw)
