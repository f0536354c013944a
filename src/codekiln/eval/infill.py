"""Infilling tasks made from HumanEval's canonical solutions, as in the FIM paper (Bavarian et al. 2022).

A task hides part of a canonical solution; a model sees the prefix (the problem's prompt and the solution
lines before the hole) and the suffix (the solution lines after it), writes the middle, and is scored by
running the problem's tests on prefix + middle + suffix in the sandbox.

- ``single_line``: one non-blank line of the solution is hidden.
- ``multi_line``: a block of at least two lines is hidden: a compound statement (``for``/``if``/``while``/
  ``def``/``with``/``try``... header with its body) or the body alone when it has two or more non-blank
  lines; a solution with no such block but two or more non-blank lines offers runs of 2 to 4 consecutive
  lines that start and end on a non-blank line instead.

Which lines and blocks are hidden is drawn per problem with a generator seeded by (seed, task_id, kind),
so the task set depends only on the seed and the problems. By default each problem gives at most one task
of each kind: 164 single-line and 127 multi-line tasks from HumanEval (37 solutions are one line long).
Task ids follow human-eval-infilling's pattern: ``SingleLineInfilling/HumanEval/0/L3`` hides line 3 of the
solution (0-based), ``MultiLineInfilling/HumanEval/0/L1_L4`` hides lines 1 to 4 inclusive.

Hidden spans are whole lines, so a generated middle that lacks its final newline gets one before the
suffix is appended (otherwise the next line would be glued onto it). Exact match compares middles after
stripping trailing whitespace from every line and trailing blank lines.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from codekiln.errors import UserError
from codekiln.eval.humaneval import build_program
from codekiln.files import atomic_write_bytes, atomic_write_json

KINDS = ("single_line", "multi_line")
_ID_PREFIX = {"single_line": "SingleLineInfilling", "multi_line": "MultiLineInfilling"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def single_line_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Every non-blank line as a half-open span (i, i + 1)."""
    return [(i, i + 1) for i, line in enumerate(lines) if line.strip()]


def multi_line_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """Half-open spans of 2+ lines that form a block (see the module docstring), in order, without repeats."""
    spans = set()
    for i, line in enumerate(lines):
        if not line.rstrip().endswith(":") or line.lstrip().startswith("#"):
            continue
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > _indent(line)):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # trailing blank lines belong to no block
            end -= 1
        if end - i >= 2:
            spans.add((i, end))
        if sum(1 for body_line in lines[i + 1:end] if body_line.strip()) >= 2:
            spans.add((i + 1, end))
    if not spans:
        for i, line in enumerate(lines):
            for size in (2, 3, 4):
                j = i + size
                if j <= len(lines) and line.strip() and lines[j - 1].strip():
                    spans.add((i, j))
    return sorted(spans)


def make_infill_tasks(problems: dict[str, dict], *, single_line: int = 1, multi_line: int = 1,
                      seed: int = 0) -> list[dict]:
    """Infilling tasks from each problem's canonical solution: up to `single_line` + `multi_line` per problem."""
    tasks = []
    for task_id, problem in problems.items():
        lines = problem["canonical_solution"].splitlines(keepends=True)
        for kind, count, candidates in (("single_line", single_line, single_line_spans(lines)),
                                        ("multi_line", multi_line, multi_line_spans(lines))):
            rng = random.Random(f"{seed}/{task_id}/{kind}")
            chosen = sorted(rng.sample(candidates, min(count, len(candidates))))
            for start, end in chosen:
                where = f"L{start}" if kind == "single_line" else f"L{start}_L{end - 1}"
                tasks.append({
                    "task_id": f"{_ID_PREFIX[kind]}/{task_id}/{where}",
                    "prefix": problem["prompt"] + "".join(lines[:start]),
                    "suffix": "".join(lines[end:]),
                    "middle": "".join(lines[start:end]),
                    "kind": kind,
                    "problem_task_id": task_id,
                    "entry_point": problem["entry_point"],
                    "test": problem["test"],
                })
    return tasks


def infill_program(task: dict, middle: str) -> str:
    """The program that checks one generated middle: prefix + middle + suffix, then the problem's tests."""
    if task["suffix"] and not middle.endswith("\n"):
        middle += "\n"
    return build_program({"prompt": task["prefix"], "test": task["test"], "entry_point": task["entry_point"]},
                         middle + task["suffix"])


