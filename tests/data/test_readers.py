"""Every reader: repositories (walk rules, licenses), Parquet v1/v2, JSONL(.gz), the built-in sources."""

import gzip
import json

import pytest
from fixtures import make_jsonl, make_parquet_v1, make_parquet_v2, make_repos, python_module

from codekiln.config import DataConfig
from codekiln.data.readers import plan_sources, read_task, resolve_source
from codekiln.errors import UserError


def _read_all(specs, cfg=None):
    cfg = cfg or DataConfig()
    tasks, skipped = plan_sources(specs, cfg)
    docs = [d for t in tasks for d in read_task(t, cfg.hygiene.max_bytes)]
    return docs, skipped, tasks


def test_repos_walk_rules(tmp_path):
    make_repos(tmp_path / "repos")
    docs, skipped, _ = _read_all([str(tmp_path / "repos")])
    paths = {(d.repo, d.path) for d in docs}
    assert ("alpha", "pkg/core.py") in paths and ("alpha", "sub/kept.py") in paths
    assert ("alpha", "logo.png") in paths  # read, then dropped by the language stage
    # .gitignore at the top and in a subdirectory; vendored trees never read.
    assert not any(p.endswith((".log", "local_settings.py")) or "build_out" in p or "node_modules" in p for _, p in paths)
    assert skipped["gitignored"][0] == 3  # notes.log, build_out/gen.py, sub/local_settings.py
    assert skipped["vendored"][0] == 2
    lic = {d.repo: d.license for d in docs}
    assert lic["alpha"] == "MIT" and lic["beta"] == "GPL-3.0-only" and lic["delta"] == "Apache-2.0"
    assert lic["gamma"] is None
    assert all(d.source == "repos" for d in docs)


def test_single_repo_and_order_is_stable(tmp_path):
    make_repos(tmp_path / "repos")
    one = tmp_path / "repos" / "alpha"
    docs, _, _ = _read_all([str(one)])
    assert {d.repo for d in docs} == {"alpha"}
    again, _, _ = _read_all([str(one)])
    assert [d.path for d in docs] == [d.path for d in again] == sorted(d.path for d in docs)


def test_gitignore_can_be_disabled(tmp_path):
    make_repos(tmp_path / "repos")
    cfg = DataConfig.model_validate({"walk": {"respect_gitignore": False, "skip_dirs": []}})
    docs, skipped, _ = _read_all([str(tmp_path / "repos")], cfg)
    paths = {d.path for d in docs}
    assert "notes.log" in paths and "node_modules/left-pad/index.js" in paths
    assert "gitignored" not in skipped and "vendored" not in skipped


def test_parquet_v1_and_v2(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    make_parquet_v1(d / "v1.parquet")
    make_parquet_v2(d / "v2.parquet")
    docs, _, tasks = _read_all([str(d)])
    assert {t["kind"] for t in tasks} == {"parquet"}
    by_path = {x.path: x for x in docs}
    v1 = by_path["src/mod_201.py"]
    assert (v1.repo, v1.license, v1.stars, v1.lang_hint) == ("stack/repo201", "Apache-2.0 AND MIT", None, "Python")
    assert by_path["src/mod_200.py"].stars == 10
    v2 = by_path["/lib/thing.py"]
    assert (v2.repo, v2.license, v2.stars, v2.lang_hint) == ("v2/first", "BSD-3-Clause", 42, "Python")
    assert by_path["/web/app.ts"].license is None


def test_parquet_broken_file_is_counted_not_fatal(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    make_parquet_v1(d / "good.parquet")
    (d / "broken.parquet").write_bytes(b"PAR1 this is not parquet at all")
    docs, _, _ = _read_all([str(d)])
    bad = [x for x in docs if x.error]
    assert len(bad) == 1 and bad[0].error == "unreadable" and bad[0].path == "broken.parquet"
    assert sum(1 for x in docs if not x.error) == 3


def test_parquet_without_content_is_a_user_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"blob_id": ["x"], "path": ["a.py"]}), tmp_path / "meta.parquet")
    with pytest.raises(UserError, match="no 'content' column"):
        plan_sources([str(tmp_path / "meta.parquet")], DataConfig())


