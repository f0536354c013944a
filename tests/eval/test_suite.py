"""The evaluation stage of `codekiln run`: summary.json's shape, the same bytes for every tokenizer, the untrained
model's figure from the run's metrics, skips without a sandbox, and HumanEval and infilling in the sandbox."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import codekiln
from codekiln.config import load_config
from codekiln.errors import UserError
from codekiln.eval.bpb import texts_bpb
from codekiln.eval.suite import COMPLETION_TOKENS, PUBLISHED, parses, run_suite, untrained_bpb, val_texts
from codekiln.infer import for_editor, generate
from codekiln.token_shards import ShardSet
from codekiln.tokenizer.shards import tokenize_corpus
from codekiln.tokenizer.train import train_tokenizer
from codekiln.train.loop import train

PY = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
      "            total += item\n    return total\n\n",
      "class {n}:\n    \"\"\"Holds a value — and doubles it.\"\"\"\n\n    def __init__(self, value={k}):\n"
      "        self.value = value\n\n    def double(self):\n        return self.value * 2\n\n"]
JS = ["function {n}(a, b) {{\n  const x = a * {k};\n  return x + b;\n}}\n",
      "export const {n} = (xs) => xs.map((x) => x + {k}).filter(Boolean);\n"]
TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.kv_heads=2", "model.context=64",
        "train.batch_size=4", "train.seq_len=64", "train.warmup_steps=2", "train.lr=3e-3", "train.eval_every=10",
        "train.eval_tokens=2048", "train.threads=1", "train.max_steps=10"]
PROMPTS = ["def total(items):\n", "class Box:\n"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, snippet_corpus):
    """Two micro runs trained 10 steps on the same corpus with different tokenizers (384 and 300 tokens):
    {"a": run, "b": run, "shards": run a's token shards}."""
    root = tmp_path_factory.mktemp("suite")
    corpus = snippet_corpus(root / "corpus", PY, JS, docs=200)
    out = {}
    for name, vocab in (("a", 384), ("b", 300)):
        train_tokenizer(corpus, root / f"tok-{name}", vocab_size=vocab, holdout_fraction=0.0, progress=False)
        tokenize_corpus(corpus, root / f"tok-{name}", root / f"shards-{name}", val_fraction=0.2, seed=0)
        train(load_config(None, [*TINY, f"train.data=[{root / f'shards-{name}'}]",
                                 f"train.tokenizer={root / f'tok-{name}'}", f"train.out={root / f'run-{name}'}"]),
              quiet=True)
        out[name] = root / f"run-{name}"
    out["shards"] = root / "shards-a"
    return out


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Micro models on one thread (tests/conftest.py)."""


def suite(runs, out, **kw):
    kw = {"prompts": PROMPTS, "sandbox": None, "progress": False, "bpb_tokens": 4096, **kw}
    return run_suite(runs["a"], runs["shards"], out, **kw)


def test_summary_shape_skips_without_a_sandbox_and_reruns_identically(runs, tmp_path):
    first = suite(runs, tmp_path / "one")
    assert set(first) == {"bpb", "humaneval", "infill", "parse_rate", "published", "completions", "skipped"}
    bpb = first["bpb"]
    assert set(bpb) == {"model", "untrained", "reference", "finetuned", "bytes"}
    assert set(bpb["model"]) == {"val_bpb", "val_bpb_by_lang"}
    assert set(bpb["model"]["val_bpb_by_lang"]) == {"Python", "JavaScript"}
    # 10 steps of training on repetitive code beat the untrained model by far (it is near log2(384)/bytes per token)
    assert 0 < bpb["model"]["val_bpb"] < bpb["untrained"]["val_bpb"]
    assert bpb["reference"] is None and bpb["finetuned"] is None and bpb["bytes"] > 0
    assert first["humaneval"] is None and first["infill"] is None and first["parse_rate"] is None
    assert "allow_code_execution" in first["skipped"]["humaneval"] == first["skipped"]["infill"]
    assert first["published"] == PUBLISHED and [p["humaneval_pass_at_1"] for p in PUBLISHED] == [0.038, 0.18, 0.219]
    assert [c["prompt"] for c in first["completions"]] == PROMPTS
    assert all(isinstance(c["model"], str) and c["reference_model"] is None for c in first["completions"])
    assert json.loads((tmp_path / "one" / "summary.json").read_text()) == first

    second = suite(runs, tmp_path / "two")
    assert second == first
    assert (tmp_path / "two" / "summary.json").read_bytes() == (tmp_path / "one" / "summary.json").read_bytes()


def test_reference_models_are_measured_on_the_same_bytes(runs, tmp_path):
    # A budget past the whole val split takes every val document whole: the bytes are the documents' own.
    got = suite(runs, tmp_path, bpb_tokens=10**7, reference=runs["a"], finetuned=("other tokenizer", runs["b"]))
    ix = ShardSet(runs["shards"]).index["val"]
    assert got["bpb"]["bytes"] == int(ix["bytes"].sum())
    # The same model as a reference goes through its own load and measurement: the same figure to 1e-6.
    model, reference = got["bpb"]["model"], got["bpb"]["reference"]
    assert reference["name"] == "run-a"
    assert reference["val_bpb"] == pytest.approx(model["val_bpb"], abs=1e-6)
    assert reference["val_bpb_by_lang"] == pytest.approx(model["val_bpb_by_lang"], abs=1e-6)
    other = got["bpb"]["finetuned"]
    assert other["name"] == "other tokenizer" and set(other["val_bpb_by_lang"]) == {"Python", "JavaScript"}
    assert 0 < other["val_bpb"] < 10 and other["val_bpb"] != model["val_bpb"]
    # The side-by-side completions come from the fine-tune when there is one.
    assert all(isinstance(c["reference_model"], str) for c in got["completions"])
    assert "reference" not in got["skipped"] and "finetuned" not in got["skipped"]


def test_the_other_tokenizer_scores_exactly_the_model_s_text(runs):
    # run b's figure covers the same texts: the bytes per language from its own scoring match the texts'.
    model, tok = codekiln.load(runs["a"])
    texts, langs = val_texts([ShardSet(runs["shards"])], tok, 1500)
    # ValSet's budget: the documents it takes in its order, the last one cut to whole lines within 1500 tokens
    assert sum(len(tok.encode(t)) for t in texts) <= 1500 and all(t.endswith("\n") for t in texts)
    other, other_tok = codekiln.load(runs["b"])
    mine, theirs = texts_bpb(model, tok, texts, langs), texts_bpb(other, other_tok, texts, langs)
    assert mine["bytes"] == theirs["bytes"] == sum(len(t.encode()) for t in texts)
    assert mine["bytes_by_lang"] == theirs["bytes_by_lang"]
    assert mine["tokens"] == sum(len(tok.encode(t)) for t in texts)
    assert theirs["tokens"] == sum(len(other_tok.encode(t)) for t in texts) != mine["tokens"]


def test_windows_score_every_token_once_with_the_context_they_promise(runs):
    model, tok = codekiln.load(runs["a"])
    text = "".join(PY).format(n="name_1", k=7) * 3
    ids = tok.encode(text)
    ctx = model.cfg.context
    assert len(ids) > 2 * ctx  # several windows
    seq = [tok.eot_id] + ids
    with torch.no_grad():  # token t predicted from the ctx - 1 tokens before it (all of them near the start)
        nats = sum(F.cross_entropy(model(torch.tensor([seq[max(0, t - ctx + 1): t]]))[0, -1],
                                   torch.tensor(seq[t])).item() for t in range(1, len(seq)))
    slide = texts_bpb(model, tok, [text], ["Python"], stride=1)
    assert slide["tokens"] == len(ids)
    # float32 logits summed in float64: 1e-5 bits/byte is far below any difference between two models
    assert slide["val_bpb"] == pytest.approx(nats / math.log(2) / len(text.encode()), abs=1e-5)
    for stride in (ctx // 2, ctx - 1):
        half = texts_bpb(model, tok, [text], ["Python"], stride=stride)
        assert half["tokens"] == len(ids) and half["bytes"] == len(text.encode())
        assert half["val_bpb"] == pytest.approx(slide["val_bpb"], rel=0.1)
    with pytest.raises(ValueError, match="stride"):
        texts_bpb(model, tok, [text], ["Python"], stride=ctx)


def test_untrained_is_the_run_s_step_0_validation(runs, tmp_path):
    records = [json.loads(line) for line in (runs["a"] / "metrics.jsonl").read_text().splitlines()]
    step0 = next(r for r in records if r.get("step") == 0 and "val_bpb" in r)
    want = {"val_bpb": step0["val_bpb"], "val_bpb_by_lang": step0["val_bpb_by_lang"]}
    assert untrained_bpb(runs["a"]) == want
    latest = (runs["a"] / "checkpoints" / "latest").read_text().strip()
    assert untrained_bpb(runs["a"] / "checkpoints" / latest) == want
    # A run with no step-0 record (as one that started from another model's weights might lack): none.
    copy = tmp_path / "run"
    shutil.copytree(runs["a"], copy)
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r.get("step") != 0))
    assert untrained_bpb(copy) is None
    got = run_suite(copy, runs["shards"], tmp_path / "eval", prompts=[], sandbox=None, progress=False,
                    bpb_tokens=2048)
    assert got["bpb"]["untrained"] is None and "step-0" in got["skipped"]["untrained"]
    assert got["completions"] == []


def test_missing_paths_and_foreign_shards_are_one_line_errors(runs, tmp_path):
    for kw, fragment in (({"model_path": tmp_path / "nope"}, "does not exist"),
                         ({"shards": tmp_path / "nope"}, "do not exist"),
                         ({"reference": tmp_path / "nope"}, "reference"),
                         ({"shards": runs["b"].parent / "shards-b"}, "another tokenizer")):
        args = {"model_path": runs["a"], "shards": runs["shards"], **kw}
        with pytest.raises(UserError, match=fragment) as excinfo:
            run_suite(args.pop("model_path"), args.pop("shards"), tmp_path / "out", prompts=[], sandbox=None,
                      progress=False, **args)
        assert "\n" not in str(excinfo.value)


def test_parse_rate_counts_python_that_parses():
    assert parses("def f(x):\n    return '\\d' + x\n")  # an invalid escape warns but parses
    assert not parses("def f(x):\n    return (x\n")
    assert not parses("x = 1\0")


def test_humaneval_and_single_line_infilling_in_the_sandbox(runs, tmp_path):
    from codekiln.eval.sandbox import resolve_mode

    try:
        resolve_mode("auto")
    except UserError as exc:
        pytest.skip(f"no sandbox here: {exc}")
    got = suite(runs, tmp_path, sandbox="auto", limit=4, max_new_tokens=16)
    he = got["humaneval"]
    assert set(he) == {"pass_at_k", "tasks_evaluated", "samples", "parse_rate"}
    assert he["tasks_evaluated"] == he["samples"] == 4 and 0 <= he["pass_at_k"]["1"] <= 1
    results = json.loads((tmp_path / "humaneval" / "results.json").read_text())
    assert results["pass_at_k"]["1"] == he["pass_at_k"]["1"] and results["sandbox"] in ("root", "userns", "bwrap")
    from codekiln.eval.humaneval import load_problems, read_jsonl

    problems = load_problems()
    samples = [s for _, s in read_jsonl(tmp_path / "humaneval" / "samples.jsonl")]
    assert got["parse_rate"] == he["parse_rate"] == np.mean([parses(problems[s["task_id"]]["prompt"] + s["completion"])
                                                             for s in samples])
    one = got["infill"]["single_line"]
    infill = json.loads((tmp_path / "infill" / "results.json").read_text())
    assert one["tasks"] == infill["tasks"] == 4 and set(infill["by_kind"]) == {"single_line"}
    assert one["exact_match"] == infill["exact_match"] and one["pass_at_1"] == infill["pass_at_1"]
    # middles are cut to one line: the task hides one
    assert all("\n" not in t["middle"].strip("\n") for t in infill["per_task"].values())
    assert "humaneval" not in got["skipped"] and "infill" not in got["skipped"]


def test_precision_auto_and_fp32_agree(runs, tmp_path):
    # auto is bf16 autocast on a CPU with native bf16 (else fp32 too): bits per byte within 0.01 of fp32
    fp32 = suite(runs, tmp_path / "fp32", precision="fp32")["bpb"]["model"]["val_bpb"]
    auto = suite(runs, tmp_path / "auto", precision="auto")["bpb"]["model"]["val_bpb"]
    assert auto == pytest.approx(fp32, abs=0.01)
    with pytest.raises(UserError, match="precision"):
        suite(runs, tmp_path / "bad", precision="fp16")


def test_without_a_fine_tune_the_reference_completes_beside_the_model(runs, tmp_path):
    got = suite(runs, tmp_path, bpb_tokens=1024, reference=runs["b"])
    assert got["bpb"]["finetuned"] is None and got["skipped"]["finetuned"] == "no finetuned model given"
    # greedy: the reference's own completion of each prompt, cut as an editor shows it
    model, tok = codekiln.load(runs["b"])
    raw = generate(model, tok, PROMPTS, max_new_tokens=COMPLETION_TOKENS)
    assert [c["reference_model"] for c in got["completions"]] == [
        for_editor(r.text, p, "", lang="Python", truncated=r.finish_reason == "length") for p, r in zip(PROMPTS, raw)]
