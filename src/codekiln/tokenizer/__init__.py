"""Stage 2: the code tokenizer (train, load, encode). See ARCHITECTURE.md, tokenizer directory.

`load(dir)` gives a `CodeTokenizer` whose `encode` treats text literally: a file that contains
`<|endoftext|>` never yields the special id. The Hugging Face files in the directory keep the
ecosystem's default (special-token strings in a prompt are matched) and give the same ids as
codekiln for any text that contains none.

A tokenizer that `codekiln import` converted from an open model keeps that model's own vocabulary and
special tokens. Its tokenizer_config.json maps codekiln's special-token names to the model's tokens
(`codekiln.special_tokens`, e.g. `<|endoftext|>` -> `<|im_end|>`, the model's end token); only the names
the model has a token for are in `special_ids`, and asking for an absent FIM or repository token is a
UserError naming the model (it was never trained to fill in the middle).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from codekiln.errors import UserError

SPECIAL_TOKENS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|file_sep|>", "<|repo_name|>")
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")
IMPORT_KEY = "codekiln"  # tokenizer_config.json key of an imported tokenizer's record


class SpecialIds(dict):
    """name -> id of the special tokens a tokenizer has; an absent codekiln special token is a UserError."""

    def __init__(self, ids: dict[str, int], owner: str):
        super().__init__(ids)
        self.owner = owner

    def __missing__(self, name):
        if name not in SPECIAL_TOKENS:
            raise KeyError(name)
        what = "fill in the middle" if name in FIM_TOKENS or name == "<|fim_pad|>" else "pack repositories"
        raise UserError(f"the model's tokenizer ({self.owner}) has no {name} token: this imported model cannot "
                        f"{what} until `codekiln finetune` adds the token and trains it")


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
        mapping = _imported_mapping(directory)
        # The literal encoder: the same model and pre-tokenizer without the added-token matcher.
        # The pre-tokenizer splits `<|`, words and `|>` apart, so merges can never rebuild a special.
        # An imported model's non-special added tokens (llama.cpp's user-defined tokens) are always
        # matched by its own tokenizers, so they stay.
        kept = [t for t in spec.get("added_tokens", []) if mapping is not None and not t.get("special")]
        literal = dict(spec, added_tokens=kept)
        self._literal = Tokenizer.from_str(json.dumps(literal))
        ids = {}
        for name in SPECIAL_TOKENS if mapping is None else mapping:
            token = name if mapping is None else mapping[name]
            tid = self._hf.token_to_id(token)
            if tid is None:
                raise UserError(f"{path} lacks the special token {token}")
            ids[name] = tid
        if "<|endoftext|>" not in ids:
            raise UserError(f"{directory / 'tokenizer_config.json'}: {IMPORT_KEY}.special_tokens names no end token "
                            "(<|endoftext|>)")
        self.special_ids = SpecialIds(ids, str(directory.parent if directory.name == "tokenizer" else directory))
        self.imported = mapping is not None
        # The string of the end token (<|endoftext|>, or an imported model's own end token such as <|im_end|>).
        self.eot_token = "<|endoftext|>" if mapping is None else mapping["<|endoftext|>"]
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
        """Id of <|endoftext|> (an imported model's end token), the document separator."""
        return self.special_ids["<|endoftext|>"]

    @property
    def has_fim(self) -> bool:
        """True when the tokenizer has the FIM tokens (always for codekiln's own; an imported one may not)."""
        return all(name in self.special_ids for name in FIM_TOKENS)


def _imported_mapping(directory: Path) -> dict[str, str] | None:
    """codekiln name -> the model's token, from an imported tokenizer's tokenizer_config.json; None otherwise."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None
    record = config.get(IMPORT_KEY) if isinstance(config, dict) else None
    if not isinstance(record, dict) or "special_tokens" not in record:
        return None
    mapping = record["special_tokens"]
    if not isinstance(mapping, dict) or not all(k in SPECIAL_TOKENS and isinstance(v, str) for k, v in mapping.items()):
        raise UserError(f"{path}: {IMPORT_KEY}.special_tokens must map codekiln special-token names to token strings")
    return mapping


def load(directory: str | Path) -> CodeTokenizer:
    """The tokenizer saved in a directory by `codekiln tokenizer train`."""
    return CodeTokenizer(directory)


def tokenizer_hash(directory: str | Path) -> str:
    """SHA-256 of a tokenizer directory's tokenizer.json: shards and runs record it, consumers check it."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"no tokenizer.json in {directory}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretokenizers() -> dict[str, str]:
    """The pre-tokenizer variants codekiln trains with (`tokenizer.pretokenizer`): name -> split pattern."""
    from codekiln.tokenizer.train import PRETOKENIZERS

    return dict(PRETOKENIZERS)