def test_jsonl_plain_gz_and_malformed(tmp_path):
    f = tmp_path / "docs.jsonl"
    make_jsonl(f)
    docs, _, _ = _read_all([str(f)])
    assert [d.error for d in docs].count("unreadable") == 1
    good = [d for d in docs if not d.error]
    assert [d.path for d in good] == ["a/one.py", "b/more_copy.py", "c/gpl.py"]
    assert good[0].license == "MIT" and good[0].stars == 3 and good[0].repo == "org/jsonl-repo"
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    docs_gz, _, _ = _read_all([str(gz)])
    assert [(d.path, d.data) for d in docs_gz] == [(d.path.replace("docs.jsonl", "docs.jsonl.gz"), d.data) for d in docs]


def test_jsonl_wrong_types_and_truncated_gzip(tmp_path):
    f = tmp_path / "odd.jsonl"
    f.write_text("[1, 2]\n" + json.dumps({"content": 5}) + "\n" + json.dumps({"content": "x = 1\n"}) + "\n")
    docs, _, _ = _read_all([str(f)])
    assert [d.error for d in docs] == ["unreadable", "unreadable", None]
    gz = tmp_path / "cut.jsonl.gz"
    payload = gzip.compress(("\n".join(json.dumps({"content": python_module(i)}) for i in range(50))).encode())
    gz.write_bytes(payload[: len(payload) // 2])
    docs, _, _ = _read_all([str(gz)])
    assert docs and docs[-1].error == "unreadable" and all(d.error is None for d in docs[:-1])


def test_jsonl_byte_ranges_cover_every_line_once(tmp_path):
    f = tmp_path / "big.jsonl"
    rows = [{"content": python_module(i, functions=2), "path": f"f{i}.py"} for i in range(200)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(task_bytes=3000)
    docs, _, tasks = _read_all([str(f)], cfg)
    assert len(tasks) > 10
    assert [d.path for d in docs] == [r["path"] for r in rows]


def test_source_errors(tmp_path):
    with pytest.raises(UserError, match="source not found"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="must be .parquet or .jsonl"):
        resolve_source(str(tmp_path / "x.csv"))
    assert resolve_source(f"repos:{tmp_path}") == ("repos", str(tmp_path.resolve()))


def test_python_stdlib_source():
    tasks, _ = plan_sources(["python-stdlib"], DataConfig())
    items = [it for t in tasks for it in t["items"]]
    repos = {it[0] for it in items}
    assert {"json", "asyncio", "os"} <= repos
    assert {it[4] for it in items} == {"PSF-2.0"}
    assert not any(it[1].startswith("site-packages") for it in items)
    assert ["json", "json/decoder.py"] in [it[:2] for it in items]


def test_python_packages_source():
    tasks, skipped = plan_sources(["python-packages"], DataConfig())
    items = [it for t in tasks for it in t["items"]]
    lic = {it[0]: it[4] for it in items}
    assert lic.get("pytest") == "MIT"
    assert lic.get("pyarrow") == "Apache-2.0"
    assert all(not it[1].startswith("..") and ".dist-info/" not in it[1] for it in items)
    # pip vendors its dependencies under pip/_vendor: counted as vendored, never read.
    assert skipped.get("vendored", [0])[0] > 0
    assert not any("/_vendor/" in it[1] for it in items)


def test_uri_sources_read_like_paths(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    make_parquet_v1(d / "v1.parquet")
    make_parquet_v2(d / "v2.parquet")
    rows = [{"content": python_module(i, functions=2), "path": f"f{i}.py"} for i in range(60)]
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_jsonl(tmp_path / "small.jsonl")
    (tmp_path / "small.jsonl.gz").write_bytes(gzip.compress((tmp_path / "small.jsonl").read_bytes()))
    cfg = DataConfig(task_bytes=3000)
    for local in (str(d), str(tmp_path / "big.jsonl"), str(tmp_path / "small.jsonl.gz")):
        uri = "file://" + local
        by_path, _, _ = _read_all([local], cfg)
        by_uri, _, tasks = _read_all([uri], cfg)
        assert all(t["file"].startswith("file://") for t in tasks)
        assert [(x.repo, x.path, x.data, x.license, x.error) for x in by_uri] == \
               [(x.repo, x.path, x.data, x.license, x.error) for x in by_path]
        assert len(by_uri) > 2


def test_repositories_behind_a_uri_walk_like_local_ones(tmp_path):
    make_repos(tmp_path / "repos")
    local, local_skipped, _ = _read_all([str(tmp_path / "repos")])
    remote, remote_skipped, tasks = _read_all([f"file://{tmp_path}/repos"])
    assert tasks[0]["items"][0][2].startswith("file://")
    assert [(d.repo, d.path, d.data, d.license) for d in remote] == [(d.repo, d.path, d.data, d.license) for d in local]
    assert remote_skipped == local_skipped
    assert {d.repo: d.license for d in remote}["delta"] == "Apache-2.0"  # from package.json, read through the URI


def test_uri_errors(tmp_path):
    with pytest.raises(UserError, match="source not found"):
        resolve_source(f"file://{tmp_path}/missing.parquet")
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="must be .parquet or .jsonl"):
        resolve_source(f"file://{tmp_path}/notes.csv")
    with pytest.raises(UserError, match="cannot open"):
        resolve_source("nosuchscheme://bucket/key")


# ------------------------------------------------------------------------------------ damaged sources

def _parquet_with_groups(path, n_rows=300, group=100):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"content": [python_module(i, functions=2) for i in range(n_rows)],
            "path": [f"f{i}.py" for i in range(n_rows)], "repo": ["org/r"] * n_rows}
    pq.write_table(pa.table(rows), path, row_group_size=group, compression="snappy")
    return pq.ParquetFile(path).metadata


def _no_wait():
    from codekiln.data.faults import RetryPolicy

    waited = []
    return RetryPolicy(delays=(0.5, 2.0, 8.0), sleep=waited.append), waited


def test_truncated_parquet_footer_loses_the_file_and_says_so(tmp_path):
    f = tmp_path / "cut.parquet"
    _parquet_with_groups(f)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 40])
    docs, _, tasks = _read_all([str(f)])
    assert [t["kind"] for t in tasks] == ["broken"]
    (bad,) = docs
    # The whole file is lost: its bytes are known, its row count was in the footer.
    assert bad.error == "unreadable" and bad.size == len(data) - 40 and bad.rows == 1
    assert bad.damage["what"].endswith("cut.parquet: Parquet footer") and bad.damage["rows"] is None
    assert bad.damage["bytes"] == len(data) - 40 and "magic bytes" in bad.damage["error"]


