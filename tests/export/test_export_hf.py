"""codekiln export hf: stock transformers loads the export (no remote code) and computes codekiln's numbers."""

import json

import pytest
import torch
from model_runs import make_run
from safetensors import safe_open

from codekiln.errors import UserError
from codekiln.export import hf as export_module
from codekiln.export.hf import export_hf
from codekiln.hf_layout import export_model_config, read_export_tensors
from codekiln.model import ModelConfig, Transformer
from codekiln.model.config import PRESETS
from codekiln.tokenizer import SPECIAL_TOKENS, tokenizer_hash
from codekiln.tokenizer import load as load_tokenizer

transformers = pytest.importorskip("transformers")

LOGIT_TOL = 1e-4  # fp32: the same function through another framework's kernels
BF16_TOL = 1e-4  # bf16 export: both sides compute in fp32 on the same bf16-rounded weights
GREEDY_STEPS = 12

SNIPPETS = ["def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n"
            "            total += item\n    return total\n",
            "class {n}:\n    def __init__(self, value={k}):\n        self.value = value\n"]
PROMPTS = ["def name_3(items, limit=7):\n    total = 0\n", "class name_12:\n    def __init__(self, value",
           "    return total\n\n\nclass "]

# Every preset shape family, tiny: (positions, norm, mlp) x (MHA, GQA) plus the options each stock class maps.
FAMILIES = {
    "llama-mha": dict(positions="rope", norm="rmsnorm", mlp="swiglu", rope_theta=500000.0),
    "llama-gqa-bias-untied": dict(positions="rope", norm="rmsnorm", mlp="swiglu", kv_heads=2, bias=True,
                                  tie_embeddings=False, ffn_hidden=80),
    "mpt-mha-clip": dict(positions="alibi", norm="layernorm", mlp="gelu", clip_qkv=0.4),
    "mpt-gqa": dict(positions="alibi", norm="layernorm", mlp="gelu", kv_heads=2),  # the `tiny` preset's shape
    "mpt-gqa-6heads-untied": dict(positions="alibi", norm="layernorm", mlp="gelu", d_model=48, n_heads=6,
                                  kv_heads=3, tie_embeddings=False),  # ALiBi slopes for a non-power-of-two count
    "neox-gqa": dict(positions="rope", norm="layernorm", mlp="gelu", kv_heads=1, rope_theta=1000.0),
    "neox-bias": dict(positions="rope", norm="layernorm", mlp="gelu", bias=True),
    "mpt-tiny-preset": dict(PRESETS["tiny"], init_std=0.05),  # the demo's model itself: GQA ALiBi, 8/4 heads
}
ARCHITECTURE = {"llama": "LlamaForCausalLM", "mpt": "MptForCausalLM", "neox": "GPTNeoXForCausalLM"}


@pytest.fixture(scope="module")
def tok_dir(code_tokenizer, snippet_files):
    """A byte-level BPE tokenizer of 384 tokens trained on generated Python."""
    return code_tokenizer("export-tok", snippet_files(SNIPPETS, 120))


def prompt_ids(tok):
    """Token ids of the code prompts, and a FIM prompt built from the special ids."""
    ids = [tok.encode(p) for p in PROMPTS]
    s = tok.special_ids
    ids.append([s["<|fim_prefix|>"], *tok.encode("def f(x):\n    "), s["<|fim_suffix|>"],
                *tok.encode("\n    return y\n"), s["<|fim_middle|>"]])
    return ids


def hf_model(directory, **kwargs):
    """The export through stock transformers, without remote code."""
    return transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, **kwargs).eval()


def greedy_ours(model, ids, steps):
    """Greedy continuation by codekiln's full forward, with the top-2 gap at each step."""
    ids, gaps = list(ids), []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1]
        top = logits.topk(2).values
        gaps.append(float(top[0] - top[1]))
        ids.append(int(logits.argmax()))
    return ids, gaps


