"""The corpus build on Apache Spark (`codekiln data build ... --executor spark`).

The same plan, reader code and stage code as the local executor, distributed:

1. The planned tasks become a DataFrame, one task per partition. A first Arrow-batch UDF
   (`mapInArrow`) reads each task's documents (`readers.read_task`), a second runs stages 1-6
   (`stages.DocumentProcessor`) and also emits each batch's counters as a `stats` row, so the
   report is counted by exactly the code the local executor uses.
2. Exact dedup is a window over `content_hash`; near dedup explodes the LSH band keys, joins each
   document to the smallest document of its bucket (a shuffle per band key, never a list of all
   candidate pairs), and finds clusters with a distributed min-label propagation with pointer
   jumping (connected components in O(log diameter) rounds of joins).
3. The keeper policy, cluster ids and report are those of the local executor, so both give the
   same kept documents and the same counts.

Intermediate results live under OUT/_work/spark, each written once with Spark's `_SUCCESS`
marker; a rerun skips phases already finished.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pyarrow as pa

from codekiln.config import DataConfig
from codekiln.data.dedup import EXACT, KEEP, KEEPER_POLICY, NEAR
from codekiln.data.document import DOCUMENT_SCHEMA, REMOVED_SCHEMA, RawDoc
from codekiln.data.faults import MARKER, SourceUnavailable
from codekiln.data.stages import Stats, corpus_stage_stats
from codekiln.data.steps import CONTAMINATED, STATUS_REASON
from codekiln.data.uri import move, rmtree
from codekiln.errors import UserError
from codekiln.files import atomic_write_json

_RAW_DDL = ("order long, source string, repo string, path string, data binary, license string, stars long, "
            "lang_hint string, size long, truncated boolean, error string, rows long, damage string")
_PROCESSED_DDL = ("kind string, order long, id string, content string, path string, repo string, lang string, "
                  "license string, source string, bytes long, stars long, reason string, content_hash binary, "
                  "eligible boolean, bands array<long>, contaminated boolean, permissive boolean, stats string")
_BATCH_BYTES = 32_000_000
_MAX_ROUNDS = 64


def source_unavailable_in(text: str) -> str | None:
    """The SourceUnavailable message inside a failed Spark job's error text (a worker's traceback), if any."""
    for line in text.splitlines():
        at = line.find(MARKER)
        if at >= 0:
            return line[at:].strip()
    return None


def spark_session(master: str | None, conf: list[str], workers: int):
    """(SparkSession, whether we started it): the active session when there is one, else a new one."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("--executor spark needs PySpark: pip install 'codekiln[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        # Inside a Databricks job or a notebook: use the cluster's session, and never stop it.
        for item in conf:
            key, _, value = item.partition("=")
            active.conf.set(key, value)
        return active, False
    # Python workers must run this interpreter (with codekiln installed), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("codekiln-data-build")
    builder = builder.master(master or f"local[{workers}]")
    settings = {"spark.ui.showConsoleProgress": "false", "spark.sql.execution.arrow.maxRecordsPerBatch": "2000"}
    if (master or "local").startswith("local"):
        settings.update({"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": str(max(4, 2 * workers)),
                         "spark.driver.memory": "2g"})
    for item in conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad --spark-conf '{item}': expected key=value")
        settings[key] = value
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark, True


def _read_batches(task_rows, max_bytes):
    """mapInArrow body: planned tasks -> their raw documents, in Arrow batches."""
    from codekiln.data.readers import read_task

    names = [f.split()[0] for f in _RAW_DDL.split(", ")]
    for batch in task_rows:
        for task_id, spec in zip(batch.column("task_id").to_pylist(), batch.column("spec").to_pylist()):
            rows, size = {n: [] for n in names}, 0
            for seq, raw in enumerate(read_task(json.loads(spec), max_bytes)):
                rows["order"].append((task_id << 32) | seq)
                for n in names[1:]:
                    rows[n].append(getattr(raw, n))
                if raw.damage is not None:
                    rows["damage"][-1] = json.dumps(raw.damage, sort_keys=True)
                size += len(raw.data)
                if size >= _BATCH_BYTES:
                    yield pa.RecordBatch.from_pydict(rows)
                    rows, size = {n: [] for n in names}, 0
            if rows["order"]:
                yield pa.RecordBatch.from_pydict(rows)


