"""Add codekiln's missing special tokens to an imported tokenizer, so fine-tuning can teach FIM to a base without it.

An imported model keeps its own vocabulary (codekiln.tokenizer); one that was never trained to fill in
the middle (SmolLM2) has no FIM tokens, so `codekiln finetune` adds them: each missing name becomes a
special added token spelled as the name itself (`<|fim_prefix|>`), with the next free id after the
vocabulary, and the model gets new embedding rows for them (codekiln.model.resize). Every id the
tokenizer had keeps its meaning, so the model computes what it did for any text; codekiln's literal
`encode` never produces a new id from text, and the Hugging Face files match the new tokens in prompts
as the ecosystem matches any special token.

tokenizer_config.json records the extension (`codekiln.extended_from`: the source tokenizer's hash, its
size, and the ids added), so a trainer can check that a checkpoint made for the source tokenizer is the
one being grown.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from codekiln.errors import UserError
from codekiln.files import atomic_write_bytes, atomic_write_json, replace_dir
from codekiln.tokenizer import FIM_TOKENS, IMPORT_KEY, SPECIAL_TOKENS, load, tokenizer_hash

EXTENSION_KEY = "extended_from"  # under codekiln's record in tokenizer_config.json
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def missing_special_tokens(tok_dir) -> list[str]:
    """codekiln special-token names an imported tokenizer lacks (FIM, <|fim_pad|>, <|file_sep|>, <|repo_name|>).

    A codekiln-trained tokenizer always has every one, so the list is empty for it.
    """
    tok = load(tok_dir)
    return [name for name in SPECIAL_TOKENS if name not in tok.special_ids]


def add_special_tokens(src_dir, out_dir, names) -> dict:
    """Write src_dir's tokenizer with the named codekiln special tokens added to out_dir (whole, atomically).

    Each name becomes a special added token spelled as the name, with the next free id after the
    vocabulary (a name whose spelling already is a special token of the tokenizer is mapped to it).
    Returns {"added": {name: id}, "vocab_before", "vocab_after"}.
    """
    from tokenizers import Tokenizer

    src, out = Path(src_dir), Path(out_dir)
    tok = load(src)
    names = list(dict.fromkeys(names))
    if not tok.imported:
        raise UserError(f"{src} is a codekiln-trained tokenizer: it has every special token already")
    unknown = [n for n in names if n not in SPECIAL_TOKENS]
    if unknown:
        raise UserError(f"{unknown[0]} is not a codekiln special token (known: {', '.join(SPECIAL_TOKENS)})")
    present = [n for n in names if n in tok.special_ids]
    if present:
        raise UserError(f"the tokenizer in {src} has {present[0]} already (as {tok.special_ids[present[0]]})")
    if not names:
        raise UserError(f"no special tokens to add to the tokenizer in {src}")
    fim = [n for n in FIM_TOKENS if n in names or n in tok.special_ids]
    if fim and len(fim) != len(FIM_TOKENS):  # half a FIM vocabulary is no FIM (as the importer decides)
        raise UserError(f"the FIM tokens come together: adding {', '.join(n for n in names if n in FIM_TOKENS)} "
                        f"leaves {', '.join(sorted(set(FIM_TOKENS) - set(fim)))} missing")
    if out.resolve() == src.resolve():
        raise UserError(f"the extended tokenizer needs another directory than its source {src}")

    spec = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    added_tokens = spec.setdefault("added_tokens", [])
    by_content = {t["content"]: t for t in added_tokens}
    vocab = spec.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        raise UserError(f"{src / 'tokenizer.json'} is not a BPE tokenizer with a vocabulary of token -> id")
    before = 1 + max([*vocab.values(), *(t["id"] for t in added_tokens)])
    mapping = dict(config[IMPORT_KEY]["special_tokens"])
    added, next_id = {}, before
    for name in names:
        existing = by_content.get(name)
        if existing is not None and existing.get("special"):
            mapping[name] = name  # the model has this spelling as a special token already: use it
            continue
        if existing is not None or name in vocab:
            raise UserError(f"the tokenizer in {src} has {name} as an ordinary token; it cannot also be the "
                            f"special {name}")
        added_tokens.append({"id": next_id, "content": name, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True})
        mapping[name] = name
        added[name] = next_id
        next_id += 1
    try:
        text = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)).to_str()
    except Exception as exc:  # noqa: BLE001 - the source file is the user's input
        raise UserError(f"{src / 'tokenizer.json'} cannot take added tokens: {str(exc).splitlines()[0]}") from None
    check = Tokenizer.from_str(text)
    for name, tid in added.items():  # tokenizers keeps the ids it is given; a surprise here is a bug
        if check.token_to_id(name) != tid:
            raise RuntimeError(f"{name} got id {check.token_to_id(name)}, not {tid}")

    new_config, special_map = _configs(src, config, json.loads(text), mapping, added)
    new_config[IMPORT_KEY][EXTENSION_KEY] = {"tokenizer_hash": tokenizer_hash(src), "vocab": before, "added": added}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for path in sorted(src.iterdir()):  # other tokenizer files travel with it (never an export's weights)
            if path.is_file() and path.name not in FILES and path.name.startswith(("tokenizer", "vocab", "merges")):
                atomic_write_bytes(tmp / path.name, path.read_bytes())
        atomic_write_bytes(tmp / "tokenizer.json", text.encode("utf-8"))
        atomic_write_json(tmp / "tokenizer_config.json", new_config)
        atomic_write_json(tmp / "special_tokens_map.json", special_map)
        grown = load(tmp)  # the contract holds before anything is in place
        if any(grown.special_ids[n] != tid for n, tid in added.items()):
            raise RuntimeError("the extended tokenizer does not load with the ids it was given")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"added": added, "vocab_before": before, "vocab_after": next_id}


def extension(tok_dir) -> dict | None:
    """The record add_special_tokens left in a tokenizer directory ({tokenizer_hash, vocab, added}), or None."""
    path = Path(tok_dir) / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = (config.get(IMPORT_KEY) or {}).get(EXTENSION_KEY) if isinstance(config, dict) else None
    return record if isinstance(record, dict) else None


def _configs(src: Path, config: dict, spec: dict, mapping: dict, added: dict) -> tuple[dict, dict]:
    """tokenizer_config.json and special_tokens_map.json with the new tokens listed as special."""
    special_map = {}
    if (src / "special_tokens_map.json").is_file():
        try:
            special_map = json.loads((src / "special_tokens_map.json").read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{src / 'special_tokens_map.json'} is not valid JSON") from None
    config = json.loads(json.dumps(config))  # a deep copy: the caller's dict stays as read
    config[IMPORT_KEY]["special_tokens"] = mapping
    # The ecosystem's list of every added token (what save_pretrained writes), from tokenizer.json itself.
    config["added_tokens_decoder"] = {
        str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for t in spec["added_tokens"]}
    for holder in (config, special_map):
        extra = [t if isinstance(t, str) else t.get("content") for t in holder.get("additional_special_tokens", [])]
        holder["additional_special_tokens"] = extra + [n for n in added if n not in extra]
    return config, special_map
