"""`codekiln data tokenize`: a corpus directory -> token shards (ARCHITECTURE.md, token shards directory).

Each map task encodes a slice of rows of one corpus part, in a worker process, into its own train and
val files under OUT/_work with a `.done` marker written last; a rerun skips finished tasks. The
shards are then the task files concatenated in task order, so the result does not depend on the
number of workers. Documents are separated by <|endoftext|>. The validation split is by
repository (a stable hash of the repository name), so no repository is in both splits; a document
without a repository is split by its id. meta.json records a hash of the corpus's data, so a rerun
after the corpus was rebuilt in place tokenizes it again instead of returning stale shards.

Per-language counts attribute a packed sequence to the language of the repository's first file.
With repository packing, consecutive files of one repository become one sequence:
`<|repo_name|>repo\n<|file_sep|>path\ncontent<|file_sep|>path\ncontent...<|endoftext|>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from codekiln.progress import console, task_progress
from codekiln.token_shards import FORMAT
from codekiln.tokenizer import load, tokenizer_hash
from codekiln.tokenizer.train import corpus_parts, is_held_out, split_key
from codekiln.workers import ignore_sigint, run_tasks

_STATE: dict = {}
SHARD_TOKENS = 256 * 1024 * 1024  # tokens per output shard at most
ROWS_PER_TASK = 256  # documents per map task: small enough to keep every core busy


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, uint32 when the vocabulary exceeds 65,535 (the contract's rule)."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def _init(tokenizer_dir: str, val_fraction: float, seed: int, pack: bool, work: str) -> None:
    ignore_sigint()
    _STATE.update(tok=load(tokenizer_dir), val_fraction=val_fraction, seed=seed, pack=pack, work=Path(work))


def _sequences(rows, tok, pack: bool):
    """(split key, lang, nbytes, ids) per sequence: one per document, or one per run of a repository's
    files; a document without a repository is always a sequence of its own."""
    sp = tok.special_ids
    current, ids, nbytes, lang0 = None, [], 0, None
    for doc_id, content, path, repo, lang in rows:
        if not pack or not repo:
            if current is not None:
                yield current, lang0, nbytes, ids + [tok.eot_id]
                current = None
            yield split_key(repo, doc_id), lang, len(content.encode("utf-8", "surrogatepass")), \
                tok.encode(content) + [tok.eot_id]
            continue
        if repo != current:
            if current is not None:
                yield current, lang0, nbytes, ids + [tok.eot_id]
            current, lang0, nbytes = repo, lang, 0
            ids = [sp["<|repo_name|>"]] + tok.encode(f"{repo}\n")
        ids += [sp["<|file_sep|>"]] + tok.encode(f"{path}\n") + tok.encode(content)
        nbytes += len(content.encode("utf-8", "surrogatepass"))
    if current is not None:
        yield current, lang0, nbytes, ids + [tok.eot_id]


def run_task(task: dict) -> int:
    """Encode one row group into train/val token files; returns the task id."""
    tok, work = _STATE["tok"], _STATE["work"]
    columns = ["id", "content", "path", "repo", "lang"]
    table = pq.ParquetFile(task["part"]).read_row_group(task["row_group"], columns=columns)
    table = table.slice(task["start"], task["stop"] - task["start"])
    rows = zip(*(table.column(c).to_pylist() for c in columns))
    out = {"train": [], "val": []}
    stats = {s: {"tokens": 0, "bytes": 0, "docs": 0, "tokens_by_lang": {}, "bytes_by_lang": {}} for s in out}
    index = {s: {"tokens": [], "bytes": [], "lang": []} for s in out}
    for key, lang, nbytes, ids in _sequences(rows, tok, _STATE["pack"]):
        split = "val" if is_held_out(key, _STATE["val_fraction"], _STATE["seed"]) else "train"
        out[split].append(np.asarray(ids, dtype=np.int64))
        st = stats[split]
        st["tokens"] += len(ids)
        st["bytes"] += nbytes
        st["docs"] += 1
        key = lang or "unknown"
        index[split]["tokens"].append(len(ids))
        index[split]["bytes"].append(nbytes)
        index[split]["lang"].append(key)
        st["tokens_by_lang"][key] = st["tokens_by_lang"].get(key, 0) + len(ids)
        st["bytes_by_lang"][key] = st["bytes_by_lang"].get(key, 0) + nbytes
    base = work / f"task-{task['id']:06d}"
    dtype = dtype_for(tok.vocab_size)
    for split, arrays in out.items():
        data = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)
        atomic_write_bytes(Path(f"{base}.{split}.bin"), data.tobytes())
    for split in out:
        stats[split]["index"] = index[split]
    atomic_write_json(Path(f"{base}.stats.json"), stats)
    atomic_write_bytes(Path(f"{base}.done"), b"")
    return task["id"]


def corpus_sha256(parts: list[Path]) -> str:
    """SHA-256 over a corpus's data parts (names and bytes): what its shards were made from."""
    # The content itself, not the manifest: a corpus rebuilt in place from edited sources keeps its
    # manifest (sources and config are paths and settings) but not its documents. Hashing runs at
    # hundreds of MB/s, against a few MB/s for tokenizing, so it costs well under 1% of a run.
    total = hashlib.sha256()
    for part in parts:
        digest = hashlib.sha256()
        with open(part, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        total.update(f"{part.name}\0{digest.hexdigest()}\n".encode())
    return total.hexdigest()


# meta.json last: a removal cut short leaves it, and the next run (seeing the old fingerprint) removes again.
_OUTPUT_NAMES = ("train-*.bin", "val-*.bin", "train-*.bin.tmp", "val-*.bin.tmp", "train-index.parquet",
                 "val-index.parquet", "meta.json")


def _remove_outputs(out: Path) -> None:
    """Delete what tokenize_corpus writes in out (_work, shards, indexes, meta.json), nothing else."""
    shutil.rmtree(out / "_work", ignore_errors=True)
    for pattern in _OUTPUT_NAMES:
        for path in sorted(out.glob(pattern)):
            path.unlink()


def _same_but_corpus_content(a: dict, b: dict) -> bool:
    """Whether two fingerprints differ only in the corpus's content (the same corpus, rebuilt)."""
    return {k: v for k, v in a.items() if k != "corpus_sha256"} == {k: v for k, v in b.items() if k != "corpus_sha256"}


def tokenize_corpus(corpus: str | Path, tokenizer_dir: str | Path, out: str | Path, val_fraction: float = 0.005,
                    seed: int = 0, pack: bool = False, workers: int = 1, progress: bool = True) -> dict:
    """Write token shards and meta.json for a corpus; resumes a build with the same inputs, and redoes one
    whose corpus was rebuilt since."""
    out = Path(out)
    parts = corpus_parts(corpus)
    tok = load(tokenizer_dir)
    fingerprint = {"corpus": str(Path(corpus).resolve()), "corpus_sha256": corpus_sha256(parts),
                   "tokenizer_sha256": tokenizer_hash(tokenizer_dir), "val_fraction": val_fraction, "seed": seed,
                   "pack_repositories": pack, "format": FORMAT}
    meta_path, work = out / "meta.json", out / "_work"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        old = meta.get("fingerprint") or {}
        if old == fingerprint:
            return meta
        if meta.get("format") != FORMAT:
            raise UserError(f"--out {out} holds shards in an older format ({meta.get('format')}, no document "
                            f"index); delete it and rerun codekiln data tokenize")
        if not _same_but_corpus_content(old, fingerprint):
            raise UserError(f"--out {out} holds shards of another tokenizer, corpus or split; choose another --out")
        # The same command on a corpus rebuilt since: its shards are stale, so they are made again.
        console.print(f"{corpus} changed since {out} was tokenized; tokenizing it again", markup=False,
                      highlight=False, soft_wrap=True)
        _remove_outputs(out)
    if out.exists() and any(p.name != "_work" for p in out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no token shards; choose another directory")
    try:
        work.mkdir(parents=True, exist_ok=True)
        fp_path = work / "fingerprint.json"
        if fp_path.is_file():
            old = json.loads(fp_path.read_text())
            if old != fingerprint and not _same_but_corpus_content(old, fingerprint):
                raise UserError(f"--out {out} holds an unfinished run for another tokenizer, corpus or split; "
                                "delete it or choose another --out")
            if old != fingerprint:  # finished tasks of the corpus before its rebuild: none can be reused
                shutil.rmtree(work)
                work.mkdir(parents=True)
        fp_path.write_text(json.dumps(fingerprint))
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    slices = []
    for p in parts:
        pf = pq.ParquetFile(p)
        for g in range(pf.metadata.num_row_groups):
            sizes = pf.read_row_group(g, columns=["bytes"]).column("bytes").to_pylist()  # for the progress bar
            for a in range(0, len(sizes), ROWS_PER_TASK):
                b = min(a + ROWS_PER_TASK, len(sizes))
                slices.append((str(p), g, a, b, sum(x or 0 for x in sizes[a:b])))
    tasks = [{"id": i, "part": p, "row_group": g, "start": a, "stop": b, "bytes": n}
             for i, (p, g, a, b, n) in enumerate(slices)]
    if not tasks:
        raise UserError(f"{corpus} has no documents to tokenize")
    pending = [t for t in tasks if not (work / f"task-{t['id']:06d}.done").exists()]
    task_bytes = {t["id"]: t["bytes"] for t in tasks}
    initargs = (str(tokenizer_dir), val_fraction, seed, pack, str(work))
    with task_progress("tokenize", sum(task_bytes.values()), enabled=progress) as advance:
        advance(sum(task_bytes.values()) - sum(t["bytes"] for t in pending))  # finished before a resume
        for task_id in run_tasks(run_task, pending, workers, _init, initargs):
            advance(task_bytes[task_id])
    return _finalize(out, work, tasks, tok, fingerprint)


def _finalize(out: Path, work: Path, tasks: list[dict], tok, fingerprint: dict) -> dict:
    dtype = dtype_for(tok.vocab_size)
    totals = {s: {"tokens": 0, "bytes": 0, "docs": 0, "tokens_by_lang": {}, "bytes_by_lang": {}, "shards": []}
              for s in ("train", "val")}
    for split in ("train", "val"):
        shard, written, fh = 0, 0, None
        index = {"shard": [], "offset": [], "tokens": [], "bytes": [], "lang": []}
        for t in tasks:
            base = work / f"task-{t['id']:06d}"
            st = json.loads(Path(f"{base}.stats.json").read_text())[split]
            tot = totals[split]
            for k in ("tokens", "bytes", "docs"):
                tot[k] += st[k]
            for field in ("tokens_by_lang", "bytes_by_lang"):
                for lang, n in st[field].items():
                    tot[field][lang] = tot[field].get(lang, 0) + n
            data = np.fromfile(f"{base}.{split}.bin", dtype=dtype)
            if fh is None or (written and written + data.size > SHARD_TOKENS):
                if fh is not None:
                    fh.close()
                name = f"{split}-{shard:05d}.bin"
                fh = open(out / f"{name}.tmp", "wb")
                tot["shards"].append(name)
                shard, written = shard + 1, 0
            starts = written + np.concatenate([[0], np.cumsum(st["index"]["tokens"])[:-1]]).astype(np.int64)
            index["shard"] += [shard - 1] * len(st["index"]["tokens"])
            index["offset"] += starts[: len(st["index"]["tokens"])].tolist()
            for k in ("tokens", "bytes", "lang"):
                index[k] += st["index"][k]
            data.tofile(fh)
            written += data.size
        if fh is not None:
            fh.close()
        else:
            name = f"{split}-00000.bin"
            (out / f"{name}.tmp").write_bytes(b"")
            totals[split]["shards"].append(name)
        for name in totals[split]["shards"]:
            os.replace(out / f"{name}.tmp", out / name)
        table = pa.table({"shard": pa.array(index["shard"], pa.int32()), "offset": pa.array(index["offset"], pa.int64()),
                          "tokens": pa.array(index["tokens"], pa.int64()), "bytes": pa.array(index["bytes"], pa.int64()),
                          "lang": pa.array(index["lang"], pa.string()).dictionary_encode()})
        atomic_write_parquet(out / f"{split}-index.parquet", table)
        totals[split]["index"] = f"{split}-index.parquet"
    meta = {
        "format": FORMAT,
        "dtype": "uint16" if dtype == np.dtype("<u2") else "uint32",
        "vocab_size": tok.vocab_size,
        "special_ids": tok.special_ids,
        "eot_id": tok.eot_id,
        "splits": {s: {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in totals[s].items()}
                   for s in totals},
        "tokenizer_sha256": fingerprint["tokenizer_sha256"],
        "fingerprint": fingerprint,
    }
    atomic_write_json(out / "meta.json", meta)
    shutil.rmtree(work, ignore_errors=True)
    return meta


def shards_table(meta: dict):
    """The table `codekiln data tokenize` prints: documents, tokens, text and shards per split."""
    from rich.table import Table

    table = Table(title=f"token shards ({meta['dtype']}, vocabulary {meta['vocab_size']:,})", title_justify="left")
    for col in ("split", "documents", "tokens", "MB of text", "bytes/token", "shards"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, st in meta["splits"].items():
        table.add_row(split, f"{st['docs']:,}", f"{st['tokens']:,}", f"{st['bytes'] / 1e6:,.1f}",
                      f"{st['bytes'] / max(st['tokens'], 1):.2f}", str(len(st["shards"])))
    return table