def test_corrupt_row_group_loses_only_its_rows(tmp_path):
    f = tmp_path / "rg.parquet"
    meta = _parquet_with_groups(f)
    col = meta.row_group(1).column(0)  # the content column of the second row group
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(f.read_bytes())
    data[start + 30: start + col.total_compressed_size - 10] = b"\xab" * (col.total_compressed_size - 40)
    f.write_bytes(bytes(data))
    docs, _, _ = _read_all([str(f)])
    good = [d for d in docs if not d.error]
    assert [d.path for d in good] == [f"f{i}.py" for i in range(100)] + [f"f{i}.py" for i in range(200, 300)]
    (bad,) = [d for d in docs if d.error]
    assert bad.path == "rg.parquet#rg1" and bad.rows == 100
    assert bad.size == col.total_uncompressed_size == bad.damage["bytes"] and bad.damage["rows"] == 100
    assert "row group 1 of 3" in bad.damage["what"]


def test_gzip_jsonl_with_a_corrupt_tail_keeps_the_lines_before(tmp_path):
    rows = [json.dumps({"content": python_module(i), "path": f"f{i}.py"}) + "\n" for i in range(40)]
    gz = tmp_path / "tail.jsonl.gz"
    # The first 20 lines as one gzip member, then a member whose tail is garbage.
    head = gzip.compress("".join(rows[:20]).encode())
    tail = gzip.compress("".join(rows[20:]).encode())
    gz.write_bytes(head + tail[: len(tail) // 2] + b"\x00garbage" * 50)
    docs, _, _ = _read_all([str(gz)])
    good = [d.path for d in docs if not d.error]
    assert good[:20] == [f"f{i}.py" for i in range(20)] and len(good) < 40
    assert docs[-1].error == "unreadable" and docs[-1].damage["what"].startswith(str(gz))
    assert "gzip stream" in docs[-1].damage["what"] and docs[-1].damage["rows"] is None


def test_a_flaky_filesystem_is_retried_with_the_same_result(tmp_path, monkeypatch):
    from codekiln.data import readers

    make_repos(tmp_path / "repos")
    f = tmp_path / "rg.parquet"
    _parquet_with_groups(f)
    gz = tmp_path / "docs.jsonl.gz"
    make_jsonl(tmp_path / "docs.jsonl")
    gz.write_bytes(gzip.compress((tmp_path / "docs.jsonl").read_bytes()))
    specs = [str(tmp_path / "repos"), str(f), str(gz)]
    cfg = DataConfig()
    tasks, _ = plan_sources(specs, cfg)
    expected = [(d.repo, d.path, d.data, d.error) for t in tasks for d in read_task(t, cfg.hygiene.max_bytes)]
    real_open = readers._open_raw
    failures = {"open": 0, "read": 0}

    class Flaky:
        """A file whose first two reads fail like a dropped network mount."""

        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            if failures["read"] < 2:
                failures["read"] += 1
                raise OSError(5, "Input/output error")
            return self.fh.read(n)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def flaky_open(file):
        if failures["open"] < 2:
            failures["open"] += 1
            raise TimeoutError("connection timed out")
        return Flaky(real_open(file))

    monkeypatch.setattr(readers, "_open_raw", flaky_open)
    policy, waited = _no_wait()
    got = []
    for t in tasks:
        failures.update(open=0, read=0)  # every task meets a filesystem that fails twice, then works
        got += [(d.repo, d.path, d.data, d.error) for d in read_task(t, cfg.hygiene.max_bytes, policy)]
    assert got == expected
    assert waited[:4] == [0.5, 2.0, 0.5, 2.0]  # two failed opens, then two failed reads: each waited and retried


def test_a_persistent_io_error_stops_the_task_and_a_missing_file_does_not(tmp_path, monkeypatch):
    from codekiln.data import readers
    from codekiln.data.faults import SourceUnavailable

    f = tmp_path / "docs.jsonl"
    make_jsonl(f)
    tasks, _ = plan_sources([str(f)], DataConfig())
    policy, waited = _no_wait()

    def down(file):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(readers, "_open_raw", down)
    with pytest.raises(SourceUnavailable, match="Connection reset by peer.*tried 4 times"):
        list(read_task(tasks[0], None, policy))
    assert waited == [0.5, 2.0, 8.0]
    monkeypatch.undo()
    f.unlink()  # gone since it was planned: permanent, counted, not retried
    waited.clear()
    (bad,) = list(read_task(tasks[0], None, policy))
    assert bad.error == "unreadable" and bad.size == tasks[0]["bytes"] and waited == []


def test_memory_error_is_never_swallowed(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    f = tmp_path / "rg.parquet"
    _parquet_with_groups(f)
    tasks, _ = plan_sources([str(f)], DataConfig())

    def oom(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", oom)
    with pytest.raises(MemoryError):
        list(read_task(tasks[0], None))


def test_spark_driver_finds_the_unavailable_source_in_a_worker_traceback(tmp_path, monkeypatch):
    from codekiln.data import readers
    from codekiln.data.faults import RetryPolicy, SourceUnavailable
    from codekiln.data.spark_executor import source_unavailable_in

    f = tmp_path / "docs.jsonl"
    make_jsonl(f)
    tasks, _ = plan_sources([str(f)], DataConfig())
    monkeypatch.setattr(readers, "_open_raw", lambda file: (_ for _ in ()).throw(OSError(110, "Connection timed out")))
    with pytest.raises(SourceUnavailable) as info:
        list(read_task(tasks[0], None, RetryPolicy(delays=(0.0,))))
    # How PySpark shows a failed Python task: the worker's traceback inside the job's error text.
    text = ("An error occurred while calling o83.parquet.\n: org.apache.spark.SparkException: Job aborted.\n"
            "Traceback (most recent call last):\n  File \"readers.py\", line 1, in read_task\n"
            f"codekiln.data.faults.SourceUnavailable: {info.value}\n\n\tat org.apache.spark.api.python...")
    assert source_unavailable_in(text) == str(info.value)
    assert str(info.value).startswith(f"source unavailable: {f}: [Errno 110] Connection timed out (tried 2 times)")
    assert source_unavailable_in("py4j.protocol.Py4JJavaError: something else") is None


def test_python_packages_fixed_list_reads_only_those_distributions():
    """`python-packages:A,B` reads exactly those distributions (names normalized as pip does), so a corpus does
    not change when other packages are installed; a distribution that is not installed is a one-line error."""
    from codekiln.data.readers import resolve_source

    assert resolve_source("python-packages:PyYAML, pytest") == ("python-packages", "pytest,pyyaml")
    tasks, _ = plan_sources(["python-packages:pytest,PyYAML"], DataConfig())
    assert {it[0] for t in tasks for it in t["items"]} == {"pytest", "pyyaml"}
    with pytest.raises(UserError, match="not installed here: no-such-dist"):
        plan_sources(["python-packages:pytest,no_such.dist"], DataConfig())
    with pytest.raises(UserError, match="names no distribution"):
        resolve_source("python-packages:")
