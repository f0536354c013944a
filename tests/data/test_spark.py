"""The Spark executor (local[2]) gives the local executor's corpus and report, exactly."""

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from fixtures import make_damaged_parquet, make_jsonl, make_parquet_v1, make_repos, near_copy, python_module

from codekiln.cli import main
from codekiln.data.decontam import humaneval_problems

# `make test` installs the spark extra and CI has Java: there, a missing piece is a failure, not a skip.
if not os.environ.get("CI"):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark executor needs a Java runtime", allow_module_level=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-src")
    make_repos(root / "repos")
    # More near copies, in a second repository and in the JSONL source, so clusters span tasks and sources.
    extra = root / "repos" / "epsilon"
    extra.mkdir()
    (extra / "LICENSE").write_text("SPDX-License-Identifier: ISC\n")
    for i in range(6):
        (extra / f"copy{i}.py").write_text(near_copy(python_module(50 + i % 2)) + f"\n# copy {i}\n")
        (extra / f"orig{i}.py").write_text(python_module(50 + i % 2))
    he = humaneval_problems()[2]
    make_jsonl(root / "extra.jsonl", extra=[
        {"content": he["prompt"] + he["canonical_solution"], "path": "leak.py", "repo": "org/leak", "license": "MIT"},
        {"content": near_copy(python_module(51)), "repo": "org/copy", "license": "Apache-2.0"},
    ])
    (root / "pq").mkdir()
    make_parquet_v1(root / "pq" / "v1.parquet")
    make_damaged_parquet(root / "pq")  # a lost row group and a lost footer, counted alike by both executors
    # Sources as URIs: the driver plans and the executors read through pyarrow's filesystems.
    return [f"file://{root / 'repos'}", f"file://{root / 'extra.jsonl'}", f"file://{root / 'pq'}"]


def _rows(out, sub):
    return sorted(pq.read_table(out / sub).to_pylist(), key=lambda d: (d["id"], d.get("reason") or ""))


def test_spark_equals_local(sources, tmp_path):
    # Tiny tasks: the documents and their duplicates are spread over many tasks and partitions.
    common = ["--quiet", "--keep-removed", "--workers", "2", "data.task_bytes=4000"]
    local, spark = tmp_path / "local", tmp_path / "spark"
    assert main(["data", "build", *sources, "--out", str(local), *common]) == 0
    # The Spark build writes its corpus through a URI (pyarrow's filesystem on the driver, Spark's writer).
    assert main(["data", "build", *sources, "--out", f"file://{spark}", *common, "--executor", "spark",
                 "--spark-master", "local[2]", "--spark-conf", "spark.sql.shuffle.partitions=3"]) == 0
    assert json.loads((spark / "report.json").read_text()) == json.loads((local / "report.json").read_text())
    kept_local, kept_spark = _rows(local, "data"), _rows(spark, "data")
    assert kept_spark == kept_local
    assert _rows(spark, "removed") == _rows(local, "removed")
    report = json.loads((local / "report.json").read_text())
    assert report["dropped"]["near_duplicate"]["docs"] >= 8 and report["dedup"]["near_duplicate_clusters"] >= 3
    assert [d["rows"] for d in report["damaged"]] == [100, None]
    # Input order is kept in the Spark output too.
    orders = [(d["repo"], d["path"]) for d in pq.read_table(spark / "data").to_pylist()]
    assert orders == [(d["repo"], d["path"]) for d in pq.read_table(local / "data").to_pylist()]
    assert (spark / "data" / "part-00000.parquet").is_file()
    assert not (spark / "_work").exists()


def test_bad_spark_conf_is_one_line(sources, tmp_path, capsys):
    assert main(["data", "build", sources[1], "--out", str(tmp_path / "o"), "--executor", "spark",
                 "--spark-conf", "nonsense"]) == 2
    assert capsys.readouterr().err.strip() == "codekiln: error: bad --spark-conf 'nonsense': expected key=value"


@pytest.mark.slow
def test_a_source_that_stays_unavailable_stops_the_spark_build_in_one_line(tmp_path, capsys):
    # Reading /proc/self/mem at offset 0 fails with EIO every time: a storage error that never clears.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.jsonl").symlink_to("/proc/self/mem")
    out = tmp_path / "out"
    assert main(["data", "build", f"jsonl:{tmp_path / 'src' / 'x.jsonl'}", "--out", str(out), "--quiet",
                 "--executor", "spark", "--spark-master", "local[1]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("codekiln: error: the map phase stopped unfinished (source unavailable: ")
    assert "[Errno 5] Input/output error (tried 4 times)" in err and err.endswith("run the same command again to retry it")
    assert not json.loads((out / "manifest.json").read_text())["state"]["complete"]
