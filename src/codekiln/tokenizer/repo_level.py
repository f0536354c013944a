"""Token shards of a team's own code for fine-tuning: held out by file, trained in the editors' layout.

`codekiln data tokenize` holds out whole repositories, which is right for pretraining on many of them
and useless for a team that has one. Here the split is by file within each repository: a stable hash
of (seed, repository, path) below `holdout_fraction` puts a file in the validation split, so a file's
side never changes when others are added, and every repository with enough files lends some of them
to the held-out set.

Each training file becomes one sequence. With probability `repo_context` (a stable hash again) it is a
repository-level sequence, the layout an editor's request turns into at completion time
(infer.window.fit_repo_fim, built from llama.cpp's `input_extra` or the LSP's open files):

    <|repo_name|>repo\\n <|file_sep|>other/path\\ntext ... <|file_sep|>path\\ncurrent file <|endoftext|>

A stable quarter of these sequences has no repository header and a quarter an empty current path: clients
do not always know them (llama.cpp's /infill sends neither), and fit_repo_fim then leaves them out too.
The other files are training files of the same repository only (a held-out file never appears in a
training sequence), nearest paths first (same directory, then the longest shared path), each whole
or not at all, until the sequence would exceed `doc_tokens`; the most relevant sits last, nearest the
current file, as fit_repo_fim orders them. The trainer's FIM turns the current file into a FIM prompt
(codekiln.fim.transform). The other sequences are the plain file, so the model keeps completing
without repository context too. Validation sequences are the held-out files alone, so bits per byte
before and after fine-tuning are measured on exactly the same text.

The shards follow the token shards contract (ARCHITECTURE.md) and meta.json records the split and the
layout; a rerun with the same inputs returns at once.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np

from codekiln import fim
from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json
from codekiln.progress import task_progress
from codekiln.token_shards import FORMAT
from codekiln.tokenizer import load, tokenizer_hash
from codekiln.tokenizer.shards import _finalize, _remove_outputs, corpus_sha256, dtype_for
from codekiln.tokenizer.train import _unit, corpus_parts, corpus_rows, is_held_out

LAYOUT = "repo_level_fim"


def file_key(repo: str | None, path: str | None, doc_id: str | None) -> str:
    """What the by-file split hashes: repository and path (the id for a document without a path)."""
    return f"{repo or ''}\0{path or doc_id or ''}"


def _nearness(a: str, b: str) -> tuple[int, int]:
    """How related two paths are: (same directory, shared leading path components)."""
    pa, pb = PurePosixPath(a).parts, PurePosixPath(b).parts
    shared = 0
    for x, y in zip(pa[:-1], pb[:-1]):
        if x != y:
            break
        shared += 1
    return int(pa[:-1] == pb[:-1]), shared


def _context(current: dict, others: list[dict], room: int, seed: int) -> list[dict]:
    """Other training files for `current`, most relevant last, whole files within `room` tokens."""
    ranked = sorted(others, key=lambda o: (*(-x for x in _nearness(current["path"], o["path"])),
                                           _unit(seed, "context\0", current["path"] + "\0" + o["path"])))
    kept = []
    for other in ranked:
        if len(other["block"]) <= room:
            kept.append(other)
            room -= len(other["block"])
    return kept[::-1]


def _sequences(repo: str, files: list[dict], tok, seed: int, repo_context: float, doc_tokens: int):
    """(lang, nbytes, ids) per training file of one repository, in corpus order."""
    sp = tok.special_ids
    for f in files:
        key = file_key(repo, f["path"], f["id"])
        with_context = repo_context > 0 and _unit(seed, "repo-context\0", key) < repo_context
        if not with_context:
            yield f["lang"], f["bytes"], f["ids"] + [tok.eot_id]
            continue
        # Clients do not always know the repository's name or the current file's path (llama.cpp's /infill
        # sends neither): a stable quarter of the sequences leaves each out, as fit_repo_fim then does.
        head = fim.repo_header(repo, sp, tok.encode) if repo and _unit(seed, "no-repo\0", key) >= 0.25 else []
        path = f["path"] if _unit(seed, "no-path\0", key) >= 0.25 else ""
        current = [*fim.current_file(path, sp, tok.encode), *f["ids"]]
        room = doc_tokens - len(head) - len(current) - 1
        others = [o for o in files if o is not f]
        ctx = _context(f, others, room, seed) if room > 0 else []
        ids = [*head, *(t for o in ctx for t in o["block"]), *current, tok.eot_id]
        yield f["lang"], f["bytes"] + sum(o["bytes"] for o in ctx), ids


def _write_task(work: Path, task_id: int, seqs: dict[str, list], dtype) -> None:
    """One task's train/val token files and stats, in tokenize_corpus's task format (its `.done` last)."""
    base = work / f"task-{task_id:06d}"
    stats = {}
    for split, rows in seqs.items():
        data = np.concatenate([np.asarray(ids, dtype=np.int64) for _, _, ids in rows]).astype(dtype) if rows \
            else np.zeros(0, dtype)
        atomic_write_bytes(Path(f"{base}.{split}.bin"), data.tobytes())
        st = {"tokens": 0, "bytes": 0, "docs": len(rows), "tokens_by_lang": {}, "bytes_by_lang": {},
              "index": {"tokens": [], "bytes": [], "lang": []}}
        for lang, nbytes, ids in rows:
            lang = lang or "unknown"
            st["tokens"] += len(ids)
            st["bytes"] += nbytes
            st["tokens_by_lang"][lang] = st["tokens_by_lang"].get(lang, 0) + len(ids)
            st["bytes_by_lang"][lang] = st["bytes_by_lang"].get(lang, 0) + nbytes
            st["index"]["tokens"].append(len(ids))
            st["index"]["bytes"].append(nbytes)
            st["index"]["lang"].append(lang)
        stats[split] = st
    atomic_write_json(Path(f"{base}.stats.json"), stats)
    atomic_write_bytes(Path(f"{base}.done"), b"")


def held_out_files(corpus: str | Path, holdout_fraction: float, seed: int) -> list[dict]:
    """The held-out files of a corpus under the by-file split: repo, path, lang, content, id; corpus order."""
    out = []
    for doc_id, content, path, repo, lang in corpus_rows(corpus, ["id", "content", "path", "repo", "lang"]):
        if is_held_out(file_key(repo, path, doc_id), holdout_fraction, seed):
            out.append({"id": doc_id, "repo": repo or "", "path": path or doc_id, "lang": lang, "content": content})
    return out


def tokenize_repo_level(corpus: str | Path, tokenizer_dir: str | Path, out: str | Path, *, holdout_fraction: float,
                        seed: int = 0, repo_context: float = 0.5, doc_tokens: int = 2048,
                        progress: bool = True) -> dict:
    """Token shards for fine-tuning (see the module docstring); returns meta.json's content."""
    if not 0 < holdout_fraction < 1:
        raise UserError(f"the held-out share of files must be in (0, 1), not {holdout_fraction}")
    if not 0 <= repo_context <= 1:
        raise UserError(f"the share of repository-level sequences must be in [0, 1], not {repo_context}")
    out = Path(out)
    parts = corpus_parts(corpus)
    tok = load(tokenizer_dir)
    if repo_context > 0:
        _ = tok.special_ids[fim.REPO], tok.special_ids[fim.FILE_SEP]  # a clear error when the tokenizer lacks them
    fingerprint = {"corpus": str(Path(corpus).resolve()), "corpus_sha256": corpus_sha256(parts),
                   "tokenizer_sha256": tokenizer_hash(tokenizer_dir), "split": "file",
                   "holdout_fraction": holdout_fraction, "seed": seed, "layout": LAYOUT, "repo_context": repo_context,
                   "doc_tokens": doc_tokens, "format": FORMAT}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            return meta
        _remove_outputs(out)  # this directory belongs to the fine-tuning run that calls us: its inputs changed
    elif out.exists() and any(p.name != "_work" for p in out.iterdir()):
        raise UserError(f"{out} is not empty and holds no token shards; choose another directory")
    work = out / "_work"
    fp_path = work / "fingerprint.json"
    if fp_path.is_file() and json.loads(fp_path.read_text()) != fingerprint:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    fp_path.write_text(json.dumps(fingerprint))

    repos: dict[str, dict[str, list]] = defaultdict(lambda: {"train": [], "val": []})
    order: list[str] = []
    for doc_id, content, path, repo, lang in corpus_rows(corpus, ["id", "content", "path", "repo", "lang"]):
        key = repo or ""
        if key not in repos:
            order.append(key)
        split = "val" if is_held_out(file_key(repo, path, doc_id), holdout_fraction, seed) else "train"
        repos[key][split].append({"id": doc_id, "path": path or doc_id, "lang": lang, "content": content,
                                  "bytes": len(content.encode("utf-8", "surrogatepass"))})
    if not order:
        raise UserError(f"{corpus} has no documents to tokenize")
    if not any(r["val"] for r in repos.values()):
        raise UserError(f"no file of {corpus} falls in the held-out share {holdout_fraction}: add files or raise it")
    if not any(r["train"] for r in repos.values()):
        raise UserError(f"every file of {corpus} is held out: lower the held-out share {holdout_fraction}")
    dtype = dtype_for(tok.vocab_size)
    tasks = [{"id": i, "repo": repo} for i, repo in enumerate(order)]
    total = sum(f["bytes"] for r in repos.values() for s in r.values() for f in s)
    with task_progress("tokenize", total, enabled=progress) as advance:
        for task in tasks:
            group = repos[task["repo"]]
            nbytes = sum(f["bytes"] for s in group.values() for f in s)
            if not (work / f"task-{task['id']:06d}.done").exists():
                for split_files in group.values():
                    encoded = tok.encode_batch([f["content"] for f in split_files])
                    for f, ids in zip(split_files, encoded):
                        f["ids"] = ids
                for f in group["train"]:
                    f["block"] = fim.repo_file(f["path"], "", tok.special_ids, tok.encode) + f["ids"]
                train = list(_sequences(task["repo"], group["train"], tok, seed, repo_context, doc_tokens))
                val = [(f["lang"], f["bytes"], f["ids"] + [tok.eot_id]) for f in group["val"]]
                _write_task(work, task["id"], {"train": train, "val": val}, dtype)
            advance(nbytes)
    meta = _finalize(out, work, tasks, tok, fingerprint)
    return meta
