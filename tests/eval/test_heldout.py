"""Held-out evaluation for `codekiln finetune`: tasks cut from a team's files, function bodies, repository
context, prompt styles, exact match, end-to-end generation on a tiny model, and the report section."""

import ast
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from codekiln.eval.heldout import (HeldOutFile, candidate_spans, evaluate, function_bodies, make_tasks,
                                   prompt_style, render_markdown, repo_context, score_middles, task_prompts)
from codekiln.model import ModelConfig, Transformer
from codekiln.tokenizer import load as load_tokenizer

SHAPES = '''import math


class Circle:
    """A circle."""

    def __init__(self, radius):
        self.radius = radius

    def area(self):
        """Area of the circle."""
        r = self.radius
        return math.pi * r * r


def total_area(shapes, scale=1.0):
    """Sum of the areas, each scaled."""

    # add them up
    total = 0.0
    for shape in shapes:
        total += shape.area() * scale
    return total


def describe(shape):  # one-line body: too short to show
    return f"{shape!r} with area {shape.area():.2f}"
'''

UTILS = '''def clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value


def mean(values):
    """Average, or 0.0 for no values (é: not ASCII)."""
    if not values: return 0.0
    return sum(values) / len(values)


def parse(text): return int(text)


def semi(x):
    y = x
    return "éé" + y;
'''

MAIN_JS = '''const limit = 10;
function clamp(value) {
  switch (value) {
    case 0:
      return 1;
    default:
      return Math.min(value, limit);
  }
}
module.exports = { clamp };
'''

BROKEN = "def broken(:\n    pass\n    return 1\n"

OTHER = '''def shout(text):
    loud = text.upper()
    return loud + "!"


def whisper(text):
    quiet = text.lower()
    return quiet + "..."
'''


def team_files():
    return [HeldOutFile("team/app", "app/shapes.py", "Python", SHAPES),
            HeldOutFile("team/app", "app/utils.py", "Python", UTILS),
            HeldOutFile("team/app", "web/main.js", "JavaScript", MAIN_JS),
            HeldOutFile("team/app", "app/broken.py", "Python", BROKEN),
            HeldOutFile("team/tools", "tools/voice.py", "Python", OTHER)]


def by_file(tasks):
    out = {}
    for t in tasks:
        out.setdefault((t["repo"], t["path"]), []).append(t)
    return out


# --- tasks ---

def test_spans_reassemble_to_the_file_and_ids_name_their_lines():
    files = {(f.repo, f.path): f for f in team_files()}
    tasks = make_tasks(team_files(), seed=0, per_kind=1000)
    assert {t["kind"] for t in tasks} == {"single_line", "multi_line"}
    assert len({t["id"] for t in tasks}) == len(tasks)
    for t in tasks:
        content = files[(t["repo"], t["path"])].content
        assert t["prefix"] + t["middle"] + t["suffix"] == content
        assert t["prefix"] == "" or t["prefix"].endswith("\n")  # whole lines hidden
        lines = t["middle"].splitlines()
        first = t["prefix"].count("\n") + 1
        assert t["line"] == first
        if t["kind"] == "single_line":
            assert len(lines) == 1 and any(ch.isalnum() for ch in lines[0])
            assert t["id"] == f"SingleLine/{t['repo']}/{t['path']}/L{first}"
        else:
            assert 2 <= len(lines) <= 8 and lines[0].strip() and lines[-1].strip()
            assert t["id"] == f"MultiLine/{t['repo']}/{t['path']}/L{first}_L{first + len(lines) - 1}"
    # A lone closing bracket is never a single-line task; the JS file's `}` lines are there to be skipped.
    assert not any(t["middle"].strip() in ("}", "};") for t in tasks if t["kind"] == "single_line")


def test_python_multi_line_spans_are_blocks_and_other_languages_runs_of_lines():
    py = HeldOutFile("r", "a.py", "Python", "x = 1\nfor i in range(3):\n    y = i\n    z = y\nw = 2\n")
    # the for-statement with its body, and its two-line body alone; never a run across the block's edge
    assert candidate_spans(py, "multi_line") == [(1, 4), (2, 4)]
    js = HeldOutFile("r", "a.js", "JavaScript", MAIN_JS)
    spans = candidate_spans(js, "multi_line")
    lines = MAIN_JS.splitlines()
    assert spans and all(2 <= j - i <= 4 and lines[i].strip() and lines[j - 1].strip() for i, j in spans)
    # `case 0:` ends with a colon but is no Python block: JS gets runs, including ones that start there
    assert (3, 5) in spans and (3, 9) not in spans
    assert len(spans) == 9 + 8 + 7 and (0, 2) in spans  # every run: all ten lines hold code
    # without a language name, the extension decides
    assert candidate_spans(HeldOutFile("r", "a.py", "", py.content), "multi_line") == [(1, 4), (2, 4)]


