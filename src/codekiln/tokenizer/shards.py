"""`codekiln data tokenize`: a corpus directory -> token shards (ARCHITECTURE.md, token shards directory).

Each map task encodes a slice of rows of one corpus part, in a worker process, into its own train and
val files under OUT/_work with a `.done` marker written last; a rerun skips finished tasks. The
shards are then the task files concatenated in task order, so the result does not depend on the
number of workers. Documents are separated by <|endoftext|>. The validation split is by
repository (a stable hash of the repository name), so no repository is in both splits.

Per-language counts attribute a packed sequence to the language of the repository's first file.
With repository packing, consecutive files of one repository become one sequence:
`<|repo_name|>repo\n<|file_sep|>path\ncontent<|file_sep|>path\ncontent...<|endoftext|>`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from codekiln.tokenizer import load, tokenizer_hash
from codekiln.tokenizer.train import corpus_parts, is_held_out
from codekiln.workers import ignore_sigint, run_tasks

_STATE: dict = {}
SHARD_TOKENS = 256 * 1024 * 1024  # tokens per output shard at most
FORMAT = "codekiln-tokens/2"  # 2: adds {split}-index.parquet (per-document shard, offset, tokens, bytes, lang)
ROWS_PER_TASK = 256  # documents per map task: small enough to keep every core busy


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, uint32 when the vocabulary exceeds 65,535 (the contract's rule)."""
    return np.dtype("<u2") if vocab_size <= 65535 else np.dtype("<u4")


def _init(tokenizer_dir: str, val_fraction: float, seed: int, pack: bool, work: str) -> None:
    ignore_sigint()
    _STATE.update(tok=load(tokenizer_dir), val_fraction=val_fraction, seed=seed, pack=pack, work=Path(work))


def _sequences(rows, tok, pack: bool):
    """(repo, lang, nbytes, ids) per sequence: one per document, or one per run of a repository's files."""
    if not pack:
        for content, path, repo, lang in rows:
            yield repo, lang, len(content.encode("utf-8", "surrogatepass")), tok.encode(content) + [tok.eot_id]
        return
    sp = tok.special_ids
    current, ids, nbytes, lang0 = None, [], 0, None
    for content, path, repo, lang in rows:
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
    table = pq.ParquetFile(task["part"]).read_row_group(task["row_group"], columns=["content", "path", "repo", "lang"])
    table = table.slice(task["start"], task["stop"] - task["start"])
    rows = zip(*(table.column(c).to_pylist() for c in ("content", "path", "repo", "lang")))
    out = {"train": [], "val": []}
    stats = {s: {"tokens": 0, "bytes": 0, "docs": 0, "tokens_by_lang": {}, "bytes_by_lang": {}} for s in out}
    index = {s: {"tokens": [], "bytes": [], "lang": []} for s in out}
    for repo, lang, nbytes, ids in _sequences(rows, tok, _STATE["pack"]):
        split = "val" if is_held_out(repo or "", _STATE["val_fraction"], _STATE["seed"]) else "train"
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


def tokenize_corpus(corpus: str | Path, tokenizer_dir: str | Path, out: str | Path, val_fraction: float = 0.005,
                    seed: int = 0, pack: bool = False, workers: int = 1) -> dict:
    """Write token shards and meta.json for a corpus; resumes a build with the same inputs."""
    out = Path(out)
    parts = corpus_parts(corpus)
    tok = load(tokenizer_dir)
    fingerprint = {"corpus": str(Path(corpus).resolve()), "tokenizer_sha256": tokenizer_hash(tokenizer_dir),
                   "val_fraction": val_fraction, "seed": seed, "pack_repositories": pack, "format": FORMAT}
    meta_path, work = out / "meta.json", out / "_work"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            return meta
        if meta.get("format") != FORMAT:
            raise UserError(f"--out {out} holds shards in an older format ({meta.get('format')}, no document "
                            f"index); delete it and rerun codekiln data tokenize")
        raise UserError(f"--out {out} holds shards of another tokenizer, corpus or split; choose another --out")
    if out.exists() and any(p.name != "_work" for p in out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no token shards; choose another directory")
    try:
        work.mkdir(parents=True, exist_ok=True)
        fp_path = work / "fingerprint.json"
        if fp_path.is_file() and json.loads(fp_path.read_text()) != fingerprint:
            raise UserError(f"--out {out} holds an unfinished run for another tokenizer, corpus or split; "
                            "delete it or choose another --out")
        fp_path.write_text(json.dumps(fingerprint))
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    slices = []
    for p in parts:
        meta = pq.ParquetFile(p).metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            slices += [(str(p), g, a, min(a + ROWS_PER_TASK, rows)) for a in range(0, rows, ROWS_PER_TASK)]
    tasks = [{"id": i, "part": p, "row_group": g, "start": a, "stop": b} for i, (p, g, a, b) in enumerate(slices)]
    if not tasks:
        raise UserError(f"{corpus} has no documents to tokenize")
    pending = [t for t in tasks if not (work / f"task-{t['id']:06d}.done").exists()]
    initargs = (str(tokenizer_dir), val_fraction, seed, pack, str(work))
    for _ in run_tasks(run_task, pending, workers, _init, initargs):
        pass
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
