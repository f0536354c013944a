"""Reading token-shard directories (ARCHITECTURE.md, token shards directory): meta.json, memory-mapped
shards and the per-document index.

A neutral module (shared seam): the trainer reads its data and `codekiln eval bpb` its validation text
through it, so neither reaches into the other. `codekiln data tokenize` writes the format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from codekiln.errors import UserError

FORMAT = "codekiln-tokens/2"  # 2: adds {split}-index.parquet (per-document shard, offset, tokens, bytes, lang)


class ShardSet:
    """One token-shard directory: meta.json, memory-mapped shards and the per-document index."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"{self.path} is not a token-shard directory (no meta.json); run codekiln data tokenize")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise UserError(f"{self.path} holds token shards in format {self.meta.get('format')}, not {FORMAT}; "
                            "delete it and rerun codekiln data tokenize")
        self.dtype = np.dtype("<u2") if self.meta["dtype"] == "uint16" else np.dtype("<u4")
        self._maps: dict[str, list[np.memmap]] = {}
        self.index: dict[str, dict[str, np.ndarray]] = {}
        for split in ("train", "val"):
            info = self.meta["splits"][split]
            self._maps[split] = [np.memmap(self.path / n, dtype=self.dtype, mode="r") if
                                 (self.path / n).stat().st_size else np.zeros(0, self.dtype) for n in info["shards"]]
            t = pq.read_table(self.path / info["index"])
            self.index[split] = {c: t.column(c).to_numpy() for c in ("shard", "offset", "tokens", "bytes")}
            self.index[split]["lang"] = np.asarray(t.column("lang").to_pylist(), dtype=object)

    def doc(self, split: str, i: int) -> np.ndarray:
        """Token ids of document i of a split, its closing <|endoftext|> included."""
        ix = self.index[split]
        off = int(ix["offset"][i])
        return np.asarray(self._maps[split][int(ix["shard"][i])][off: off + int(ix["tokens"][i])], dtype=np.int64)

    def languages(self, split: str = "train") -> dict[str, int]:
        """Tokens per language of a split."""
        ix, out = self.index[split], {}
        for lang in sorted(set(ix["lang"].tolist())):
            out[lang] = int(ix["tokens"][ix["lang"] == lang].sum())
        return out


def check_tokenizer(sets: list[ShardSet], sha: str, tokenizer: str | Path) -> None:
    """Refuse shards made with another tokenizer than the one whose hash (tokenizer_hash) is `sha`."""
    for s in sets:
        if s.meta["tokenizer_sha256"] != sha:
            raise UserError(f"{s.path} was tokenized with another tokenizer than {tokenizer}")
