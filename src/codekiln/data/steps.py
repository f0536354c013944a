"""The corpus stages as a list of steps (datatrove's shape): each a small object with a name, its config
section and `process(doc)`, run in order by `stages.DocumentProcessor`.

Two kinds:

* `Step`: decides or rewrites one document at a time (stages 1-6). `process(doc)` returns a drop
  reason, or None to pass the document on (possibly rewritten).
* `CorpusStep`: decides over the whole corpus (dedup, decontamination). Per document, in the map
  phase, `keys(doc)` computes what the corpus-wide pass needs (hashes, band keys, flags); the pass
  itself gives every document a status code, the same on every executor.

Adding a stage is one class here, added to `DOC_STEPS` or `CORPUS_STEPS`, and its config section:
the report, the stage counters and both executors read these lists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import xxhash

from codekiln.config import DataConfig
from codekiln.data.decontam import Decontaminator, load_needles
from codekiln.data.dedup import EXACT, KEEP, NEAR
from codekiln.data.document import DOCUMENT_SCHEMA, RawDoc
from codekiln.data.languages import LANGUAGES, detect_language, notebook_to_text
from codekiln.data.licenses import PERMISSIVE, license_allowed
from codekiln.data.minhash import LSHParams, MinHasher
from codekiln.data.parse_check import parse_ok
from codekiln.data.pii import redact
from codekiln.data.quality import check_hygiene, check_quality

CONTAMINATED = 3  # status code of the decontamination step, after dedup's KEEP, EXACT, NEAR
_LANG_BY_LOWER = {name.lower(): name for name in LANGUAGES}


def utf8_len(text: str) -> int:
    """UTF-8 size of text; lone surrogates count as their 3 bytes (the hygiene stage rejects them)."""
    return len(text.encode("utf-8", "surrogatepass"))


def language_of(raw: RawDoc) -> str | None:
    """Canonical language from the file name, else from the dataset's own language field."""
    lang = detect_language(raw.path)
    if lang is None and raw.lang_hint:
        lang = _LANG_BY_LOWER.get(raw.lang_hint.strip().lower())
    return lang


@dataclass
class Doc:
    """A document on its way through the steps: the reader's RawDoc and what the steps made of it."""

    raw: RawDoc
    id: str
    lang: str | None
    text: str | None = None  # None until decoded (by the hygiene step, or plainly when it is off)
    nbytes: int = 0  # UTF-8 size of text, once decoded
    pii: dict[str, int] = field(default_factory=dict)  # redactions by kind

    @property
    def size(self) -> int:
        """The document's bytes at this point: as read until decoded, then of its text."""
        return self.raw.size if self.text is None else self.nbytes

    def set_text(self, text: str) -> None:
        """Replace the content (and its size)."""
        self.text, self.nbytes = text, utf8_len(text)


# -------------------------------------------------------------------------------- per-document steps


class Step(ABC):
    """One per-document stage. `section` names its part of the data config (with an `enabled` switch)."""

    name: ClassVar[str]
    section: ClassVar[str]

    def __init__(self, cfg: DataConfig):
        self.cfg = getattr(cfg, self.section)

    @classmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """Whether this stage runs under cfg."""
        return getattr(cfg, cls.section).enabled

    @abstractmethod
    def process(self, doc: Doc) -> str | None:
        """The drop reason for doc, or None to keep it (the step may rewrite doc.text)."""

    def count_drop(self, doc: Doc, nbytes: int, stats) -> None:
        """Counters of its own for a document this step dropped, beyond the per-reason ones (stages.Stats)."""


class Read(Step):
    """Stage 0: what the reader could not read (`unreadable`, from RawDoc.error)."""

    name, section = "read", ""

    def __init__(self, cfg: DataConfig):
        self.cfg = None

    @classmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """Always: every document is read."""
        return True

    def process(self, doc: Doc) -> str | None:
        """The reader's own verdict; a record of a damaged source keeps no content."""
        if doc.raw.error:
            doc.text = ""
        return doc.raw.error

    def count_drop(self, doc: Doc, nbytes: int, stats) -> None:
        """What a damaged part of a source lost goes to report.json's `damaged`."""
        if doc.raw.damage is not None:
            stats.damaged.append(doc.raw.damage)


