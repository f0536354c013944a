"""codekiln export hf --adapter-only: stock peft applies our adapters to our exported base and computes the
fine-tune's logits; what a PEFT adapter cannot express is refused in one line."""

import json
import shutil

import pytest
import torch
from model_runs import make_run

import codekiln
from codekiln.adapters import LoraSpec
from codekiln.errors import UserError
from codekiln.export.hf import export_hf
from codekiln.export.peft import export_peft_adapter
from codekiln.tokenizer import load as load_tokenizer
from codekiln.train.checkpoint import save as save_checkpoint
from codekiln.train.lora import apply_lora

LOGIT_TOL = 1e-4  # fp32: the same function through transformers + peft's kernels
SNIPPETS = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
            "            total += item\n    return total\n",
            "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n"]
LLAMA = dict(positions="rope", norm="rmsnorm", mlp="swiglu")
FAMILIES = {"llama-gqa-tied": dict(LLAMA, kv_heads=2, rope_theta=500000.0),
            "llama-bias-untied": dict(LLAMA, bias=True, tie_embeddings=False, ffn_hidden=80)}


@pytest.fixture(scope="module")
def tok_dir(code_tokenizer, snippet_files):
    """A byte-level BPE tokenizer of 384 tokens trained on generated Python."""
    return code_tokenizer("peft-tok", snippet_files(SNIPPETS, 120))


def lora_run(root, tok_dir, spec, seed=0, **options):
    """(base run, LoRA run, the adapted model): a random base, then a fine-tune of it with random adapters,
    its config.json carrying the "lora" record the trainer writes."""
    base, model = make_run(root / "base", tok_dir, seed=seed, **options)
    apply_lora(model, spec, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    run = root / "lora"
    shutil.copytree(tok_dir, run / "tokenizer")
    ckpt = save_checkpoint(run, 5, model.state_dict(), model.cfg, {}, {"tokens": 0}, keep=1)
    record = json.loads((ckpt / "config.json").read_text())
    record["lora"] = {**spec.to_dict(), "base": str(base)}
    (ckpt / "config.json").write_text(json.dumps(record))
    return base, run, model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_peft_computes_the_fine_tunes_logits(tmp_path, tok_dir, family):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft", reason="peft is not installed (the test extra)")
    spec = LoraSpec(rank=4, alpha=12, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"))
    base, run, adapted = lora_run(tmp_path, tok_dir, spec, **FAMILIES[family])
    export_hf(base, tmp_path / "base-hf")
    summary = export_peft_adapter(run, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 12)
    assert config["target_modules"] == sorted(spec.targets) == summary["target_modules"]
    assert config["base_model_name_or_path"] == str(base)
    assert summary["tensors"] == 2 * 2 * len(spec.targets)

    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base-hf", trust_remote_code=False).eval()
    tuned = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    merged, tok = codekiln.load(run)  # codekiln reads the LoRA checkpoint merged
    for text in ["def name_3(items, limit=7):\n    total = 0\n", "class name_12:\n    def __init__(self, value"]:
        x = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            ours, theirs, lora = merged(x), tuned(input_ids=x).logits, adapted(x)
            with tuned.disable_adapter():
                base_logits = tuned(input_ids=x).logits
        assert (ours - lora).abs().max() < LOGIT_TOL  # merged on read = the adapted model (fp32 rounding)
        print(f"{family}: max |peft - codekiln| {float((theirs - ours).abs().max()):.2e}, "
              f"|merged - adapted| {float((ours - lora).abs().max()):.2e}")
        assert (theirs - ours).abs().max() < LOGIT_TOL, float((theirs - ours).abs().max())
        assert (base_logits - ours).abs().max() > 100 * LOGIT_TOL  # the adapters matter: not passing by accident


def test_what_a_peft_adapter_cannot_carry_is_refused(tmp_path, tok_dir):
    spec = LoraSpec(rank=2, alpha=2)
    base, run, _ = lora_run(tmp_path / "llama", tok_dir, spec, **FAMILIES["llama-gqa-tied"])
    with pytest.raises(UserError, match="not a LoRA fine-tune"):
        export_peft_adapter(base, tmp_path / "out")
    export_hf(run, tmp_path / "merged-hf")  # the merged fine-tune exports as a plain model
    with pytest.raises(UserError, match="is an exported model"):
        export_peft_adapter(tmp_path / "merged-hf", tmp_path / "out")

    _, mpt, _ = lora_run(tmp_path / "mpt", tok_dir, spec, positions="alibi", norm="layernorm", mlp="gelu")
    with pytest.raises(UserError, match="MptForCausalLM, whose fused q/k/v"):
        export_peft_adapter(mpt, tmp_path / "out")
    vocab = load_tokenizer(tok_dir).vocab_size
    _, rows, _ = lora_run(tmp_path / "rows", tok_dir, LoraSpec(rank=2, alpha=2, rows_from=vocab - 3),
                          **FAMILIES["llama-gqa-tied"])
    with pytest.raises(UserError, match="new vocabulary rows .*export the merged model"):
        export_peft_adapter(rows, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an adapter export; refusing to overwrite"):
        export_peft_adapter(run, tmp_path / "mine")
    export_peft_adapter(run, tmp_path / "out")
    export_peft_adapter(run / "checkpoints" / "step-5", tmp_path / "out")  # an earlier adapter export is replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
