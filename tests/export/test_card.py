"""The model card: every `codekiln export hf` directory holds a README.md in the Hugging Face format whose
figures are those of the stages that made the model (a tiny corpus -> tokenizer -> shards -> training run
built here), and a model without those records (an import, an export of an export) still gets one."""

import json
import random

import pytest
import torch
import yaml

from codekiln.config import load_config
from codekiln.data.build import CorpusBuild
from codekiln.export.card import card_inputs, front_matter, license_ids, model_card
from codekiln.export.hf import export_hf
from codekiln.export.importer import import_model
from codekiln.model import ModelConfig, Transformer, param_count
from codekiln.tokenizer.shards import tokenize_corpus
from codekiln.tokenizer.stats import tokenizer_stats
from codekiln.tokenizer.train import train_tokenizer
from codekiln.train.loop import train

transformers = pytest.importorskip("transformers")

MICRO = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.kv_heads=2", "model.context=64",
         "train.batch_size=4", "train.seq_len=64", "train.warmup_steps=2", "train.lr=3e-3",
         "train.eval_tokens=2048", "train.threads=1", "train.max_steps=12", "train.log_every=4",
         "train.eval_every=6", "train.checkpoint_every=6", "data.workers=1"]
WORDS = ["alpha", "beta", "gamma", "delta", "total", "items", "limit", "value", "index", "cache"]


def _module(rng: random.Random, i: int) -> str:
    """A small unique Python module."""
    out = [f'"""Helpers number {i}."""', ""]
    for j in range(rng.randint(3, 6)):
        a, b, c = rng.sample(WORDS, 3)
        out += [f"def {a}_{b}_{i}_{j}({a}, {b}={rng.randint(1, 99)}):",
                f"    {c} = [{a} * n + {b} for n in range({rng.randint(2, 40)})]",
                f"    return sum({c}) - {rng.randint(0, 9)}", ""]
    return "\n".join(out)