def test_same_seed_same_tasks_in_any_input_order_and_another_seed_differs():
    first = make_tasks(team_files(), seed=3, per_kind=4)
    assert make_tasks(team_files(), seed=3, per_kind=4) == first
    assert make_tasks(list(reversed(team_files())), seed=3, per_kind=4) == first
    assert [t["id"] for t in make_tasks(team_files(), seed=4, per_kind=4)] != [t["id"] for t in first]
    kinds = [t["kind"] for t in first]
    assert kinds == sorted(kinds, key=("single_line", "multi_line").index)
    assert kinds.count("single_line") == 4 and kinds.count("multi_line") == 4


def test_tasks_spread_over_files_one_each_before_a_second():
    files = team_files()
    assert all(len(make_tasks([f], seed=0, per_kind=1)) == 2 for f in files)  # even broken.py has lines
    tasks = make_tasks(files, seed=0, per_kind=len(files))
    for kind in ("single_line", "multi_line"):
        per_file = by_file([t for t in tasks if t["kind"] == kind])
        assert len(per_file) == len(files) and all(len(v) == 1 for v in per_file.values())


def test_adding_a_file_leaves_every_other_files_tasks_alone():
    extra = HeldOutFile("team/other", "lib/extra.py", "Python", OTHER.replace("text", "words"))
    small, grown = make_tasks(team_files(), seed=1, per_kind=1000), make_tasks([*team_files(), extra], seed=1,
                                                                               per_kind=1000)
    assert [t for t in grown if t["repo"] != "team/other"] == small
    # Under a tight cap a file may get fewer tasks, but they are the first of its own draw: the same tasks
    # as that file alone asked for that many.
    capped = make_tasks([*team_files(), extra], seed=1, per_kind=3)
    for (repo, path), own in by_file(capped).items():
        f = next(f for f in [*team_files(), extra] if (f.repo, f.path) == (repo, path))
        for kind in ("single_line", "multi_line"):
            mine = [t for t in own if t["kind"] == kind]
            assert mine == [t for t in make_tasks([f], seed=1, per_kind=len(mine)) if t["kind"] == kind]


def test_bad_inputs():
    with pytest.raises(ValueError, match="per_kind"):
        make_tasks(team_files(), seed=0, per_kind=-1)
    with pytest.raises(ValueError, match="given twice"):
        make_tasks([*team_files(), team_files()[0]], seed=0, per_kind=1)
    docs = [{"repo": f.repo, "path": f.path, "lang": f.lang, "content": f.content, "id": "x"} for f in team_files()]
    assert make_tasks(docs, seed=0, per_kind=3) == make_tasks(team_files(), seed=0, per_kind=3)


# --- function bodies ---

def test_function_bodies_are_real_functions_whose_prompt_and_body_start_the_file():
    files = {(f.repo, f.path): f for f in team_files()}
    bodies = function_bodies(team_files(), n=100, seed=0)
    # __init__ and describe have one-line bodies, parse is a one-line def, semi's body ends before a `;`
    # (ast counts its columns in UTF-8 bytes, and é takes two), broken.py does not parse, JS is no Python;
    # mean counts (two lines after its docstring, one a whole `if` statement)
    assert {(b["path"], b["name"]) for b in bodies} == {
        ("app/shapes.py", "Circle.area"), ("app/shapes.py", "total_area"), ("app/utils.py", "clamp"),
        ("app/utils.py", "mean"), ("tools/voice.py", "shout"), ("tools/voice.py", "whisper")}
    for b in bodies:
        content = files[(b["repo"], b["path"])].content
        assert content.startswith(b["prompt"] + b["reference"])
        assert b["prompt"].endswith(b["prompt_tail"]) and b["prompt_tail"].lstrip().startswith("def ")
        node = next(n for n in ast.walk(ast.parse(content)) if isinstance(n, ast.FunctionDef)
                    and n.name == b["name"].split(".")[-1])
        assert b["line"] == node.lineno
        # the reference holds the body's statements and none of the docstring
        statements = ast.get_source_segment(content, node.body[-1])
        assert b["reference"].rstrip().endswith(statements)
        assert '"""' not in b["reference"]
    total = next(b for b in bodies if b["name"] == "total_area")
    assert total["reference"].startswith("    # add them up\n    total = 0.0\n")
    assert total["prompt_tail"].endswith('"""Sum of the areas, each scaled."""\n\n')  # the blank line too
    assert next(b for b in bodies if b["name"] == "Circle.area")["indent"] == 4


