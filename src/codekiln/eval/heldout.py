"""Before and after fine-tuning, on a team's held-out files: infilling exact match and function bodies.

`codekiln finetune` holds out a stable share of each repository's files. This module measures the base
model and the fine-tuned one on them the same way:

- infilling tasks cut from the held-out files (`make_tasks`): a hidden line (`single_line`) or a hidden
  run of lines (`multi_line`), the model writing the middle from what surrounds it, scored by exact match
  as `eval infill` scores it (codekiln.eval.infill.normalize_middle: trailing whitespace and trailing blank
  lines do not count). Nothing is executed: team code has no tests to run here.
- five function bodies (`function_bodies`) completed left to right from the signature and docstring,
  shown side by side with the real body (`render_markdown`): what a reader of the report can judge at a
  glance, and what no rate shows.

Bits per byte on the held-out files comes from training's validation, not from here.

Spans are whole lines. In Python files, multi-line spans are the blocks of infill.multi_line_spans (a
compound statement with its body, or the body alone); in other languages, whose blocks this module does
not parse, they are runs of 2 to 4 lines that start and end on a non-blank line. Lines without a letter or
digit (a lone `}` or `)`) are never hidden alone: every model gets them, and they would only dilute the
difference. Spans longer than MAX_SPAN_LINES lines or MAX_MIDDLE_CHARS characters are left out, so a
middle fits a usual generation budget.

Which spans are hidden is drawn per file with a generator seeded by (seed, repo, path, kind), so a file's
tasks are always a prefix of its own draw, whatever other files there are. Files take turns in an order
seeded by (seed, repo, path), one task each per round, until `per_kind` tasks of a kind are cut: the tasks
spread over as many files as possible. Task ids number lines from 1, as editors and GitHub do:
`SingleLine/<repo>/<path>/L3`, `MultiLine/<repo>/<path>/L3_L5` (both ends included).
"""

from __future__ import annotations

import ast
import hashlib
import random
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from codekiln import fim
from codekiln.eval.infill import KINDS, multi_line_spans, normalize_middle, single_line_spans
from codekiln.infer import (FittedPrompt, cut_to_complete, editor_language, fit_fim, fit_prompt, fit_repo_fim,
                            generate, stop_words, trim_trailing_whitespace)

MAX_SPAN_LINES = 8  # longest hidden span, in lines
MAX_MIDDLE_CHARS = 480  # longest hidden span, in characters (about 128 tokens of code)
MAX_BODY_LINES = 30  # longest function body shown side by side
MAX_CONTEXT_FILES = 8  # other files of the repository offered to a repository-level prompt, nearest first
STYLES = ("repo_fim", "fim", "prefix")
_ID_PREFIX = {"single_line": "SingleLine", "multi_line": "MultiLine"}
_TAB = 4


@dataclass(frozen=True)
class HeldOutFile:
    """One held-out file: its repository, its path in it, its canonical language, its text."""

    repo: str
    path: str
    lang: str
    content: str


def as_file(item) -> HeldOutFile:
    """A HeldOutFile from a HeldOutFile or a mapping with repo, path, content and optionally lang (a Document)."""
    if isinstance(item, HeldOutFile):
        return item
    if isinstance(item, Mapping):
        return HeldOutFile(str(item["repo"]), str(item["path"]), str(item.get("lang") or ""), str(item["content"]))
    raise TypeError(f"a held-out file is a HeldOutFile or a mapping with repo, path and content, not {type(item)}")


def _files(files: Iterable) -> list[HeldOutFile]:
    """The files as HeldOutFiles; two files with the same repository and path are a caller's error."""
    out, seen = [], set()
    for item in files:
        f = as_file(item)
        if (f.repo, f.path) in seen:
            raise ValueError(f"held-out file {f.repo}/{f.path} is given twice")
        seen.add((f.repo, f.path))
        out.append(f)
    return out


def _lines(text: str) -> list[str]:
    """text split after each "\\n" (as ast counts lines), so "".join(lines) == text."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _is_python(f: HeldOutFile) -> bool:
    return (editor_language(f.lang) or editor_language(f.path)) == "Python"


def _file_order(files: Sequence[HeldOutFile], seed: int) -> list[HeldOutFile]:
    """Files in an order seeded by (seed, repo, path) and independent of the order they were given in."""
    return sorted(files, key=lambda f: (hashlib.sha256(f"{seed}/{f.repo}/{f.path}".encode()).hexdigest(),
                                        f.repo, f.path))


def _take_turns(draws: Sequence[Sequence], limit: int) -> list:
    """Up to `limit` items, one from each draw per round, in the draws' order."""
    taken = []
    for depth in range(max((len(d) for d in draws), default=0)):
        for draw in draws:
            if len(taken) == limit:
                return taken
            if depth < len(draw):
                taken.append(draw[depth])
    return taken