class Language(Step):
    """Stage 1: a known language (from the file name or the dataset's field), optionally from a list."""

    name, section = "language", "language"

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.allow = set(self.cfg.allow) if self.cfg.allow is not None else None

    def process(self, doc: Doc) -> str | None:
        """`language` when the language is unknown or not allowed."""
        if doc.lang is None or (self.allow is not None and doc.lang not in self.allow):
            return "language"
        return None


class License(Step):
    """Stage 2: an SPDX allowlist (permissive by default); unknown licenses only with allow_unknown."""

    name, section = "license", "license"

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.allow = frozenset(self.cfg.allow) if self.cfg.allow is not None else PERMISSIVE

    def process(self, doc: Doc) -> str | None:
        """`license` when the document's license expression is not allowed."""
        lic = doc.raw.license
        if license_allowed(lic, self.allow) or (lic is None and self.cfg.allow_unknown):
            return None
        return "license"

    def count_drop(self, doc: Doc, nbytes: int, stats) -> None:
        """report.json's `licenses_dropped`: what each license (or `unknown`) lost."""
        lost = stats.licenses_dropped.setdefault(doc.raw.license or "unknown", [0, 0])
        lost[0] += 1
        lost[1] += nbytes


def decode_plain(doc: Doc) -> str | None:
    """Decode without the hygiene checks (hygiene off); notebooks become their cells. A drop reason or None."""
    text = doc.raw.data.decode("utf-8", errors="replace")
    return _as_text(doc, text)


def _as_text(doc: Doc, text: str) -> str | None:
    if doc.lang == "Jupyter Notebook":
        try:
            text = notebook_to_text(text)
        except ValueError:
            doc.text = text  # removed/ shows what did not parse
            return "unparsable"
    doc.set_text(text)
    return None


class Hygiene(Step):
    """Stage 3: binary, undecodable, empty and oversized files; decodes the text the next stages read."""

    name, section = "hygiene", "hygiene"

    def process(self, doc: Doc) -> str | None:
        """`too_large`, `binary`, `encoding`, `empty`, or `unparsable` for a notebook that is not JSON."""
        if doc.raw.truncated:
            doc.text = ""
            return "too_large"
        text, reason = check_hygiene(doc.raw.data, max_bytes=self.cfg.max_bytes)
        if reason is not None:
            doc.text = ""  # dropped before decoding: removed/ carries no content
            return reason
        return _as_text(doc, text)


class Quality(Step):
    """Stage 4: line lengths, alphanumeric fraction, generated, minified and data-like files."""

    name, section = "quality", "quality"

    def process(self, doc: Doc) -> str | None:
        """The first quality check that fails, or None."""
        q = self.cfg
        return check_quality(
            doc.text, doc.lang, doc.raw.path, max_line_length=q.max_line_length,
            max_avg_line_length=q.max_avg_line_length, min_alnum_fraction=q.min_alnum_fraction,
            autogenerated=q.autogenerated, minified=q.minified, data_like=q.data_like)


class Parse(Step):
    """Stage 5: files that do not parse in their language (where a parser is available)."""

    name, section = "parse", "parse"

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.languages = set(self.cfg.languages) if self.cfg.languages is not None else None

    def process(self, doc: Doc) -> str | None:
        """`unparsable` when a parser for the language rejects the text."""
        if self.languages is None or doc.lang in self.languages:
            if parse_ok(doc.text, doc.lang) is False:
                return "unparsable"
        return None


class PII(Step):
    """Stage 6: redacts emails, public IPs and secrets (never drops)."""

    name, section = "pii", "pii"

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.kinds = tuple(self.cfg.kinds)

    def process(self, doc: Doc) -> str | None:
        """Rewrite the text with placeholders; counts go to doc.pii."""
        text, counts = redact(doc.text, self.kinds)
        for kind, n in counts.items():
            if n:
                doc.pii[kind] = doc.pii.get(kind, 0) + n
        doc.set_text(text)
        return None


# ----------------------------------------------------------------------------------- corpus steps