def test_function_bodies_spread_over_files_and_are_seeded():
    bodies = function_bodies(team_files(), n=3, seed=0)
    assert len(bodies) == 3 and len({b["path"] for b in bodies}) == 3
    assert function_bodies(list(reversed(team_files())), n=3, seed=0) == bodies
    assert len(function_bodies(team_files(), n=5, seed=0)) == 5
    draws = {tuple(b["name"] for b in function_bodies(team_files(), n=3, seed=s)) for s in range(6)}
    assert len(draws) > 1


# --- prompts ---

def test_repo_context_never_holds_the_held_out_file_and_puts_the_nearest_last():
    [task] = [t for t in make_tasks(team_files(), seed=0, per_kind=100) if t["id"].endswith("app/utils.py/L2")]
    pool = [*team_files(),
            HeldOutFile("team/app", "app/copy_of_utils.py", "Python", UTILS),  # a copy would give the answer away
            HeldOutFile("team/app", "app/sub/deep.py", "Python", "DEEP = 1\n"),
            HeldOutFile("team/app", "docs/conf.py", "Python", "CONF = 2\n"),
            HeldOutFile("team/tools", "app/foreign.py", "Python", "FOREIGN = 3\n")]
    context = repo_context(task, pool)
    paths = [p for p, _ in context]
    assert "app/utils.py" not in paths and "app/copy_of_utils.py" not in paths
    assert all(text != UTILS for _, text in context)
    assert "app/foreign.py" not in paths and "tools/voice.py" not in paths  # another repository
    # nearest folder last: the file beside it, then one folder down, then a sibling folder's
    assert paths == ["web/main.js", "docs/conf.py", "app/sub/deep.py", "app/shapes.py", "app/broken.py"]
    assert repo_context(task, pool, limit=2) == context[-2:]
    # {repo: [(path, text)]}, as finetune gathers its training files, reads the same
    by_repo = {}
    for f in pool:
        by_repo.setdefault(f.repo, []).append((f.path, f.content))
    assert repo_context(task, by_repo) == context
    # (path, text) pairs are the task's own repository's files
    assert repo_context(task, [("app/utils.py", UTILS), ("lib/x.py", "X = 1\n")]) == [("lib/x.py", "X = 1\n")]


def test_prompt_style_follows_the_tokenizer_and_the_model():
    fim_tok = SimpleNamespace(has_fim=True, special_ids={"<|repo_name|>": 1, "<|file_sep|>": 2})
    no_repo = SimpleNamespace(has_fim=True, special_ids={})
    no_fim = SimpleNamespace(has_fim=False, special_ids={"<|repo_name|>": 1, "<|file_sep|>": 2})
    assert prompt_style(fim_tok, repo_level=True) == "repo_fim"
    assert prompt_style(fim_tok, repo_level=False) == "fim"
    assert prompt_style(no_repo, repo_level=True) == "fim"
    assert prompt_style(no_fim, repo_level=True) == "prefix"


def test_score_middles_counts_exact_match_per_kind_as_eval_infill_does():
    tasks = [{"id": "a", "kind": "single_line", "middle": "    x = 1\n"},
             {"id": "b", "kind": "single_line", "middle": "    y = 2\n"},
             {"id": "c", "kind": "single_line", "middle": "    z = 3\n"}]
    scored = score_middles(tasks, ["    x = 1   ", "    y = 2\n\n\n", "  z = 3\n"])
    assert scored["exact_match"] == {"single_line": pytest.approx(2 / 3), "multi_line": None}
    assert scored["tasks"] == {"single_line": 3, "multi_line": 0}
    assert [r["exact_match"] for r in scored["per_task"]] == [True, True, False]  # leading indent counts
    assert scored["per_task"][2]["reference"] == "    z = 3\n"
    with pytest.raises(ValueError):
        score_middles(tasks, ["x"])


