"""Infilling tasks from HumanEval canonical solutions: how they are cut, and scoring by execution."""

import pytest

from codekiln.eval.humaneval import load_problems
from codekiln.eval.infill import (infill_program, make_infill_tasks, multi_line_spans, normalize_middle,
                                  score_infill, single_line_spans)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


@pytest.fixture(scope="module")
def tasks(problems):
    return make_infill_tasks(problems)


SOLUTION = ["    total = 0\n", "    for x in xs:\n", "        if x > 0:\n", "            total += x\n", "\n",
            "    return total\n"]


def test_single_line_spans_are_the_non_blank_lines():
    assert single_line_spans(SOLUTION) == [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6)]


def test_multi_line_spans_are_blocks():
    # for-statement with its body, its body alone, the if-statement; the if's one-line body is too short
    assert multi_line_spans(SOLUTION) == [(1, 4), (2, 4)]


def test_multi_line_spans_without_blocks_fall_back_to_runs_of_lines():
    lines = ["    a = 1\n", "    b = 2\n", "\n", "    return a + b\n"]
    # 2 to 4 lines that start and end on a non-blank line: (1, 3) and (2, 4) would end or start on the blank
    assert multi_line_spans(lines) == [(0, 2), (0, 4), (1, 4)]
    assert multi_line_spans(["    return 1\n"]) == []


def test_default_task_set(problems, tasks):
    single = [t for t in tasks if t["kind"] == "single_line"]
    multi = [t for t in tasks if t["kind"] == "multi_line"]
    assert len(single) == 164                       # one per problem
    assert len(multi) == 127                        # one per solution with two or more non-blank lines
    for task in tasks:
        problem = problems[task["problem_task_id"]]
        assert task["prefix"] + task["middle"] + task["suffix"] == problem["prompt"] + problem["canonical_solution"]
        assert task["prefix"].startswith(problem["prompt"])
        assert task["test"] == problem["test"] and task["entry_point"] == problem["entry_point"]
        lines = task["middle"].splitlines()
        if task["kind"] == "single_line":
            assert len(lines) == 1 and lines[0].strip()
            assert task["task_id"].startswith("SingleLineInfilling/" + task["problem_task_id"] + "/L")
        else:
            assert len(lines) >= 2 and lines[0].strip() and lines[-1].strip()
            assert task["task_id"].startswith("MultiLineInfilling/" + task["problem_task_id"] + "/L")
    assert len({t["task_id"] for t in tasks}) == len(tasks)


def test_selection_is_deterministic_and_seeded(problems, tasks):
    assert make_infill_tasks(problems) == tasks
    other = make_infill_tasks(problems, seed=1)
    assert [t["task_id"] for t in other] != [t["task_id"] for t in tasks]
    more = make_infill_tasks(problems, single_line=3, multi_line=0)
    assert all(t["kind"] == "single_line" for t in more)
    assert len(more) == sum(min(3, len(single_line_spans(p["canonical_solution"].splitlines(True))))
                            for p in problems.values())


def test_normalize_middle_for_exact_match():
    assert normalize_middle("    x = 1   \n    y = 2\t\n\n") == normalize_middle("    x = 1\n    y = 2")
    assert normalize_middle("  x = 1\n") != normalize_middle("    x = 1\n")   # leading indentation matters


def test_middle_without_final_newline_gets_one(tasks):
    task = next(t for t in tasks if t["kind"] == "single_line" and t["suffix"])
    assert infill_program(task, task["middle"].rstrip("\n")) == infill_program(task, task["middle"])


def test_ground_truth_middles_pass_and_match(tasks):
    """Every task is solvable: its own hidden lines pass the tests and match exactly."""
    pytest.importorskip("codekiln.eval.sandbox")
    scores = score_infill(tasks, [t["middle"] for t in tasks], timeout=10.0, allow_code_execution=True)
    failing = {tid: v["result"] for tid, v in scores["per_task"].items() if not v["passed"]}
    assert failing == {}
    assert scores["pass_at_1"] == 1.0 and scores["exact_match"] == 1.0 and scores["tasks"] == 291
    assert scores["by_kind"]["single_line"]["tasks"] == 164 and scores["by_kind"]["multi_line"]["tasks"] == 127


def test_empty_middles_mostly_fail(tasks):
    pytest.importorskip("codekiln.eval.sandbox")
    subset = tasks[:60]
    scores = score_infill(subset, [""] * len(subset), allow_code_execution=True)
    assert scores["exact_match"] == 0.0
    assert scores["pass_at_1"] < 0.2
