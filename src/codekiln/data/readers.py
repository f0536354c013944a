"""Readers: turn each SOURCE into a deterministic list of tasks, and each task into RawDocs.

Planning happens once, in the parent process, and is stored with the build so a resumed build
reads exactly the same files in the same order. Reading happens in the workers.

Source kinds (`kind:PATH` forces one; otherwise it is inferred):
  repos            a directory of repositories, or one repository (it has .git or a LICENSE at its top)
  parquet          a Stack-style Parquet file or a directory of them (v1 and v2 column names)
  jsonl            a JSONL / JSONL.gz file or a directory of them, one object per line with `content`
  python-stdlib    the running interpreter's standard library (PSF-2.0); one repo per top-level module
  python-packages  the installed distributions, license from their metadata; one repo per distribution
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import json
import os
import sys
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from codekiln.config import DataConfig, WalkConfig
from codekiln.data.document import RawDoc, text_to_bytes
from codekiln.data.faults import RetryingFile, RetryPolicy, SourceUnavailable, first_line
from codekiln.data.languages import detect_language
from codekiln.data.uri import URI as _URI
from codekiln.data.uri import UriPath, filesystem
from codekiln.data.license_detect import detect_repo_license, distribution_license
from codekiln.data.licenses import to_expression
from codekiln.errors import UserError

BUILTIN_SOURCES = ("python-stdlib", "python-packages")
KINDS = ("repos", "parquet", "jsonl") + BUILTIN_SOURCES
MAX_FILES_PER_TASK = 4000
_LICENSE_NAMES = ("license", "licence", "copying", "unlicense")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")

# Column names of The Stack v1 first, then v2, then plain names.
_COLUMNS = {
    "content": ("content", "text"),
    "path": ("max_stars_repo_path", "path", "max_forks_repo_path", "max_issues_repo_path"),
    "repo": ("max_stars_repo_name", "repo_name", "repo", "max_forks_repo_name", "max_issues_repo_name"),
    "licenses": ("max_stars_repo_licenses", "detected_licenses", "licenses", "license"),
    "stars": ("max_stars_count", "star_events_count", "stars"),
    "lang": ("lang", "language"),
}


def _add_skip(skipped: dict, reason: str, docs: int, nbytes: int) -> None:
    entry = skipped.setdefault(reason, [0, 0])
    entry[0] += docs
    entry[1] += nbytes


# ----------------------------------------------------------------------------------------- planning


def resolve_source(spec: str) -> tuple[str, str]:
    """(kind, location) of a SOURCE argument; a missing path is a UserError."""
    if spec in BUILTIN_SOURCES:
        return spec, spec
    if spec.startswith("python-packages:"):  # a fixed list of distributions: the corpus no longer depends on extras
        names = sorted({_dist_key(n) for n in spec.split(":", 1)[1].split(",") if n.strip()})
        if not names:
            raise UserError("python-packages: names no distribution (python-packages:NAME,NAME,...)")
        return "python-packages", ",".join(names)
    if _URI.match(spec):
        return _resolve_uri(spec)
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("parquet", "jsonl", "repos") and _URI.match(rest):
        if not _list_files(rest, ("",)):
            raise UserError(f"source not found: {rest}")
        return kind, rest
    if sep and kind in KINDS and kind not in BUILTIN_SOURCES:
        path = Path(rest)
    else:
        kind, path = "", Path(spec)
    if not path.exists():
        raise UserError(f"source not found: {spec}")
    path = path.resolve()
    if kind:
        return kind, str(path)
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".parquet"):
            return "parquet", str(path)
        if name.endswith(_JSONL_SUFFIXES):
            return "jsonl", str(path)
        raise UserError(f"source {spec}: a file source must be .parquet or .jsonl(.gz)")
    files = [p for p in path.rglob("*") if p.is_file()]
    if files and all(p.name.lower().endswith(".parquet") for p in files):
        return "parquet", str(path)
    if files and all(p.name.lower().endswith(_JSONL_SUFFIXES) for p in files):
        return "jsonl", str(path)
    return "repos", str(path)


def _resolve_uri(spec: str) -> tuple[str, str]:
    """Kind of a URI source: Parquet or JSONL files (repository walks need a local path or a mount)."""
    files = _list_files(spec, ("",))
    if not files:
        raise UserError(f"source not found: {spec}")
    names = [f.split("?", 1)[0].lower() for f, _ in files]
    if all(n.endswith(".parquet") for n in names):
        return "parquet", spec
    if all(n.endswith(_JSONL_SUFFIXES) for n in names):
        return "jsonl", spec
    if UriPath(spec).is_dir():
        return "repos", spec
    raise UserError(f"source {spec}: a file source must be .parquet or .jsonl(.gz)")


def _list_files(location: str, suffixes: tuple[str, ...]) -> list[tuple[str, int]]:
    """(file, size) of a file, or of the files below a directory whose names end with suffixes, sorted.

    `location` is a local path or a URI; files below a URI are URIs too (same scheme, host and query).
    """
    if not _URI.match(location):
        path = Path(location)
        if path.is_file():
            return [(str(path), path.stat().st_size)]
        return [(str(p), p.stat().st_size) for p in sorted(path.rglob("*"), key=str)
                if p.is_file() and p.name.lower().endswith(suffixes)]
    import pyarrow.fs as pafs
    from urllib.parse import urlsplit, urlunsplit

    fs, root = filesystem(location)
    try:
        info = fs.get_file_info(root)
    except OSError as exc:
        raise UserError(f"cannot read {location}: {str(exc).splitlines()[0]}") from None
    if info.type == pafs.FileType.File:
        return [(location, info.size)]
    if info.type != pafs.FileType.Directory:
        return []
    parts = urlsplit(location)
    out = []
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as exc:
        raise UserError(f"cannot list {location}: {str(exc).splitlines()[0]}") from None
    for f in infos:
        if f.type == pafs.FileType.File and f.base_name.lower().endswith(suffixes):
            rel = f.path[len(root.rstrip("/")):].lstrip("/")
            out.append((urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + rel)), f.size))
    return sorted(out)


def _open_raw(file: str):
    """An unbuffered binary file object for a local path or a URI (no retries: see open_source)."""
    if _URI.match(file):
        fs, path = filesystem(file)
        return fs.open_input_file(path)
    return open(file, "rb", buffering=0)


def open_source(file: str, retry: RetryPolicy | None = None) -> io.BufferedReader:
    """A seekable binary file over a local path or a URI whose I/O errors are retried (data/faults.py).

    Raises the permanent OSErrors (missing file, denied) at once, SourceUnavailable when a transient
    one persists.
    """
    return io.BufferedReader(RetryingFile(file, _open_raw, retry), buffer_size=1 << 20)


def _shown(file: str) -> str:
    """A file as reports name it: a URI without its query, which may hold credentials."""
    return file.split("?", 1)[0]


def _base_name(file: str) -> str:
    return file.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def plan_sources(specs: list[str], cfg: DataConfig) -> tuple[list[dict], dict[str, list[int]]]:
    """All tasks of all sources, in a stable order, and what was skipped unread."""
    tasks: list[dict] = []
    skipped: dict[str, list[int]] = {}
    for spec in specs:
        kind, location = resolve_source(spec)
        planner = _PLANNERS[kind]
        tasks.extend(planner(location, cfg, skipped))
    for i, task in enumerate(tasks):
        task["id"] = i
    return tasks, skipped


def _cost(rel: str, size: int) -> int:
    """Expected work of a file: files of no known language are dropped after a read and a hash."""
    return size if detect_language(rel) is not None else size // 50


def _chunk_files(source: str, items: list[list], cfg: DataConfig) -> list[dict]:
    """Group (repo, path, abspath, size, license) items into tasks of about cfg.task_bytes of work."""
    tasks, current, size, cost = [], [], 0, 0
    for item in items:
        current.append(item)
        size += item[3]
        cost += _cost(item[1], item[3])
        if cost >= cfg.task_bytes or len(current) >= MAX_FILES_PER_TASK:
            tasks.append({"kind": "files", "source": source, "items": current, "bytes": size, "cost": cost})
            current, size, cost = [], 0, 0
    if current:
        tasks.append({"kind": "files", "source": source, "items": current, "bytes": size, "cost": cost})
    return tasks


def _is_repo_root(path: Path) -> bool:
    if (path / ".git").exists():
        return True
    try:
        return any(p.is_file() and p.name.lower().startswith(_LICENSE_NAMES) for p in path.iterdir())
    except OSError:
        return False


def _count_tree(path) -> tuple[int, int]:
    """Files and bytes below a skipped directory, counted without reading them."""
    if isinstance(path, UriPath):
        import pyarrow.fs as pafs

        infos = path.fs.get_file_info(pafs.FileSelector(path.path, recursive=True))
        files = [i for i in infos if i.type == pafs.FileType.File]
        return len(files), sum(i.size for i in files)
    docs = nbytes = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            docs += 1
            try:
                nbytes += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return docs, nbytes


def _load_gitignore(directory: Path):
    import pathspec

    f = directory / ".gitignore"
    try:
        if not f.is_file():
            return None
        lines = f.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _scan(directory, follow_symlinks: bool) -> list[tuple[str, object, bool, bool, int]]:
    """(name, path, is_dir, is_file, size) of a directory's entries, sorted by name; links left out
    unless followed (they may point outside the repository, or loop)."""
    if isinstance(directory, UriPath):
        import pyarrow.fs as pafs

        infos = directory.fs.get_file_info(pafs.FileSelector(directory.path))
        return sorted((i.base_name, directory / i.base_name, i.type == pafs.FileType.Directory,
                       i.type == pafs.FileType.File, i.size or 0) for i in infos)
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        try:
            if entry.is_symlink() and not follow_symlinks:
                continue
            is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
            is_file = entry.is_file(follow_symlinks=follow_symlinks)
            size = entry.stat(follow_symlinks=follow_symlinks).st_size if is_file else 0
        except OSError:
            continue
        out.append((entry.name, Path(entry.path), is_dir, is_file, size))
    return out


def walk_repo(root, walk: WalkConfig, skipped: dict) -> list[tuple[str, str, int]]:
    """Files of one repository (a Path or a UriPath) as (relative posix path, path or URI, size), sorted."""
    skip_dirs = set(walk.skip_dirs)
    out: list[tuple[str, str, int]] = []
    # Each entry: (directory relative to root, its .gitignore spec).
    specs: list[tuple[str, object]] = []

    def ignored(rel: str, is_dir: bool) -> bool:
        for base, spec in specs:
            if base and not rel.startswith(base + "/"):
                continue
            sub = rel[len(base) + 1 :] if base else rel
            if spec.match_file(sub + "/" if is_dir else sub):
                return True
        return False

    def visit(directory, rel_dir: str) -> None:
        spec = _load_gitignore(directory) if walk.respect_gitignore else None
        if spec is not None:
            specs.append((rel_dir, spec))
        try:
            entries = _scan(directory, walk.follow_symlinks)
        except OSError:
            _add_skip(skipped, "unreadable", 1, 0)
            entries = []
        for name, path, is_dir, is_file, size in entries:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_dir:
                if name in skip_dirs:
                    _add_skip(skipped, "vendored", *_count_tree(path))
                elif walk.respect_gitignore and ignored(rel, True):
                    _add_skip(skipped, "gitignored", *_count_tree(path))
                else:
                    visit(path, rel)
            elif is_file:
                if walk.respect_gitignore and ignored(rel, False):
                    _add_skip(skipped, "gitignored", 1, size)
                else:
                    out.append((rel, str(path), size))
        if spec is not None:
            specs.pop()

    visit(root, "")
    return out


def _plan_repos(location: str, cfg: DataConfig, skipped: dict) -> list[dict]:
    root = UriPath(location) if _URI.match(location) else Path(location)
    if _is_repo_root(root):
        repos = [root]
    else:
        repos = []
        for name, p, is_dir, _is_file, _size in _scan(root, cfg.walk.follow_symlinks):
            if is_dir:
                if name in cfg.walk.skip_dirs:
                    _add_skip(skipped, "vendored", *_count_tree(p))
                else:
                    repos.append(p)
    items: list[list] = []
    for repo in repos:
        license = detect_repo_license(repo)
        for rel, abspath, size in walk_repo(repo, cfg.walk, skipped):
            items.append([repo.name, rel, abspath, size, license])
    return _chunk_files("repos", items, cfg)


def stdlib_dir() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _plan_stdlib(_location: str, cfg: DataConfig, skipped: dict) -> list[dict]:
    root = stdlib_dir()
    items: list[list] = []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        name = p.name
        if p.is_dir():
            # Only importable packages are "repositories"; site-packages is python-packages' job.
            if name in ("site-packages", "lib-dynload") or name.startswith("config-") or not name.isidentifier():
                continue
            if name in cfg.walk.skip_dirs:
                _add_skip(skipped, "vendored", *_count_tree(p))
                continue
            for rel, abspath, size in walk_repo(p, cfg.walk, skipped):
                items.append([name, f"{name}/{rel}", abspath, size, "PSF-2.0"])
        elif p.is_file() and name.endswith(".py"):
            items.append([name[:-3], name, str(p), p.stat().st_size, "PSF-2.0"])
    return _chunk_files("python-stdlib", items, cfg)


def _dist_key(name: str) -> str:
    """A distribution's normalized name (PEP 503, as pip compares them)."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _plan_packages(location: str, cfg: DataConfig, skipped: dict) -> list[dict]:
    skip_dirs = set(cfg.walk.skip_dirs) - {"site-packages"}
    wanted = None if location == "python-packages" else set(location.split(","))
    seen: set[str] = set()
    dists = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip()
        key = _dist_key(name)
        if not name or key in seen or (wanted is not None and key not in wanted):
            continue  # the first on sys.path wins, as for imports
        seen.add(key)
        dists.append((key, dist))
    if wanted is not None and wanted - seen:
        raise UserError(f"python-packages: not installed here: {', '.join(sorted(wanted - seen))}")
    items: list[list] = []
    stdlib = str(stdlib_dir())
    for key, dist in sorted(dists, key=lambda x: x[0]):
        try:
            files = dist.files or []
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - a broken RECORD is the distribution's problem, not ours
            files = []
        license = distribution_license(dist.metadata)
        rels = sorted({str(f).replace(os.sep, "/") for f in files})
        for rel in rels:
            parts = rel.split("/")
            if parts[0] == ".." or any(p.endswith((".dist-info", ".egg-info")) for p in parts[:-1]):
                continue  # scripts outside site-packages and packaging metadata are not code
            abspath = str(dist.locate_file(rel))
            if abspath.startswith(stdlib + os.sep) and not abspath.startswith(stdlib + os.sep + "site-packages"):
                continue  # a distribution that installs into the stdlib tree is python-stdlib's
            if any(p in skip_dirs for p in parts[:-1]):
                try:
                    size = os.path.getsize(abspath)
                except OSError:
                    size = 0
                _add_skip(skipped, "vendored", 1, size)
                continue
            try:
                size = os.path.getsize(abspath)
            except OSError:
                continue  # listed in RECORD but not installed (e.g. removed .pyc): nothing to read
            items.append([key, rel, abspath, size, license])
    return _chunk_files("python-packages", items, cfg)