def _run_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Runs of 2 to 4 lines that start and end on a non-blank line: multi-line spans where blocks are unknown."""
    return [(i, i + size) for i in range(len(lines)) for size in (2, 3, 4)
            if i + size <= len(lines) and lines[i].strip() and lines[i + size - 1].strip()]


def candidate_spans(f: HeldOutFile, kind: str) -> list[tuple[int, int]]:
    """The half-open line spans of one kind that a file offers (see the module docstring), in order."""
    lines = _lines(f.content)
    if kind == "single_line":
        spans = [(i, j) for i, j in single_line_spans(lines) if any(ch.isalnum() for ch in lines[i])]
    elif kind == "multi_line":
        spans = multi_line_spans(lines) if _is_python(f) else _run_spans(lines)
    else:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return [(i, j) for i, j in spans
            if j - i <= MAX_SPAN_LINES and len("".join(lines[i:j])) <= MAX_MIDDLE_CHARS]


def make_tasks(files: Iterable, *, seed: int, per_kind: int) -> list[dict]:
    """Infilling tasks cut from held-out files: at most `per_kind` of each kind, spread over the files.

    Each task: id, kind, repo, path, lang, line (first hidden line, from 1), prefix, middle, suffix, with
    prefix + middle + suffix == the file's content. Ordered by kind, repository, path and line.
    """
    if per_kind < 0:
        raise ValueError(f"per_kind must be >= 0, not {per_kind}")
    ordered = _file_order(_files(files), seed)
    tasks = []
    for kind in KINDS:
        draws = []
        for f in ordered:
            spans = candidate_spans(f, kind)
            rng = random.Random(f"{seed}/{f.repo}/{f.path}/{kind}")
            draws.append([(f, span) for span in rng.sample(spans, len(spans))])
        for f, (start, end) in sorted(_take_turns(draws, per_kind), key=lambda t: (t[0].repo, t[0].path, t[1])):
            lines = _lines(f.content)
            where = f"L{start + 1}" if kind == "single_line" else f"L{start + 1}_L{end}"
            tasks.append({"id": f"{_ID_PREFIX[kind]}/{f.repo}/{f.path}/{where}", "kind": kind, "repo": f.repo,
                          "path": f.path, "lang": f.lang, "line": start + 1, "prefix": "".join(lines[:start]),
                          "middle": "".join(lines[start:end]), "suffix": "".join(lines[end:])})
    return tasks


# --- function bodies ---

def _is_docstring(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _functions(tree: ast.AST) -> Iterable[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method, nested ones included, in source order."""
    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = ".".join([*scope, child.name])
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from visit(child, [*scope, child.name])
            else:
                yield from visit(child, scope)
    yield from visit(tree, [])


def _body(lines: Sequence[str], node) -> tuple[int, int] | None:
    """The half-open line span of a function's body below its signature and docstring, or None when the body
    does not begin and end on whole lines (a one-line `def f(): ...`, `x = 1; y = 2` past the end)."""
    body = node.body[1:] if _is_docstring(node.body[0]) else node.body
    if not body:
        return None
    first, last = body[0], body[-1]
    start, end = first.lineno - 1, last.end_lineno
    before_first = lines[start].encode()[:first.col_offset]  # ast's columns count UTF-8 bytes
    after_last = lines[end - 1].encode()[last.end_col_offset:].strip()
    if before_first.strip() or after_last[:1] not in (b"", b"#"):
        return None
    floor = node.body[0].end_lineno if len(body) < len(node.body) else node.lineno
    # Comments just above the first statement belong to the body; blank lines before them do not.
    while start - 1 >= floor and (not lines[start - 1].strip() or lines[start - 1].lstrip().startswith("#")):
        start -= 1
    while not lines[start].strip():
        start += 1
    return start, end


