"""HumanEval: problems, programs, stop sequences, and pass@k from samples executed in the sandbox."""

import gzip
import json

import pytest

from codekiln.errors import UserError
from codekiln.eval.humaneval import (HUMANEVAL_STOP, build_program, canonical_samples, default_out_dir,
                                     evaluate_samples, execute_file, load_problems, read_jsonl, truncate,
                                     write_samples)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# --- problems, programs, truncation (no execution) -------------------------------------------------------

def test_shipped_problems_are_the_164_of_humaneval(problems):
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"] and "HumanEval/163" in problems
    for problem in problems.values():
        assert {"task_id", "prompt", "entry_point", "canonical_solution", "test"} <= set(problem)


def test_program_is_prompt_completion_test_and_check(problems):
    problem = problems["HumanEval/0"]
    program = build_program(problem, "    return False\n")
    assert program == problem["prompt"] + "    return False\n" + "\n" + problem["test"] + "\n" + "check(has_close_elements)"


def test_user_problems_file_plain_and_gzipped(tmp_path, problems):
    chosen = [problems["HumanEval/3"], problems["HumanEval/7"]]
    plain = write_lines(tmp_path / "p.jsonl", [json.dumps(p) for p in chosen])
    zipped = tmp_path / "p.jsonl.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(load_problems(plain)) == ["HumanEval/3", "HumanEval/7"]
    assert load_problems(zipped) == load_problems(plain)


@pytest.mark.parametrize("completion, expected", [
    ("    return x\n", "    return x\n"),                                    # nothing to cut
    ("    return x\n\ndef helper():\n    pass\n", "    return x\n"),          # a new top-level def
    ("    return x\nclass A:\n    pass", "    return x"),
    ("    return x\n# trailing comment\n", "    return x"),
    ("    return x\n@decorator\ndef f(): pass", "    return x"),
    ("    return x\nprint(f(1))\n", "    return x"),
    ("    return x\nif __name__ == '__main__':\n    main()", "    return x"),
    ("    return x\n```\nSome prose", "    return x"),
    ("    if x:\n        return 1\n    # inner comment\n    return 2\n", # indented: not a stop
     "    if x:\n        return 1\n    # inner comment\n    return 2\n"),
    ("    a = 1\nprint(a)\ndef g(): pass", "    a = 1"),                      # the earliest stop wins
    ("\ndef f(): pass", ""),
])
def test_truncate_cuts_at_the_earliest_stop_sequence(completion, expected):
    assert truncate(completion) == expected