def _js(rng: random.Random, i: int) -> str:
    a, b = rng.sample(WORDS, 2)
    return f"export function {a}{i}({b}) {{\n  const {a} = {b} * {rng.randint(2, 90)};\n  return {a} + 1;\n}}\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A `codekiln run`-style folder (corpus, tokenizer, tokens, run) made by the real stages from a JSONL source:
    MIT and Apache-2.0 files kept, GPL files dropped for their license, exact copies dropped as duplicates."""
    root = tmp_path_factory.mktemp("card") / "tinyrun"
    rng = random.Random(0)
    rows = []
    for i in range(160):
        lic = "GPL-3.0-only" if i % 16 == 5 else "Apache-2.0" if i % 4 == 1 else "MIT"
        js = i % 5 == 4
        rows.append({"content": _js(rng, i) if js else _module(rng, i), "path": f"src/m{i}.{'js' if js else 'py'}",
                     "repo": f"org/repo{i // 8}", "license": lic})
    rows += [dict(rows[0], path="src/copy.py"), dict(rows[2], path="src/copy2.py")]
    source = root.parent / "code.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, MICRO)
    CorpusBuild([str(source)], root / "corpus", cfg, workers=1, progress=False).run()
    train_tokenizer(root / "corpus", root / "tokenizer", vocab_size=400, holdout_fraction=0.1, progress=False)
    stats = tokenizer_stats(root / "tokenizer", root / "corpus", compare=[])
    (root / "tokenizer" / "stats.json").write_text(json.dumps(stats))
    tokenize_corpus(root / "corpus", root / "tokenizer", root / "tokens", val_fraction=0.15, progress=False)
    cfg = load_config(None, [*MICRO, f"train.data=[{root / 'tokens'}]", f"train.tokenizer={root / 'tokenizer'}",
                             f"train.out={root / 'run'}"])
    torch.manual_seed(0)
    summary = train(cfg, quiet=True)
    return root, cfg, summary, stats


def _front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_export_writes_a_card_with_the_runs_figures(trained, tmp_path):
    root, cfg, summary, stats = trained
    result = export_hf(root / "run", tmp_path / "tinyrun-hf")
    text = (tmp_path / "tinyrun-hf" / "README.md").read_text()
    meta, body = _front_matter(text)
    report = json.loads((root / "corpus" / "report.json").read_text())

    # Front matter: the kept licenses (two ids, so `other`, with the ids listed), languages, data, metrics.
    assert report["licenses_dropped"]  # the GPL files were there and were dropped
    assert meta["license"] == "other" and meta["training_data_licenses"] == ["Apache-2.0", "MIT"]
    assert meta["language"] == ["code"] and set(meta["programming_language"]) == {"Python", "JavaScript"}
    assert meta["datasets"] == ["built by codekiln from jsonl code.jsonl"]
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"code", "fill-in-the-middle"} <= set(meta["tags"])
    last_val = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines() if "val_bpb" in x][-1]
    (index,) = meta["model-index"]
    assert index["name"] == "tinyrun"  # runs/NAME/run is named NAME
    bpb = index["results"][0]["metrics"][0]
    assert bpb["type"] == "bits_per_byte" and bpb["value"] == pytest.approx(last_val["val_bpb"], abs=1e-4)

    # The parameter count is the model's own (codekiln's count of the trained weights), and the tokens are the run's.
    model = Transformer(ModelConfig.from_dict(json.loads(
        (root / "run" / "checkpoints" / "step-12" / "config.json").read_text())["model"]))
    n = sum(p.numel() for p in model.parameters())
    assert param_count(model.cfg) == n and f"| parameters | {n:,} " in body
    assert summary["tokens"] == 12 * 4 * 64 and f"| tokens | {summary['tokens']:,} " in body
    assert f"{6.0 * n * summary['tokens']:.2e} FLOPs" in body
    assert f"`{result['architecture']}`" in body

    # Sections with the stage records: filters and their counts, the tokenizer's compression.
    for heading in ("Data sources and licenses", "Filters and what they removed", "Tokenizer", "Architecture",
                    "Training", "Evaluation", "Intended use and limitations"):
        assert f"\n## {heading}\n" in body
    license_stage = next(s for s in report["stages"] if s["name"] == "license")
    assert f"| license | {license_stage['docs_in']:,} | {license_stage['docs_out']:,} | license " in body
    assert report["dropped"]["exact_duplicate"]["docs"] == 2 and "exact_duplicate 2" in body
    assert f"{stats['tokenizers']['codekiln']['bytes_per_token']:.2f} bytes per token" in body
    assert "HumanEval pass@1: not recorded" in body  # nothing claimed that was not measured
    assert "## Fine-tuning" not in body

    huggingface_hub = pytest.importorskip("huggingface_hub")
    card = huggingface_hub.ModelCard.load(tmp_path / "tinyrun-hf" / "README.md", ignore_metadata_errors=False)
    assert card.data.license == "other" and card.data.eval_results[0].metric_value == bpb["value"]


def test_run_folder_evaluation_and_checkpoint_choice(trained, tmp_path):
    """In a `codekiln run` folder the card takes eval/summary.json; a checkpoint names its own step and tokens."""
    root, _, _, _ = trained
    (root / "eval").mkdir(exist_ok=True)
    ev = {"bpb": {"model": {"val_bpb": 1.2345, "val_bpb_by_lang": {"Python": 1.2}},
                  "untrained": {"val_bpb": 8.0, "val_bpb_by_lang": {"Python": 8.1}}},
          "humaneval": {"pass_at_k": {"1": 0.0125}}, "infill": {"pass_at_1": 0.25, "exact_match": 0.5},
          "parse_rate": 0.9}
    (root / "eval" / "summary.json").write_text(json.dumps(ev))
    try:
        text = model_card(root / "run" / "checkpoints" / "step-6",
                          {"architecture": "MptForCausalLM", "dtype": "float32"})
    finally:
        (root / "eval" / "summary.json").unlink()
    meta, body = _front_matter(text)
    (index,) = meta["model-index"]
    values = {(r["dataset"]["name"], m["type"]): m["value"] for r in index["results"] for m in r["metrics"]}
    assert values[("HumanEval", "pass@1")] == 0.0125 and values[("HumanEval infilling", "exact_match")] == 0.5
    assert values[("held-out repositories of the training corpus", "bits_per_byte")] == 1.2345
    assert "HumanEval pass@1: 1.2% (published, for scale: CodeParrot-small (110M) 3.8%" in body
    assert "| untrained | 8.0000 | 8.1000 |" in body and "Completions that parse: 90.0%." in body
    assert f"| tokens | {6 * 4 * 64:,} " in body  # the step-6 checkpoint's tokens, not the run's final ones
    assert "| wall time | not recorded |" in body  # summary.json describes step 12, not these weights


def test_an_import_without_a_corpus_still_gets_a_card(tmp_path, code_tokenizer, snippet_files):
    """An imported open model (no corpus, no training here) exported: the card says where it came from and
    leaves out what is not recorded."""
    tok_dir = code_tokenizer("card-import-tok", snippet_files(["def {n}(x):\n    return x + {k}\n"], 40))
    src = tmp_path / "SmolThing"
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    transformers.LlamaForCausalLM(hf_cfg).save_pretrained(src, safe_serialization=True)
    for name in ("tokenizer.json", "special_tokens_map.json"):
        (src / name).write_bytes((tok_dir / name).read_bytes())
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                           "eos_token": "<|endoftext|>"}))
    import_model("hf", src, tmp_path / "imported", progress=False)
    summary = export_hf(tmp_path / "imported", tmp_path / "out")
    meta, body = _front_matter((tmp_path / "out" / "README.md").read_text())
    assert meta["license"] == "other" and "datasets" not in meta and "model-index" not in meta
    assert "imported with `codekiln import` from `hf:SmolThing`" in body
    assert "Not trained by codekiln: the weights were imported from `hf:SmolThing`." in body
    n = param_count(ModelConfig.from_dict(json.loads(
        (tmp_path / "imported" / "checkpoints" / "step-0" / "config.json").read_text())["model"]))
    assert f"| parameters | {n:,} " in body and f"`{summary['architecture']}`" in body
    # An export of that export: no run at all, still a card.
    export_hf(tmp_path / "out", tmp_path / "again")
    meta, body = _front_matter((tmp_path / "again" / "README.md").read_text())
    assert "## Evaluation" in body and "Held-out bits per byte: not recorded." in body


def test_the_cards_license_is_the_datas_when_it_is_one(trained):
    """One license id over every kept file is the card's license (Hugging Face's spelling); a mix, an unknown
    license or an id the Hub does not list is `other`."""
    inputs = card_inputs(trained[0] / "run" / "checkpoints" / "step-12")
    for licenses, want in (({"MIT": 3}, "mit"), ({"GPL-3.0-or-later": 1}, "gpl-3.0"),
                           ({"Apache-2.0 WITH LLVM-exception": 2}, "apache-2.0"), ({"MIT": 3, "unknown": 1}, "other"),
                           ({"MIT": 1, "MIT OR Apache-2.0": 1}, "other"), ({"LicenseRef-acme": 1}, "other")):
        report = {"licenses": {k: {"docs": n, "bytes": 10 * n} for k, n in licenses.items()}}
        inputs["corpora"] = [{"path": trained[0] / "corpus", "report": report, "manifest": {}}]
        assert front_matter(inputs)["license"] == want, licenses


def test_license_ids_of_spdx_expressions():
    assert license_ids("Apache-2.0 AND (MIT OR BSD-3-Clause)") == {"Apache-2.0", "MIT", "BSD-3-Clause"}
    assert license_ids("Apache-2.0 WITH LLVM-exception AND BSL-1.0") == {"Apache-2.0", "BSL-1.0"}
    assert license_ids("") == set()


def test_a_finetune_card_names_its_base_and_the_before_and_after(trained, tmp_path):
    """`codekiln finetune` on the tiny run: the card names the base and the held-out figures before and after."""
    from codekiln.finetune import finetune

    root, _, _, _ = trained
    rng = random.Random(3)
    for i in range(24):
        path = tmp_path / "team-app" / ("billing" if i % 2 else "orders") / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_module(rng, 1000 + i))
    cfg = load_config(None, ["train.batch_size=4", "train.seq_len=64", "train.lr=3e-3", "train.threads=1",
                             "train.max_steps=4", "finetune.holdout_fraction=0.25", "finetune.eval_tasks=2",
                             "finetune.eval_bodies=1", "finetune.eval_max_new_tokens=4", "data.dedup.enabled=false",
                             "data.workers=1", f"finetune.base={root / 'run'}",
                             f"finetune.code=[{tmp_path / 'team-app'}]", f"finetune.out={tmp_path / 'ours'}"])
    result = finetune(cfg, quiet=True)
    export_hf(tmp_path / "ours", tmp_path / "ours-hf")
    meta, body = _front_matter((tmp_path / "ours-hf" / "README.md").read_text())
    assert "fine-tuned" in meta["tags"] and "fine-tuned with `codekiln finetune` from `tinyrun/run`" in body
    assert f"| bits per byte | {result['before']['val_bpb']:.4f} | {result['after']['val_bpb']:.4f} |" in body
    ft_metrics = next(r["metrics"] for r in meta["model-index"][0]["results"]
                      if r["dataset"]["type"] == "codekiln-finetune-heldout")
    assert ft_metrics[0]["value"] == round(result["after"]["val_bpb"], 4)
    assert f"| tokens | {result['train']['tokens']:,} " in body  # the fine-tune's own tokens