def _process_batches(raw_rows, cfg_json: str, keep_removed: bool):
    """mapInArrow body: raw documents -> stages 1-6, plus one `stats` row per partition."""
    from codekiln.data.stages import DocumentProcessor

    proc = DocumentProcessor(DataConfig.model_validate_json(cfg_json), keep_removed)
    names = [f.split()[0] for f in _PROCESSED_DDL.split(", ")]
    for batch in raw_rows:
        out = {n: [] for n in names}
        cols = {n: batch.column(n).to_pylist() for n in batch.schema.names}
        for i in range(batch.num_rows):
            raw = RawDoc(cols["source"][i], cols["repo"][i], cols["path"][i], cols["data"][i] or b"",
                         license=cols["license"][i], stars=cols["stars"][i], lang_hint=cols["lang_hint"][i],
                         size=cols["size"][i], truncated=cols["truncated"][i], error=cols["error"][i],
                         rows=cols["rows"][i],
                         damage=json.loads(cols["damage"][i]) if cols["damage"][i] is not None else None)
            outcome = proc.process(raw)
            if outcome.reason is not None and not keep_removed:
                continue
            rec = outcome.record
            extra = outcome.extra
            bands = extra.get("bands")
            row = {**{n: None for n in names}, **{k: rec[k] for k in rec if k in out}}
            row.update(kind="doc", order=cols["order"][i], reason=outcome.reason,
                       content_hash=extra.get("content_hash"), eligible=bands is not None,
                       bands=None if bands is None else bands.view("int64").tolist(),
                       contaminated=extra.get("contaminated"), permissive=extra.get("permissive"))
            for n in names:
                out[n].append(row[n])
        if out["kind"]:
            yield pa.RecordBatch.from_pydict(out, schema=_processed_arrow_schema())
    stats_row = {n: [None] for n in names}
    stats_row["kind"] = ["stats"]
    stats_row["stats"] = [json.dumps(proc.stats.to_dict())]
    yield pa.RecordBatch.from_pydict(stats_row, schema=_processed_arrow_schema())


def _processed_arrow_schema() -> pa.Schema:
    types = {"string": pa.string(), "long": pa.int64(), "binary": pa.binary(), "boolean": pa.bool_(),
             "array<long>": pa.list_(pa.int64())}
    return pa.schema([(f.split()[0], types[f.split()[1]]) for f in _PROCESSED_DDL.split(", ")])


def _done(path: Path) -> bool:
    return (path / "_SUCCESS").exists()


def _spark_path(path) -> str:
    """How Spark must name a path: local paths as file:// URIs, whatever the cluster's default filesystem."""
    return path.resolve().as_uri() if isinstance(path, Path) else str(path)