def test_stop_sequences_are_the_bigcode_harness_list():
    assert list(HUMANEVAL_STOP) == ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```"]


@pytest.mark.parametrize("name, expected", [("samples.jsonl", "samples_results"),
                                            ("samples.jsonl.gz", "samples_results"),
                                            ("run.v2.jsonl", "run.v2_results"),
                                            ("samples", "samples_results")])
def test_default_out_dir_is_beside_the_samples_file(tmp_path, name, expected):
    assert default_out_dir(tmp_path / name) == tmp_path / expected


def test_write_samples_round_trips_and_is_deterministic(tmp_path):
    samples = [{"task_id": "HumanEval/0", "completion": "    return ü\n"}, {"task_id": "HumanEval/1", "completion": ""}]
    for name in ("s.jsonl", "s.jsonl.gz"):
        write_samples(tmp_path / name, samples)
        assert [obj for _, obj in read_jsonl(tmp_path / name)] == samples
    first = (tmp_path / "s.jsonl.gz").read_bytes()
    write_samples(tmp_path / "s.jsonl.gz", samples)
    assert (tmp_path / "s.jsonl.gz").read_bytes() == first


# --- user mistakes: one-line UserErrors, before anything runs ---------------------------------------------

def test_malformed_samples_line_names_the_line(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", ['{"task_id": "HumanEval/0", "completion": ""}', "", "{not json"])
    with pytest.raises(UserError) as excinfo:
        execute_file(path, allow_code_execution=True)
    one_line_error(excinfo, "line 3", "not valid JSON")
    assert not default_out_dir(path).exists()


@pytest.mark.parametrize("line, fragment", [
    ('["HumanEval/0", ""]', "expected a JSON object"),
    ('{"task_id": "HumanEval/0"}', "'completion'"),
    ('{"task_id": 0, "completion": ""}', "'task_id'"),
    ('{"task_id": "HumanEval/999", "completion": ""}', "HumanEval/999"),
])
def test_bad_samples_are_one_line_errors(tmp_path, line, fragment):
    path = write_lines(tmp_path / "s.jsonl", ['{"task_id": "HumanEval/0", "completion": ""}', line])
    with pytest.raises(UserError) as excinfo:
        execute_file(path, allow_code_execution=True)
    one_line_error(excinfo, "line 2", fragment)


def test_unknown_task_in_memory_samples_is_named(problems):
    with pytest.raises(UserError) as excinfo:
        evaluate_samples([{"task_id": "MBPP/1", "completion": ""}], problems, allow_code_execution=True)
    one_line_error(excinfo, "MBPP/1")


def test_missing_and_unreadable_files(tmp_path, problems):
    with pytest.raises(UserError) as excinfo:
        execute_file(tmp_path / "nope.jsonl", allow_code_execution=True)
    one_line_error(excinfo, "not found", "nope.jsonl")
    broken = tmp_path / "s.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(UserError) as excinfo:
        execute_file(broken, allow_code_execution=True)
    one_line_error(excinfo, "s.jsonl.gz")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(UserError) as excinfo:
        execute_file(empty, allow_code_execution=True)
    one_line_error(excinfo, "no samples")


def test_malformed_problems_file(tmp_path, problems):
    bad = dict(problems["HumanEval/0"])
    del bad["test"]
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(problems["HumanEval/1"]), json.dumps(bad)])
    with pytest.raises(UserError) as excinfo:
        load_problems(path)
    one_line_error(excinfo, "line 2", "'test'")


# --- execution through the sandbox ---------------------------------------------------------------------

def test_refuses_to_execute_without_permission(tmp_path, problems):
    pytest.importorskip("codekiln.eval.sandbox")
    samples = canonical_samples({"HumanEval/0": problems["HumanEval/0"]})
    with pytest.raises(UserError):
        evaluate_samples(samples, problems)
    path = tmp_path / "samples.jsonl"
    write_samples(path, samples)
    with pytest.raises(UserError):
        execute_file(path)
    assert not default_out_dir(path).exists()


def test_canonical_solutions_pass_every_problem(problems):
    """The harness's own correctness: all 164 reference solutions pass, so pass@1 is exactly 1."""
    pytest.importorskip("codekiln.eval.sandbox")
    results = evaluate_samples(canonical_samples(problems), problems, timeout=10.0, allow_code_execution=True)
    failures = {t: v["results"] for t, v in results["per_task"].items() if v["passed"] != 1}
    assert failures == {}
    assert results["pass_at_k"] == {"1": 1.0}
    assert results["skipped_k"] == [10, 100]
    assert results["tasks_evaluated"] == 164 and results["missing_tasks"] == []
    assert results["samples"] == 164 and results["status_counts"]["passed"] == 164


def test_empty_completions_score_zero(problems):
    pytest.importorskip("codekiln.eval.sandbox")
    samples = [{"task_id": task_id, "completion": ""} for task_id in problems]
    results = evaluate_samples(samples, problems, k=(1,), allow_code_execution=True)
    assert results["pass_at_k"] == {"1": 0.0}
    assert results["samples_passed"] == 0
    assert all(reason.startswith("failed") for v in results["per_task"].values() for reason in v["results"])


def test_subset_file_reports_missing_tasks_and_scores_tasks_present(tmp_path, problems):
    pytest.importorskip("codekiln.eval.sandbox")
    canonical = {t: problems[t]["canonical_solution"] for t in ("HumanEval/0", "HumanEval/2")}
    samples = [
        {"task_id": "HumanEval/2", "completion": canonical["HumanEval/2"], "model": "m"},
        {"task_id": "HumanEval/0", "completion": canonical["HumanEval/0"]},
        {"task_id": "HumanEval/0", "completion": "    return not True\n"},
        {"task_id": "HumanEval/0", "completion": canonical["HumanEval/0"]},
        {"task_id": "HumanEval/5", "completion": "    while True:\n        pass\n"},
        {"task_id": "HumanEval/5", "completion": ""},
        {"task_id": "HumanEval/5", "completion": "    return [\n"},
    ]
    path = tmp_path / "samples.jsonl"
    write_samples(path, samples)
    out, results = execute_file(path, k=(1, 2, 10), timeout=1.0, allow_code_execution=True)

    assert out == tmp_path / "samples_results"
    assert results["tasks_evaluated"] == 3 and results["samples"] == 7
    assert results["missing_tasks"] == [t for t in problems if t not in ("HumanEval/0", "HumanEval/2", "HumanEval/5")]
    assert len(results["missing_tasks"]) == 161
    # pass@k over the three tasks present (HumanEval/2 has one sample, so k=2 and k=10 are not reported)
    assert results["pass_at_k"] == pytest.approx({"1": (2 / 3 + 1 + 0) / 3})
    assert results["skipped_k"] == [2, 10]
    assert list(results["per_task"]) == ["HumanEval/0", "HumanEval/2", "HumanEval/5"]  # problem order
    task0, task5 = results["per_task"]["HumanEval/0"], results["per_task"]["HumanEval/5"]
    assert (task0["n"], task0["passed"]) == (3, 2)
    assert task0["results"][0] == "passed" and task0["results"][1].startswith("failed")
    assert task5["results"][0].startswith("timed out")
    assert results["status_counts"] == {"passed": 3, "failed": 3, "timeout": 1, "error": 0}

    assert json.loads((out / "results.json").read_text()) == results
    rows = [json.loads(line) for line in (out / "samples_results.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True, False, True, False, False, False]
    assert rows[0]["model"] == "m" and rows[0]["result"] == "passed"
    assert [{k: v for k, v in r.items() if k not in ("passed", "result")} for r in rows] == samples
    report = (out / "results.md").read_text()
    assert "| 1 | 0.5556 (55.6%) |" in report
    assert "pass@2, pass@10" in report and "HumanEval/163" in report
    assert "3 of 164" in report

    custom = execute_file(path, out_dir=tmp_path / "elsewhere", k=(1,), timeout=1.0, allow_code_execution=True)
    assert custom.out == tmp_path / "elsewhere" and (custom.out / "results.md").is_file()
