"""Stage 2: the code tokenizer (train, load, encode). See ARCHITECTURE.md, tokenizer directory.

`load(dir)` gives a `CodeTokenizer` whose `encode` treats text literally: a file that contains
`<|endoftext|>` never yields the special id. The Hugging Face files in the directory keep the
ecosystem's default (special-token strings in a prompt are matched) and give the same ids as
codekiln for any text that contains none.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from codekiln.errors import UserError

SPECIAL_TOKENS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|file_sep|>", "<|repo_name|>")


class CodeTokenizer:
    """A trained code tokenizer: literal `encode`, exact `decode`, and the special token ids."""

    def __init__(self, directory: str | Path):
        from tokenizers import Tokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"no tokenizer.json in {directory}")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            self._hf = Tokenizer.from_str(json.dumps(spec))
        except Exception as exc:  # noqa: BLE001 - a damaged file is the user's input
            raise UserError(f"{path} is not a valid tokenizer: {str(exc).splitlines()[0]}") from None
        # The literal encoder: the same model and pre-tokenizer without the added-token matcher.
        # The pre-tokenizer splits `<|`, words and `|>` apart, so merges can never rebuild a special.
        literal = dict(spec, added_tokens=[])
        self._literal = Tokenizer.from_str(json.dumps(literal))
        self.special_ids = {}
        for tok in SPECIAL_TOKENS:
            tid = self._hf.token_to_id(tok)
            if tid is None:
                raise UserError(f"{path} lacks the special token {tok}")
            self.special_ids[tok] = tid
        self.directory = directory
        self.vocab_size = self._hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of text, taken literally (special-token strings are ordinary text)."""
        return self._literal.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """encode() over many texts, in parallel threads."""
        return [e.ids for e in self._literal.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, special tokens included as their strings."""
        return self._hf.decode(ids, skip_special_tokens=False)

    @property
    def eot_id(self) -> int:
        """Id of <|endoftext|>, the document separator."""
        return self.special_ids["<|endoftext|>"]


def load(directory: str | Path) -> CodeTokenizer:
    """The tokenizer saved in a directory by `codekiln tokenizer train`."""
    return CodeTokenizer(directory)


def tokenizer_hash(directory: str | Path) -> str:
    """SHA-256 of a tokenizer directory's tokenizer.json: shards and runs record it, consumers check it."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"no tokenizer.json in {directory}")
    return hashlib.sha256(path.read_bytes()).hexdigest()