def _plan_parquet(location: str, cfg: DataConfig, skipped: dict) -> list[dict]:
    tasks: list[dict] = []
    for f, file_size in _list_files(location, (".parquet",)):
        try:
            with open_source(f) as fh:
                meta = pq.ParquetFile(fh).metadata
            names = set(meta.schema.names)
        except (SourceUnavailable, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a footer that does not decode is damage: counted, never fatal
            # Its rows are unknown (the footer holds the count); the whole file is lost.
            tasks.append({"kind": "broken", "source": "parquet", "file": str(f), "error": first_line(exc),
                          "bytes": file_size, "cost": 0})
            continue
        if not names & set(_COLUMNS["content"]):
            raise UserError(f"parquet source {f} has no 'content' column (The Stack v2 ships content separately)")
        leaves = [meta.schema.column(j).path for j in range(meta.num_columns)]
        content = _column(names, "content")
        leaf = leaves.index(content) if content in leaves else None
        groups, rows, lost, size = [], [], [], 0
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            groups.append(i)
            rows.append(rg.num_rows)
            # What a damaged row group loses, as its metadata says: its rows and its text (uncompressed).
            lost.append(rg.total_byte_size if leaf is None else rg.column(leaf).total_uncompressed_size)
            size += rg.total_byte_size
            if size >= cfg.task_bytes:
                tasks.append({"kind": "parquet", "source": "parquet", "file": str(f), "row_groups": groups,
                              "group_rows": rows, "group_bytes": lost, "bytes": size})
                groups, rows, lost, size = [], [], [], 0
        if groups:
            tasks.append({"kind": "parquet", "source": "parquet", "file": str(f), "row_groups": groups,
                          "group_rows": rows, "group_bytes": lost, "bytes": size})
    return tasks


def _plan_jsonl(location: str, cfg: DataConfig, skipped: dict) -> list[dict]:
    tasks: list[dict] = []
    for f, size in _list_files(location, _JSONL_SUFFIXES):
        if _base_name(f).lower().endswith(".gz") or size <= cfg.task_bytes:
            tasks.append({"kind": "jsonl", "source": "jsonl", "file": str(f), "start": 0, "end": None, "bytes": size})
            continue
        for start in range(0, size, cfg.task_bytes):
            end = min(start + cfg.task_bytes, size)
            tasks.append({"kind": "jsonl", "source": "jsonl", "file": str(f), "start": start, "end": end, "bytes": end - start})
    return tasks


_PLANNERS = {
    "repos": _plan_repos,
    "parquet": _plan_parquet,
    "jsonl": _plan_jsonl,
    "python-stdlib": _plan_stdlib,
    "python-packages": _plan_packages,
}

# ------------------------------------------------------------------------------------------ reading


def read_task(task: dict, max_bytes: int | None, retry: RetryPolicy | None = None) -> Iterator[RawDoc]:
    """The RawDocs of one planned task, in a stable order.

    Damage to a source becomes `unreadable` RawDocs that say what was lost; a transient I/O error that
    persists after the retries of `retry` raises SourceUnavailable (the task must not be marked done).
    """
    kind = task["kind"]
    if kind == "files":
        yield from _read_files(task, max_bytes, retry)
    elif kind == "parquet":
        yield from _read_parquet(task, retry)
    elif kind == "jsonl":
        yield from _read_jsonl(task, retry)
    elif kind == "broken":
        file = task["file"]
        yield _damaged("parquet", _base_name(file), f"{_shown(file)}: Parquet footer", task["error"], None, task["bytes"])
    else:
        raise ValueError(f"unknown task kind {kind!r}")


def _damaged(source: str, name: str, what: str, error: str, rows: int | None, nbytes: int | None) -> RawDoc:
    """An `unreadable` record standing for a damaged part of a source: `rows` documents when known, else one."""
    return RawDoc(source, "", name, b"", size=nbytes or 0, rows=rows or 1, error="unreadable",
                  damage={"what": what, "error": error, "rows": rows, "bytes": nbytes})


def _read_files(task: dict, max_bytes: int | None, retry: RetryPolicy | None) -> Iterator[RawDoc]:
    source = task["source"]
    for repo, rel, abspath, size, license in task["items"]:
        try:
            with open_source(abspath, retry) as fh:
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except SourceUnavailable:
            raise
        except (OSError, UserError):
            # Permanent (missing, denied, a directory): transient errors were retried by open_source.
            yield RawDoc(source, repo, rel, b"", license=license, size=size, error="unreadable")
            continue
        truncated = max_bytes is not None and len(data) > max_bytes
        if truncated:
            data = b""  # never kept: the size stage drops it, and removed/ records it without content
        yield RawDoc(source, repo, rel, data, license=license, size=max(size, len(data)), truncated=truncated)


def _column(table_names: set[str], role: str) -> str | None:
    for name in _COLUMNS[role]:
        if name in table_names:
            return name
    return None


def _stars(value) -> int | None:
    try:
        stars = None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return stars if stars is None or -(2**63) <= stars < 2**63 else None


def _read_parquet(task: dict, retry: RetryPolicy | None) -> Iterator[RawDoc]:
    path = task["file"]
    base = _base_name(path)
    try:
        fh = open_source(path, retry)
    except SourceUnavailable:
        raise
    except (OSError, UserError) as exc:
        yield from _lost_groups(task, base, path, exc)  # missing or denied since it was planned
        return
    with fh:
        yield from _parquet_groups(task, fh, base, path)


def _lost_groups(task: dict, base: str, path: str, exc: BaseException) -> Iterator[RawDoc]:
    """The row groups of a task whose file no longer opens or decodes, as planned."""
    rows_of, bytes_of = task.get("group_rows"), task.get("group_bytes")
    for k, g in enumerate(task["row_groups"]):
        yield _damaged("parquet", f"{base}#rg{g}", f"{_shown(path)}: row group {g}", first_line(exc),
                       rows_of[k] if rows_of else None, bytes_of[k] if bytes_of else None)


def _parquet_groups(task: dict, fh, base: str, path: str) -> Iterator[RawDoc]:
    """The RawDocs of a task's row groups, each group that does not decode one damaged record."""
    groups, bytes_of = task["row_groups"], task.get("group_bytes")
    try:
        pf = pq.ParquetFile(fh)
        meta = pf.metadata
        names = set(pf.schema_arrow.names)
    except (SourceUnavailable, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - the footer decoded when planned: the file changed or is damaged
        yield from _lost_groups(task, base, path, exc)
        return
    cols = {role: _column(names, role) for role in _COLUMNS}
    first_row = sum(meta.row_group(i).num_rows for i in range(groups[0]))
    for k, g in enumerate(groups):
        n_rows = meta.row_group(g).num_rows
        try:
            table = pf.read_row_group(g, columns=[c for c in cols.values() if c])
        except (SourceUnavailable, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - pages that do not decode: this row group is lost, not the file
            # Plans written before group_bytes existed: the row group's own size stands in.
            lost = bytes_of[k] if bytes_of else meta.row_group(g).total_byte_size
            yield _damaged("parquet", f"{base}#rg{g}", f"{_shown(path)}: row group {g} of {meta.num_row_groups}",
                           first_line(exc), n_rows, lost)
            first_row += n_rows
            continue
        yield from _parquet_docs(table, cols, base, first_row)
        first_row += n_rows


def _parquet_docs(table, cols: dict, base: str, first_row: int) -> Iterator[RawDoc]:
    """The RawDocs of one decoded row group, whose first row is row `first_row` of the file."""
    column = {role: (table.column(c).to_pylist() if c else None) for role, c in cols.items()}
    for i in range(table.num_rows):
        content = column["content"][i]
        repo = column["repo"][i] if column["repo"] else None
        path_ = column["path"][i] if column["path"] else None
        repo = repo if isinstance(repo, str) else ""
        path_ = path_ if isinstance(path_, str) and path_ else f"{base}#{first_row + i}"
        if not isinstance(content, str):
            yield RawDoc("parquet", repo, path_, b"", error="unreadable")
            continue
        licenses = column["licenses"][i] if column["licenses"] else None
        lang = column["lang"][i] if column["lang"] else None
        yield RawDoc(
            "parquet", repo, path_, text_to_bytes(content),
            license=to_expression(licenses) if licenses else None,
            stars=_stars(column["stars"][i]) if column["stars"] else None,
            lang_hint=lang if isinstance(lang, str) else None,
        )


def _jsonl_doc(obj: dict, fallback_path: str) -> RawDoc:
    content = obj.get("content")
    repo = obj.get("repo", obj.get("repo_name", ""))
    path = obj.get("path") or fallback_path
    repo = repo if isinstance(repo, str) else ""
    path = path if isinstance(path, str) else fallback_path
    if not isinstance(content, str):
        return RawDoc("jsonl", repo, path, b"", error="unreadable")
    license = obj.get("license", obj.get("licenses"))
    lang = obj.get("lang", obj.get("language"))
    return RawDoc(
        "jsonl", repo, path, text_to_bytes(content),
        license=to_expression(license) if license else None,
        stars=_stars(obj.get("stars")),
        lang_hint=lang if isinstance(lang, str) else None,
    )


def _read_jsonl(task: dict, retry: RetryPolicy | None) -> Iterator[RawDoc]:
    path = task["file"]
    base = _base_name(path)
    start, end = task["start"], task["end"]
    gz = base.lower().endswith(".gz")
    try:
        fh = open_source(path, retry)
        if gz:
            fh = gzip.open(fh, "rb")
    except SourceUnavailable:
        raise
    except (OSError, UserError) as exc:
        # Permanent: missing or denied since it was planned. Its lines are unknown; its bytes are lost.
        yield _damaged("jsonl", base, _shown(path), first_line(exc), None, task["bytes"])
        return
    with fh:
        offset = 0
        try:
            if start:
                # The task whose range holds a line's first byte owns the line.
                fh.seek(start - 1)
                fh.readline()
                offset = fh.tell()
            while end is None or offset < end:
                line = fh.readline()
                if not line:
                    break
                line_offset, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                where = f"{base}@{line_offset}"
                try:
                    obj = json.loads(line)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    yield RawDoc("jsonl", "", where, b"", size=len(line), error="unreadable")
                    continue
                if not isinstance(obj, dict):
                    yield RawDoc("jsonl", "", where, b"", size=len(line), error="unreadable")
                    continue
                yield _jsonl_doc(obj, where)
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt gzip stream (transient read errors were retried below it): the
            # lines before the damage stand; how many lines and bytes the rest held, nothing says.
            what = f"{_shown(path)}: {'gzip stream' if gz else 'file'} from text offset {offset}"
            yield _damaged("jsonl", f"{base}@corrupt", what, first_line(exc), None, None)


def python_version_tag() -> str:
    """The interpreter whose stdlib python-stdlib reads, e.g. 'cpython-3.11.7'."""
    return f"{sys.implementation.name}-{'.'.join(map(str, sys.version_info[:3]))}"