# --- generation on a tiny model ---

@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on one torch thread (tests/conftest.py, one_thread)."""


@pytest.fixture(scope="module")
def tok_dir(code_tokenizer):
    return code_tokenizer("heldout-tok", [SHAPES, UTILS, MAIN_JS, OTHER] * 5)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def no_fim_tok(tok_dir, tmp_path_factory):
    """The same vocabulary declaring only an end token: what an imported base without FIM tokens looks like."""
    directory = tmp_path_factory.mktemp("nofim") / "tokenizer"
    shutil.copytree(tok_dir, directory)
    config = directory / "tokenizer_config.json"
    record = json.loads(config.read_text()) if config.is_file() else {}
    record["codekiln"] = {"special_tokens": {"<|endoftext|>": "<|endoftext|>"}}
    config.write_text(json.dumps(record))
    loaded = load_tokenizer(directory)
    assert not loaded.has_fim
    return loaded


@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, kv_heads=2, context=256,
                      init_std=0.15)
    return Transformer(cfg).eval()


def test_repo_fim_prompts_carry_other_files_of_the_repository(tok):
    tasks = [t for t in make_tasks(team_files(), seed=0, per_kind=3) if t["path"] == "app/utils.py"]
    context = [HeldOutFile("team/app", "app/shapes.py", "Python", SHAPES),
               HeldOutFile("team/app", "app/tiny.py", "Python", "TINY = 1\n")]
    [repo] = task_prompts(tok, tasks[:1], "repo_fim", context=1024, max_new_tokens=16, context_files=context)
    [plain] = task_prompts(tok, tasks[:1], "fim", context=1024, max_new_tokens=16)
    text = tok.decode(repo.ids)
    assert text.startswith("<|repo_name|>team/app\n<|file_sep|>app/")
    assert "<|file_sep|>app/tiny.py\nTINY = 1\n" in text and "class Circle" in text
    assert text.endswith(tok.decode(plain.ids)) and "<|file_sep|>app/utils.py\n<|fim_prefix|>" in text
    [prefix] = task_prompts(tok, tasks[:1], "prefix", context=1024, max_new_tokens=16)
    assert tok.decode(prefix.ids) == tasks[0]["prefix"]
    first_line = {"id": "x", "kind": "single_line", "prefix": "", "middle": "a\n", "suffix": ""}
    assert task_prompts(tok, [first_line], "prefix", context=64, max_new_tokens=8)[0].ids == [tok.eot_id]


def test_evaluate_end_to_end_is_deterministic_and_batching_changes_nothing(tiny, tok):
    tasks = make_tasks(team_files(), seed=0, per_kind=5)
    bodies = function_bodies(team_files(), n=5, seed=0)
    kw = dict(repo_level=True, context_files=team_files(), max_new_tokens=12)
    result = evaluate(tiny, tok, tasks, bodies, batch_size=4, **kw)
    assert result["prompt_style"] == "repo_fim"
    assert result["tasks"] == {"single_line": 5, "multi_line": 5}
    assert set(result["exact_match"]) == {"single_line", "multi_line"}
    assert all(0.0 <= v <= 1.0 for v in result["exact_match"].values())
    assert [r["id"] for r in result["per_task"]] == [t["id"] for t in tasks]
    assert [(b["path"], b["name"], b["reference"]) for b in result["bodies"]] == \
           [(b["path"], b["name"], b["reference"]) for b in bodies]
    assert result["generation"]["prompts"] == 15 and result["generation"]["context"] == 256
    assert any(r["middle"] for r in result["per_task"])  # a random model still writes something
    assert evaluate(tiny, tok, tasks, bodies, batch_size=1, **kw) == result
    plain = evaluate(tiny, tok, tasks, bodies, repo_level=False, max_new_tokens=12, batch_size=4)
    assert plain["prompt_style"] == "fim"


def test_a_base_without_fim_tokens_completes_from_the_prefix_cut_to_the_spans_lines(tiny, no_fim_tok):
    tasks = make_tasks(team_files(), seed=0, per_kind=5)
    bodies = function_bodies(team_files(), n=2, seed=0)
    result = evaluate(tiny, no_fim_tok, tasks, bodies, repo_level=True, context_files=team_files(),
                      max_new_tokens=24, batch_size=8)
    assert result["prompt_style"] == "prefix"
    for task, row in zip(tasks, result["per_task"]):
        assert len(row["middle"].splitlines()) <= len(task["middle"].splitlines())
        if task["kind"] == "single_line":
            assert "\n" not in row["middle"]
    for body in result["bodies"]:
        # whatever the model wrote, the kept body stays inside the function
        assert all(not line.strip() or line[:1].isspace() for line in body["completion"].split("\n"))


class Scripted(Transformer):
    """A model that writes `script` after any prompt (one-hot logits) while its KV cache fills as usual, so
    generate's real path runs and what comes out is known. All rows of a batch are at the same step."""

    def __init__(self, cfg, script):
        super().__init__(cfg)
        self.script, self.prefill = list(script), None

    def forward(self, input_ids, doc_ids=None, *, cache=None, last_only=False):
        logits = super().forward(input_ids, doc_ids, cache=cache, last_only=last_only)
        if cache.length == input_ids.shape[1]:  # the cache was empty: this forward was the prefill
            self.prefill = cache.length
        out = torch.full_like(logits, -1e4)
        out[:, :, self.script[min(cache.length - self.prefill, len(self.script) - 1)]] = 1e4
        return out