@pytest.mark.parametrize("family", FAMILIES)
def test_stock_transformers_computes_codekilns_logits(tmp_path, tok_dir, family):
    run, ours = make_run(tmp_path, tok_dir, **FAMILIES[family])
    summary = export_hf(run, tmp_path / "hf")
    expected_arch = ARCHITECTURE[family.split("-")[0]]
    assert summary["architecture"] == expected_arch
    hf = hf_model(tmp_path / "hf")
    assert type(hf).__name__ == expected_arch
    tok = load_tokenizer(tok_dir)
    for ids in prompt_ids(tok):
        x = torch.tensor([ids])
        with torch.no_grad():
            diff = (hf(x).logits - ours(x)).abs().max().item()
        assert diff < LOGIT_TOL, f"{family}: max logit difference {diff:.2e} on {ids}"


@pytest.mark.parametrize("family", ["llama-gqa-bias-untied", "mpt-gqa", "neox-gqa"])
def test_greedy_decoding_agrees_token_for_token(tmp_path, tok_dir, family):
    """transformers' generate (its KV-cached path) against codekiln's greedy, near-ties reported, not hidden."""
    run, ours = make_run(tmp_path, tok_dir, **FAMILIES[family])
    export_hf(run, tmp_path / "hf")
    hf = hf_model(tmp_path / "hf")
    near_ties = []
    for ids in prompt_ids(load_tokenizer(tok_dir)):
        want, gaps = greedy_ours(ours, ids, GREEDY_STEPS)
        got = hf.generate(torch.tensor([ids]), max_new_tokens=GREEDY_STEPS, min_new_tokens=GREEDY_STEPS,
                          do_sample=False, eos_token_id=None, pad_token_id=0)[0].tolist()
        for i in range(GREEDY_STEPS):
            if got[len(ids) + i] != want[len(ids) + i]:
                # Logits within LOGIT_TOL can swap an argmax only where the top two are closer than twice that.
                near_ties.append((ids, i, gaps[i]))
                assert gaps[i] < 2 * LOGIT_TOL, f"{family}: greedy step {i} differs with a top-2 gap of {gaps[i]:.2e}"
                break  # the continuations differ from here on, legitimately
    print(f"{family}: greedy near-tie divergences: {near_ties or 'none'}")


def test_exported_directory_holds_tokenizer_generation_config_and_record(tmp_path, tok_dir):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["mpt-gqa"])
    out = tmp_path / "hf"
    summary = export_hf(run / "checkpoints" / "step-3", out)  # a checkpoint directory, not only a run
    tok = load_tokenizer(tok_dir)
    eot = tok.special_ids["<|endoftext|>"]

    record = json.loads((out / "codekiln.json").read_text())
    assert record["model"] == ModelConfig(**{**record["model"]}).to_dict()
    assert record["model"]["kv_heads"] == 2 and record["kv_heads_repeated"] == 2
    assert record["tokenizer_hash"] == tokenizer_hash(tok_dir)
    assert "repeated 2 times to 4 heads" in summary["notes"][0]
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == eot
    config = transformers.AutoConfig.from_pretrained(out)
    assert config.eos_token_id == eot and config.dtype == torch.float32

    hf_tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == eot
    assert set(SPECIAL_TOKENS) <= set(hf_tok.all_special_tokens)
    for text in PROMPTS:
        assert hf_tok(text)["input_ids"] == tok.encode(text)
    fim = "<|fim_prefix|>def f(x):<|fim_suffix|>\n<|fim_middle|>"
    assert hf_tok(fim)["input_ids"][0] == tok.special_ids["<|fim_prefix|>"]
    assert tok.special_ids["<|fim_middle|>"] in hf_tok(fim)["input_ids"]
    assert hf_tok.decode(hf_tok(fim)["input_ids"], skip_special_tokens=True) == "def f(x):\n"


