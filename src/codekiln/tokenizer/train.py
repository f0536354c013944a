"""`codekiln tokenizer train`: a byte-level BPE or Unigram vocabulary trained on a corpus directory.

Pre-tokenization is code-aware (the split happens before byte-level mapping, so every byte
sequence still round-trips exactly). Chosen by measured compression on held-out code (docs/tokenizer.md):
  * a newline never joins a word: it stands alone or carries the next line's indentation
    (`\n` + `    `), or ends a run of punctuation (`):\n    `);
  * other runs of two or more spaces/tabs (alignment) are tokens of their own;
  * an identifier ([letters or _] then letters, marks, digits, _) may carry one leading
    non-letter character: a space, `.`, `(`, ... (`.append`, `(self`);
  * a number is split into single digits;
  * a run of punctuation may carry one leading space.
Unigram uses the same byte-level pre-tokenization, so it too covers every byte string.
`pretokenizer="llama-cpp-compatible"` takes llama.cpp's "qwen2" split instead, which llama.cpp
reproduces exactly from a GGUF file (`codekiln export gguf`), at a cost in compression.

Training text is a seeded sample spread over the whole corpus: each document is taken when a hash of
(seed, id) falls below its language's rate, the rates computed from the corpus's bytes per language
and the language weights so that the expected sample is `sample_bytes`; repositories held out for
`tokenizer stats` are never sampled. The decisions depend only on the seed and the document, so
reruns give identical vocabularies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from codekiln.errors import UserError
from codekiln.tokenizer import SPECIAL_TOKENS

PRETOKENIZE_PATTERN = (
    r"[^\S\r\n]{2,}"                                  # runs of spaces/tabs inside a line
    r"|[^\r\n\p{L}\p{N}_]?[\p{L}_][\p{L}\p{M}\p{N}_]*"   # identifiers, with one leading non-letter
    r"|\p{N}"                                          # digits, one at a time
    r"| ?[^\s\p{L}\p{N}_]+(?:\r?\n[^\S\r\n]*)?"        # punctuation, may end with a newline + indentation
    r"|\r?\n[^\S\r\n]*"                                # a newline and the next line's indentation
    r"|\r|\s"                                         # any other single whitespace character
)
# llama.cpp splits text only with the pre-tokenizers on its fixed list (`tokenizer.ggml.pre`). This one is
# its "qwen2" split, character for character: a tokenizer trained with it gives the same ids through
# llama.cpp's own tokenizer as through codekiln's, at a measured cost in compression (docs/tokenizer.md).
LLAMA_CPP_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                     r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRETOKENIZERS = {"codekiln": PRETOKENIZE_PATTERN, "llama-cpp-compatible": LLAMA_CPP_PATTERN}


def corpus_parts(corpus: str | Path) -> list[Path]:
    """The Parquet parts of a corpus directory's data/, sorted; a UserError when there are none."""
    data = Path(corpus) / "data"
    parts = sorted(data.glob("part-*.parquet")) if data.is_dir() else []
    if not parts:
        raise UserError(f"{corpus} is not a corpus directory (no data/part-*.parquet); "
                        "build one with `codekiln data build`")
    return parts


def split_key(repo: str | None, doc_id: str | None) -> str:
    """What the splits hash for a document: its repository, or its id when it has none."""
    # Without the fallback every repository-less document (JSONL, Parquet without a repo column)
    # hashes alike, and a split by repository puts all of them on one side.
    return repo or doc_id or ""