def normalize_middle(text: str) -> str:
    """A middle as exact match compares it: trailing whitespace off every line, trailing blank lines off."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")


def score_infill(tasks: Sequence[dict], middles: Sequence[str], *, timeout: float = 3.0, workers: int = 0,
                 allow_code_execution: bool = False, progress=None, sandbox: str = "auto") -> dict:
    """Execute one generated middle per task in the sandbox: pass@1 and exact match, overall and per kind."""
    from codekiln.eval.sandbox import REFUSAL, check_harness_errors, resolve_mode, run_programs

    if len(middles) != len(tasks):
        raise ValueError(f"{len(middles)} middles for {len(tasks)} tasks")
    if not allow_code_execution:
        raise UserError(REFUSAL)
    mode = resolve_mode(sandbox)
    executed = run_programs([infill_program(t, m) for t, m in zip(tasks, middles)], timeout=timeout,
                            workers=workers, allow_code_execution=allow_code_execution, progress=progress,
                            sandbox=mode)
    check_harness_errors(executed, mode)
    per_task = {}
    for task, middle, result in zip(tasks, middles, executed):
        per_task[task["task_id"]] = {"kind": task["kind"], "passed": result.passed,
                                     "exact_match": normalize_middle(middle) == normalize_middle(task["middle"]),
                                     "result": result.reason}
    return {**_rates(per_task.values()),
            "by_kind": {kind: _rates(v for v in per_task.values() if v["kind"] == kind)
                        for kind in KINDS if any(t["kind"] == kind for t in tasks)},
            "sandbox": mode,
            "per_task": per_task}


def _rates(rows: Iterable[dict]) -> dict:
    rows = list(rows)
    n = len(rows)
    return {"tasks": n,
            "pass_at_1": sum(r["passed"] for r in rows) / n if n else 0.0,
            "exact_match": sum(r["exact_match"] for r in rows) / n if n else 0.0}


def write_results(out, tasks: Sequence[dict], middles: Sequence[str], result: dict,
                  generation: dict | None = None) -> Path:
    """`eval infill`'s reports: results.json (with each task's generated middle) and results.md; the directory."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    result = {**result, "per_task": {t["task_id"]: {**result["per_task"][t["task_id"]], "middle": m}
                                     for t, m in zip(tasks, middles)}}
    if generation is not None:
        result["generation"] = generation
    atomic_write_bytes(out / "results.md", render_markdown(result).encode())
    atomic_write_json(out / "results.json", result)  # last: its presence means the directory is complete
    return out


def render_markdown(result: dict) -> str:
    """results.md of an infilling evaluation: the rates per kind, the sandbox mode, the prompts cut."""
    from codekiln.eval.sandbox import isolation

    lines = ["# HumanEval infilling results", "", f"- tasks: {result['tasks']}", f"- sandbox mode: {result['sandbox']}"]
    if "generation" in result:
        gen = result["generation"]
        lines.append(f"- prompts cut to fit the model's context of {gen['context']} tokens: "
                     f"{gen['prompts_cut']} of {gen['prompts']}")
    lines += ["", "| kind | tasks | pass@1 | exact match |", "| --- | ---: | ---: | ---: |"]
    for kind, r in [*result["by_kind"].items(), ("all", result)]:
        lines.append(f"| {kind} | {r['tasks']} | {r['pass_at_1']:.4f} | {r['exact_match']:.4f} |")
    lines += ["", "## Sandbox", ""] + [f"- {key}: {value}" for key, value in isolation(result["sandbox"]).items()]
    return "\n".join(lines) + "\n"


def summary_table(result: dict):
    """A rich table of an infilling evaluation: pass@1 and exact match per kind and overall."""
    from rich.table import Table

    table = Table(title="infilling (HumanEval canonical solutions, a line or a block masked)", show_edge=False)
    for col in ("tasks", "kind", "pass@1", "exact match"):
        table.add_column(col, justify="right")
    for kind, r in result["by_kind"].items():
        table.add_row(str(r["tasks"]), kind, f"{r['pass_at_1']:.3f}", f"{r['exact_match']:.3f}")
    table.add_row(str(result["tasks"]), "all", f"{result['pass_at_1']:.3f}", f"{result['exact_match']:.3f}")
    if "generation" in result:
        gen = result["generation"]
        table.caption = (f"{gen['prompts_cut']} of {gen['prompts']} prompts cut to fit the context of "
                         f"{gen['context']} tokens; sandbox mode {result['sandbox']}")
    else:
        table.caption = f"sandbox mode {result['sandbox']}"
    return table
