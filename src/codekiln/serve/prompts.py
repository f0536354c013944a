"""From what an editor sent to the token ids the engine runs: plain, fill-in-the-middle and repository prompts.

Every prompt is fitted to the served context with codekiln.infer's window rules (cut from the far ends,
keeping the text nearest the cursor). Continue and llama.vscode's OpenAI mode send a prompt already laid
out with some model family's FIM marker text; with `--fim-markers-in-prompt` the server reads those
markers back into a prefix, a suffix and repository files (split_markers) and builds its own model's
FIM prompt from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codekiln.errors import UserError
from codekiln.infer import FittedPrompt, fit_prompt, fit_repo_fim

# Marker texts of the FIM templates editors render, (prefix, suffix, middle), PSM order.
PSM_MARKERS = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # codekiln, Qwen, CodeGemma, Granite
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder; Continue's default template
    ("<[fim-prefix]>", "<[fim-suffix]>", "<[fim-middle]>"),  # Seed-Coder
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("<PRE>", "<SUF>", "<MID>"),  # CodeLlama (with spaces around the markers)
)
CODESTRAL = ("[SUFFIX]", "[PREFIX]")  # Codestral: suffix first, then the prefix, which the middle continues
REPO_MARKERS = (("<|repo_name|>", "<|file_sep|>"), ("<repo_name>", "<file_sep>"))


@dataclass
class FimParts:
    """A fill-in-the-middle request read from text: prefix, suffix, other files, current path, repository."""

    prefix: str
    suffix: str
    extra: list[tuple[str, str]] = field(default_factory=list)
    path: str = ""
    repo: str = ""


def editor_max_tokens(requested: int | None, context: int, default: int) -> int:
    """An editor's completion length: its request (None or -1: `default`), at most half the served context."""
    n = default if requested is None or requested < 0 else requested
    return min(n, context // 2)


def require_fim(tok) -> None:
    """A 400 (UserError) when the model's tokenizer has no FIM tokens."""
    if not tok.has_fim:
        raise UserError("this model's tokenizer has no fill-in-the-middle tokens, so it cannot complete between "
                        "a prefix and a suffix; send a plain prompt without a suffix")


def plain(tok, prompt: str | list[int], *, context: int, max_tokens: int) -> FittedPrompt:
    """A plain prompt (text or token ids) keeping its end."""
    if isinstance(prompt, list) and prompt and not all(0 <= t < tok.vocab_size for t in prompt):
        raise UserError(f"the prompt holds a token id outside the vocabulary of {tok.vocab_size}")
    return fit_prompt(tok, prompt, context=context, max_new_tokens=max_tokens)


def infill(tok, parts: FimParts, *, context: int, max_tokens: int, after_middle: str = "") -> FittedPrompt:
    """A FIM prompt with repository context; `after_middle` (llama.cpp's `prompt`) follows the middle token,
    so the model continues it."""
    require_fim(tok)
    tail = tok.encode(after_middle) if after_middle else []  # kept whole: its room comes out of the rest
    fitted = fit_repo_fim(tok, parts.prefix, parts.suffix, context=context, max_new_tokens=max_tokens + len(tail),
                          extra=parts.extra, path=parts.path, repo=parts.repo)
    return FittedPrompt(fitted.ids + tail, fitted.cut_tokens)


def split_markers(text: str) -> FimParts | None:
    """The prefix, suffix and repository files of a prompt laid out with a known family's FIM marker text,
    or None when the text holds no complete FIM layout. Text before the prefix marker that is not a
    repository block stays at the start of the prefix."""
    for pre, suf, mid in PSM_MARKERS:
        i = text.find(pre)
        if i < 0:
            continue
        j = text.find(suf, i + len(pre))
        k = text.find(mid, j + len(suf)) if j >= 0 else -1
        if j < 0 or k < 0 or text[k + len(mid):].strip():
            continue
        prefix, suffix = text[i + len(pre):j], text[j + len(suf):k]
        if pre == "<PRE>":  # CodeLlama's template: "<PRE> {prefix} <SUF>{suffix} <MID>"
            prefix = prefix[1:] if prefix.startswith(" ") else prefix
            prefix = prefix[:-1] if prefix.endswith(" ") else prefix
            suffix = suffix[:-1] if suffix.endswith(" ") else suffix
        parts = _repository(text[:i])
        parts.prefix += prefix
        parts.suffix = suffix
        return parts
    s, p = CODESTRAL
    i = text.find(s)
    j = text.find(p, i + len(s)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        parts = _repository(text[:i])
        parts.prefix += text[j + len(p):]
        parts.suffix = text[i + len(s):j]
        return parts
    return None


def _repository(head: str) -> FimParts:
    """Repository blocks (`<|repo_name|>name` then `<|file_sep|>path\\ntext` blocks, the last one being the
    current file's header) read from the text before the FIM prefix; other text becomes the prefix's start."""
    for repo_marker, sep in REPO_MARKERS:
        if sep not in head:
            continue
        parts = FimParts("", "")
        before, *blocks = head.split(sep)
        if before.startswith(repo_marker):
            parts.repo = before[len(repo_marker):].strip()
        elif before.strip():
            parts.prefix = before
        for n, block in enumerate(blocks):
            path, _, body = block.partition("\n")
            if n == len(blocks) - 1 and not body.strip():
                parts.path = path.strip()
            else:
                parts.extra.append((path.strip(), body))
        return parts
    return FimParts(head, "")


def marker_text(text: str) -> bool:
    """Whether text holds any FIM marker string of a known family (a hint for the operator's log)."""
    return bool(re.search(r"<\|?fim[_-]|<PRE>|<｜fim|\[SUFFIX\]|<\[fim-", text))
