"""Fitting a prompt into the model's context: cut from the far ends, keep the text nearest the cursor.

The room for a prompt is the model's context less `max_new_tokens`, so the whole completion always fits.
A plain prompt that is longer keeps its end (the code just before the cursor). A fill-in-the-middle
prompt trims its prefix from the start and its suffix from the end: each side gets half the room, and a
side that needs less than its half gives the rest to the other, so the tokens on both sides of the hole
survive. The FIM markers are never cut. `eval humaneval`, `eval infill`, `complete` and the completion
server all fit prompts this way, and report how many they cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from codekiln import fim
from codekiln.errors import UserError

FIM_MARKERS = 3  # <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>, in either order


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt's token ids as they fit the context, and how many tokens were cut to get there."""

    ids: list[int]
    cut_tokens: int = 0

    @property
    def cut(self) -> bool:
        """Whether any token of the prompt was dropped."""
        return self.cut_tokens > 0


def prompt_room(context: int, max_new_tokens: int, reserved: int = 0) -> int:
    """Tokens a prompt may hold: the context less max_new_tokens and `reserved` marker tokens."""
    room = context - max_new_tokens - reserved
    if room < (1 if reserved == 0 else 0):
        raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
                        f"{context} tokens; lower --max-new-tokens")
    return room


def keep_end(ids: list[int], room: int) -> list[int]:
    """The last `room` ids: a plain prompt keeps the code nearest the cursor."""
    return list(ids[max(0, len(ids) - room):])


def split_room(prefix_len: int, suffix_len: int, room: int) -> tuple[int, int]:
    """(prefix tokens, suffix tokens) to keep: half the room each, the prefix taking an odd token, and a side
    that needs less than its half leaving the rest to the other."""
    if prefix_len + suffix_len <= room:
        return prefix_len, suffix_len
    keep_suffix = min(suffix_len, room // 2)
    keep_prefix = min(prefix_len, room - keep_suffix)
    return keep_prefix, min(suffix_len, room - keep_prefix)


def fit_prompt(tok, prompt: str | list[int], *, context: int, max_new_tokens: int) -> FittedPrompt:
    """A plain prompt (text or ids) cut to its end so that max_new_tokens still fit in the context."""
    ids = tok.encode(prompt) if isinstance(prompt, str) else list(prompt)
    kept = keep_end(ids, prompt_room(context, max_new_tokens))
    return FittedPrompt(kept, len(ids) - len(kept))


def fit_fim(tok, prefix: str, suffix: str, *, context: int, max_new_tokens: int, spm: bool = False) -> FittedPrompt:
    """A fill-in-the-middle prompt whose prefix loses its start and suffix its end until it fits the context."""
    prefix_ids, suffix_ids = tok.encode_batch([prefix, suffix])
    room = prompt_room(context, max_new_tokens, reserved=FIM_MARKERS)
    keep_prefix, keep_suffix = split_room(len(prefix_ids), len(suffix_ids), room)
    ids = fim.prompt(prefix_ids[len(prefix_ids) - keep_prefix:], suffix_ids[:keep_suffix], tok.special_ids, spm)
    return FittedPrompt(ids, len(prefix_ids) + len(suffix_ids) - keep_prefix - keep_suffix)


def fit_repo_fim(tok, prefix: str, suffix: str, *, context: int, max_new_tokens: int,
                 extra: list[tuple[str, str]] = (), path: str = "", repo: str = "", spm: bool = False) -> FittedPrompt:
    """A repository-level FIM prompt: other files of the repository (`extra`, (path, text) pairs, most
    relevant last), then the current file's FIM prompt, in the layout of codekiln.fim's repo_* helpers:

        <|repo_name|>repo\\n <|file_sep|>path\\ntext ... <|file_sep|>current path\\n <FIM prompt>

    The FIM prompt is fitted first (fit_fim's rule); the other files get only the room it leaves, the ones
    given last first, and a file that does not fit whole is left out (half a file misleads more than it
    helps). Without extra files, path and repo, this is fit_fim's prompt. A tokenizer without the
    repository tokens gets the FIM prompt alone. cut_tokens counts only the prefix and suffix tokens cut.
    """
    fitted = fit_fim(tok, prefix, suffix, context=context, max_new_tokens=max_new_tokens, spm=spm)
    special = tok.special_ids
    if not (extra or path or repo) or fim.REPO not in special or fim.FILE_SEP not in special:
        return fitted
    room = context - max_new_tokens - len(fitted.ids)
    head = fim.repo_header(repo, special, tok.encode) if repo else []
    # the current file's separator whenever other files come before it (its path line empty when unknown, as
    # in llama.cpp's /infill), so the FIM prompt is never read as the end of the last other file
    tail = fim.current_file(path, special, tok.encode) if path or extra else []
    if len(head) + len(tail) > room:
        return fitted
    room -= len(head) + len(tail)
    kept: list[list[int]] = []
    for file_path, text in reversed(list(extra)):
        ids = fim.repo_file(file_path, text, special, tok.encode)
        if len(ids) <= room:
            kept.insert(0, ids)
            room -= len(ids)
    ids = [*head, *(t for f in kept for t in f), *tail, *fitted.ids]
    return FittedPrompt(ids, fitted.cut_tokens)