def _indent_width(line: str) -> int:
    """Columns of leading whitespace (a tab is 4, as codekiln.infer's post-processing counts)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += _TAB - width % _TAB
        else:
            break
    return width


def _body_candidates(f: HeldOutFile) -> list[dict]:
    """Every function of a Python file whose body is 2 to MAX_BODY_LINES lines, with 2+ non-blank ones."""
    if "\r" in f.content.replace("\r\n", ""):
        return []  # lone carriage returns: ast and this module would count lines differently
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like: the file is still the team's code
            tree = ast.parse(f.content)
    except (SyntaxError, ValueError, RecursionError):
        return []
    lines = _lines(f.content)
    found = []
    for name, node in _functions(tree):
        span = _body(lines, node)
        if span is None:
            continue
        start, end = span
        body = lines[start:end]
        if not 2 <= len(body) <= MAX_BODY_LINES or sum(1 for line in body if line.strip()) < 2:
            continue
        head = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        found.append({"repo": f.repo, "path": f.path, "name": name, "line": node.lineno,
                      "indent": _indent_width(lines[node.lineno - 1]), "prompt": "".join(lines[:start]),
                      "prompt_tail": "".join(lines[head:start]), "reference": "".join(body)})
    return found


def function_bodies(files: Iterable, *, n: int = 5, seed: int) -> list[dict]:
    """n Python functions of the held-out files, one per file before a second from any, drawn with seeds.

    Each: repo, path, name (qualified: `Class.method`), line (of the `def`, from 1), indent (the def's column),
    prompt (the file up to the body: signature and docstring included), prompt_tail (decorators, signature
    and docstring alone), reference (the body). prompt + reference is a prefix of the file. Ordered by
    repository, path and line.
    """
    draws = []
    for f in _file_order([f for f in _files(files) if _is_python(f)], seed):
        found = _body_candidates(f)
        draws.append(random.Random(f"{seed}/{f.repo}/{f.path}/body").sample(found, len(found)))
    return sorted(_take_turns(draws, n), key=lambda b: (b["repo"], b["path"], b["line"]))


# --- prompts ---

def prompt_style(tok, repo_level: bool) -> str:
    """How a model is prompted for a middle: `repo_fim` when it was trained on repository-level FIM and its
    tokenizer has the repository tokens, `fim` when it has the FIM tokens, else `prefix` (see evaluate)."""
    if not tok.has_fim:
        return "prefix"
    if repo_level and fim.REPO in tok.special_ids and fim.FILE_SEP in tok.special_ids:
        return "repo_fim"
    return "fim"


def _path_distance(a: str, b: str) -> int:
    """Steps between two files' folders: up from one to their common folder, then down to the other."""
    da, db = PurePosixPath(a).parent.parts, PurePosixPath(b).parent.parts
    common = 0
    while common < min(len(da), len(db)) and da[common] == db[common]:
        common += 1
    return len(da) + len(db) - 2 * common


def _context_pool(context_files) -> list[tuple[str | None, str, str]]:
    """(repo or None, path, text) of each context file. context_files is a mapping repo -> [(path, text)], or
    a sequence of HeldOutFiles, mappings with repo, path and content (Documents), or (path, text) pairs, which
    belong to whatever repository asks (a one-repository team)."""
    if isinstance(context_files, Mapping):
        return [(str(repo), str(path), str(text)) for repo, pairs in context_files.items() for path, text in pairs]
    pool = []
    for item in context_files or ():
        if isinstance(item, tuple) and len(item) == 2:
            pool.append((None, str(item[0]), str(item[1])))
        else:
            f = as_file(item)
            pool.append((f.repo, f.path, f.content))
    return pool


def repo_context(task: Mapping, context_files, *, limit: int = MAX_CONTEXT_FILES) -> list[tuple[str, str]]:
    """(path, text) of up to `limit` other files of the task's repository, the nearest folder last (the order
    fit_repo_fim reads as most relevant last). Never the held-out file itself: not its path, and no file
    whose text is the held-out file's text (a copy would hand the model the middle).

    context_files: {repo: [(path, text)]}, or a sequence of files (HeldOutFiles, Documents) or of (path, text)
    pairs, the latter taken as files of whatever repository asks.
    """
    own = task["prefix"] + task["middle"] + task["suffix"]
    found = [(path, text) for repo, path, text in _context_pool(context_files)
             if repo in (None, task["repo"]) and path != task["path"] and text != own and text]
    found.sort(key=lambda pt: (_path_distance(pt[0], task["path"]), pt[0]))
    return list(reversed(found[:limit]))


def task_prompts(tok, tasks: Sequence[Mapping], style: str, *, context: int, max_new_tokens: int,
                 context_files=None) -> list[FittedPrompt]:
    """Each task's prompt in a style (see evaluate), fitted to the context with room for max_new_tokens."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    window = dict(context=context, max_new_tokens=max_new_tokens)
    fitted = []
    for task in tasks:
        if style == "prefix":
            # A hole on a file's first line leaves a left-to-right model nothing before it: it starts as
            # a document starts in training, after the end token.
            fitted.append(fit_prompt(tok, task["prefix"], **window) if task["prefix"]
                          else FittedPrompt([tok.eot_id]))
        elif style == "fim":
            fitted.append(fit_fim(tok, task["prefix"], task["suffix"], **window))
        else:
            fitted.append(fit_repo_fim(tok, task["prefix"], task["suffix"], **window, path=task["path"],
                                       repo=task["repo"], extra=repo_context(task, context_files)))
    return fitted


def _first_lines(text: str, count: int) -> str:
    """The first `count` lines of text, newlines kept."""
    return "".join(_lines(text)[:count])


def _cut_body(text: str, indent: int, truncated: bool) -> str:
    """A generated body up to its first non-blank line at the def's column or less (the function is over);
    a body the token limit stopped keeps its complete lines only."""
    lines = _lines(text)
    for i, line in enumerate(lines):
        if line.strip() and _indent_width(line) <= indent:
            return trim_trailing_whitespace("".join(lines[:i]))
    if truncated:
        text = cut_to_complete(text, lang="Python")
    return trim_trailing_whitespace(text)


def _generate_groups(model, tok, prompts: list[list[int]], groups: dict, *, max_new_tokens: int,
                     batch_size: int, progress: Callable[[int], None] | None) -> list:
    """Greedy completions of prompts, batched within each group (key: its stop strings) by prompt length, so
    rows of a batch pad little; one Completion per prompt, in order."""
    done = [None] * len(prompts)
    for stop, members in groups.items():
        members = sorted(members, key=lambda i: (len(prompts[i]), i))
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            for i, c in zip(chunk, generate(model, tok, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                                            stop=stop)):
                done[i] = c
            if progress:
                progress(len(chunk))
    return done


def score_middles(tasks: Sequence[Mapping], middles: Sequence[str]) -> dict:
    """Exact match of one generated middle per task, as `eval infill` counts it (normalize_middle).

    exact_match and tasks per kind (a kind without tasks: rate None), and per_task rows (id, kind,
    exact_match, middle, reference) in task order.
    """
    if len(middles) != len(tasks):
        raise ValueError(f"{len(middles)} middles for {len(tasks)} tasks")
    rows = [{"id": t["id"], "kind": t["kind"],
             "exact_match": normalize_middle(m) == normalize_middle(t["middle"]), "middle": m,
             "reference": t["middle"]} for t, m in zip(tasks, middles)]
    counts = {kind: sum(1 for r in rows if r["kind"] == kind) for kind in KINDS}
    rates = {kind: (sum(r["exact_match"] for r in rows if r["kind"] == kind) / counts[kind] if counts[kind] else None)
             for kind in KINDS}
    return {"exact_match": rates, "tasks": counts, "per_task": rows}


def evaluate(model, tok, tasks: Sequence[Mapping], bodies: Sequence[Mapping], *, repo_level: bool = False,
             context_files=None, max_new_tokens: int = 128, batch_size: int = 16, context: int | None = None,
             progress: Callable[[int], None] | None = None) -> dict:
    """Greedy middles for the tasks and completions of the bodies, through codekiln.infer's batched, KV-cached
    generation; exact match per kind and the bodies side by side.

    The prompt style follows what the model can do (prompt_style) and is recorded:
    - `repo_fim`: the task's file as a FIM prompt behind other files of its repository (repo_context over
      `context_files`), laid out by fit_repo_fim as the model was trained and as the editors prompt it;
    - `fim`: the file's prefix and suffix alone (fit_fim), as `eval infill` prompts;
    - `prefix`: a tokenizer without FIM tokens (some imported bases) can only continue the text before the
      hole. Left to right from the prefix is then the only way such a base completes code, in an editor as
      here, so it is the fair "before": the fine-tuned model is compared with what the base would really
      have offered. Its middle is cut after as many lines as the hidden span has (single-line tasks stop at
      the first newline), which tells it the one thing it cannot see, the span's length; if anything this
      favours the base.
    Bodies are completed left to right from their prompt in every style (the suffix would give the body
    away), cut where a line returns to the def's column, or, when the token limit stopped them, after their
    last complete line.

    Returns prompt_style, exact_match and tasks per kind (score_middles), per_task, bodies (repo, path, name,
    prompt_tail, reference, completion), and generation (prompts, prompts_cut, context, max_new_tokens).
    `progress(n)` is called after each batch, len(tasks) + len(bodies) in all. `context` caps the window
    prompts are fitted into (default: the model's context).
    """
    style = prompt_style(tok, repo_level)
    # `context` caps the prompt window below the model's (a fine-tune compares models at the length it trained)
    context = model.cfg.context if context is None else min(context, model.cfg.context)
    window = dict(context=context, max_new_tokens=max_new_tokens)
    fitted = task_prompts(tok, tasks, style, context_files=context_files, **window)
    prompts = [f.ids for f in fitted]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(("\n",) if style == "prefix" and task["kind"] == "single_line" else (), []).append(i)
    done = _generate_groups(model, tok, prompts, groups, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            progress=progress)
    middles = [_first_lines(c.text, len(_lines(t["middle"]))) if style == "prefix" else c.text
               for t, c in zip(tasks, done)]
    scored = score_middles(tasks, middles)

    body_fitted = [fit_prompt(tok, b["prompt"], **window) for b in bodies]
    body_groups: dict[tuple[str, ...], list[int]] = {}
    for i, b in enumerate(bodies):
        # A new definition at the def's own column ends the function: stop generating there (only saves
        # time; _cut_body would end the body at that line anyway).
        head = b["prompt_tail"]
        pad = head[:len(head) - len(head.lstrip(" \t"))]
        stops = stop_words("Python") if not pad else tuple(f"\n{pad}{w}" for w in ("def ", "async def ", "@"))
        body_groups.setdefault(stops, []).append(i)
    body_done = _generate_groups(model, tok, [f.ids for f in body_fitted], body_groups,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    side_by_side = [{"repo": b["repo"], "path": b["path"], "name": b["name"], "prompt_tail": b["prompt_tail"],
                     "reference": b["reference"],
                     "completion": _cut_body(c.text, b["indent"], c.finish_reason == "length")}
                    for b, c in zip(bodies, body_done)]
    return {"prompt_style": style, **scored, "bodies": side_by_side,
            "generation": {"prompts": len(tasks) + len(bodies),
                           "prompts_cut": sum(f.cut for f in [*fitted, *body_fitted]),
                           "context": context, "max_new_tokens": max_new_tokens}}


# --- report ---

def _fenced(text: str, lang: str = "") -> list[str]:
    """A fenced code block holding text as it is (the fence longer than any run of backticks in it)."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", *text.rstrip("\n").split("\n"), fence]