def test_special_tokens_an_older_tokenizer_left_unmarked_are_marked(tmp_path, tok_dir):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["llama-mha"])
    path = run / "tokenizer" / "tokenizer.json"
    spec = json.loads(path.read_text())
    for token in spec["added_tokens"]:
        token["special"] = token["content"] == "<|endoftext|>"
    path.write_text(json.dumps(spec))
    export_hf(run, tmp_path / "hf")
    exported = json.loads((tmp_path / "hf" / "tokenizer.json").read_text())
    assert {t["content"] for t in exported["added_tokens"] if t["special"]} == set(SPECIAL_TOKENS)
    assert json.loads((tmp_path / "hf" / "codekiln.json").read_text())["tokenizer_hash"] == \
        tokenizer_hash(tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.decode(hf_tok("<|fim_prefix|>x<|fim_middle|>")["input_ids"], skip_special_tokens=True) == "x"


@pytest.mark.parametrize("family", ["llama-gqa-bias-untied", "mpt-gqa-6heads-untied", "neox-gqa", "neox-bias"])
def test_the_record_restores_the_exact_codekiln_model(tmp_path, tok_dir, family):
    """codekiln.json + the stock tensors give back our model (GQA included), bit for bit in fp32."""
    run, ours = make_run(tmp_path, tok_dir, **FAMILIES[family])
    export_hf(run, tmp_path / "hf")
    cfg = export_model_config(tmp_path / "hf")
    assert cfg == ours.cfg
    back = Transformer(cfg)
    back.load_state_dict(read_export_tensors(tmp_path / "hf", cfg), strict=True)
    for name, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


@pytest.mark.parametrize("family,tensor,message", [
    ("mpt-gqa", "transformer.blocks.0.attn.Wqkv.weight", "repeated key/value heads differ"),
    ("neox-gqa", "gpt_neox.layers.0.mlp.dense_h_to_4h.bias", "is not zero"),
])
def test_weights_changed_after_export_are_not_read_as_the_recorded_model(tmp_path, tok_dir, family, tensor, message):
    from safetensors.torch import load_file, save_file

    run, _ = make_run(tmp_path, tok_dir, **FAMILIES[family])
    out = tmp_path / "hf"
    export_hf(run, out)
    tensors = load_file(out / "model.safetensors")
    tensors[tensor][-1] += 1.0  # the last row: a copy of the last value head, or a bias our model does not have
    save_file(tensors, out / "model.safetensors")
    with pytest.raises(UserError, match=message):
        read_export_tensors(out, export_model_config(out))


def test_codekiln_load_reads_an_export(tmp_path, tok_dir):
    import codekiln

    run, ours = make_run(tmp_path, tok_dir, **FAMILIES["mpt-gqa"])
    export_hf(run, tmp_path / "hf")
    model, tok = codekiln.load(tmp_path / "hf")
    assert model.cfg == ours.cfg  # grouped-query attention restored, not the repeated heads
    x = torch.tensor([prompt_ids(tok)[0]])
    with torch.no_grad():
        assert torch.equal(model(x), ours(x))
    export_hf(tmp_path / "hf", tmp_path / "again")  # an export is a model path like any other
    again, first = (tmp_path / d / "model.safetensors" for d in ("again", "hf"))
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_export(tmp_path, tok_dir, dtype):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["mpt-gqa"])
    out = tmp_path / "hf"
    export_hf(run, out, dtype=dtype)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == dtype
    with safe_open(out / "model.safetensors", framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {getattr(torch, dtype)}
    assert transformers.AutoConfig.from_pretrained(out).dtype == getattr(torch, dtype)
    # The rounded weights, read back by codekiln, are the function transformers computes (both in fp32).
    cfg = export_model_config(out)
    rounded = Transformer(cfg)
    rounded.load_state_dict(read_export_tensors(out, cfg), strict=True)
    hf = hf_model(out, dtype=torch.float32)
    x = torch.tensor([prompt_ids(load_tokenizer(tok_dir))[0]])
    with torch.no_grad():
        assert (hf(x).logits - rounded.eval()(x)).abs().max().item() < BF16_TOL


REFUSALS = [
    (dict(positions="rope", norm="rmsnorm", mlp="swiglu", clip_qkv=0.5), "clip_qkv 0.5 with RoPE"),
    (dict(positions="rope", norm="layernorm", mlp="gelu", clip_qkv=0.5), "clip_qkv 0.5 with RoPE"),
    (dict(positions="alibi", norm="layernorm", mlp="gelu", bias=True), "bias true with ALiBi"),
    (dict(positions="alibi", norm="layernorm", mlp="gelu", ffn_hidden=96), "ffn_hidden 96"),
    (dict(positions="alibi", norm="layernorm", mlp="gelu", alibi_bias_max=6.0), "alibi_bias_max 6.0"),
    (dict(positions="alibi", norm="rmsnorm", mlp="gelu"), "positions alibi with norm rmsnorm and mlp gelu"),
    (dict(positions="alibi", norm="layernorm", mlp="swiglu"), "positions alibi with norm layernorm and mlp swiglu"),
    (dict(positions="rope", norm="rmsnorm", mlp="gelu"), "positions rope with norm rmsnorm and mlp gelu"),
    (dict(positions="alibi", norm="layernorm", mlp="gelu", clip_qkv=0.0), "clip_qkv 0.0"),
]


@pytest.mark.parametrize("options,named", REFUSALS)
def test_options_without_a_stock_equivalent_are_refused_in_one_line(tmp_path, tok_dir, options, named):
    run, _ = make_run(tmp_path, tok_dir, **options)
    with pytest.raises(UserError) as err:
        export_hf(run, tmp_path / "hf")
    assert named in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written


def test_a_failed_export_leaves_nothing_and_an_earlier_export_intact(tmp_path, tok_dir, monkeypatch):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["llama-mha"])
    out = tmp_path / "hf"
    export_hf(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "hf_config", broken)
    with pytest.raises(OSError, match="disk full"):
        export_hf(run, out, dtype="bfloat16")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]  # no temporary directory left
    monkeypatch.undo()

    export_hf(run, out, dtype="bfloat16")  # an earlier export is replaced whole
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]