class SparkRunner:
    """Runs the map, dedup and write phases of one CorpusBuild on Spark."""

    def __init__(self, build, master: str | None, conf: list[str]):
        self.build = build
        self.cfg = build.cfg
        self.work = build.work / "spark"
        self.work.mkdir(parents=True, exist_ok=True)
        # Spark addresses local directories by path and stores by URI; str() gives each its form.
        self.spark, self._owned = spark_session(master, conf, build.workers)

    # ------------------------------------------------------------------------------------ map
    def map_phase(self, tasks: list[dict]) -> Stats:
        """Stages 1-6 on every task; returns the merged counters."""
        path = self.work / "processed"
        if not _done(path):
            spark = self.spark
            rows = [(t["id"], json.dumps(t)) for t in tasks]
            tasks_df = spark.createDataFrame(
                spark.sparkContext.parallelize(rows, max(1, len(rows))), "task_id long, spec string")
            max_bytes = self.cfg.hygiene.max_bytes if self.cfg.hygiene.enabled else None
            raw = tasks_df.mapInArrow(lambda it: _read_batches(it, max_bytes), _RAW_DDL)
            cfg_json, keep_removed = self.cfg.model_dump_json(), self.build.keep_removed
            processed = raw.mapInArrow(lambda it: _process_batches(it, cfg_json, keep_removed), _PROCESSED_DDL)
            try:
                processed.write.mode("overwrite").parquet(_spark_path(path))
            except Exception as exc:  # noqa: BLE001 - only a source that stayed unavailable is the user's to fix
                cause = source_unavailable_in(str(exc))
                if cause is None:
                    raise
                # Spark retried the task (spark.task.maxFailures) and failed the job: nothing was marked done.
                raise SourceUnavailable(f"the map phase stopped unfinished ({cause}); "
                                        "run the same command again to retry it") from None
        stats = Stats()
        for row in self.spark.read.parquet(_spark_path(path)).filter("kind = 'stats'").select("stats").collect():
            stats.merge(json.loads(row["stats"]))
        return stats

    # ---------------------------------------------------------------------------------- dedup
    def dedup_phase(self) -> tuple[Stats, dict]:
        """Stages 7-8: status and cluster id per kept document, written under _work/spark/dedup."""
        from pyspark.sql import functions as F

        path = self.work / "dedup"
        info_path = self.work / "dedup.json"
        if not (_done(path) and info_path.is_file()):
            kept = (self.spark.read.parquet(_spark_path(self.work / "processed"))
                    .filter("kind = 'doc' AND reason IS NULL")
                    .select("order", "id", "content_hash", "eligible", "bands", "permissive", "stars", "bytes",
                            "contaminated", "lang"))
            result, clusters = self._deduplicate(kept)
            result.write.mode("overwrite").parquet(_spark_path(path))
            n = self.spark.read.parquet(_spark_path(path)).count()
            atomic_write_json(info_path, {"clusters": clusters, "documents": n})
        info = json.loads(info_path.read_text())
        agg = (self.spark.read.parquet(_spark_path(path)).groupBy("status", "lang")
               .agg(F.count(F.lit(1)).alias("docs"), F.sum("bytes").alias("bytes")).collect())
        rows = [(r["status"], r["lang"], r["docs"], r["bytes"]) for r in agg]
        return corpus_stage_stats(rows, self.cfg), info

    def _policy(self):
        """dedup.KEEPER_POLICY as Spark sort columns."""
        from pyspark.sql import functions as F

        cols = []
        for name, largest_first, missing in KEEPER_POLICY:
            col = F.col(name) if missing is None else F.coalesce(F.col(name), F.lit(missing))
            cols.append(col.desc() if largest_first else col.asc())
        return cols

    def _deduplicate(self, kept):
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        d = self.cfg.dedup
        exact, near = d.enabled and d.exact, d.enabled and d.near
        df = kept
        if exact:
            w = Window.partitionBy("content_hash").orderBy(*self._policy())
            df = df.withColumn("rep", F.first("order").over(w))
        else:
            df = df.withColumn("rep", F.col("order"))
        df = df.withColumn("status", F.when(F.col("rep") != F.col("order"), F.lit(EXACT)).otherwise(F.lit(KEEP)))
        df = df.localCheckpoint()
        clusters = 0
        if near:
            cand = df.filter((F.col("status") == KEEP) & F.col("eligible"))
            buckets = cand.select("order", F.posexplode("bands").alias("band", "key"))
            w = Window.partitionBy("band", "key")
            edges = (buckets.withColumn("m", F.min("order").over(w)).filter(F.col("order") != F.col("m"))
                     .select(F.col("order").alias("src"), F.col("m").alias("dst")).distinct().localCheckpoint())
            labels = self._components(cand.select(F.col("order").alias("node")), edges)
            clusters = labels.groupBy("label").count().filter("count >= 2").count()
            df = (df.join(labels.withColumnRenamed("node", "order"), "order", "left")
                  .withColumn("comp", F.coalesce(F.col("label"), F.col("order"))).drop("label"))
            in_cand = (F.col("status") == KEEP) & F.col("eligible")
            wk = Window.partitionBy("comp").orderBy(*self._policy())
            df = df.withColumn("rk", F.when(in_cand, F.row_number().over(wk)))
            df = df.withColumn("status", F.when(in_cand & (F.col("rk") > 1), F.lit(NEAR)).otherwise(F.col("status")))
            df = df.drop("rk").localCheckpoint()
        else:
            df = df.withColumn("comp", F.col("order"))
        # Exact duplicates belong to the cluster of the document they duplicate.
        reps = df.select(F.col("order").alias("rep"), F.col("comp").alias("rep_comp"))
        df = df.join(reps, "rep", "left").withColumn("comp", F.coalesce(F.col("rep_comp"), F.col("comp")))
        df = df.withColumn("cluster_id", F.min("id").over(Window.partitionBy("comp")))
        if self.cfg.decontam.enabled:
            df = df.withColumn("status", F.when((F.col("status") == KEEP) & F.col("contaminated"),
                                                F.lit(CONTAMINATED)).otherwise(F.col("status")))
        return df.select("order", "status", "cluster_id", "lang", "bytes"), clusters

    def _components(self, nodes, edges):
        """Connected components of (src, dst) edges: label = smallest node of the component."""
        from pyspark.sql import functions as F

        labels = nodes.select("node", F.col("node").alias("label")).localCheckpoint()
        for _ in range(_MAX_ROUNDS):
            e = (edges.join(labels.withColumnRenamed("node", "src").withColumnRenamed("label", "ls"), "src")
                 .join(labels.withColumnRenamed("node", "dst").withColumnRenamed("label", "ld"), "dst")
                 .select("src", "dst", F.least("ls", "ld").alias("m")))
            msgs = e.select(F.col("src").alias("node"), "m").union(e.select(F.col("dst").alias("node"), "m"))
            new = (labels.union(msgs.withColumnRenamed("m", "label")).groupBy("node")
                   .agg(F.min("label").alias("label")))
            # Pointer jumping: a node takes its label's label, halving chains every round.
            parent = new.select(F.col("node").alias("label"), F.col("label").alias("grand"))
            new = new.join(parent, "label", "left").select(
                "node", F.least("label", F.coalesce("grand", "label")).alias("label")).localCheckpoint()
            changed = new.join(labels.withColumnRenamed("label", "old"), "node").filter("label != old").count()
            labels = new
            if changed == 0:
                return labels
        raise RuntimeError(f"connected components did not converge in {_MAX_ROUNDS} rounds")

    # ---------------------------------------------------------------------------------- write
    def write_phase(self, tmp_data: Path, tmp_removed: Path | None) -> list[tuple]:
        """data/ (and removed/) parts in input order; returns (lang, license, docs, bytes) of kept docs."""
        from pyspark.sql import functions as F

        processed = self.spark.read.parquet(_spark_path(self.work / "processed")).filter("kind = 'doc'")
        dedup = self.spark.read.parquet(_spark_path(self.work / "dedup")).select("order", "status", "cluster_id")
        kept = processed.filter("reason IS NULL").join(dedup, "order")
        final = kept.filter(F.col("status") == KEEP)
        agg = final.groupBy("lang", "license").agg(F.count(F.lit(1)).alias("docs"), F.sum("bytes").alias("bytes"))
        summary = [(r["lang"], r["license"], r["docs"], r["bytes"]) for r in agg.collect()]
        self._write_parts(final.select("order", *DOCUMENT_SCHEMA.names), tmp_data, DOCUMENT_SCHEMA)
        if tmp_removed is not None:
            reason = F.create_map(*[x for code, r in STATUS_REASON.items() for x in (F.lit(code), F.lit(r))])
            gone = kept.filter(F.col("status") != KEEP).withColumn("reason", reason[F.col("status")])
            early = processed.filter("reason IS NOT NULL").withColumn("cluster_id", F.lit(None).cast("string"))
            removed = early.select("order", *REMOVED_SCHEMA.names).unionByName(gone.select("order", *REMOVED_SCHEMA.names))
            self._write_parts(removed, tmp_removed, REMOVED_SCHEMA)
        return summary

    def _write_parts(self, df, directory: Path, schema: pa.Schema) -> None:
        """Write rows sorted by input order as part-NNNNN.parquet files of about part_bytes each."""
        from pyspark.sql import functions as F

        total = df.agg(F.sum("bytes")).collect()[0][0] or 0
        parts = max(1, math.ceil(total / self.cfg.part_bytes))
        rmtree(directory)
        (df.repartitionByRange(parts, "order").sortWithinPartitions("order").drop("order")
         .select(*schema.names).write.option("compression", "zstd").parquet(_spark_path(directory)))
        if not (directory / "_SUCCESS").exists():
            raise RuntimeError(f"Spark wrote no {directory}: the driver and the executors see different filesystems")
        # Spark names files part-<partition>-<uuid>...; range partitions are in input order: renumber them.
        for i, f in enumerate(sorted(directory.glob("part-*.parquet"), key=lambda p: p.name)):
            move(f, directory / f"part-{i:05d}.parquet")
        for f in directory.iterdir():
            if not f.name.startswith("part-") or f.name.endswith(".crc"):
                f.unlink()

    def stop(self) -> None:
        """Stop the SparkSession if this build started it."""
        if self._owned:
            self.spark.stop()
