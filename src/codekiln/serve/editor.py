"""What the editor endpoints (Tabby, llama.cpp's /infill) share: the finish of a completion and its cleanup."""

from __future__ import annotations

from codekiln.infer import Result, for_editor

CUT_SHORT = ("deadline", "length")  # generation stopped before the model ended it


def single_line(suffix: str) -> bool:
    """Whether to complete the cursor line only: the rest of the cursor line (the suffix up to its first
    newline) holds code, so a multi-line completion would push that code down."""
    return bool(suffix.split("\n", 1)[0].strip())


def editor_text(result: Result, prefix: str, suffix: str, lang: str | None = None, n_indent: int = 0) -> str:
    """The completion an editor shows: codekiln.infer.for_editor's rules (stop words of the language, the
    cursor's block, text the suffix already has, balanced brackets, a usable end when cut short), then
    llama.cpp's n_indent rule (end before a line indented less than n_indent columns)."""
    text = for_editor(result.text, prefix, suffix, single=single_line(suffix), lang=lang,
                      truncated=result.finish_reason in CUT_SHORT)
    return cut_at_indent(text, n_indent) if n_indent > 0 else text


def cut_at_indent(text: str, n_indent: int) -> str:
    """text up to its first line (after the cursor line) that holds code and starts left of column n_indent."""
    lines = text.split("\n")
    for i in range(1, len(lines)):
        line = lines[i]
        if line.strip() and len(line) - len(line.lstrip(" \t")) < n_indent:
            return "\n".join(lines[:i])
    return text