class CorpusStep(ABC):
    """A corpus-wide stage: `keys(doc)` per kept document in the map phase, then one status per document.

    `code` is the status this stage gives the documents it drops (with `reason`); statuses are
    decided in code order, so a document dropped by one stage never enters a later one.
    """

    name: ClassVar[str]
    reason: ClassVar[str]
    code: ClassVar[int]
    defaults: ClassVar[dict] = {}  # its keys for a document when the stage is off

    def __init__(self, cfg: DataConfig):
        self.on = self.enabled(cfg)

    @classmethod
    @abstractmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """Whether this stage runs under cfg."""

    @abstractmethod
    def keys(self, doc: Doc, encoded: bytes) -> dict:
        """What the corpus-wide pass needs of one kept document (doc.text is final; encoded is its UTF-8)."""


class ExactDedup(CorpusStep):
    """Stage 7a: same content (128-bit xxh3 of the redacted text); also the keeper policy's license key."""

    name, reason, code = "exact_dedup", "exact_duplicate", EXACT

    @classmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """dedup.enabled and dedup.exact."""
        return cfg.dedup.enabled and cfg.dedup.exact

    def keys(self, doc: Doc, encoded: bytes) -> dict:
        """Always computed: near dedup's keeper policy needs `permissive` too, and the hash is cheap."""
        return {"content_hash": xxhash.xxh3_128_digest(encoded),
                "permissive": license_allowed(doc.raw.license, PERMISSIVE)}


class NearDedup(CorpusStep):
    """Stage 7b: MinHash LSH band keys; documents sharing a band form clusters (dedup.py)."""

    name, reason, code = "near_dedup", "near_duplicate", NEAR
    defaults = {"bands": None}

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.minhasher = MinHasher(LSHParams.from_config(cfg.dedup)) if self.on else None

    @classmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """dedup.enabled and dedup.near."""
        return cfg.dedup.enabled and cfg.dedup.near

    def keys(self, doc: Doc, encoded: bytes) -> dict:
        """The band keys, or None for a document too short to near-deduplicate."""
        sig = self.minhasher.signature(doc.text)
        return {"bands": None if sig is None else self.minhasher.band_keys(sig)}


class Decontam(CorpusStep):
    """Stage 8: files that contain benchmark prompts or solutions (flagged per document, dropped after dedup)."""

    name, reason, code = "decontam", "contaminated", CONTAMINATED
    defaults = {"contaminated": False}

    def __init__(self, cfg: DataConfig):
        super().__init__(cfg)
        self.decontaminator = None
        if self.on:
            d = cfg.decontam
            self.decontaminator = Decontaminator(load_needles(d.benchmarks, d.extra_files, d.min_chars))

    @classmethod
    def enabled(cls, cfg: DataConfig) -> bool:
        """decontam.enabled."""
        return cfg.decontam.enabled

    def keys(self, doc: Doc, encoded: bytes) -> dict:
        """Whether the text holds a benchmark needle."""
        return {"contaminated": self.decontaminator.contaminated(doc.text)}


DOC_STEPS: tuple[type[Step], ...] = (Read, Language, License, Hygiene, Quality, Parse, PII)
CORPUS_STEPS: tuple[type[CorpusStep], ...] = (ExactDedup, NearDedup, Decontam)
STATUS_REASON = {s.code: s.reason for s in CORPUS_STEPS}
assert sorted(STATUS_REASON) == list(range(1, len(CORPUS_STEPS) + 1)) and KEEP == 0


def stage_names() -> tuple[str, ...]:
    """Every stage in order, as report.json lists them (read from the step lists when called)."""
    return tuple(s.name for s in DOC_STEPS) + tuple(s.name for s in CORPUS_STEPS)


STAGES = stage_names()


def stage_enabled(name: str, cfg: DataConfig) -> bool:
    """Whether the stage called `name` runs under cfg."""
    return next(s for s in DOC_STEPS + CORPUS_STEPS if s.name == name).enabled(cfg)


def work_schema(bands: int) -> pa.Schema:
    """Schema of a map task's kept documents: the Document plus the corpus steps' keys and the input order."""
    return DOCUMENT_SCHEMA.append(pa.field("order", pa.int64())).append(
        pa.field("content_hash", pa.binary(16))).append(
        pa.field("eligible", pa.bool_())).append(
        pa.field("bands", pa.list_(pa.uint64(), bands))).append(
        pa.field("contaminated", pa.bool_())).append(
        pa.field("permissive", pa.bool_()))
