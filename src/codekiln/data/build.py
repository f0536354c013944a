"""`codekiln data build`: plan -> map (stages 1-6, in parallel) -> dedup + decontam -> write the corpus.

Resumability: every phase leaves its result and a completion marker under OUT/_work, written
atomically (temporary file, then rename). A rerun with the same sources and config skips
finished tasks and phases; a build killed at any point resumes and produces the same bytes as
an uninterrupted one, because task outputs never depend on the order tasks ran in.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from codekiln import __version__
from codekiln.config import Config
from codekiln.data import readers
from codekiln.data.decontam import load_needles
from codekiln.data.dedup import KEEP, KEEPER_POLICY, deduplicate
from codekiln.data.document import DOCUMENT_SCHEMA, REMOVED_SCHEMA
from codekiln.data.executor import LocalExecutor
from codekiln.data.minhash import LSHParams, candidate_probability
from codekiln.data.uri import UriPath, is_uri, move, rmtree
from codekiln.data.report import advice as report_advice
from codekiln.data.report import build_report
from codekiln.data.stages import Stats, corpus_stage_stats
from codekiln.data.steps import CONTAMINATED, STATUS_REASON, work_schema  # noqa: F401 - work_schema: benchmarks
from codekiln.errors import UserError
from codekiln.files import atomic_write_json, atomic_write_parquet
from codekiln.workers import resolve_workers

_MISSING_STARS = dict((k, m) for k, _, m in KEEPER_POLICY)["stars"]  # what the keeper policy ranks a null as
# Everything a build writes into --out (and nothing else is ever deleted there).
_OUTPUT_NAMES = {"manifest.json", "report.json", "data", "removed", "_work", "data.tmp", "removed.tmp"}


@dataclass
class BuildResult:
    """What a build did, for the CLI's summary."""

    out: Path
    report: dict
    timings: dict[str, float] = field(default_factory=dict)
    resumed_tasks: int = 0
    already_complete: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over workers

    @property
    def advice(self) -> str | None:
        """What to do when the build kept nothing for a reason the user can change (printed last), else None."""
        return report_advice(self.report)


