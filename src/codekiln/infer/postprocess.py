"""Turning raw generated text into a completion: pure functions shared by eval and the server.

Benchmark rule (HumanEval, BigCode harness): cut at the first of HUMANEVAL_STOP; see `for_humaneval`.

Editor rules (after Tabby's post-processing; `for_editor` applies them in this order):
  1. end at a special token (`<|endoftext|>`, `<|file_sep|>`, `<|fim_*|>`, ...): the model ended the text;
  2. single-line mode: end at the first newline that follows some non-whitespace text, so a completion
     asked for at the end of a line fills that line only;
  3. otherwise end the completion where its indentation leaves the block the cursor is in (a new
     top-level statement, the next method of the class, the closing of the enclosing block);
  4. end before a line that repeats the first non-blank line of the suffix (the model started to
     write again what already follows the cursor);
  5. trim trailing whitespace.
Indentation counts a tab as 4 columns.
"""

from __future__ import annotations

from codekiln.tokenizer import SPECIAL_TOKENS

HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
BLOCK_OPENERS = (":", "{", "(", "[")
TAB = 4


def find_stop(text: str, stop) -> int | None:
    """Index where the earliest of the stop strings begins in text, or None."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stop) -> str:
    """text up to (not including) the earliest stop string."""
    i = find_stop(text, stop)
    return text if i is None else text[:i]


def cut_at_end_token(text: str) -> str:
    """text up to the first special-token string (`<|endoftext|>`, `<|file_sep|>`, `<|fim_*|>`, ...)."""
    return cut_at_stop(text, SPECIAL_TOKENS)


def trim_trailing_whitespace(text: str) -> str:
    """Spaces and tabs removed from the end of every line, and trailing blank lines from the end."""
    return "\n".join(line.rstrip(" \t\r") for line in text.split("\n")).rstrip()


def indent_width(line: str) -> int:
    """Columns of leading whitespace (a tab is 4)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += TAB - width % TAB
        else:
            break
    return width


def block_indent(prefix: str) -> int:
    """Least indentation a line of the completion may have and still be in the cursor's block.

    The cursor line is the text after the prefix's last newline. When it holds code, the cursor is in
    that line's block. When it is whitespace only, its width is the cursor's indentation if non-zero;
    at column 0 the block is that of the last non-blank line, one deeper when that line opens a block
    (ends with `:`, `{`, `(` or `[`). Nothing above the cursor: 0, which cuts nothing.
    """
    lines = prefix.split("\n")
    cursor = lines[-1]
    if cursor:
        return indent_width(cursor)
    for line in reversed(lines[:-1]):
        if line.strip():
            return indent_width(line) + (1 if line.rstrip().endswith(BLOCK_OPENERS) else 0)
    return 0


def cut_at_dedent(text: str, prefix: str) -> str:
    """text up to the first non-blank line less indented than the cursor's block (see block_indent).

    The completion's first line continues the cursor line, so it is measured together with it and
    can only end the completion when the cursor line holds no code.
    """
    limit = block_indent(prefix)
    cursor = prefix.split("\n")[-1]
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i == 0:
            if cursor.strip() or not line.strip():
                continue
            line = cursor + line
        if line.strip() and indent_width(line) < limit:
            return "\n".join(lines[:i]) + ("\n" if i else "")
    return text


def single_line(text: str) -> str:
    """text up to the first newline that follows some non-whitespace text (leading blank lines stay)."""
    seen = False
    for i, ch in enumerate(text):
        if ch == "\n" and seen:
            return text[:i]
        if not ch.isspace():
            seen = True
    return text


def cut_at_suffix(text: str, suffix: str) -> str:
    """text up to a line (after its first) that repeats the first non-blank line of the suffix."""
    target = next((line.strip() for line in suffix.split("\n") if line.strip()), "")
    if not target:
        return text
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() == target:
            return "\n".join(lines[:i]) + "\n"
    return text


def for_humaneval(text: str, stop=HUMANEVAL_STOP) -> str:
    """A HumanEval completion: cut at a special token and at the first BigCode stop sequence."""
    return cut_at_stop(cut_at_end_token(text), stop)


def for_editor(text: str, prefix: str, suffix: str = "", single: bool = False) -> str:
    """An editor completion by the rules in this module's docstring (single: the cursor line only)."""
    text = cut_at_end_token(text)
    text = single_line(text) if single else cut_at_dedent(text, prefix)
    return trim_trailing_whitespace(cut_at_suffix(text, suffix))
