"""Fill-in-the-middle (Bavarian et al. 2022): a document is cut at two random character positions and
its pieces reordered so the model learns to write a middle given what comes before and after it.

PSM: <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle
SPM: <|fim_prefix|> <|fim_suffix|> suffix <|fim_middle|> prefix middle   (the variant StarCoder trains)

The cuts are in characters, so a piece never splits a character; each piece is encoded on its own,
which is what a prompt at inference looks like. Inference builds its prompts with `prompt()`.
A neutral module (ARCHITECTURE.md, shared seams): training and inference both import it, so the
layout a model learned is the layout it is prompted with.
"""

from __future__ import annotations

import numpy as np

PRE, SUF, MID = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"


def split(text: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """prefix, middle, suffix at two uniform character positions."""
    a, b = sorted(rng.integers(0, len(text) + 1, size=2).tolist())
    return text[:a], text[a:b], text[b:]


def arrange(prefix: list[int], middle: list[int], suffix: list[int], special: dict[str, int], spm: bool) -> list[int]:
    """Token ids in PSM or SPM order (the middle last, so it is what the model predicts)."""
    if spm:
        return [special[PRE], special[SUF], *suffix, special[MID], *prefix, *middle]
    return [special[PRE], *prefix, special[SUF], *suffix, special[MID], *middle]


def prompt(prefix_ids: list[int], suffix_ids: list[int], special: dict[str, int], spm: bool = False) -> list[int]:
    """An inference prompt: arrange() with an empty middle, which the model then writes."""
    return arrange(prefix_ids, [], suffix_ids, special, spm)


def transform(ids: np.ndarray, tok, rng: np.random.Generator, rate: float, spm_rate: float,
              repo_level: bool = False) -> np.ndarray:
    """One document's ids (no <|endoftext|>) in FIM form with probability `rate`, else unchanged.

    The rng is drawn from the same number of times whatever happens, so a document's fate depends
    only on its own key. With `repo_level` (shards written by codekiln.tokenizer.repo_level), a document
    in the repository layout (`<|repo_name|>repo\n` or straight away other files behind `<|file_sep|>path\n`,
    the current file last; see repo_header) keeps everything up to its last file and puts that file in FIM
    form: the layout editors send at completion time (infer.window.fit_repo_fim). Other documents that
    hold special tokens (pretraining's packed repositories) stay unchanged: decoding and re-encoding them
    would turn their markers into plain text.
    """
    u_fim, u_spm = rng.random(), rng.random()
    if u_fim >= rate or ids.size == 0:
        return ids
    sp = tok.special_ids
    head = np.zeros(0, dtype=ids.dtype)
    if repo_level and any(name in sp and ids[0] == sp[name] for name in (REPO, FILE_SEP)):  # FIM on its last file
        seps = np.flatnonzero(ids == sp[FILE_SEP]) if FILE_SEP in sp else np.zeros(0, dtype=np.int64)
        if seps.size == 0:
            return ids
        last = int(seps[-1])
        path, nl, text = tok.decode(ids[last + 1:].tolist()).partition("\n")
        if not nl or not text:
            return ids
        head = np.asarray([*ids[:last].tolist(), *current_file(path, sp, tok.encode)], dtype=ids.dtype)
    else:
        if np.isin(ids, list(sp.values())).any():
            return ids
        text = tok.decode(ids.tolist())
    pre, mid, suf = split(text, rng)
    p, m, s = tok.encode_batch([pre, mid, suf])
    return np.concatenate([head, np.asarray(arrange(p, m, s, sp, spm=u_spm < spm_rate), dtype=ids.dtype)])


def invert(ids: list[int], special: dict[str, int]) -> tuple[list[int], list[int], list[int]]:
    """prefix, middle, suffix ids of a FIM sequence (either order); raises ValueError if it is not one."""
    pre, suf, mid = special[PRE], special[SUF], special[MID]
    if len(ids) >= 2 and ids[0] == pre and ids[1] == suf:  # SPM
        j = ids.index(mid)
        return [], ids[j + 1:], ids[2:j]  # prefix+middle are joined in SPM; see invert_text
    if ids and ids[0] == pre:
        i, j = ids.index(suf), ids.index(mid)
        return ids[1:i], ids[j + 1:], ids[i + 1:j]
    raise ValueError("not a FIM sequence")


def invert_text(ids: list[int], tok) -> str:
    """The original document text of a FIM sequence (or of a plain one)."""
    sp = tok.special_ids
    if not ids or ids[0] != sp[PRE]:
        return tok.decode(ids)
    prefix, middle, suffix = invert(ids, sp)
    return tok.decode(prefix) + tok.decode(middle) + tok.decode(suffix)


REPO, FILE_SEP = "<|repo_name|>", "<|file_sep|>"


def repo_header(repo: str, special: dict[str, int], encode) -> list[int]:
    """`<|repo_name|>repo\\n`: the start of a repository-level sequence (as tokenizer shards pack repositories)."""
    return [special[REPO], *encode(f"{repo}\n")]


def repo_file(path: str, text: str, special: dict[str, int], encode) -> list[int]:
    """`<|file_sep|>path\\ntext`: one other file of the repository, as packed in training."""
    return [special[FILE_SEP], *encode(f"{path}\n"), *encode(text)]


def current_file(path: str, special: dict[str, int], encode) -> list[int]:
    """`<|file_sep|>path\\n`: the header of the file being edited, followed by its FIM prompt."""
    return [special[FILE_SEP], *encode(f"{path}\n")]