class CorpusBuild:
    """One corpus build into one output directory."""

    def __init__(self, sources: list[str], out: str | os.PathLike, config: Config, keep_removed: bool = False,
                 workers: int | None = None, overwrite: bool = False, progress: bool = True,
                 executor: str = "local", spark_master: str | None = None, spark_conf: list[str] = ()):
        if not sources:
            raise UserError("no SOURCE given (a directory, .parquet, .jsonl, python-stdlib or python-packages)")
        self.cfg = config.data
        self.config = config
        self.sources = [readers.resolve_source(s) for s in sources]
        self.source_specs = [k if loc == k else f"{k}:{loc}" for k, loc in self.sources]
        if is_uri(str(out)):
            if executor != "spark":
                raise UserError(f"--out {out}: a corpus is written to a URI by --executor spark only; "
                                "the local executor needs a local path or a mount")
            self.out = UriPath(str(out))
        else:
            self.out = Path(out)
        self.work = self.out / "_work"
        self.keep_removed = keep_removed
        self.workers = resolve_workers(workers if workers is not None else self.cfg.workers)
        self.progress = progress
        if executor not in ("local", "spark"):
            raise UserError(f"unknown executor '{executor}' (local or spark)")
        self.executor, self.spark_master, self.spark_conf = executor, spark_master, list(spark_conf)
        self.stage_seconds: dict[str, float] = {}
        self.lsh = LSHParams.from_config(self.cfg.dedup)
        if self.cfg.decontam.enabled:
            # Fail here, in one line, rather than in every worker's initializer.
            load_needles(self.cfg.decontam.benchmarks, self.cfg.decontam.extra_files, self.cfg.decontam.min_chars)
        self.fingerprint = {
            "codekiln_version": __version__,
            "sources": self.source_specs,
            "python": readers.python_version_tag(),
            "keep_removed": keep_removed,
            # Only what changes the corpus: the seed and the data section, less how many processes ran
            # and whether work files were kept.
            "config": config.model_dump(mode="json", include={"seed", "data"},
                                        exclude={"data": {"workers", "keep_work"}}),
        }
        self._prepare_out(overwrite)

    # ------------------------------------------------------------------------------ out directory

    def _prepare_out(self, overwrite: bool) -> None:
        manifest = self.out / "manifest.json"
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} exists and is not a directory")
        if self.out.is_dir() and any(self.out.iterdir()):
            old = None
            if manifest.is_file():
                try:
                    old = json.loads(manifest.read_text())
                except (OSError, ValueError):
                    old = None
            # A directory holding only _work is a build killed before it wrote its manifest.
            names = {c.name for c in self.out.iterdir()}
            if old is None and not names <= {"_work"}:
                # Never touched, even with --overwrite: it may hold the user's own files (or the sources).
                raise UserError(f"--out {self.out} is not empty and holds no codekiln corpus; "
                                "choose another directory")
            other = old is not None and old.get("fingerprint") != self.fingerprint
            if other and not overwrite:
                raise UserError(f"--out {self.out} holds a build with other sources or config; "
                                "pass --overwrite to replace it")
            if overwrite and old is not None:
                # Only what a build writes is removed; anything else the user put there stays.
                for child in self.out.iterdir():
                    if child.name in _OUTPUT_NAMES:
                        rmtree(child) if child.is_dir() else child.unlink()
        try:
            (self.work / "tasks").mkdir(parents=True, exist_ok=True)
            probe = self.work / ".probe"
            probe.write_bytes(b"")
            probe.unlink()
            if not manifest.is_file():
                # Written before any work, so a build killed at any later point is recognized and resumed.
                atomic_write_json(manifest, self._manifest({"complete": False}))
        except OSError as exc:
            raise UserError(f"cannot write to --out {self.out}: {exc.strerror or exc}") from None

    def _manifest(self, state: dict) -> dict:
        return {"format": "codekiln-corpus/1", "fingerprint": self.fingerprint, "state": state}

    # ------------------------------------------------------------------------------------ phases

    def run(self) -> BuildResult:
        """Run (or resume) the build and return its report."""
        manifest_path = self.out / "manifest.json"
        if manifest_path.is_file():
            old = json.loads(manifest_path.read_text())
            if old.get("state", {}).get("complete"):
                if not self.cfg.keep_work:
                    rmtree(self.work)  # left by a kill just after completion
                report = json.loads((self.out / "report.json").read_text())
                return BuildResult(self.out, report, already_complete=True)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        tasks, skipped = self._plan()
        timings["plan"] = time.perf_counter() - t0
        atomic_write_json(manifest_path, self._manifest({"complete": False, "tasks": len(tasks)}))

        resumed = 0
        if self.executor == "spark":
            report = self._run_spark(tasks, skipped, timings)
        else:
            t0 = time.perf_counter()
            executor = LocalExecutor(self.cfg, self.keep_removed, self.work, self.lsh.bands, self.workers,
                                     self.progress)
            resumed = executor.run(tasks)
            timings["map"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            dedup_stats, dedup_info = self._dedup(tasks)
            timings["dedup"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            report = self._finalize(tasks, skipped, dedup_stats, dedup_info)
            timings["write"] = time.perf_counter() - t0
        atomic_write_json(manifest_path, self._manifest({"complete": True, "tasks": len(tasks)}))
        if not self.cfg.keep_work:
            rmtree(self.work)
        return BuildResult(self.out, report, timings, resumed_tasks=resumed, stage_seconds=self.stage_seconds)

    def _run_spark(self, tasks: list[dict], skipped: dict, timings: dict) -> dict:
        """Map, dedup and write on Spark; the same report as the local executor's."""
        from codekiln.data.spark_executor import SparkRunner

        runner = SparkRunner(self, self.spark_master, self.spark_conf)
        try:
            t0 = time.perf_counter()
            stats = runner.map_phase(tasks)
            timings["map"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dedup_stats, dedup_info = runner.dedup_phase()
            timings["dedup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            data_tmp, removed_tmp = self.out / "data.tmp", self.out / "removed.tmp"
            kept_rows = runner.write_phase(data_tmp, removed_tmp if self.keep_removed else None)
        finally:
            runner.stop()
        report = self._write_report(stats, skipped, dedup_stats.to_dict(), dedup_info, kept_rows)
        timings["write"] = time.perf_counter() - t0
        return report

    def _write_report(self, stats: Stats, skipped: dict, dedup_stats: dict, dedup_info: dict,
                      kept_rows: list[tuple]) -> dict:
        """Count the skipped paths and stages 7-8 in, move data/ and removed/ into place, write report.json."""
        for reason, (docs, nbytes) in sorted(skipped.items()):
            stats.drop("read", reason, nbytes, None, docs=docs)
        stats.merge(dedup_stats)
        self.stage_seconds = dict(stats.seconds)
        languages, licenses = summarize_kept(kept_rows)
        report = build_report(stats, self.cfg, languages, licenses, self._dedup_report(dedup_info))
        for name in ("data", "removed"):
            tmp, final = self.out / f"{name}.tmp", self.out / name
            if tmp.exists():
                rmtree(final)
                move(tmp, final)
        atomic_write_json(self.out / "report.json", report)
        return report

    def _plan(self) -> tuple[list[dict], dict]:
        plan_path = self.work / "plan.json"
        if plan_path.is_file():
            plan = json.loads(plan_path.read_text())
            return plan["tasks"], plan["skipped"]
        tasks, skipped = readers.plan_sources([spec for spec in self.source_specs], self.cfg)
        atomic_write_json(plan_path, {"tasks": tasks, "skipped": skipped})
        return tasks, skipped

    def _kept_path(self, task_id: int) -> Path:
        return self.work / "tasks" / f"task-{task_id:06d}.kept.parquet"

    def _removed_path(self, task_id: int) -> Path:
        return self.work / "tasks" / f"task-{task_id:06d}.removed.parquet"

    def _dedup(self, tasks: list[dict]) -> tuple[dict, dict]:
        """Stages 7-8 over every kept document; stores status and cluster ids, returns their stats."""
        result_path = self.work / "dedup.parquet"
        stats_path = self.work / "dedup.json"
        if result_path.is_file() and stats_path.is_file():
            saved = json.loads(stats_path.read_text())
            return saved["stats"], saved["info"]
        k = load_dedup_keys([self._kept_path(t["id"]) for t in tasks], self.lsh.bands)
        ids, nbytes, langs = k["id"], k["bytes"], k["lang"]
        d = self.cfg.dedup
        res = deduplicate(ids, k["content_hash"], k["bands"], k["eligible"], k["permissive"], k["stars"], nbytes,
                          k["order"], exact=d.enabled and d.exact, near=d.enabled and d.near)
        status = res.status.copy()
        if self.cfg.decontam.enabled:
            status[(status == KEEP) & k["contaminated"]] = CONTAMINATED
        n = len(ids)
        rows = []
        for code in np.unique(status):
            mask = status == code
            names, inverse = np.unique(langs[mask], return_inverse=True)
            docs = np.bincount(inverse, minlength=len(names))
            sizes = np.bincount(inverse, weights=nbytes[mask], minlength=len(names))
            rows += [(int(code), str(name) or None, int(dc), int(sz)) for name, dc, sz in zip(names, docs, sizes)]
        stats = corpus_stage_stats(rows, self.cfg)
        info = {"clusters": res.clusters, "documents": n}
        out = pa.table({"status": pa.array(status, pa.int8()), "cluster_id": pa.array(res.cluster_id.tolist(), pa.string())})
        atomic_write_parquet(result_path, out)
        atomic_write_json(stats_path, {"stats": stats.to_dict(), "info": info})
        return stats.to_dict(), info

    def _finalize(self, tasks: list[dict], skipped: dict, dedup_stats: dict, dedup_info: dict) -> dict:
        """Write data/ (and removed/), report.json; returns the report."""
        result = pq.read_table(self.work / "dedup.parquet")
        status = result.column("status").to_numpy()
        cluster_ids = result.column("cluster_id")
        data_tmp = self.out / "data.tmp"
        removed_tmp = self.out / "removed.tmp"
        for d in (data_tmp, removed_tmp):
            shutil.rmtree(d, ignore_errors=True)
        data_tmp.mkdir()
        data_writer = _PartWriter(data_tmp, DOCUMENT_SCHEMA, self.cfg.part_bytes)
        removed_writer = None
        if self.keep_removed:
            removed_tmp.mkdir()
            removed_writer = _PartWriter(removed_tmp, REMOVED_SCHEMA, self.cfg.part_bytes)
        kept_rows: list[tuple] = []
        stats = Stats()
        offset = 0
        for t in tasks:
            stats.merge(json.loads((self.work / "tasks" / f"task-{t['id']:06d}.stats.json").read_text()))
            kept = pq.read_table(self._kept_path(t["id"]))
            n = kept.num_rows
            st = status[offset : offset + n]
            kept = kept.set_column(kept.schema.get_field_index("cluster_id"), "cluster_id",
                                   cluster_ids.slice(offset, n))
            offset += n
            keep_mask = pa.array(st == KEEP)
            docs = kept.filter(keep_mask).select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA)
            data_writer.add(docs)
            if docs.num_rows:
                g = docs.group_by(["lang", "license"]).aggregate([("bytes", "count"), ("bytes", "sum")])
                kept_rows += zip(*(g.column(c).to_pylist() for c in ("lang", "license", "bytes_count", "bytes_sum")))
            if removed_writer is not None:
                removed_path = self._removed_path(t["id"])
                if removed_path.is_file():
                    removed_writer.add(pq.read_table(removed_path).cast(REMOVED_SCHEMA))
                gone = kept.filter(pa.array(st != KEEP)).select(DOCUMENT_SCHEMA.names)
                if gone.num_rows:
                    reasons = [STATUS_REASON[int(s)] for s in st[st != KEEP]]
                    removed_writer.add(gone.append_column("reason", pa.array(reasons, pa.string())).cast(REMOVED_SCHEMA))
        data_writer.close()
        if removed_writer is not None:
            removed_writer.close()
        return self._write_report(stats, skipped, dedup_stats, dedup_info, kept_rows)

    def _dedup_report(self, info: dict) -> dict:
        d, p = self.cfg.dedup, self.lsh
        curve = {f"{s:.2f}": round(float(candidate_probability(s, p.bands, p.rows)), 4)
                 for s in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)}
        return {
            "exact": d.enabled and d.exact, "near": d.enabled and d.near,
            "threshold": d.threshold, "num_perm": p.num_perm, "ngram": p.ngram, "min_tokens": p.min_tokens,
            "bands": p.bands, "rows": p.rows,
            "bands_rows_from": "config" if d.bands is not None else "threshold (min FP+FN area)",
            "candidate_probability": curve,
            "near_duplicate_clusters": info["clusters"], "documents": info["documents"],
        }


def summarize_kept(rows) -> tuple[dict, dict]:
    """report.json's `languages` and `licenses` from (lang, license, docs, bytes) rows of kept documents."""
    languages: dict[str, dict[str, int]] = {}
    licenses: dict[str, dict[str, int]] = {}
    for lang, lic, docs, nbytes in rows:
        for table, key in ((languages, lang or "unknown"), (licenses, lic or "unknown")):
            e = table.setdefault(key, {"docs": 0, "bytes": 0})
            e["docs"] += docs
            e["bytes"] += nbytes
    return languages, licenses


def load_dedup_keys(paths: list[Path], bands: int) -> dict[str, np.ndarray]:
    """The per-document keys of stages 7-8 from map task files, as numpy arrays (no content, no shingles)."""
    cols = ["id", "order", "content_hash", "eligible", "bands", "contaminated", "permissive", "stars", "bytes", "lang"]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    for path in paths:
        t = pq.read_table(path, columns=cols)
        n = t.num_rows
        parts["id"].append(np.asarray(t.column("id").to_numpy(zero_copy_only=False), dtype="U32"))
        parts["content_hash"].append(np.asarray(t.column("content_hash").to_numpy(zero_copy_only=False), dtype="S16"))
        flat = pc.list_flatten(t.column("bands")).to_numpy() if n else np.zeros(0, np.uint64)
        parts["bands"].append(np.asarray(flat, dtype=np.uint64).reshape(n, bands))
        parts["stars"].append(t.column("stars").fill_null(_MISSING_STARS).to_numpy().astype(np.int64))
        for c in ("order", "bytes"):
            parts[c].append(t.column(c).to_numpy().astype(np.int64))
        for c in ("eligible", "contaminated", "permissive"):
            parts[c].append(t.column(c).to_numpy(zero_copy_only=False).astype(bool))
        parts["lang"].append(np.asarray(t.column("lang").fill_null("").to_numpy(zero_copy_only=False), dtype="U32"))
    empty = {"id": "U32", "content_hash": "S16", "stars": np.int64, "order": np.int64, "bytes": np.int64,
             "eligible": bool, "contaminated": bool, "permissive": bool, "lang": "U32"}
    out = {}
    for c in cols:
        if parts[c]:
            out[c] = np.concatenate(parts[c])
        elif c == "bands":
            out[c] = np.zeros((0, bands), dtype=np.uint64)
        else:
            out[c] = np.zeros(0, dtype=empty[c])
    return out


class _PartWriter:
    """Writes a stream of tables into part-NNNNN.parquet files of about `part_bytes` content each."""

    def __init__(self, directory: Path, schema: pa.Schema, part_bytes: int):
        self.dir, self.schema, self.part_bytes = directory, schema, part_bytes
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.parts = 0

    def add(self, table: pa.Table) -> None:
        """Queue rows; flushes a part whenever enough content is queued."""
        if table.num_rows == 0:
            return
        self.pending.append(table)
        self.pending_bytes += pc.sum(table.column("bytes")).as_py() or 0
        if self.pending_bytes >= self.part_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is queued as one part."""
        if not self.pending and self.parts:
            return
        table = pa.concat_tables(self.pending) if self.pending else self.schema.empty_table()
        atomic_write_parquet(self.dir / f"part-{self.parts:05d}.parquet", table)
        self.parts += 1
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        """Write the last part (an empty corpus still gets one, so readers find the schema)."""
        if self.pending or self.parts == 0:
            self.flush()