def _completion(text: str) -> list[str]:
    """A model's body as a fenced block, or a note that it wrote none (an empty block reads as a glitch)."""
    return _fenced(text, "python") if text.strip() else ["*(nothing)*"]


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_markdown(before: dict, after: dict) -> str:
    """A report section: exact match before -> after per kind, and the function bodies side by side (the real
    body, the base model's, the fine-tuned model's), each in a fenced block so newlines read as code."""
    lines = ["## Held-out files: before and after fine-tuning", "",
             f"Prompt style: before `{before['prompt_style']}`, after `{after['prompt_style']}`. Exact match "
             "compares a generated middle with the hidden one, trailing whitespace aside.", "",
             "| kind | tasks | exact match before | after | change |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        b, a = before["exact_match"].get(kind), after["exact_match"].get(kind)
        change = "–" if a is None or b is None else f"{a - b:+.3f}"
        lines.append(f"| {kind} | {after['tasks'].get(kind, 0)} | {_rate(b)} | {_rate(a)} | {change} |")
    if before["bodies"] or after["bodies"]:
        lines += ["", "### Function bodies", "",
                  "Each held-out function's signature and docstring were the prompt; the models wrote the body."]
    for i, (b, a) in enumerate(zip(before["bodies"], after["bodies"]), 1):
        if (b["repo"], b["path"], b["name"]) != (a["repo"], a["path"], a["name"]):
            raise ValueError(f"body {i} differs between the two evaluations: {b['name']} and {a['name']}")
        lines += ["", f"#### {i}. `{b['name']}` in {b['repo']}/{b['path']}", "", "Prompt (its end):", "",
                  *_fenced(b["prompt_tail"], "python"), "", "Reference:", "", *_fenced(b["reference"], "python"),
                  "", "Before:", "", *_completion(b["completion"]), "", "After:", "", *_completion(a["completion"])]
    return "\n".join(lines) + "\n"