def test_reruns_are_byte_identical(tmp_path, tok_dir):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["neox-gqa"])
    export_hf(run, tmp_path / "a")
    export_hf(run, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_user_mistakes_are_one_line_errors(tmp_path, tok_dir):
    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["llama-mha"])
    with pytest.raises(UserError, match="--dtype must be one of float32, bfloat16, float16"):
        export_hf(run, tmp_path / "hf", dtype="int8")
    with pytest.raises(UserError, match="does not exist"):
        export_hf(tmp_path / "nowhere", tmp_path / "hf")
    big, _ = make_run(tmp_path / "big", tok_dir, **FAMILIES["llama-mha"], init_std=1e5)
    with pytest.raises(UserError, match="beyond float16's range; export as bfloat16 or float32"):
        export_hf(big, tmp_path / "hf", dtype="float16")
    assert not (tmp_path / "hf").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a codekiln export; refusing to overwrite"):
        export_hf(run, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_export_hf_command(tmp_path, tok_dir, capsys):
    from codekiln.cli import main

    run, _ = make_run(tmp_path, tok_dir, **FAMILIES["mpt-gqa"])
    assert main(["export", "hf", "--model", str(run), "--out", str(tmp_path / "hf")]) == 0
    shown = capsys.readouterr()
    out = shown.out + shown.err
    assert "MptForCausalLM" in out and "note:" in out  # the repeated key/value heads are said, not hidden
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["export", "hf", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "hf2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
    with pytest.raises(SystemExit) as bad:
        main(["export", "hf", "--model", str(run), "--out", str(tmp_path / "hf3"), "--dtype", "int4"])
    assert bad.value.code == 2