WRITTEN = "        y = 1\n    z = 2\nw = 3\nv = 4\n"


def test_prefix_middles_keep_the_spans_line_count_and_bodies_end_where_the_function_does(tiny, no_fim_tok):
    torch.manual_seed(0)
    model = Scripted(tiny.cfg, no_fim_tok.encode(WRITTEN) + [no_fim_tok.eot_id]).eval()
    tasks = make_tasks(team_files(), seed=0, per_kind=6)
    bodies = function_bodies(team_files(), n=5, seed=0)
    result = evaluate(model, no_fim_tok, tasks, bodies, max_new_tokens=32, batch_size=4)
    assert result["prompt_style"] == "prefix"
    for task, row in zip(tasks, result["per_task"]):
        if task["kind"] == "single_line":
            assert row["middle"] == "        y = 1"  # stopped at the line's end
        else:
            lines = len(task["middle"].splitlines())
            assert row["middle"] == "".join(WRITTEN.splitlines(keepends=True)[:lines])
    # cut at the first line at the def's column or less: a method loses `    z = 2`, a function keeps it
    for body in result["bodies"]:
        assert body["completion"] == ("        y = 1" if body["name"] == "Circle.area" else "        y = 1\n    z = 2")
    assert {b["name"] for b in result["bodies"]} >= {"Circle.area", "total_area"}


# --- report ---

def test_render_markdown_shows_rates_and_the_bodies_side_by_side():
    body = {"repo": "team/app", "path": "app/utils.py", "name": "clamp", "prompt_tail": "def clamp(v):\n",
            "reference": "    if v < 0:\n        return 0\n    return v\n"}
    before = {"prompt_style": "prefix", "exact_match": {"single_line": 0.25, "multi_line": None},
              "tasks": {"single_line": 4, "multi_line": 0}, "bodies": [{**body, "completion": "    return v"}]}
    after = {"prompt_style": "fim", "exact_match": {"single_line": 0.75, "multi_line": None},
             "tasks": {"single_line": 4, "multi_line": 0},
             "bodies": [{**body, "completion": "    x = f'```'\n    return max(v, 0)"}]}
    md = render_markdown(before, after)
    assert "| single_line | 4 | 0.250 | 0.750 | +0.500 |" in md
    assert "| multi_line | 0 | – | – | – |" in md
    assert "before `prefix`, after `fim`" in md
    assert "    if v < 0:\n        return 0\n    return v\n" in md
    assert "```python\n    return v\n```" in md
    # a completion holding ``` gets a longer fence, so the block still closes where it should
    assert "````python\n    x = f'```'\n    return max(v, 0)\n````" in md
    assert md.index("Reference:") < md.index("Before:") < md.index("After:")
    silent = render_markdown({**before, "bodies": [{**body, "completion": ""}]}, after)
    assert "Before:\n\n*(nothing)*\n" in silent
    with pytest.raises(ValueError, match="differs"):
        render_markdown(before, {**after, "bodies": [{**after["bodies"][0], "name": "other"}]})