def _unit(seed: int, salt: str, key: str) -> float:
    """A stable uniform number in [0, 1) for (seed, salt, key)."""
    digest = hashlib.blake2b(f"{seed}\0{salt}{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def is_held_out(key: str, fraction: float, seed: int) -> bool:
    """Whether a split key (see split_key) is held out: a stable hash of (seed, key) below fraction."""
    if fraction <= 0:
        return False
    return _unit(seed, "", key) < fraction


def is_sampled(doc_id: str, rate: float, seed: int) -> bool:
    """Whether a document is in a sample taken at this rate: a stable hash of (seed, id) below rate."""
    # Salted apart from is_held_out, so that for a repository-less document (whose split key is its
    # id) being sampled says nothing about being held out.
    return rate >= 1 or _unit(seed, "sample\0", doc_id) < rate


def _weight(weights: dict[str, float], lang: str) -> float:
    """A language's weight: its own, else the "*" entry, else 1."""
    return weights.get(lang, weights.get("*", 1.0))


def sampling_rates(bytes_by_lang: dict[str, int], budget: int, weights: dict[str, float]) -> dict[str, float]:
    """Per language, the chance a document is sampled: min(1, r * weight), r <= 1 the largest rate whose
    expected sample fits the budget."""
    def expected(r: float) -> float:
        return sum(min(1.0, r * _weight(weights, lang)) * b for lang, b in bytes_by_lang.items())

    # expected() grows with r, so bisect for the largest r within the budget; at r = 1 each weight is the
    # plain chance a document is taken (the budget binds nowhere).
    if expected(1.0) <= budget:
        r = 1.0
    else:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expected(mid) <= budget else (lo, mid)
        r = lo
    return {lang: min(1.0, r * _weight(weights, lang)) for lang in bytes_by_lang}


def corpus_rows(corpus: str | Path, columns: list[str], batch: int = 4096) -> Iterator[tuple]:
    """Rows of the given columns over every part of a corpus, in corpus order."""
    for part in corpus_parts(corpus):
        for rb in pq.ParquetFile(part).iter_batches(batch_size=batch, columns=columns):
            yield from zip(*(rb.column(c).to_pylist() for c in columns))


def eligible_bytes(corpus: str | Path, keep) -> dict[str, int]:
    """UTF-8 bytes per language of the documents for which keep(repo, id) holds (reads no content)."""
    # Exact totals from the light columns, rather than report.json's: those include the held-out
    # repositories, and a corpus written directly in the contract has no report.
    totals: dict[str, int] = {}
    for doc_id, repo, lang, nbytes in corpus_rows(corpus, ["id", "repo", "lang", "bytes"]):
        if keep(repo, doc_id):
            key = lang or ""
            totals[key] = totals.get(key, 0) + (nbytes or 0)
    return totals


def sample_texts(corpus: str | Path, sample_bytes: int, weights: dict[str, float], seed: int,
                 holdout_fraction: float = 0.0, batch: int = 256) -> Iterator[list[str]]:
    """Batches of document texts: a seeded, language-weighted sample of about sample_bytes spread over
    the whole corpus, never from held-out repositories."""
    def trainable(repo, doc_id):
        return not is_held_out(split_key(repo, doc_id), holdout_fraction, seed)

    rates = sampling_rates(eligible_bytes(corpus, trainable), sample_bytes, weights)
    total, texts = 0, []
    for doc_id, repo, lang, text in corpus_rows(corpus, ["id", "repo", "lang", "content"], batch=batch):
        if not trainable(repo, doc_id) or not is_sampled(doc_id or text, rates.get(lang or "", 0.0), seed):
            continue
        texts.append(text)
        total += len(text)
        # A hard cap for memory: the rates make the expected sample the budget, so the cap cuts at most
        # a fraction of a percent of it, near the end of the corpus.
        if total >= sample_bytes:
            break
        if len(texts) == batch:
            yield texts
            texts = []
    if texts:
        yield texts


def build_tokenizer(algorithm: str, pretokenizer: str = "codekiln"):
    """An untrained tokenizer with the named pre-tokenizer (PRETOKENIZERS) and byte-level decoder, and its
    trainer class."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if pretokenizer not in PRETOKENIZERS:
        raise UserError(f"unknown pretokenizer '{pretokenizer}' ({' or '.join(PRETOKENIZERS)})")

    if algorithm == "bpe":
        tok = Tokenizer(models.BPE())
        trainer_cls = trainers.BpeTrainer
    elif algorithm == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer_cls = trainers.UnigramTrainer
    else:
        raise UserError(f"unknown tokenizer algorithm '{algorithm}' (bpe or unigram)")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZERS[pretokenizer]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok, trainer_cls


def train_tokenizer(corpus: str | Path, out: str | Path, vocab_size: int = 32768, algorithm: str = "bpe",
                    sample_bytes: int = 200_000_000, weights: dict[str, float] | None = None, seed: int = 0,
                    min_frequency: int = 2, holdout_fraction: float = 0.02, progress: bool = True,
                    pretokenizer: str = "codekiln") -> dict:
    """Train, save the Hugging Face files into out, and return a summary."""
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise UserError(f"--vocab-size {vocab_size} is smaller than the byte alphabet plus special tokens ({minimum})")
    build_tokenizer(algorithm, pretokenizer)  # an unknown algorithm or pre-tokenizer fails before any reading
    parts = corpus_parts(corpus)
    out = Path(out)
    try:  # a bad --out must fail now, not after the training
        out.mkdir(parents=True, exist_ok=True)
        (out / ".probe").write_bytes(b"")
        (out / ".probe").unlink()
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    tok, trainer_cls = build_tokenizer(algorithm, pretokenizer)
    kwargs = dict(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=progress)
    if algorithm == "bpe":
        trainer = trainer_cls(min_frequency=min_frequency, initial_alphabet=alphabet, **kwargs)
    else:
        trainer = trainer_cls(initial_alphabet=alphabet, unk_token=None, **kwargs)
    seen = {"docs": 0, "bytes": 0}

    def texts():
        for batch in sample_texts(corpus, sample_bytes, weights or {}, seed, holdout_fraction):
            seen["docs"] += len(batch)
            seen["bytes"] += sum(len(t) for t in batch)
            yield batch

    tok.train_from_iterator(texts(), trainer=trainer)
    if seen["docs"] == 0:
        raise UserError(f"{corpus} has no documents to train on (empty corpus or all weights 0)")
    save_tokenizer(tok, out)
    summary = {"algorithm": algorithm, "pretokenizer": pretokenizer, "vocab_size": tok.get_vocab_size(),
               "docs": seen["docs"], "chars": seen["bytes"], "parts": len(parts), "seed": seed,
               "holdout_fraction": holdout_fraction,
               "sample_bytes": sample_bytes, "language_weights": weights or {}, "min_frequency": min_frequency}
    # How it was trained, so `tokenizer stats` measures on the repositories training never saw.
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def save_tokenizer(tok, out: str | Path) -> None:
    """tokenizer.json plus the transformers config files (AutoTokenizer-loadable, no remote code)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eot = "<|endoftext|>"
    extra = [t for t in SPECIAL_TOKENS if t != eot]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
        "additional_special_tokens": extra,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
                   "additional_special_tokens": extra}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")


def summary_table(summary: dict, elapsed_s: float):
    """The table `codekiln tokenizer train` prints: algorithm, pre-tokenizer, vocabulary, what was sampled, time."""
    from rich.table import Table

    table = Table(title="tokenizer train", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    for key, value in (("algorithm", summary["algorithm"]), ("pre-tokenizer", summary.get("pretokenizer", "codekiln")),
                       ("vocabulary", f"{summary['vocab_size']:,}"),
                       ("documents sampled", f"{summary['docs']:,}"),
                       ("characters sampled", f"{summary['chars'] / 1e6:,.1f} M"), ("time", f"{elapsed_s:.1f} s")):
        table.add_row(key, value)
    return table
